"""The coordinator: a Flower ServerApp running sample-weighted FedAvg over the ECU clients.

The run is described by ``spec.json`` in the run's results folder (written by ``ecufl fleet run``
or ``ecufl sim`` from a scenario); its path arrives in the run config as ``run-spec``, and
``resume = true`` continues from the folder's checkpoint. Each round:

1. sample clients (seeded), send the global weights and the round's config,
2. collect replies until all are in or ``round_timeout`` passes (a dead node does not stop the run),
   logging each reply to progress.jsonl as it arrives,
3. FedAvg of the accepted replies (``ReportingFedAvg``), centralised evaluation of the new global
   weights on the MNIST test set with the numpy reference kernel,
4. rows in rounds.csv / clients.csv, then a checkpoint.

Replies are pulled every ``POLL_SECONDS`` rather than Flower's fixed 3 s (``Grid.send_and_receive``),
so a round ends soon after its last client.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Context, Message
from flwr.serverapp import Grid, ServerApp

from ecufl import data as mnist
from ecufl.kernels import Params, create, init_params
from ecufl.proto import report_to_row, wire
from ecufl.server.results import Results
from ecufl.server.strategy import ReportingFedAvg
from ecufl.server.virtual_clock import DEFAULT_LINK, VirtualClock, get_link, resumed_total

log = logging.getLogger("ecufl.server")
app = ServerApp()
POLL_SECONDS = 0.25


@dataclass
class RunSpec:
    """The server's view of a run (the scenario, resolved). Plain data: the server never imports scenarios."""

    name: str
    nodes: int
    layers: list[int]
    rounds: int
    lr: float
    batch_size: int
    local_epochs: int
    seed: int
    fraction: float = 1.0
    alpha: float = 0.0  # 0: IID split; > 0: Dirichlet(alpha) label skew
    train_limit: int = 0
    kernels: list[str] = field(default_factory=list)  # per partition; empty: each node's own kernel
    profiles: list[str] = field(default_factory=list)
    round_timeout: float = 120.0
    connect_timeout: float = 120.0
    engine: str = "deployment"
    link: str = DEFAULT_LINK  # the network of the virtual clock (server/virtual_clock.py)
    test_corrupt: dict[str, str] = field(default_factory=dict)  # TEST HOOK: partition -> fault

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunSpec":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def identity(self) -> dict[str, Any]:
        """What must not change between a run and its resumption."""
        d = asdict(self)
        for k in ("round_timeout", "connect_timeout", "engine"):
            d.pop(k)
        return d

    def train_config(self) -> ConfigRecord:
        return ConfigRecord({
            "layers": "-".join(map(str, self.layers)), "lr": float(self.lr), "batch-size": self.batch_size,
            "local-epochs": self.local_epochs, "seed": self.seed, "split-alpha": float(self.alpha),
            "train-limit": self.train_limit, "num-partitions": self.nodes,
            "node-kernels": ",".join(self.kernels), "node-profiles": ",".join(self.profiles),
            "test-corrupt": ",".join(f"{k}:{v}" for k, v in self.test_corrupt.items()),
        })


def evaluate_global(params: Params, test: mnist.Dataset) -> tuple[float, float, float]:
    """(loss, accuracy, seconds) of the global weights on the test set, numpy reference in float64."""
    t0 = time.perf_counter()
    kernel = create("numpy", params.astype("float64"), dtype="float64")
    ev = kernel.evaluate(test.images, test.labels)
    return ev.loss, ev.accuracy, time.perf_counter() - t0


def send_and_receive(grid: Grid, messages: list[Message], timeout: float, on_reply) -> list[Message]:
    ids = {i for i in grid.push_messages(messages) if i}
    end = time.monotonic() + timeout
    replies: list[Message] = []
    while ids and time.monotonic() < end:
        for msg in grid.pull_messages(list(ids)):
            ids.discard(msg.metadata.reply_to_message_id)
            replies.append(msg)
            on_reply(msg)
        if ids:
            time.sleep(POLL_SECONDS)
    return replies


def wait_for_nodes(grid: Grid, wanted: int, timeout: float, results: Results) -> int:
    end = time.monotonic() + timeout
    while (have := len(list(grid.get_node_ids()))) < wanted and time.monotonic() < end:
        time.sleep(0.5)
    if have < wanted:
        log.warning("only %d of %d nodes connected after %.0f s; going on with them", have, wanted, timeout)
    results.event("nodes", connected=have, wanted=wanted)
    if have == 0:
        raise RuntimeError(f"no SuperNode connected within {timeout:.0f} s")
    return have


