"""Sample-weighted FedAvg that keeps every client's RoundReport and refuses damaged weights.

``ReportingFedAvg`` subclasses Flower's message-based ``FedAvg`` and leaves the averaging to it
(``aggregate_arrayrecords``: sum of w_k * n_k / sum(n), n_k = num-examples). Around it:

- ``check_reply`` rejects a reply whose weights hold NaN/Inf, have the wrong names or shapes or are
  not in the transport dtype; the rejection is logged with the node id and kept in ``rejected``, the
  reply is left out, and the round goes on with the rest.
- Every reply's RoundReport is decoded and kept per round (``reports[round]``), rejected or not.
- Valid replies are averaged in partition order, so the sum is the same whatever order they
  arrived in (floating-point addition is not associative): a resumed run ends bit-identical.
- Clients are sampled from (seed, round), not from Python's global ``random``, for the same reason.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from ecufl.proto import RoundReport, wire

log = logging.getLogger("ecufl.server")


@dataclass
class Reply:
    node_id: int
    report: RoundReport
    accepted: bool
    reason: str = ""


def check_reply(content: RecordDict, sizes: list[int], dtype: str = wire.TRANSPORT_DTYPE) -> str:
    """Why the weights in ``content`` cannot be averaged ("" if they can)."""
    if wire.ARRAYS not in content.array_records:
        return "no weights in the reply"
    record: ArrayRecord = content.array_records[wire.ARRAYS]
    expected = wire.shape_of(sizes)
    if sorted(record.keys()) != sorted(expected):
        return f"wrong arrays {sorted(record.keys())}, expected {sorted(expected)}"
    for name, shape in expected.items():
        arr = record[name]
        if arr.dtype != dtype:
            return f"wrong dtype: {name} is {arr.dtype}, expected {dtype}"
        if tuple(arr.shape) != shape:
            return f"wrong shape: {name} is {tuple(arr.shape)}, expected {shape}"
    for name in expected:
        values = record[name].numpy()
        if values.dtype != np.dtype(dtype) or values.shape != expected[name]:  # header and payload disagree
            return f"wrong payload: {name} decodes to {values.dtype} {values.shape}"
        if not np.all(np.isfinite(values)):
            return f"NaN/Inf in {name}"
    metrics = content.metric_records.get(wire.METRICS)
    if metrics is None or not metrics.get(wire.NUM_EXAMPLES, 0) > 0:
        return "num-examples missing or not positive"
    return ""


def decode_report(msg: Message) -> RoundReport:
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
    def __init__(self, *, sizes: list[int], seed: int, fraction_train: float = 1.0) -> None:
        super().__init__(fraction_train=fraction_train, fraction_evaluate=0.0, min_train_nodes=1,
                         min_evaluate_nodes=0, min_available_nodes=1, weighted_by_key=wire.NUM_EXAMPLES,
                         arrayrecord_key=wire.ARRAYS, configrecord_key=wire.CONFIG)
        self.sizes = list(sizes)
        self.seed = seed
        self.replies: dict[int, list[Reply]] = {}
        self.asked: dict[int, int] = {}
        self.partition_of: dict[int, int] = {}  # node id -> partition, learnt from its reports

    # -- which clients train this round ---------------------------------------------------------
    def sample(self, server_round: int, node_ids: Iterable[int]) -> list[int]:
        nodes = sorted(node_ids)
        k = min(len(nodes), max(int(len(nodes) * self.fraction_train), self.min_train_nodes))
        rng = np.random.default_rng([self.seed, server_round])
        # Choose positions, not ids: node ids are uint64 and numpy would turn a mix of large and small
        # ones into float64, changing the ids.
        return sorted(nodes[int(i)] for i in rng.choice(len(nodes), size=k, replace=False)) if k else []

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        node_ids = self.sample(server_round, grid.get_node_ids())
        self.asked[server_round] = len(node_ids)
        config["server-round"] = server_round
        record = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: config})
        return self._construct_messages(record, node_ids, MessageType.TRAIN)

    # -- what comes back --------------------------------------------------------------------------
    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        kept: list[tuple[int, Message]] = []
        self.replies[server_round] = []
        for msg in replies:
            report = decode_report(msg)
            node = msg.metadata.src_node_id
            if report.ecufl_version:  # a real RoundReport (not an error made up by Flower or by us)
                self.partition_of[node] = report.partition_id
            reason = report.error or check_reply(msg.content, self.sizes)
            if reason:
                log.warning("round %d: rejected the reply of node %d (partition %d, kernel %s): %s",
                            server_round, node, report.partition_id, report.kernel or "?", reason)
            else:
                kept.append((report.partition_id, msg))
            self.replies[server_round].append(Reply(node, report, not reason, reason))
        if not kept:
            log.warning("round %d: no usable reply; the global weights stay as they were", server_round)
            return None, None
        kept.sort(key=lambda pm: (pm[0], pm[1].metadata.src_node_id))
        return super().aggregate_train(server_round, [m for _, m in kept])
