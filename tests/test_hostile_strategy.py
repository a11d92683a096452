"""Hostile replies against the server's strategy, built as real Flower Messages (issue 15, defect 1).

Each case is one reply a broken or malicious client can send. On 4f64f11 the first four raised out
of ``aggregate_train`` (ending the run) and the rest were averaged into the global model; now each
is rejected with its node id and a one-line reason, counted per node, and the honest replies
make the round.
"""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Error, ConfigRecord, Metadata, MetricRecord, RecordDict
from flwr.app.message import make_message

from ecufl import data as mnist
from ecufl.kernels import Params
from ecufl import wire
from ecufl.proto import RoundReport
from ecufl.server.strategy import ReportingFedAvg, shard_sizes, shard_sizes_for

SIZES = [3, 2, 1]  # w1 (2,3) b1 (2,) w2 (1,2) b2 (1,)
SHARDS = [10, 10, 10, 10]
HOSTILE = 99  # the hostile node's id; honest nodes are 11, 12, 13 on partitions 0, 1, 2


def filled(value: float) -> Params:
    return Params([np.full((2, 3), value, np.float32), np.full((1, 2), value, np.float32)],
                  [np.full((2,), value, np.float32), np.full((1,), value, np.float32)])


def message(node: int, content: RecordDict):
    meta = Metadata(run_id=1, message_id=f"m{node}", src_node_id=node, dst_node_id=0, reply_to_message_id=f"q{node}",
                    group_id="1", created_at=0.0, ttl=60.0, message_type="train")
    return make_message(meta, content=content)


def content_of(partition: int, params: Params, samples: int = 8, *, num_examples=None,
               report_bytes: bytes | None = None) -> RecordDict:
    report = RoundReport(node_id=1, partition_id=partition, kernel="numpy", samples=samples, ecufl_version="test")
    metrics = MetricRecord({wire.NUM_EXAMPLES: samples if num_examples is None else num_examples,
                            "loss": 0.5, "accuracy": 0.5, "train-seconds": 1.0})
    return RecordDict({wire.METRICS: metrics, wire.ARRAYS: wire.params_to_record(params),
                       wire.REPORT: ConfigRecord({wire.REPORT_BYTES: report_bytes if report_bytes is not None
                                                  else report.SerializeToString()})})


def honest() -> list:
    return [message(11, content_of(0, filled(1.0))), message(12, content_of(1, filled(1.2))),
            message(13, content_of(2, filled(1.4)))]


def hostile(kind: str):
    c = content_of(3, filled(1.1))
    if kind == "garbage-report":
        c = content_of(3, filled(1.1), report_bytes=b"\xff\xff\xff\xff garbage")
    elif kind == "truncated-npy":
        good = c.array_records[wire.ARRAYS]["w1"]
        arrays = dict(c.array_records[wire.ARRAYS].items())
        arrays["w1"] = Array(dtype=good.dtype, shape=tuple(good.shape), stype=good.stype, data=good.data[:-7])
        c[wire.ARRAYS] = ArrayRecord(arrays)
    elif kind == "extra-metric":
        c.metric_records[wire.METRICS]["sneaky"] = 1.0
    elif kind == "list-metric":
        c.metric_records[wire.METRICS]["loss"] = [0.1, 0.2]
    elif kind == "second-arrayrecord":
        c["more"] = wire.params_to_record(filled(5.0))
    elif kind == "second-metricrecord":
        c["more-metrics"] = MetricRecord({wire.NUM_EXAMPLES: 3})
    elif kind == "num-examples-inf":
        c = content_of(3, filled(1.1), num_examples=float("inf"))
    elif kind == "num-examples-nan":
        c = content_of(3, filled(1.1), num_examples=float("nan"))
    elif kind == "num-examples-huge":  # weights 100 claiming 1e9 samples (report agrees)
        c = content_of(3, filled(100.0), samples=1_000_000_000)
    elif kind == "num-examples-disagrees":
        c = content_of(3, filled(1.1), samples=8, num_examples=9)
    elif kind == "num-examples-fraction":
        c = content_of(3, filled(1.1), num_examples=7.5)
    elif kind == "weights-1e30":
        c = content_of(3, filled(1e30))
    elif kind == "weights-100":
        c = content_of(3, filled(100.0))
    elif kind == "partition-out-of-range":
        c = content_of(7, filled(1.1))
    elif kind == "partition-taken":
        c = content_of(0, filled(1.1))
    elif kind == "no-report-record":
        del c[wire.REPORT]
    elif kind == "report-not-bytes":
        c[wire.REPORT] = ConfigRecord({wire.REPORT_BYTES: "text"})
    else:
        raise AssertionError(kind)
    return message(HOSTILE, c)


