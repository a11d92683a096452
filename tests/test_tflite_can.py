"""The TFLite kernel trains the CAN autoencoder (issue 17): the shipped 339-32-339 model (real-valued
targets, padding masked by sum(y) > 0) against the numpy reference, within the kernel's documented
tolerance (ATOL 1e-4, kernels/README.md "TFLite kernel"); one-line refusals; and (heavy, needs
TensorFlow) `ecufl tflite export` of the CAN shape writes the shipped model byte for byte."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from conftest import ecufl_cmd
from ecufl.kernels import EpochOrder, create, init_params, usable
from ecufl.kernels.tflite import catalog

ATOL = 1e-4  # kernels/README.md, "TFLite kernel"
CAN = [339, 32, 339]

needs_runtime = pytest.mark.skipif(not usable("tflite"), reason="no TFLite runtime here")


def max_abs(a, b) -> float:
    return max(float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64)))) for x, y in zip(a.flat(), b.flat()))


def windows(seconds: float) -> np.ndarray:
    from ecufl.can import fleetrun

    return fleetrun.training_windows(1, 0, seconds, 0.5)


@needs_runtime
@pytest.mark.parametrize("seconds", [300.0, 302.5])  # 600 windows; 605: a partial last mini-batch
def test_can_autoencoder_matches_the_reference(seconds):
    x = windows(seconds)
    p0 = init_params(CAN, 1, scaled=True, dtype="float64")
    ref64, ref32 = create("numpy", p0, dtype="float64"), create("numpy", p0.astype("float32"), dtype="float32")
    tfl = create("tflite", p0.astype("float32"))
    order = EpochOrder(len(x), 1)
    for _ in range(2):
        idx = order.next()
        for k in (ref64, ref32, tfl):
            k.train(x, x, idx, 1.0, 10)
    assert max_abs(ref32.get_params(), p0) > 0.1  # it trained
    assert max_abs(tfl.get_params(), ref32.get_params()) <= ATOL
    assert max_abs(tfl.get_params(), ref64.get_params()) <= ATOL
    e_tf, e_np = tfl.evaluate(x, x), ref32.evaluate(x, x)
    assert e_tf.loss == pytest.approx(e_np.loss, rel=1e-5) and abs(e_tf.correct - e_np.correct) <= 2


@needs_runtime
def test_one_line_refusals():
    x = np.random.default_rng(0).random((20, 10)).astype(np.float32)
    mnist = create("tflite", init_params([784, 32, 10], 1, dtype="float32"))
    with pytest.raises(ValueError) as e:  # real-valued targets on a model that masks by sum(y)
        mnist.train(np.zeros((20, 784), np.float32), x, np.arange(20), 1.0, 10)
    assert "one-hot labels only" in str(e.value) and "\n" not in str(e.value)
    ae = create("tflite", init_params(CAN, 1, scaled=True, dtype="float32"))
    y = np.random.default_rng(1).random((20, 339)).astype(np.float32)
    y[7] = 0
    with pytest.raises(ValueError) as e:  # an all-zero target row would be taken for padding
        ae.train(y, y, np.arange(20), 1.0, 10)
    assert "target row 7 is all zeros" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ValueError) as e:
        ae.train(np.zeros((20, 300), np.float32), y, np.arange(20), 1.0, 10)
    assert "339" in str(e.value) and "\n" not in str(e.value)


@needs_runtime
def test_the_fleet_node_check_accepts_tflite_for_can():
    from ecufl.client import can_task

    can_task.check_kernel("tflite", None, CAN)  # the shipped model; raises CanUnsupported otherwise


@pytest.mark.heavy
def test_cli_export_of_the_can_shape_is_the_shipped_model(tmp_path):
    pytest.importorskip("tensorflow")
    out = tmp_path / "m.tflite"
    r = subprocess.run(ecufl_cmd() + ["tflite", "export", "--layers", "339,32,339", "--batch-size", "10",
                                      "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == (catalog.PACKAGE_MODELS / catalog.model_filename(CAN, 10)).read_bytes()
