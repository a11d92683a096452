"""Robust, sample-weighted aggregation that keeps every client's RoundReport and refuses bad replies.

``ReportingFedAvg`` subclasses Flower's message-based ``FedAvg`` for sampling and message
construction, but decodes, checks and aggregates the replies itself, so that no reply, however it
is built, can raise out of ``aggregate_train`` or poison the global model:

- Every reply is decoded and checked inside one guard (``inspect``): the RoundReport bytes, the
  record layout (exactly one ArrayRecord ``arrays``, one MetricRecord ``metrics`` with known keys,
  one ConfigRecord ``report``), the weights (names, shapes, transport dtype, payload that decodes,
  finite values), ``num-examples`` (a finite positive whole number, equal to the report's
  ``samples`` and at most the shard size of the partition the client claims), the partition
  (in range, one node per partition per round) and the size of the update relative to the global
  model (``max_update_norm_ratio``). A failed check rejects the reply with its node id and a
  one-line reason (logged, kept in ``replies[round]``, counted in ``rejections``); the round goes
  on with the rest.
- Shard sizes come from the config the strategy itself sends (seed, split-alpha, train-limit,
  num-partitions, cut with ``ecufl.data.partition`` exactly as the clients cut them) or from the
  ``shard_sizes`` argument.
- Aggregators: ``fedavg`` (sum of w_k * n_k / sum(n), Flower's arithmetic), ``median``
  (coordinate-wise median, unweighted) and ``trimmed-mean`` (per coordinate, the
  ``trim_fraction`` largest and smallest values dropped, the rest averaged, unweighted).
- The aggregate is checked (finite) before it is returned; if it is not, the round keeps the old
  global model.
- Valid replies are aggregated in partition order, so the result is the same whatever order they
  arrived in (floating-point addition is not associative): a resumed run ends bit-identical.
- Clients are sampled from (seed, round), not from Python's global ``random``, for the same reason.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from ecufl import wire
from ecufl.proto import RoundReport

log = logging.getLogger("ecufl.server")

AGGREGATORS = ("fedavg", "median", "trimmed-mean")
DEFAULT_MAX_UPDATE_NORM_RATIO = 3.0  # honest local training: 0.2-0.35 (784-30-10, lr 3, 1-5 epochs)
DEFAULT_TRIM_FRACTION = 0.25
# What ecufl's client puts into its MetricRecord (client/client_app.py _reply); anything else is refused.
KNOWN_METRICS = frozenset({wire.NUM_EXAMPLES, "loss", "accuracy", "train-seconds"})
_MAX_REASON = 300


def one_line(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 3] + "..."


@dataclass
class Reply:
    node_id: int
    report: RoundReport
    accepted: bool
    reason: str = ""


@dataclass
class _Checked:
    report: RoundReport
    reason: str = ""
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    num_examples: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)


def shard_sizes(labels: np.ndarray, num_partitions: int, seed: int, alpha: float = 0.0,
                train_limit: int = 0) -> list[int]:
    """The number of samples of every partition, cut as the clients cut them (client/task.py ``shard``)."""
    from ecufl import data as mnist

    pool = labels[:train_limit] if train_limit else labels
    return [len(s) for s in mnist.partition(pool, num_partitions, seed, alpha=alpha or None)]


_SHARD_CACHE: dict[tuple, list[int]] = {}


def shard_sizes_for(config: ConfigRecord | dict) -> list[int] | None:
    """Shard sizes for the run described by a train config (None if it names no partitions)."""
    try:
        n = int(config.get("num-partitions", 0) or 0)
        key = (n, int(config.get("seed", 0)), float(config.get("split-alpha", 0.0) or 0.0),
               int(config.get("train-limit", 0) or 0))
    except (TypeError, ValueError):
        return None
    if n < 1:
        return None
    if key not in _SHARD_CACHE:
        from ecufl import data as mnist

        d = mnist.locate()  # the labels only: the images (47 MB) are not needed to cut the shards
        _SHARD_CACHE[key] = shard_sizes(mnist.read_labels(mnist._find(d, mnist.FILES[("train", "labels")])), *key)
    return _SHARD_CACHE[key]


def check_arrays(content: RecordDict, sizes: list[int],
                 dtype: str = wire.TRANSPORT_DTYPE) -> tuple[str, dict[str, np.ndarray]]:
    """(why the weights in ``content`` cannot be averaged or "", the decoded arrays)."""
    if wire.ARRAYS not in content.array_records:
        return "no weights in the reply", {}
    record: ArrayRecord = content.array_records[wire.ARRAYS]
    expected = wire.shape_of(sizes)
    if sorted(record.keys()) != sorted(expected):
        return f"wrong arrays {sorted(record.keys())}, expected {sorted(expected)}", {}
    for name, shape in expected.items():
        arr = record[name]
        if arr.dtype != dtype:
            return f"wrong dtype: {name} is {arr.dtype}, expected {dtype}", {}
        if tuple(arr.shape) != shape:
            return f"wrong shape: {name} is {tuple(arr.shape)}, expected {shape}", {}
    out: dict[str, np.ndarray] = {}
    for name in expected:
        values = record[name].numpy()
        if values.dtype != np.dtype(dtype) or values.shape != expected[name]:  # header and payload disagree
            return f"wrong payload: {name} decodes to {values.dtype} {values.shape}", {}
        if not np.all(np.isfinite(values)):
            return f"NaN/Inf in {name}", {}
        out[name] = values
    return "", out


def check_reply(content: RecordDict, sizes: list[int], dtype: str = wire.TRANSPORT_DTYPE) -> str:
    """Why the weights and num-examples in ``content`` cannot be averaged ("" if they can).

    Raises on undecodable content; ``ReportingFedAvg.inspect`` is the guarded, complete check."""
    reason, _ = check_arrays(content, sizes, dtype)
    if reason:
        return reason
    metrics = content.metric_records.get(wire.METRICS)
    n = metrics.get(wire.NUM_EXAMPLES) if metrics is not None else None
    if isinstance(n, bool) or not isinstance(n, (int, float)) or not (math.isfinite(n) and n > 0):
        return "num-examples missing or not positive"
    return ""


def decode_report(msg: Message) -> RoundReport:
    """The reply's RoundReport; raises (DecodeError, ...) on garbage bytes."""
    report = RoundReport()
    if msg.has_error():
        report.node_id = msg.metadata.src_node_id
        report.error = f"Flower error {msg.error.code}: {msg.error.reason}"
        return report
    record = msg.content.config_records.get(wire.REPORT)
    raw = record.get(wire.REPORT_BYTES) if record is not None else None
    if not isinstance(raw, bytes):
        report.node_id = msg.metadata.src_node_id
        report.error = "reply carries no RoundReport"
        return report
    report.ParseFromString(raw)
    return report