CASES = {
    "garbage-report": "undecodable RoundReport",
    "truncated-npy": "malformed reply",
    "extra-metric": "unexpected metric keys ['sneaky']",
    "list-metric": "metric loss is not a number",
    "second-arrayrecord": "expected one ArrayRecord 'arrays'",
    "second-metricrecord": "expected one MetricRecord 'metrics'",
    "num-examples-inf": "num-examples inf is not a positive whole number",
    "num-examples-nan": "num-examples nan is not a positive whole number",
    "num-examples-huge": "num-examples 1e+09 exceeds the 10 samples of partition 3",
    "num-examples-disagrees": "disagrees with the report's samples 8",
    "num-examples-fraction": "num-examples 7.5 is not a positive whole number",
    "weights-1e30": "update norm",
    "weights-100": "update norm",
    "partition-out-of-range": "partition 7 outside 0..3",
    "partition-taken": "partition 0 was already claimed this round by node 11",
    "no-report-record": "reply carries no RoundReport",
    "report-not-bytes": "reply carries no RoundReport",
}


def strategy(**kw) -> ReportingFedAvg:
    s = ReportingFedAvg(sizes=SIZES, seed=1, shard_sizes=SHARDS, **kw)
    s.expect(1, wire.params_to_record(filled(1.0)))  # what configure_train records: the global model sent
    return s


@pytest.mark.parametrize("kind", sorted(CASES))
def test_hostile_reply_is_rejected_and_honest_model_kept(kind, caplog):
    s = strategy()
    replies = honest()
    replies.insert(1, hostile(kind))  # arrival order must not matter
    with caplog.at_level("WARNING", logger="ecufl.server"):
        arrays, metrics = s.aggregate_train(1, replies)
    out = wire.record_to_params(arrays)
    np.testing.assert_allclose(out.weights[0], 1.2, atol=1e-6)  # the three honest clients, 8 samples each
    bad = [r for r in s.replies[1] if not r.accepted]
    assert [r.node_id for r in bad] == [HOSTILE], [(r.node_id, r.reason) for r in bad]
    assert CASES[kind] in bad[0].reason
    assert "\n" not in bad[0].reason and len(bad[0].reason) <= 300
    assert f"node {HOSTILE}" in caplog.text
    assert s.rejection_counts() == {HOSTILE: 1}
    assert metrics["loss"] == pytest.approx(0.5)


def test_a_flower_error_reply_is_rejected():
    s = strategy()
    replies = honest()
    error_reply = make_message(replies[0].metadata, error=Error(code=3, reason="Node Unavailable"))
    arrays, _ = s.aggregate_train(1, [error_reply, *replies[1:]])
    assert not s.replies[1][0].accepted and "Node Unavailable" in s.replies[1][0].reason
    np.testing.assert_allclose(wire.record_to_params(arrays).weights[0], 1.3, atol=1e-6)


def test_rejections_are_counted_per_node_over_rounds():
    s = strategy()
    for rnd in (1, 2):
        s.expect(rnd, wire.params_to_record(filled(1.0)))
        s.aggregate_train(rnd, [*honest(), hostile("weights-1e30")])
    assert s.rejection_counts() == {HOSTILE: 2}


def test_only_hostile_replies_keep_the_old_model():
    s = strategy()
    assert s.aggregate_train(1, [hostile("garbage-report"), hostile("weights-1e30")]) == (None, None)
    assert [r.accepted for r in s.replies[1]] == [False, False]


