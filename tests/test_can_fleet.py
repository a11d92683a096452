"""The CAN workload on the Flower fleet (issue 17 item 5): run config and scenario checks, the
kernel check of a CAN node, the A9 estimate of an emulated CAN node, and (slow) a shortened
scenarios/can-fleet.toml on the 4-node fleet of test_fleet.py with emulated i.MX6 profiles."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import ROOT
from test_fleet import ecufl, fleet, results_of, rows  # noqa: F401 - fleet: the 4-node fleet fixture


def one_line(msg: str) -> bool:
    return "\n" not in msg and "Traceback" not in msg


# -- settings --------------------------------------------------------------------------------------
def test_run_config_can_keys_and_one_line_errors():
    from ecufl.runconfig import RunConfig, RunConfigError

    cfg = RunConfig.from_flat({"workload": "can", "layers": "339,32,339", "can-train-seconds": 60})
    assert cfg.workload == "can" and cfg.can_train_seconds == 60.0 and cfg.can_window == 0.5
    assert RunConfig.from_flat(cfg.to_flat()) == cfg
    for flat, expect in [({"workload": "video"}, "must be one of mnist, can"),
                         ({"workload": "can"}, "an autoencoder must end with its input size"),
                         ({"workload": "can", "layers": "339,32,339", "can-window": 100}, "between 0.05 and 60"),
                         ({"workload": "can", "layers": "339,32,339", "can-train-seconds": 10, "can-window": 5},
                          "fewer than 4 windows"),
                         ({"workload": "can", "layers": "339,32,339", "can-test-vehicles": 0}, "1..100")]:
        with pytest.raises(RunConfigError) as e:
            RunConfig.from_flat(flat)
        assert expect in str(e.value) and one_line(str(e.value))


def test_can_fleet_scenario_loads_and_bad_layers_are_one_line(tmp_path):
    from ecufl.scenarios.schema import ScenarioError, load

    sc = load(ROOT / "scenarios" / "can-fleet.toml")
    flat = sc.run_config()
    assert (flat["workload"], flat["nodes"], flat["layers"], flat["profile"]) == ("can", 8, "339,32,339", "imx6")
    assert (flat["can-train-seconds"], flat["can-test-vehicles"], flat["can-test-seconds"]) == (300.0, 2, 600.0)
    for text, expect in [
        ('workload = "can"\nnodes = 2\nrounds = 1\n', 'layers = "339,30,339"'),  # MNIST's layers
        ('workload = "can"\nnodes = 2\nrounds = 1\nlayers = [300, 32, 300]\n', "339 features"),
        ('workload = "can"\nnodes = 2\nrounds = 1\nlayers = [339, 32, 339]\n[can]\ntrain_seconds = 10.0\nwindow = 5.0\n',
         "fewer than 4 windows"),
        ('nodes = 2\nrounds = 1\n[can]\nwindow = 1.0\n', "only for workload = 'can'"),
        ('workload = "can"\nnodes = 2\nrounds = 1\nlayers = [339, 32, 339]\n[can]\nwindows = 1.0\n', "unknown key"),
    ]:
        path = tmp_path / "s.toml"
        path.write_text(text)
        with pytest.raises(ScenarioError) as e:
            load(path)
        assert expect in str(e.value) and one_line(str(e.value)), str(e.value)


def test_server_refuses_layers_that_do_not_fit_the_windows(tmp_path):
    from ecufl.can.fleetrun import LayersError
    from ecufl.runconfig import RunConfig
    from ecufl.server.can_eval import Evaluator

    spec = RunConfig(workload="can", layers=[340, 32, 340], can_test_seconds=20)
    with pytest.raises(LayersError) as e:
        Evaluator(spec, tmp_path)
    assert "339" in str(e.value) and one_line(str(e.value))


def test_server_scores_and_writes_the_comparison(tmp_path):
    from ecufl.kernels import init_params
    from ecufl.runconfig import RunConfig
    from ecufl.server.can_eval import Evaluator

    spec = RunConfig(workload="can", layers=[339, 8, 339], nodes=2, rounds=1, lr=1.0, can_train_seconds=20,
                     can_test_vehicles=1, can_test_seconds=40)
    ev = Evaluator(spec, tmp_path)
    assert ev.shard_sizes(2) == [40, 40]
    params = init_params(spec.layers, spec.seed, scaled=True, dtype="float32")
    loss, acc, _ = ev.evaluate(params)
    assert loss > 0 and 0 <= acc <= 1
    summary = ev.final(params)
    def no_nan(name):
        raise AssertionError(f"can-metrics.json holds {name}")

    metrics = json.loads((tmp_path / "can-metrics.json").read_text(), parse_constant=no_nan)  # strict JSON
    assert metrics["local"]["models"] == 2 and metrics["centralised"]["models"] == 1
    assert set(metrics["fleet_calibrated"]) == {"federated", "local", "centralised"}
    assert set(summary["can_f1"]) == set(metrics["federated"]["families"])
    assert (tmp_path / "can-table.md").read_text().count("| false alarms per hour |") == 2


# -- the node --------------------------------------------------------------------------------------
def test_vehicles_differ_and_repeat():
    from ecufl.can import fleetrun

    a = fleetrun.training_windows(5, 0, 20, 0.5)
    b = fleetrun.training_windows(5, 1, 20, 0.5)
    assert a.shape == b.shape == (40, fleetrun.feature_count(0.5)) and a.dtype == np.float32
    assert not np.array_equal(a, b)  # two vehicles, two traffics
    fleetrun.vehicle_windows.cache_clear()
    assert np.array_equal(a, fleetrun.training_windows(5, 0, 20, 0.5))  # from the seed alone


def test_kernel_check_accepts_the_reference_and_refuses_others_in_one_line(monkeypatch):
    from ecufl.client import can_task

    sizes = [339, 32, 339]
    for name in ("numpy", "textbook"):
        can_task.check_kernel(name, None, sizes)
    for name in ("c", "eigen", "int8", "int8-numpy"):  # int8: within its own documented tolerance
        can_task.check_kernel(name, None, [40, 12, 40])
    with pytest.raises(can_task.CanUnsupported) as e:
        can_task.check_kernel("remote", None, sizes)
    assert one_line(str(e.value))

    from ecufl.kernels import create as real_create

    class MnistOnly:  # reads the targets as class indices, as the MNIST-only kernels did
        def __init__(self, params, dtype=None):
            self.k = real_create("numpy", params, dtype="float32")

        def train(self, images, labels, order, lr, batch_size):
            self.k.train(images, np.argmax(labels, axis=1), order, lr, batch_size)

        def get_params(self):
            return self.k.get_params()

        def close(self):
            pass

    monkeypatch.setattr(can_task, "create", lambda name, params, dtype=None: (
        MnistOnly(params) if name == "numpy" and dtype == "float32" else real_create(name, params, dtype=dtype)))
    with pytest.raises(can_task.CanUnsupported) as e:
        can_task.check_kernel("numpy", "float32", [20, 4, 20])
    assert "differ from the numpy reference" in str(e.value) and one_line(str(e.value))


def test_kernel_without_a_model_of_the_can_shape_is_one_line():
    from ecufl.client import can_task
    from ecufl.kernels import usable

    if not usable("tflite"):
        pytest.skip("no TFLite runtime here")
    try:
        can_task.check_kernel("tflite", None, [339, 31, 339])  # no shipped model of this shape
    except can_task.CanUnsupported as e:
        assert one_line(str(e)) and "tflite" in str(e)


def test_emulated_profile_estimates_board_seconds():
    from ecufl.can import fleetrun
    from ecufl.client import can_task, runner
    from ecufl.kernels import init_params

    x = fleetrun.training_windows(1, 0, 20, 0.5)
    job = runner.TrainJob(kernel="numpy", dtype="float32", profile="imx6",
                          params=init_params([339, 16, 339], 1, scaled=True, dtype="float32"),
                          shard=np.arange(len(x)), lr=1.0, batch_size=10, epochs=2, order_seed=3)
    out = can_task.train(job, x)
    host = can_task.train(runner.TrainJob(**{**job.__dict__, "profile": "host"}), x)
    assert out.board_seconds_projected is not None and 0 < out.board_seconds_projected < 1
    assert "estimated" in out.trainer and host.board_seconds_projected is None
    for a, b in zip(out.params.flat(), host.params.flat()):  # the same training either way
        assert np.array_equal(a, b)
    slower = can_task.train(runner.TrainJob(**{**job.__dict__, "profile": "imx6-792"}), x)
    assert slower.board_seconds_projected == pytest.approx(out.board_seconds_projected * 1000 / 792)


# -- end to end ------------------------------------------------------------------------------------
SHORT = """\
workload = "can"
nodes = 4
rounds = 2
seed = 3
layers = [339, 32, 339]
lr = 1.0
local_epochs = 1
kernels = ["c", "numpy:float32", "textbook", "remote"]
profile = "imx6"
round_timeout = 120.0
[can]
train_seconds = 30.0
test_vehicles = 1
test_seconds = 60.0
"""


@pytest.mark.slow
def test_can_fleet_shortened_end_to_end(fleet, tmp_path):  # noqa: F811
    """scenarios/can-fleet.toml shortened (4 vehicles, 2 rounds, 30 s each, one unseen vehicle),
    on the 4-node fleet of test_fleet.py with emulated i.MX6 profiles: vehicle 0 trains with the
    ARM build of c under qemu (counted instructions; where qemu is missing, the estimate), 1 and 2
    with kernels that have no ARM build (estimated A9 seconds), the fourth's kernel cannot train
    the autoencoder (one line in its report); metrics per family for federated, local-only and
    centralised; projected A9 seconds per client and round; under a minute here."""
    from ecufl.kernels.arm.emulate import have_toolchain

    path = tmp_path / "can-short.toml"
    path.write_text(SHORT)
    proc = ecufl("fleet", "run", str(path), "--state", str(fleet), "--results", str(tmp_path), timeout=300)
    assert "Traceback" not in proc.stdout + proc.stderr
    res = results_of(proc)
    rounds = rows(res / "rounds.csv")
    clients = rows(res / "clients.csv")
    assert [int(r["round"]) for r in rounds] == [0, 1, 2]
    assert float(rounds[2]["test_loss"]) < float(rounds[0]["test_loss"])  # the fleet's autoencoder learned
    for rnd in (1, 2):
        mine = sorted((c for c in clients if int(c["round"]) == rnd), key=lambda c: int(c["partition_id"]))
        assert [c["accepted"] for c in mine] == ["1", "1", "1", "0"], rnd
        assert "ecufl does not put them there yet" in mine[3]["error"] and one_line(mine[3]["error"])
        for c in mine[:3]:
            assert c["profile"] == "imx6" and int(c["samples"]) == 60
            assert float(c["projected_seconds"]) == float(c["board_seconds_projected"]) > 0
        assert "estimated" in mine[1]["trainer"] and "estimated" in mine[2]["trainer"]
        if have_toolchain() is None:
            assert mine[0]["trainer"].startswith("qemu-arm -cpu cortex-a9") and int(mine[0]["arm_instructions"]) > 0
        assert float(rounds[rnd]["virtual_seconds"]) == pytest.approx(
            max(float(c["client_virtual_seconds"]) for c in mine[:3]))
    # warm nodes: the vehicle's windows, made once in round 1, came with the fork in round 2
    later = [c for c in clients if int(c["round"]) == 2 and int(c["partition_id"]) < 3]
    assert all(c["client_process"] == "forked" and float(c["data_seconds"]) == 0 for c in later), \
        [(c["client_process"], c["data_seconds"]) for c in later]
    metrics = json.loads((res / "can-metrics.json").read_text())
    assert set(metrics) >= {"federated", "local", "centralised", "settings"}
    assert metrics["local"]["models"] == 4 and metrics["settings"]["test_vehicle_seeds"] == [1003]
    fams = metrics["federated"]["families"]
    assert fams and all(0 <= m["f1"] <= 1 and m["attacks"] >= 1 for m in fams.values())
    assert "| false alarms per hour |" in (res / "can-table.md").read_text()
    summary = json.loads((res / "summary.json").read_text())
    assert set(summary["can_f1"]) == set(fams)
