"""The coordinator: a Flower ServerApp running sample-weighted FedAvg over the ECU clients.

The run is described by Flower's run config (``context.run_config``: the flat keys of
``ecufl.runconfig``, defaults in pyproject.toml's ``[tool.flwr.app.config]``), whether it was
started by ``flwr run .`` or by ``ecufl fleet run`` / ``ecufl sim`` from a scenario. The resolved
settings are kept as ``run-config.json`` in the run folder; ``resume = true`` with ``run-dir``
continues that folder from its checkpoint. Each round:

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

import logging
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Context, Message
from flwr.serverapp import Grid, ServerApp

from ecufl import data as mnist
from ecufl.kernels import Params, create, init_params
from ecufl.kernels.base import inputs_as
from ecufl import wire
from ecufl.can.fleetrun import LayersError
from ecufl.proto import report_to_row
from ecufl.runconfig import RunConfig, RunConfigError
from ecufl.server import can_eval
from ecufl.server.results import Results
from ecufl.server.strategy import ReportingFedAvg
from ecufl.server.virtual_clock import VirtualClock, get_link, resumed_total

log = logging.getLogger("ecufl.server")
app = ServerApp()
POLL_SECONDS = 0.05  # each pull is one small request to the SuperLink
SIM_POLL_SECONDS = 0.01  # simulation: a pull is a function call on Flower's in-memory state


def train_config(cfg: RunConfig) -> ConfigRecord:
    """What every train message carries: the run's resolved settings (the same flat keys as the run
    config, so a client parses them with ``RunConfig.from_flat``) and the number of partitions."""
    flat = {k: v for k, v in cfg.to_flat().items() if k not in ("results-dir", "run-dir", "resume")}
    return ConfigRecord(flat | {"num-partitions": cfg.nodes})


def evaluate_global(params: Params, test: mnist.Dataset) -> tuple[float, float, float]:
    """(loss, accuracy, seconds) of the global weights on the test set, numpy reference in float64."""
    t0 = time.perf_counter()
    kernel = create("numpy", params.astype("float64"), dtype="float64")
    ev = kernel.evaluate(test.images, test.labels)
    return ev.loss, ev.accuracy, time.perf_counter() - t0


def quick_object_pulls() -> None:
    """Flower's HTTP grid (deployment) pulls a reply's objects with a backoff of 1 s doubling to
    10 s: a reply pulled while its SuperNode is still uploading its objects (likely when replies are
    pulled every ``POLL_SECONDS``, rare with Flower's 3 s) would wait 1-3 s more. Here it retries
    from 0.05 s, at most 0.2 s apart; the grid, its requests and its give-up time stay Flower's."""
    import functools

    from flwr.superlink.grid import http_grid

    if not isinstance(http_grid.pull_objects, functools.partial):
        http_grid.pull_objects = functools.partial(http_grid.pull_objects, initial_backoff=0.05, backoff_cap=0.2)


def send_and_receive(grid: Grid, messages: list[Message], timeout: float, on_reply,
                     poll: float = POLL_SECONDS) -> list[Message]:
    ids = {i for i in grid.push_messages(messages) if i}
    end = time.monotonic() + timeout
    replies: list[Message] = []
    while ids and time.monotonic() < end:
        for msg in grid.pull_messages(list(ids)):
            ids.discard(msg.metadata.reply_to_message_id)
            replies.append(msg)
            on_reply(msg)
        if ids:
            time.sleep(poll)
    return replies


def wait_for_nodes(grid: Grid, wanted: int, timeout: float, results: Results) -> int:
    """Wait for ``wanted`` nodes (0: for the first, then take every node connected by then)."""
    end = time.monotonic() + timeout
    while (have := len(list(grid.get_node_ids()))) < max(wanted, 1) and time.monotonic() < end:
        time.sleep(0.5)
    if wanted == 0:
        wanted = have
    if have < wanted:
        log.warning("only %d of %d nodes connected after %.0f s; going on with them", have, wanted, timeout)
    results.event("nodes", connected=have, wanted=wanted)
    if have == 0:
        raise RuntimeError(f"no SuperNode connected within {timeout:.0f} s")
    return have


def run(grid: Grid, spec: RunConfig, results: Results, engine: str) -> dict[str, Any]:
    can = can_eval.Evaluator(spec, results.dir) if spec.workload == "can" else None  # CAN: unseen vehicles
    test = None if can else mnist.load("test")
    if test is not None:  # the test images as the reference kernel's inputs once, not every round (same values)
        test = mnist.Dataset(inputs_as(test.images, np.float64), test.labels)

    def evaluate(p: Params) -> tuple[float, float, float]:
        return can.evaluate(p) if can else evaluate_global(p, test)

    connected = wait_for_nodes(grid, spec.nodes, spec.connect_timeout, results)
    if spec.nodes == 0:  # the fleet decides: one partition per node connected now, kept for a resumption
        spec.nodes = connected
        spec.save(results.dir)
    strategy = ReportingFedAvg(sizes=spec.layers, seed=spec.seed, fraction_train=spec.fraction,
                               aggregator=spec.aggregator, trim_fraction=spec.trim_fraction,
                               max_update_norm_ratio=spec.max_update_norm or None,
                               shard_sizes=can.shard_sizes(spec.nodes) if can else None)
    if spec.resume:
        params, done, saved = results.load_checkpoint()
        if saved != spec.identity():
            changed = sorted(k for k in set(saved) | set(spec.identity()) if saved.get(k) != spec.identity().get(k))
            raise ValueError(f"cannot resume: the run's settings changed since the checkpoint ({', '.join(changed)})")
        results.truncate_after(done)
        results.event("resumed", round=done)
    else:
        params, done = init_params(spec.layers, spec.seed, scaled=can is not None, dtype=wire.TRANSPORT_DTYPE), 0
        loss, acc, secs = evaluate(params)
        results.add_round({"round": 0, "test_loss": loss, "test_accuracy": acc, "evaluate_seconds": secs,
                           "started_at": time.time(), "virtual_seconds": 0.0, "virtual_time": 0.0})
        results.checkpoint(params, 0, spec.identity())
    # virtual time on the target boards and link (FedScale-style), continued across a resume
    clock = VirtualClock(get_link(spec.link), resumed_total(results.dir / "rounds.csv") if spec.resume else 0.0)

    accuracy = None
    for rnd in range(done + 1, spec.rounds + 1):
        started = time.time()
        t0 = time.perf_counter()
        messages = list(strategy.configure_train(rnd, wire.params_to_record(params), train_config(spec), grid))
        results.event("round-start", round=rnd, asked=len(messages))
        arrival: dict[int, float] = {}

        def on_reply(msg: Message, _rnd=rnd, _t0=t0) -> None:
            arrival[msg.metadata.src_node_id] = time.perf_counter() - _t0
            results.event("reply", round=_rnd, node=msg.metadata.src_node_id,
                          seconds=arrival[msg.metadata.src_node_id])

        replies = send_and_receive(grid, messages, spec.round_timeout, on_reply,
                                   SIM_POLL_SECONDS if engine == "simulation" else POLL_SECONDS)
        t_agg = time.perf_counter()
        arrays, _ = strategy.aggregate_train(rnd, replies)
        aggregate_seconds = time.perf_counter() - t_agg
        if arrays is not None:
            params = wire.record_to_params(arrays)
        loss, accuracy, eval_seconds = evaluate(params)
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
        log.info("round %d/%d: %d/%d replies averaged, test accuracy %.4f, %.1f s", rnd, spec.rounds, accepted,
                 len(replies), accuracy, wall)
    if accuracy is None:  # resumed after the last round: nothing left to train
        _, accuracy, _ = evaluate(params)
    summary = {"name": spec.name, "rounds": spec.rounds, "test_accuracy": accuracy, "engine": engine,
               # node id -> replies refused over the run (this process's rounds; clients.csv has each one)
               "rejected_replies": {str(n): c for n, c in sorted(strategy.rejection_counts().items())}}
    if can:
        summary |= can.final(params)
    results.final(params, spec.identity(), summary)
    return summary


def resolve(run_config: dict[str, Any]) -> tuple[RunConfig, Path]:
    """The run's settings and folder. A new run gets a folder (``run-dir`` or a new one under
    ``results-dir``) and its settings are saved there; ``resume = true`` takes the settings saved in
    ``run-dir`` (only the timeouts may change), so a resumption is the same run."""
    cfg = RunConfig.from_flat(run_config)
    if not cfg.resume:
        folder = cfg.folder()
        cfg.run_dir = str(folder)
        folder.mkdir(parents=True, exist_ok=True)
        cfg.save(folder)
        return cfg, folder
    if not cfg.run_dir:
        raise RunConfigError("run config resume=true needs run-dir, the folder of the run to continue")
    folder = cfg.folder()
    saved = RunConfig.saved(folder)
    saved.round_timeout, saved.connect_timeout = cfg.round_timeout, cfg.connect_timeout
    saved.run_dir, saved.resume = str(folder), True
    return saved, folder


def engine_of(grid: Grid) -> str:
    """simulation (Flower's in-memory grid) or deployment."""
    return "simulation" if "InMemory" in type(grid).__name__ else "deployment"


# Mistakes in the run's settings: said in one line by ecufl, then raised so Flower marks the run failed.
SETTINGS_ERRORS = (RunConfigError, LayersError)


class _NoTracebackForSettings(logging.Filter):
    """Flower logs any exception of a ServerApp with its traceback ("ServerApp raised an exception").
    For a mistake in the settings, which ecufl has already said in one line, that traceback is noise
    in `flwr run --stream` and `flwr log`: drop it, keep Flower's line and its failed status."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], SETTINGS_ERRORS):
            record.exc_info, record.exc_text = None, None
        return True


@app.main()
def main(grid: Grid, context: Context) -> None:
    flwr_log = logging.getLogger("flwr")
    if not any(isinstance(f, _NoTracebackForSettings) for f in flwr_log.filters):
        flwr_log.addFilter(_NoTracebackForSettings())
    try:
        spec, folder = resolve(dict(context.run_config))
    except RunConfigError as e:
        log.error("%s", e)
        raise
    results = Results(folder)
    # Our log lines go to the run's server.log and to Flower's own log stream (`flwr log RUN_ID`).
    handler = logging.FileHandler(results.dir / "server.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.handlers = [handler, *logging.getLogger("flwr").handlers]
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        engine = engine_of(grid)
        if engine == "deployment":
            quick_object_pulls()
        results.event("started", run_id=grid.run.run_id if hasattr(grid, "run") else None, spec=asdict(spec),
                      folder=str(folder))
        log.info("run %s in %s: %s, %s nodes, %d rounds%s", spec.name, folder, engine, spec.nodes or "all",
                 spec.rounds, " (resumed)" if spec.resume else "")
        summary = run(grid, spec, results, engine)
        results.event("done", **summary)
        log.info("run %s done: test accuracy %.4f; results: %s", spec.name, summary["test_accuracy"], folder)
    except Exception as e:
        results.event("failed", error=f"{type(e).__name__}: {e}", trace=traceback.format_exc(limit=5))
        if isinstance(e, SETTINGS_ERRORS):
            log.error("%s", e)
        raise