class ReportingFedAvg(FedAvg):
    """Flower FedAvg with guarded reply checks, bounded weights and updates, and robust aggregators.

    ``sizes``: layer sizes; ``seed``: sampling seed; ``fraction_train``: share of nodes per round;
    ``aggregator``: "fedavg" (default), "median" or "trimmed-mean"; ``trim_fraction``: share cut
    from each end per coordinate by trimmed-mean (0.25); ``max_update_norm_ratio``: a reply is
    refused when ||w_k - g|| > ratio * max(||g||, 1), g the global model sent this round (3.0;
    None or 0 turns the bound off); ``shard_sizes``: samples per partition (default: computed
    from the train config sent in ``configure_train``).
    """

    def __init__(self, *, sizes: list[int], seed: int, fraction_train: float = 1.0,
                 aggregator: str = "fedavg", trim_fraction: float = DEFAULT_TRIM_FRACTION,
                 max_update_norm_ratio: float | None = DEFAULT_MAX_UPDATE_NORM_RATIO,
                 shard_sizes: list[int] | None = None) -> None:
        super().__init__(fraction_train=fraction_train, fraction_evaluate=0.0, min_train_nodes=1,
                         min_evaluate_nodes=0, min_available_nodes=1, weighted_by_key=wire.NUM_EXAMPLES,
                         arrayrecord_key=wire.ARRAYS, configrecord_key=wire.CONFIG)
        if aggregator not in AGGREGATORS:
            raise ValueError(f"aggregator must be one of {', '.join(AGGREGATORS)}, not {aggregator!r}")
        if not 0.0 <= trim_fraction < 0.5:
            raise ValueError(f"trim_fraction must be in [0, 0.5), not {trim_fraction}")
        if max_update_norm_ratio is not None and not (math.isfinite(max_update_norm_ratio)
                                                      and max_update_norm_ratio >= 0):
            raise ValueError(f"max_update_norm_ratio must be a finite number >= 0, not {max_update_norm_ratio}")
        self.sizes = list(sizes)
        self.seed = seed
        self.aggregator = aggregator
        self.trim_fraction = float(trim_fraction)
        self.max_update_norm_ratio = max_update_norm_ratio or None
        self.shard_sizes: list[int] | None = list(shard_sizes) if shard_sizes is not None else None
        self.replies: dict[int, list[Reply]] = {}
        self.asked: dict[int, int] = {}
        self.partition_of: dict[int, int] = {}  # node id -> partition, learnt from its reports
        self.rejections: Counter[int] = Counter()  # node id -> replies refused over the run
        self.aggregate_refused: dict[int, str] = {}  # round -> why its aggregate was thrown away
        self._global: dict[int, dict[str, np.ndarray]] = {}  # round -> the weights sent (float64)

    # -- which clients train this round ---------------------------------------------------------
    def sample(self, server_round: int, node_ids: Iterable[int]) -> list[int]:
        nodes = sorted(node_ids)
        k = min(len(nodes), max(int(len(nodes) * self.fraction_train), self.min_train_nodes))
        rng = np.random.default_rng([self.seed, server_round])
        # Choose positions, not ids: node ids are uint64 and numpy would turn a mix of large and small
        # ones into float64, changing the ids.
        return sorted(nodes[int(i)] for i in rng.choice(len(nodes), size=k, replace=False)) if k else []

    def expect(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord | dict | None = None) -> None:
        """Remember what round ``server_round`` starts from: the global weights (the reference of the
        update bound) and, from the train config, the shard sizes (called by ``configure_train``)."""
        self._global = {r: g for r, g in self._global.items() if r >= server_round - 1}
        self._global[server_round] = {k: np.asarray(arrays[k].numpy(), dtype=np.float64) for k in arrays.keys()}
        if self.shard_sizes is None and config is not None:
            try:
                self.shard_sizes = shard_sizes_for(config)
            except Exception as e:  # noqa: BLE001 - no data here: bound by positivity only, say so
                log.warning("cannot compute the shard sizes (%s); num-examples is not bounded by them",
                            one_line(f"{type(e).__name__}: {e}"))

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        node_ids = self.sample(server_round, grid.get_node_ids())
        self.asked[server_round] = len(node_ids)
        config["server-round"] = server_round
        self.expect(server_round, arrays, config)
        record = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: config})
        return self._construct_messages(record, node_ids, MessageType.TRAIN)

    # -- what comes back --------------------------------------------------------------------------
    def rejection_counts(self) -> dict[int, int]:
        """Node id -> number of its replies refused so far in the run."""
        return dict(self.rejections)

    def inspect(self, msg: Message, server_round: int) -> _Checked:
        """Decode and check one reply; never raises (a failure is the reply's rejection reason)."""
        try:
            return self._inspect(msg, server_round)
        except Exception as e:  # noqa: BLE001 - whatever a peer sends, it only loses its own reply
            return _Checked(RoundReport(), one_line(f"malformed reply ({type(e).__name__}: {e})"))

    def _inspect(self, msg: Message, server_round: int) -> _Checked:
        try:
            report = decode_report(msg)
        except Exception as e:  # noqa: BLE001 - protobuf DecodeError, or bytes that are not bytes
            return _Checked(RoundReport(), one_line(f"undecodable RoundReport ({type(e).__name__}: {e})"))
        if report.error:
            return _Checked(report, one_line(report.error))
        content = msg.content
        for kind, records, wanted in (("ArrayRecord", content.array_records, wire.ARRAYS),
                                      ("MetricRecord", content.metric_records, wire.METRICS),
                                      ("ConfigRecord", content.config_records, wire.REPORT)):
            if list(records.keys()) != [wanted]:
                return _Checked(report, one_line(f"expected one {kind} '{wanted}', got {sorted(records.keys())}"))
        metrics = content.metric_records[wire.METRICS]
        extra = sorted(set(metrics.keys()) - KNOWN_METRICS)
        if extra:
            return _Checked(report, one_line(f"unexpected metric keys {extra}"))
        values: dict[str, float] = {}
        for key, value in metrics.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return _Checked(report, one_line(f"metric {key} is not a number ({type(value).__name__})"))
            values[key] = value
        reason, arrays = check_arrays(content, self.sizes)
        if reason:
            return _Checked(report, reason)
        n = values.get(wire.NUM_EXAMPLES)
        if n is None:
            return _Checked(report, "num-examples missing")
        if not (math.isfinite(n) and n > 0 and float(n).is_integer()):
            return _Checked(report, one_line(f"num-examples {n!r} is not a positive whole number"))
        if n != report.samples:
            return _Checked(report, f"num-examples {n:g} disagrees with the report's samples {report.samples}")
        if self.shard_sizes is not None:
            pid = report.partition_id
            if pid >= len(self.shard_sizes):
                return _Checked(report, f"partition {pid} outside 0..{len(self.shard_sizes) - 1}")
            if n > self.shard_sizes[pid]:
                return _Checked(report, f"num-examples {n:g} exceeds the {self.shard_sizes[pid]} samples "
                                        f"of partition {pid}")
        reference = self._global.get(server_round)
        if reference is not None and self.max_update_norm_ratio:
            if sorted(reference) != sorted(arrays):
                return _Checked(report, "the global model and the reply hold different arrays")
            g = math.sqrt(sum(float(np.sum(a * a)) for a in reference.values()))
            u = math.sqrt(sum(float(np.sum((arrays[k].astype(np.float64) - reference[k]) ** 2))
                              for k in arrays))
            bound = self.max_update_norm_ratio * max(g, 1.0)
            if not u <= bound:
                return _Checked(report, f"update norm {u:.4g} exceeds {self.max_update_norm_ratio:g} x the "
                                        f"global model's norm {g:.4g}")
        return _Checked(report, "", arrays, float(n), values)

    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        kept: list[tuple[int, int, _Checked]] = []
        claimed: dict[int, int] = {}  # partition -> node, this round
        self.replies[server_round] = []
        for msg in replies:
            try:
                node = int(msg.metadata.src_node_id)
            except Exception:  # noqa: BLE001 - a message without metadata has no node to blame
                node = 0
            checked = self.inspect(msg, server_round)
            report, reason = checked.report, checked.reason
            if report.ecufl_version:  # a real RoundReport (not an error made up by Flower or by us)
                self.partition_of[node] = report.partition_id
            if not reason and report.partition_id in claimed:
                reason = (f"partition {report.partition_id} was already claimed this round by node "
                          f"{claimed[report.partition_id]}")
            if reason:
                self.rejections[node] += 1
                log.warning("round %d: rejected the reply of node %d (partition %d, kernel %s): %s",
                            server_round, node, report.partition_id, one_line(report.kernel) or "?", reason)
            else:
                claimed[report.partition_id] = node
                kept.append((report.partition_id, node, checked))
            self.replies[server_round].append(Reply(node, report, not reason, reason))
        if not kept:
            log.warning("round %d: no usable reply; the global weights stay as they were", server_round)
            return None, None
        kept.sort(key=lambda t: (t[0], t[1]))
        checked = [c for _, _, c in kept]
        try:
            arrays = self._aggregate(checked)
        except Exception as e:  # noqa: BLE001 - never end the run over one round's arithmetic
            arrays, bad = None, one_line(f"{type(e).__name__}: {e}")
        else:
            bad = next((f"NaN/Inf in {k}" for k, a in arrays.items() if not np.all(np.isfinite(a))), "")
        if bad:
            self.aggregate_refused[server_round] = bad
            log.warning("round %d: the aggregate is unusable (%s); the global weights stay as they were",
                        server_round, bad)
            return None, None
        return ArrayRecord({k: Array(np.asarray(a)) for k, a in arrays.items()}), self._metrics(checked)

    def _aggregate(self, checked: list[_Checked]) -> dict[str, np.ndarray]:
        names = list(checked[0].arrays)
        if self.aggregator == "fedavg":  # Flower's aggregate_arrayrecords, step for step
            total = sum(c.num_examples for c in checked)
            out: dict[str, np.ndarray] = {}
            for c in checked:
                factor = c.num_examples / total
                for k in names:
                    if k not in out:
                        out[k] = c.arrays[k] * factor
                    else:
                        out[k] += c.arrays[k] * factor
            return out
        dtype = checked[0].arrays[names[0]].dtype
        out = {}
        for k in names:
            stack = np.stack([c.arrays[k].astype(np.float64) for c in checked])
            if self.aggregator == "median":
                agg = np.median(stack, axis=0)
            else:  # trimmed-mean
                cut = int(self.trim_fraction * len(checked))
                stack.sort(axis=0)
                agg = stack[cut:len(checked) - cut].mean(axis=0)
            out[k] = agg.astype(dtype)
        return out

    @staticmethod
    def _metrics(checked: list[_Checked]) -> MetricRecord:
        total = sum(c.num_examples for c in checked)
        keys = sorted(set.intersection(*(set(c.metrics) for c in checked)) - {wire.NUM_EXAMPLES})
        out = MetricRecord()
        for key in keys:
            value = sum(float(c.metrics[key]) * c.num_examples / total for c in checked)
            if math.isfinite(value):
                out[key] = value
        return out