def test_update_norm_bound_is_configurable():
    relaxed = strategy(max_update_norm_ratio=None)
    arrays, _ = relaxed.aggregate_train(1, [*honest(), hostile("weights-100")])
    assert wire.record_to_params(arrays).weights[0][0, 0] > 20  # unbounded: one client drags the model
    tight = strategy(max_update_norm_ratio=0.1)  # 0.1 x |g|: the 1.4 client (update 0.4 per weight) is refused
    tight.aggregate_train(1, honest())
    assert [r.accepted for r in tight.replies[1]] == [True, False, False]


def test_aggregate_is_checked_before_it_replaces_the_model():
    # Three float32-max clients (1, 8 and 1 samples): each passes every check (bound off), but their
    # weighted sum rounds up to inf in float32. The round keeps the old model, not one of infinities.
    top = float(np.finfo(np.float32).max)
    s = ReportingFedAvg(sizes=SIZES, seed=1, max_update_norm_ratio=None)
    replies = [message(40 + k, content_of(k, filled(top), samples=n)) for k, n in enumerate((1, 8, 1))]
    arrays, metrics = s.aggregate_train(1, replies)
    assert (arrays, metrics) == (None, None)
    assert "NaN/Inf" in s.aggregate_refused[1]


@pytest.mark.parametrize("aggregator", ["median", "trimmed-mean"])
def test_robust_aggregators_ignore_one_outlier(aggregator):
    s = strategy(aggregator=aggregator, max_update_norm_ratio=None, trim_fraction=0.25)
    replies = [*honest(), hostile("weights-100")]  # accepted (bound off): the aggregator must cope
    arrays, _ = s.aggregate_train(1, replies)
    out = wire.record_to_params(arrays)
    assert all(r.accepted for r in s.replies[1])
    expected = 1.3 if aggregator == "median" else 1.3  # median of 1,1.2,1.4,100; mean of 1.2,1.4
    np.testing.assert_allclose(out.weights[0], expected, atol=1e-6)
    assert out.dtype == np.float32


def test_fedavg_unchanged_for_honest_replies():
    s = strategy()
    arrays, _ = s.aggregate_train(1, [message(11, content_of(0, filled(1.0), samples=2)),
                                      message(12, content_of(1, filled(3.0), samples=6))])
    np.testing.assert_allclose(wire.record_to_params(arrays).weights[0], 2.5, atol=1e-6)


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="aggregator"):
        ReportingFedAvg(sizes=SIZES, seed=1, aggregator="mean")
    with pytest.raises(ValueError, match="trim_fraction"):
        ReportingFedAvg(sizes=SIZES, seed=1, trim_fraction=0.5)
    with pytest.raises(ValueError, match="max_update_norm_ratio"):
        ReportingFedAvg(sizes=SIZES, seed=1, max_update_norm_ratio=float("nan"))


def test_shard_sizes_come_from_the_train_config_as_the_clients_cut_them(mnist_train, monkeypatch, mnist_dir):
    monkeypatch.setenv("ECUFL_DATA", str(mnist_dir))
    config = ConfigRecord({"num-partitions": 4, "seed": 3, "split-alpha": 0.5, "train-limit": 2000})
    sizes = shard_sizes_for(config)
    cut = mnist.partition(mnist_train.labels[:2000], 4, 3, alpha=0.5)
    assert sizes == [len(c) for c in cut] == shard_sizes(mnist_train.labels, 4, 3, 0.5, 2000)
    assert sum(sizes) == 2000 and len(set(sizes)) > 1  # label skew: unequal shards
    s = ReportingFedAvg(sizes=SIZES, seed=1)
    s.expect(1, wire.params_to_record(filled(1.0)), config)
    assert s.shard_sizes == sizes
    big = max(range(4), key=lambda k: sizes[k])
    small = min(range(4), key=lambda k: sizes[k])
    s.aggregate_train(1, [message(11, content_of(small, filled(1.0), samples=sizes[big]))])
    assert not s.replies[1][0].accepted and f"exceeds the {sizes[small]} samples" in s.replies[1][0].reason