def run(grid: Grid, spec: RunSpec, results: Results, resume: bool) -> dict[str, Any]:
    test = mnist.load("test")
    strategy = ReportingFedAvg(sizes=spec.layers, seed=spec.seed, fraction_train=spec.fraction)
    if resume:
        params, done, saved = results.load_checkpoint()
        if saved != spec.identity():
            changed = sorted(k for k in set(saved) | set(spec.identity()) if saved.get(k) != spec.identity().get(k))
            raise ValueError(f"cannot resume: the run's settings changed since the checkpoint ({', '.join(changed)})")
        results.truncate_after(done)
        results.event("resumed", round=done)
    else:
        params, done = init_params(spec.layers, spec.seed, dtype=wire.TRANSPORT_DTYPE), 0
        loss, acc, secs = evaluate_global(params, test)
        results.add_round({"round": 0, "test_loss": loss, "test_accuracy": acc, "evaluate_seconds": secs,
                           "started_at": time.time(), "virtual_seconds": 0.0, "virtual_time": 0.0})
        results.checkpoint(params, 0, spec.identity())
    # virtual time on the target boards and link (FedScale-style), continued across a resume
    clock = VirtualClock(get_link(spec.link), resumed_total(results.dir / "rounds.csv") if resume else 0.0)
    wait_for_nodes(grid, spec.nodes, spec.connect_timeout, results)

    accuracy = None
    for rnd in range(done + 1, spec.rounds + 1):
        started = time.time()
        t0 = time.perf_counter()
        messages = list(strategy.configure_train(rnd, wire.params_to_record(params), spec.train_config(), grid))
        results.event("round-start", round=rnd, asked=len(messages))
        arrival: dict[int, float] = {}

        def on_reply(msg: Message, _rnd=rnd, _t0=t0) -> None:
            arrival[msg.metadata.src_node_id] = time.perf_counter() - _t0
            results.event("reply", round=_rnd, node=msg.metadata.src_node_id,
                          seconds=arrival[msg.metadata.src_node_id])

        replies = send_and_receive(grid, messages, spec.round_timeout, on_reply)
        t_agg = time.perf_counter()
        arrays, _ = strategy.aggregate_train(rnd, replies)
        aggregate_seconds = time.perf_counter() - t_agg
        if arrays is not None:
            params = wire.record_to_params(arrays)
        loss, accuracy, eval_seconds = evaluate_global(params, test)
        wall = time.perf_counter() - t0

        rows, slowest, timed = [], 0.0, []
        for r in strategy.replies[rnd]:
            row = report_to_row(r.report) | {"round": rnd, "accepted": int(r.accepted), "reject_reason": r.reason,
                                             "reply_seconds": arrival.get(r.node_id, "")}
            row["node_id"] = r.node_id
            if not r.report.ecufl_version:  # no RoundReport (e.g. Flower's "Node Unavailable"): partition as last known
                row["partition_id"] = strategy.partition_of.get(r.node_id, "")
            if not r.report.error:  # it trained: projected board time + transfer over the link
                row |= clock.client(r.report)
            rows.append(row)
            if r.accepted:
                slowest = max(slowest, r.report.train_seconds)
                timed.append(row)
            results.event("client", round=rnd, node=r.node_id, partition=r.report.partition_id,
                          kernel=r.report.kernel, accepted=r.accepted, reason=r.reason,
                          train_seconds=r.report.train_seconds, accuracy=r.report.local_accuracy)
        accepted = sum(r.accepted for r in strategy.replies[rnd])
        results.add_clients(rows)
        results.add_round({
            "round": rnd, "clients_asked": strategy.asked.get(rnd, 0), "clients_replied": len(replies),
            "clients_accepted": accepted, "aggregate_seconds": aggregate_seconds, "evaluate_seconds": eval_seconds,
            "test_loss": loss, "test_accuracy": accuracy, "wall_seconds": wall, "slowest_train_seconds": slowest,
            "overhead_seconds": wall - slowest, "started_at": started, **clock.advance(timed),
        })
        results.checkpoint(params, rnd, spec.identity())
        results.event("round-end", round=rnd, replied=len(replies), accepted=accepted, accuracy=accuracy,
                      loss=loss, wall_seconds=wall)
    if accuracy is None:  # resumed after the last round: nothing left to train
        _, accuracy, _ = evaluate_global(params, test)
    summary = {"name": spec.name, "rounds": spec.rounds, "test_accuracy": accuracy, "engine": spec.engine}
    results.final(params, spec.identity(), summary)
    return summary


@app.main()
def main(grid: Grid, context: Context) -> None:
    spec_path = Path(str(context.run_config.get("run-spec", "")))
    if not spec_path.is_file():
        raise FileNotFoundError(f"run config run-spec={spec_path!s}: no such file (start runs with `ecufl fleet run`)")
    results = Results(spec_path.parent)
    # Our log lines go to the run's server.log and to Flower's own log stream (`flwr log RUN_ID`).
    handler = logging.FileHandler(results.dir / "server.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.handlers = [handler, *logging.getLogger("flwr").handlers]
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        spec = RunSpec.from_dict(json.loads(spec_path.read_text()))
        results.event("started", run_id=grid.run.run_id if hasattr(grid, "run") else None, spec=asdict(spec))
        resume = bool(context.run_config.get("resume", False))
        log.info("run %s: %s, %d nodes, %d rounds%s", spec.name, spec.engine, spec.nodes, spec.rounds,
                 " (resumed)" if resume else "")
        summary = run(grid, spec, results, resume)
        results.event("done", **summary)
    except Exception as e:
        results.event("failed", error=f"{type(e).__name__}: {e}", trace=traceback.format_exc(limit=5))
        raise
