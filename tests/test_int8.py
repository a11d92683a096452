"""The int8 kernels: the numpy scheme against the float reference, and the C paths bit for bit.

Bit-exactness is checked on integers and bit patterns, never with a tolerance: the float32
master weights (as uint32), the int8 weights, their scales, every layer's q7 activations and the
last layer's z, after a few hundred SGD steps from the project's PRNG and shuffle.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import ecufl_cmd
from ecufl.kernels import EpochOrder, create, init_params, kernel_class
from ecufl.kernels.int8 import reference as ref

INT8_DIR = Path(ref.__file__).parent


def bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


def assert_same_state(k, numpy_kernel, images) -> None:
    """Masters (bit patterns), int8 weights, scales, activations and z all equal."""
    net = numpy_kernel.net
    for l, (a, b) in enumerate(zip(k.get_params().flat(), numpy_kernel.get_params().flat())):
        assert np.array_equal(bits(a), bits(b)), f"array {l}: max diff {np.abs(a - b).max()}"
    for l in range(len(net.wq)):
        wq, maxabs = k.quantised(l)
        assert np.array_equal(wq, net.wq[l]), f"wq{l + 1}"
        assert bits(np.float32(maxabs)) == bits(net.maxabs[l]), f"maxabs{l + 1}"
    acts, z = k.forward_trace(images)
    ref_acts, ref_z = net.forward(ref.input_q(images))
    for l, (a, b) in enumerate(zip(acts, ref_acts)):
        assert np.array_equal(a, b), f"activations of layer {l}"
    assert np.array_equal(z, ref_z)


# --- the scheme's pieces -------------------------------------------------------------------------
def test_lut_header_is_the_reference_lut():
    text = (INT8_DIR / "int8_sigmoid_lut.h").read_text()
    values = np.array([int(v) for v in re.search(r"\{([^}]*)\}", text).group(1).split(",")], np.int8)
    assert np.array_equal(values, ref.sigmoid_lut())
    z = (np.arange(4096) - 2048) / 256
    assert np.max(np.abs(values / 127 - 1 / (1 + np.exp(-z)))) <= 0.5 / 127 + 1e-12


def test_quantisation_and_multiplier():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((30, 784)).astype(np.float32)
    q, maxabs = ref.quantise_weights(w)
    assert maxabs == np.abs(w).max() and np.abs(q).max() == 127
    assert np.max(np.abs(q * (maxabs / 127) - w)) <= maxabs / 254 * (1 + 1e-6)
    for m in [1e-3, 0.37, 1.0, 4.2, 63.5, 300.0]:
        m0, r = ref.requant_multiplier(np.float32(m))
        assert 2**30 <= m0 < 2**31
        assert abs(m0 / 2.0**r / (np.float32(m) * 256 / 127**2) - 1) < 2**-30
    assert ref.quantise_weights(np.zeros((2, 3), np.float32))[0].sum() == 0


def test_q15_keeps_16_bits_and_rounds():
    x = np.array([[-(2**20), 2**20 - 1, 3, -3]], np.int64)
    q, k = ref.q15(x)
    assert k == 6 and q.max() <= 32767 and q.min() >= -32768
    assert np.all(np.abs(q * 2**k - x) <= 2 ** (k - 1))
    small = np.array([[5, -7]])
    assert ref.q15(small)[1] == 0 and np.array_equal(ref.q15(small)[0], small)


def test_int32_bounds_are_enforced():
    k = create("int8-numpy", init_params([784, 10, 10], 1, dtype="float32"))
    with pytest.raises(ValueError, match="at most 512 samples"):
        k.train(np.zeros((600, 784), np.uint8), np.zeros(600, np.uint8), np.arange(600), 1.0, 600)


# --- accuracy: int8 trains as well as float32 ----------------------------------------------------
@pytest.mark.parametrize("kernel", ["int8-numpy", "int8"])
def test_int8_accuracy_close_to_float32(kernel, mnist_train, mnist_test):
    """One epoch on the full set, 784-32-10, lr 3, batch 10, seed 1: within 1 point of numpy float32."""
    p = init_params([784, 32, 10], 1, dtype="float32")
    order = EpochOrder(len(mnist_train), 1).next()
    accs = {}
    for name in ("numpy", kernel):
        k = create(name, p, dtype="float32")
        k.train(mnist_train.images, mnist_train.labels, order, 3.0, 10)
        accs[name] = k.evaluate(mnist_test.images, mnist_test.labels).accuracy
        k.close()
    assert accs[kernel] > 0.75
    # This run (784-32-10, unscaled init, one epoch: accuracy ~0.83) measured 0.36 points below float32
    # (2026-12-06); kernels/README.md's -0.05 / +0.20 are trained networks (~95-97 %). Held at 0.50
    # points: the measured figure plus a 0.14-point margin (was 1 point)
    assert abs(accs[kernel] - accs["numpy"]) <= 0.0050, accs


# --- C against numpy, bit for bit -----------------------------------------------------------------
@pytest.mark.parametrize("sizes, batch", [([784, 32, 16, 10], 10), ([784, 30, 10], 7), ([784, 128, 10], 32)])
@pytest.mark.parametrize("kernel", ["int8-plain", "int8"])
def test_c_bit_exact_with_numpy(kernel, sizes, batch, mnist_train, mnist_test):
    p = init_params(sizes, 5, dtype="float32")
    order = EpochOrder(len(mnist_train), 5).next()[:1503]  # a partial last mini-batch too
    ck, nk = create(kernel, p), create("int8-numpy", p)
    for k in (ck, nk):
        k.train(mnist_train.images, mnist_train.labels, order[:1000], 3.0, batch)
        k.train(mnist_train.images, mnist_train.labels, order[1000:], 3.0, batch)  # a split epoch
    assert_same_state(ck, nk, mnist_test.images[:300])
    ec, en = ck.evaluate(mnist_test.images, mnist_test.labels), nk.evaluate(mnist_test.images, mnist_test.labels)
    assert ec.correct == en.correct and ec.loss == pytest.approx(en.loss, abs=1e-12)
    # the path that ran: plain for int8-plain, the SIMD loops for int8 (a fallback to plain fails here)
    expected = {"plain"} if kernel == "int8-plain" else {"avx2", "neon"}
    assert ck.describe()["path"] in expected, (kernel, ck.describe()["path"])
    ck.close()


def test_simd_path_is_simd_and_equals_plain(mnist_train, mnist_test):
    p = init_params([784, 64, 10], 2, dtype="float32")
    order = EpochOrder(len(mnist_train), 2).next()[:2000]
    fast, plain = create("int8", p), create("int8-plain", p)
    assert plain.describe()["path"] == "plain"
    assert fast.describe()["path"] in ("avx2", "neon"), "the optimised build fell back to the plain loops"
    for k in (fast, plain):
        k.train(mnist_train.images, mnist_train.labels, order, 3.0, 10)
    for a, b in zip(fast.get_params().flat(), plain.get_params().flat()):
        assert np.array_equal(bits(a), bits(b))
    for l in range(2):
        assert np.array_equal(fast.quantised(l)[0], plain.quantised(l)[0])


def test_set_params_round_trip_and_bytes():
    p = init_params([784, 32, 10], 3, dtype="float32")
    k = create("int8", p)
    for a, b in zip(k.get_params().flat(), p.flat()):
        assert np.array_equal(bits(a), bits(b))
    # int8 weights + int16 biases + (m0, r) per layer: 4x smaller than the float32 weights
    assert k.weight_bytes() == 784 * 32 + 32 * 10 + 2 * 42 + 16 == create("int8-numpy", p).weight_bytes()
    assert k.describe()["bits"] == 8 and k.describe()["master_bytes"] == p.nbytes()
    assert p.nbytes() / k.weight_bytes() > 3.9


def test_cli_trains_int8(tmp_path):
    import json

    proc = subprocess.run(ecufl_cmd() + ["train", "--kernel", "int8", "--layers", "784,32,10", "--train-limit",
                                         "2000", "--json"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["kernel_info"]["bits"] == 8 and r["test_accuracy"] > 0.3


@pytest.mark.parametrize("args, message", [
    (["--kernel", "int8", "--dtype", "float64"], "--dtype float64: kernel 'int8' supports float32"),
    (["--kernel", "int8-numpy", "--dtype", "float64"], "--dtype float64: kernel 'int8-numpy' supports float32"),
    (["--kernel", "int8", "--prune", "1.5"], "--prune: sparsity must be in [0, 1)"),
    (["--kernel", "int8", "--prune", "-0.1"], "--prune: sparsity must be in [0, 1)"),
    (["--kernel", "int8-plain", "--prune", "nan"], "--prune: sparsity must be in [0, 1)"),
    (["--kernel", "int8", "--prune", "0.5", "--layers", "784,10"], "no hidden layer to prune"),
    (["--kernel", "int8", "--batch-size", "1000"], "at most 512 samples"),
])
def test_bad_input_one_line_exit_2(args, message):
    proc = subprocess.run(ecufl_cmd() + ["train", "--train-limit", "100"] + args, capture_output=True, text=True,
                          timeout=300)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("ecufl: error:") and message in lines[0], proc.stderr


def test_registry_has_the_three_int8_kernels():
    for name in ("int8", "int8-plain", "int8-numpy"):
        assert kernel_class(name).name == name


def test_standalone_trainer_is_the_same_experiment(tmp_path, mnist_dir):
    """ecufl-train-int8 (C PRNG, C shuffle, the shared trainer) == `ecufl train --kernel int8`, bit for bit."""
    import shutil
    import sys

    from ecufl.kernels import weights as weightfile

    exe = shutil.which("ecufl-train-int8", path=str(Path(sys.executable).parent)) or shutil.which("ecufl-train-int8")
    assert exe, "ecufl-train-int8 is not installed (pip install . builds it with the native kernels)"
    a, b = tmp_path / "c.npz", tmp_path / "py.npz"
    args = ["--layers", "784,32,10", "--train-limit", "3000", "--batch-size", "10", "--seed", "4", "--out"]
    proc = subprocess.run([exe, "--data-dir", str(mnist_dir), *args, str(a)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run(ecufl_cmd() + ["train", "--kernel", "int8", *args, str(b)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    for x, y in zip(weightfile.load(a)[0].flat(), weightfile.load(b)[0].flat()):
        assert np.array_equal(bits(x), bits(y))
