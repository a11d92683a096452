"""FedAvg against a hand computation, and the server's refusal of damaged replies (no processes)."""

from __future__ import annotations

import random

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Metadata, MetricRecord, RecordDict
from flwr.app.message import make_message

from ecufl.kernels import Params
from ecufl import wire
from ecufl.proto import RoundReport
from ecufl.server.strategy import ReportingFedAvg, check_reply

SIZES = [3, 2, 1]  # w1 (2,3) b1 (2,) w2 (1,2) b2 (1,)


def params_filled(value: float) -> Params:
    return Params([np.full((2, 3), value, np.float32), np.full((1, 2), value, np.float32)],
                  [np.full((2,), value, np.float32), np.full((1,), 10 * value, np.float32)])


def reply(node: int, partition: int, params: Params | None, samples: int, *, record: ArrayRecord | None = None,
          error: str = "") -> object:
    report = RoundReport(node_id=node, partition_id=partition, kernel="numpy", samples=samples, error=error)
    content = RecordDict({wire.METRICS: MetricRecord({wire.NUM_EXAMPLES: samples if not error else 0,
                                                      "loss": 0.5, "accuracy": 0.5, "train-seconds": 1.0}),
                          wire.REPORT: ConfigRecord({wire.REPORT_BYTES: report.SerializeToString()})})
    if record is None and params is not None:
        record = wire.params_to_record(params)
    if record is not None:
        content[wire.ARRAYS] = record
    meta = Metadata(run_id=1, message_id=f"m{node}", src_node_id=node, dst_node_id=0, reply_to_message_id=f"q{node}",
                    group_id="1", created_at=0.0, ttl=60.0, message_type="train")
    return make_message(meta, content=content)


def test_fedavg_matches_hand_computation():
    # Three clients holding 1, 3 and 4 samples, weights all 1.0, 2.0 and 4.0:
    #   (1*1 + 3*2 + 4*4) / (1 + 3 + 4) = 23/8 = 2.875  (biases of layer 2: ten times that, 28.75)
    strategy = ReportingFedAvg(sizes=SIZES, seed=1)
    replies = [reply(11, 0, params_filled(1.0), 1), reply(12, 1, params_filled(2.0), 3),
               reply(13, 2, params_filled(4.0), 4)]
    arrays, metrics = strategy.aggregate_train(1, replies)
    out = wire.record_to_params(arrays)
    assert out.dtype == np.float32
    for w in out.weights:
        np.testing.assert_allclose(w, 2.875, rtol=0, atol=1e-6)
    np.testing.assert_allclose(out.biases[0], 2.875, atol=1e-6)
    np.testing.assert_allclose(out.biases[1], 28.75, atol=1e-5)
    assert metrics["loss"] == pytest.approx(0.5)
    assert [r.accepted for r in strategy.replies[1]] == [True, True, True]
    assert [r.report.samples for r in strategy.replies[1]] == [1, 3, 4]  # every client's report is kept


def test_fedavg_random_weights_and_arrival_order():
    rng = np.random.default_rng(0)
    sizes = [784, 30, 10]
    clients = [(Params([rng.standard_normal((30, 784)).astype(np.float32), rng.standard_normal((10, 30)).astype(np.float32)],
                       [rng.standard_normal(30).astype(np.float32), rng.standard_normal(10).astype(np.float32)]),
                int(n)) for n in rng.integers(50, 15000, size=5)]
    total = sum(n for _, n in clients)
    expected = [sum(p.flat()[i].astype(np.float64) * n for p, n in clients) / total for i in range(4)]
    msgs = [reply(100 + k, k, p, n) for k, (p, n) in enumerate(clients)]
    first = wire.record_to_params(ReportingFedAvg(sizes=sizes, seed=1).aggregate_train(1, msgs)[0])
    for a, e in zip(first.flat(), expected):
        np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-5)
    random.Random(3).shuffle(msgs)  # replies arrive in another order: bit-identical average
    again = wire.record_to_params(ReportingFedAvg(sizes=sizes, seed=1).aggregate_train(1, msgs)[0])
    for a, b in zip(first.flat(), again.flat()):
        assert np.array_equal(a, b)


def _damaged(kind: str) -> ArrayRecord:
    p = params_filled(100.0)
    arrays = {k: np.array(a) for k, a in p.arrays().items()}
    if kind == "nan":
        arrays["w1"][0, 1] = np.nan
    elif kind == "inf":
        arrays["b2"][0] = -np.inf
    elif kind == "shape":
        arrays["w1"] = arrays["w1"][:, :2].copy()
    elif kind == "dtype":
        arrays = {k: a.astype(np.float64) for k, a in arrays.items()}
    elif kind == "names":
        arrays["w9"] = arrays.pop("w2")
    return ArrayRecord({k: Array(a) for k, a in arrays.items()})


@pytest.mark.parametrize("kind,reason", [("nan", "NaN/Inf in w1"), ("inf", "NaN/Inf in b2"),
                                         ("shape", "wrong shape: w1"), ("dtype", "wrong dtype: w1 is float64"),
                                         ("names", "wrong arrays")])
def test_damaged_reply_is_left_out(kind, reason, caplog):
    strategy = ReportingFedAvg(sizes=SIZES, seed=1)
    replies = [reply(21, 0, params_filled(1.0), 2), reply(22, 1, None, 5, record=_damaged(kind)),
               reply(23, 2, params_filled(3.0), 2)]
    with caplog.at_level("WARNING", logger="ecufl.server"):
        arrays, _ = strategy.aggregate_train(4, replies)
    out = wire.record_to_params(arrays)
    np.testing.assert_allclose(out.weights[0], 2.0, atol=1e-6)  # (1*2 + 3*2) / 4: the damaged one is out
    bad = [r for r in strategy.replies[4] if not r.accepted]
    assert len(bad) == 1 and bad[0].node_id == 22 and reason in bad[0].reason
    assert "node 22" in caplog.text and reason in caplog.text


def test_failed_client_is_reported_and_round_goes_on():
    strategy = ReportingFedAvg(sizes=SIZES, seed=1)
    replies = [reply(31, 0, None, 0, error="kernel 'c' is not available here"), reply(32, 1, params_filled(2.0), 4)]
    arrays, _ = strategy.aggregate_train(2, replies)
    np.testing.assert_allclose(wire.record_to_params(arrays).weights[0], 2.0)
    assert "not available" in strategy.replies[2][0].reason
    # every reply broken: no aggregate, the caller keeps the old weights
    assert ReportingFedAvg(sizes=SIZES, seed=1).aggregate_train(3, replies[:1]) == (None, None)


def test_check_reply_accepts_a_good_record():
    content = reply(1, 0, params_filled(1.0), 3).content
    assert check_reply(content, SIZES) == ""


def test_sampling_is_seeded_and_keeps_uint64_ids():
    ids = [2**64 - 5, 3, 2**63 + 7, 12345678901234567890, 42]
    s = ReportingFedAvg(sizes=SIZES, seed=9, fraction_train=0.6)
    picked = s.sample(2, ids)
    assert len(picked) == 3 and set(picked) <= set(ids)  # ids survive exactly (no float64 round trip)
    assert picked == s.sample(2, list(reversed(ids)))  # independent of the listing order
    assert ReportingFedAvg(sizes=SIZES, seed=9).sample(1, ids) == sorted(ids)  # fraction 1: everyone
