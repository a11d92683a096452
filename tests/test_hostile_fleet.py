"""One hostile ECU among four on a real fleet (issue 15): every attack, one per round, and the run ends
with the model of the same run in which that ECU's replies were all refused.

The fleet is real (flower-superlink + 4 flower-supernode processes on loopback); the hostile ECU is
ecufl's own ClientApp wrapped in a Flower mod (tests/hostile_app.py, submitted as a Flower App of
its own). On 4f64f11 the first attack (garbage RoundReport bytes) ended the run.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT
from test_fleet import SMALL, alive, ecufl, family, pids_of, rows, scenario

pytestmark = pytest.mark.slow
ATTACKS = ["garbage-report", "truncated-npy", "extra-metric", "second-arrayrecord", "num-examples-inf",
           "num-examples-huge", "weights-1e30", "weights-100"]
REASONS = {"garbage-report": "undecodable RoundReport", "truncated-npy": "malformed reply",
           "extra-metric": "unexpected metric keys ['sneaky']", "second-arrayrecord": "expected one ArrayRecord",
           "num-examples-inf": "num-examples inf is not a positive whole number",
           "num-examples-huge": "exceeds the 500 samples of partition 3",
           "weights-1e30": "update norm", "weights-100": "update norm"}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, mnist_dir):
    state = tmp_path_factory.mktemp("hostile-fleet") / "state"
    ecufl("fleet", "up", "--nodes", "4", "--kernels", "numpy:float32", "--state", str(state), timeout=180)
    families = [p for pid in pids_of(state) for p in family(pid)]
    yield state
    ecufl("fleet", "down", "--state", str(state), check=False)
    time.sleep(0.5)
    assert not [p for p in families if alive(p)]


def run(fleet: Path, tmp_path: Path, name: str, hostile: str) -> Path:
    from ecufl.fleet import launch, local
    from ecufl.scenarios.schema import load
    from hostile_app import build_app

    sc = load(scenario(tmp_path, name, SMALL.format(rounds=len(ATTACKS))))
    res = tmp_path / "r" / name
    launch.run_deployment(local.FleetState.load(fleet), sc.config(), res, app=build_app(tmp_path / f"app-{name}", ROOT),
                          extra={"hostile": hostile})
    return res


def test_hostile_ecu_changes_nothing(fleet, tmp_path):
    from ecufl.kernels import weights

    attacked = run(fleet, tmp_path, "attacked", "3:" + "/".join(ATTACKS))
    without = run(fleet, tmp_path, "without", "3:refused")
    # every round finished with the three honest replies, the hostile one refused with its reason
    for res in (attacked, without):
        rounds = rows(res / "rounds.csv")
        assert [(r["clients_replied"], r["clients_accepted"]) for r in rounds[1:]] == [("4", "3")] * len(ATTACKS)
    clients = [c for c in rows(attacked / "clients.csv") if not int(c["accepted"])]
    assert len(clients) == len(ATTACKS)
    for c, a in zip(sorted(clients, key=lambda c: int(c["round"])), ATTACKS):
        assert REASONS[a] in c["reject_reason"], (a, c["reject_reason"])
    log = (attacked / "server.log").read_text()
    assert log.count("rejected the reply of node") == len(ATTACKS)
    # the same model as the run without the hostile ECU, bit for bit (aggregation in partition order)
    a, _ = weights.load(attacked / "final.npz")
    w, _ = weights.load(without / "final.npz")
    for x, y in zip(a.flat(), w.flat()):
        assert np.array_equal(x, y)
    acc_a = float(rows(attacked / "rounds.csv")[-1]["test_accuracy"])
    acc_w = float(rows(without / "rounds.csv")[-1]["test_accuracy"])
    assert acc_a == acc_w and acc_a > float(rows(attacked / "rounds.csv")[0]["test_accuracy"]) + 0.2
    summary = json.loads((attacked / "summary.json").read_text())
    assert summary["rounds"] == len(ATTACKS)
    # the count per node: only the hostile node, once per attack
    assert summary["rejected_replies"] == {clients[0]["node_id"]: len(ATTACKS)}, summary["rejected_replies"]
    assert {c["node_id"] for c in clients} == {clients[0]["node_id"]}
