"""Every native kernel trains any fully connected sigmoid network on any data (issue 17, item 1).

The CAN-shaped autoencoder (339-32-339: the width of ``ecufl.can.features.Featurizer`` on the
shipped bus; float inputs in [0, 1], 43% zeros, target = input) against the numpy reference, with
the tolerances of kernels/README.md ("Any data"):
- float32 kernels (c, c-plain, eigen, c-sparse): max |w - numpy float32| <= 1e-4 after two epochs
  of 300 samples (batch 10, lr 1, scaled init); the float32/float64 drift of this run is 1.4e-6.
- int8 (C paths): bit for bit the int8-numpy scheme; int8-numpy against numpy float32: weights
  within 0.05 (measured 0.018), loss within 2% (measured 0.2%), samples counted correct within
  1% of the set (measured: equal).
- the ARM trainers under qemu: within 1e-4 of the host's numpy float32 (tests/test_native_arm.py).
Bit-identity checks: uint8 pixels p and the floats p / 255.0f, and class labels and their one-hot
rows as real-valued targets, train the same network through the core and the *_f32 calls.
"""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ecufl.kernels import EpochOrder, create, init_params
from ecufl.kernels import weights as weightfile
from ecufl.kernels.native import NativeNet

SIZES = [339, 32, 339]  # the CAN feature width (ecufl.can.features, shipped bus) and a 32-unit code
FLOAT = ["c", "c-plain", "eigen", "c-sparse"]
INT8 = ["int8", "int8-plain"]
LIBRARY = {"c": "ecufl_c", "c-plain": "ecufl_c_plain", "eigen": "ecufl_eigen", "c-sparse": "ecufl_sparse_f32",
           "int8": "ecufl_int8", "int8-plain": "ecufl_int8_plain"}
ATOL = 1e-4  # float32 kernels, as on MNIST (module doc)
INT8_WEIGHTS, INT8_LOSS, INT8_CORRECT = 0.05, 0.02, 0.01  # int8-numpy vs numpy float32 (module doc)
BIN = Path(sys.executable).parent


def can_like(n: int = 300, seed: int = 17) -> np.ndarray:
    """Windows of CAN features: a few traffic patterns, noise, values in [0, 1], ~43% exact zeros."""
    rng = np.random.default_rng(seed)
    patterns = (rng.random((6, SIZES[0])) < 0.35) * rng.random((6, SIZES[0]))
    x = np.clip(patterns[rng.integers(0, 6, n)] + 0.05 * rng.standard_normal((n, SIZES[0])), 0, 1).astype(np.float32)
    x[x < 0.02] = 0
    return x


def max_abs_diff(p, q) -> float:
    return max(float(np.max(np.abs(a.astype(np.float64) - b))) for a, b in zip(p.flat(), q.flat()))


def train(name: str, x: np.ndarray, y: np.ndarray, sizes=SIZES, epochs: int = 2, lr: float = 1.0, bs: int = 10):
    k = create(name, init_params(sizes, 3, scaled=True, dtype="float32"), dtype="float32")
    order = EpochOrder(len(x), 3)
    for _ in range(epochs):
        k.train(x, y, order.next(), lr, bs)
    return k


@pytest.fixture(scope="module")
def runs():
    x = can_like()
    out = {}
    for name in ["numpy", "int8-numpy", *FLOAT, *INT8]:
        k = train(name, x, x)
        out[name] = (k.get_params(), k.evaluate(x, x))
        k.close()
    out["init"] = create("numpy", init_params(SIZES, 3, scaled=True, dtype="float32"), dtype="float32").evaluate(x, x)
    return out


@pytest.mark.parametrize("name", FLOAT)
def test_float_kernels_train_the_can_autoencoder_as_the_reference(runs, name):
    ref, ref_eval = runs["numpy"]
    got, ev = runs[name]
    assert max_abs_diff(got, ref) <= ATOL
    assert ev.loss == pytest.approx(ref_eval.loss, rel=1e-4) and ev.correct == ref_eval.correct
    assert ev.loss < 0.1 * runs["init"].loss  # it learnt (41.8 -> 1.06)


@pytest.mark.parametrize("name", INT8)
def test_int8_c_is_the_int8_scheme_bit_for_bit(runs, name):
    ref, ref_eval = runs["int8-numpy"]
    got, ev = runs[name]
    for a, b in zip(got.flat(), ref.flat()):
        assert np.array_equal(a, b)
    assert ev.correct == ref_eval.correct and ev.loss == pytest.approx(ref_eval.loss, rel=1e-12)


def test_int8_scheme_within_its_tolerance_of_float(runs):
    (p8, e8), (p32, e32) = runs["int8-numpy"], runs["numpy"]
    assert max_abs_diff(p8, p32) <= INT8_WEIGHTS
    assert abs(e8.loss - e32.loss) <= INT8_LOSS * e32.loss
    assert abs(e8.correct - e32.correct) <= INT8_CORRECT * e32.count
    assert e8.loss < 0.1 * runs["init"].loss


# -- the same network through the core and the *_f32 calls ----------------------------------------------------
@pytest.mark.parametrize("sizes", [[60, 8, 5], [60, 40, 7]])  # c: first-layer steps by sample / by pixel
@pytest.mark.parametrize("name", [*FLOAT, *INT8])
def test_pixels_as_floats_and_labels_as_targets_are_the_same_network(name, sizes):
    rng = np.random.default_rng(5)
    img = rng.integers(0, 256, (90, sizes[0]), dtype=np.uint8)
    img[rng.random(img.shape) < 0.5] = 0
    labels = rng.integers(0, sizes[-1], 90).astype(np.uint8)
    a = train(name, img, labels, sizes, epochs=1, lr=3.0, bs=7)  # ecufl_net_train
    b = train(name, img.astype(np.float32) / np.float32(255), np.eye(sizes[-1], dtype=np.float32)[labels],
              sizes, epochs=1, lr=3.0, bs=7)  # ecufl_net_train_f32 with targets
    c = train(name, img.astype(np.float32) / np.float32(255), labels, sizes, epochs=1, lr=3.0, bs=7)  # f32, labels
    for k in (b, c):
        for u, v in zip(a.get_params().flat(), k.get_params().flat()):
            assert np.array_equal(u, v)
    assert a.evaluate(img, labels).loss == c.evaluate(img.astype(np.float32) / np.float32(255), labels).loss


@pytest.mark.parametrize("name", ["c-sparse", *INT8])
def test_pruned_first_layer_takes_float_inputs(name):
    """A first layer pruned in blocks of 8 rows walks block lists of the nonzero inputs: built from
    float inputs as from pixels."""
    sizes = [50, 16, 6]
    rng = np.random.default_rng(8)
    img = rng.integers(0, 256, (80, sizes[0]), dtype=np.uint8)
    img[rng.random(img.shape) < 0.6] = 0
    labels = rng.integers(0, sizes[-1], 80).astype(np.uint8)
    mask = np.repeat(rng.random((2, sizes[0])) < 0.5, 8, axis=0)  # blocks of 8 consecutive rows
    nets = []
    for x, y in [(img, labels), (img.astype(np.float32) / np.float32(255), np.eye(sizes[-1], dtype=np.float32)[labels])]:
        net = NativeNet(LIBRARY[name], sizes, 10)
        net.set_params(init_params(sizes, 2, dtype="float32"))
        net.set_mask(0, mask, 8)
        net.train(x, y, EpochOrder(80, 2).next(), 3.0, 10)
        nets.append(net.get_params())
    for u, v in zip(*[p.flat() for p in nets]):
        assert np.array_equal(u, v)


@pytest.mark.parametrize("name", ["numpy", *FLOAT, *INT8, "int8-numpy"])
def test_evaluate_counts_samples_with_every_output_within_half(name):
    sizes = [6, 4, 3]
    rng = np.random.default_rng(11)
    x, y = rng.random((400, 6), dtype=np.float32), rng.random((400, 3), dtype=np.float32)
    p = init_params(sizes, 1, dtype="float32")
    ev = create(name, p, dtype="float32").evaluate(x, y)
    if name.startswith("int8"):  # q7 inputs and outputs: its own reference
        ref = create("int8-numpy", p).evaluate(x, y)
    else:
        ref = create("numpy", p, dtype="float32").evaluate(x, y)
    assert 50 < ref.correct < 350  # the data makes the count mean something
    assert ev.correct == ref.correct and ev.loss == pytest.approx(ref.loss, rel=1e-6)


# -- data that does not fit: one line ------------------------------------------------------------------------
@pytest.mark.parametrize("name", [*FLOAT, *INT8, "int8-numpy"])
def test_data_that_does_not_fit_is_one_line(name):
    sizes = [20, 5, 20]
    k = create(name, init_params(sizes, 1, dtype="float32"), dtype="float32")
    x = np.random.default_rng(0).random((30, 20), dtype=np.float32)
    cases = [
        (x[:, :18], x, "takes 20 values per sample"),
        (x, x[:, :3], "targets have 3 columns"),
        (x, x[:20], "30 inputs but 20 labels/targets"),
    ]
    if name != "int8-numpy":  # the C side checks values (numpy propagates NaN like any float)
        bad = x.copy()
        bad[7, 4] = np.nan
        inf = x.copy()
        inf[12, 3] = np.inf
        cases += [(bad, x, "input 4 of sample 7 is not finite"), (x, inf, "target 3 of sample 12 is not finite"),
                  (x, np.full(30, 20, np.uint8), "20")]
    for inputs, targets, message in cases:
        for call in (lambda: k.train(inputs, targets, np.arange(30), 1.0, 10), lambda: k.evaluate(inputs, targets)):
            with pytest.raises(ValueError, match=message) as e:
                call()
            assert "\n" not in str(e.value)


# -- the standalone trainers (host build) -----------------------------------------------------------------------
def write_idx(path: Path, array: np.ndarray) -> None:
    """IDX: magic (0, 0, type, ndim), big-endian dims, data; type 0x08 uint8 or 0x0D float32 (big-endian)."""
    a = np.asarray(array)
    kind = 0x08 if a.dtype == np.uint8 else 0x0D
    with open(path, "wb") as f:
        f.write(struct.pack(">BBBB", 0, 0, kind, a.ndim) + struct.pack(f">{a.ndim}I", *a.shape))
        f.write(np.ascontiguousarray(a, np.uint8 if kind == 0x08 else ">f4").tobytes())


@pytest.fixture(scope="module")
def can_dir(tmp_path_factory) -> Path:
    """Training and test files of the CAN-shaped autoencoder, and the initial weights."""
    d = tmp_path_factory.mktemp("can-idx")
    x = can_like(400)
    write_idx(d / "train-inputs.idx", x[:300])
    write_idx(d / "train-targets.idx", x[:300])
    write_idx(d / "test-inputs.idx", x[300:])
    write_idx(d / "test-targets.idx", x[300:])
    weightfile.save(d / "init.npz", init_params(SIZES, 3, scaled=True, dtype="float32"))
    return d


def run_trainer(cmd: list[str], data: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([*cmd, "--layers", ",".join(map(str, SIZES)), "--epochs", "2", "--batch-size", "10",
                           "--lr", "1.0", "--seed", "3", "--init", str(data / "init.npz"), "--data-dir", str(data),
                           "--out", str(out), "--json", *extra], capture_output=True, text=True, timeout=300)


def trained_reference(name: str, data: Path):
    x = can_like(400)
    k = train(name, x[:300], x[:300])
    return k.get_params(), k.evaluate(x[300:], x[300:])


@pytest.mark.parametrize("name", ["c", "c-plain", "eigen", "int8"])
def test_host_trainers_train_the_can_autoencoder(can_dir, tmp_path, name):
    exe = BIN / f"ecufl-train-{name}"
    assert exe.exists(), f"{exe} missing: the package build installs the trainers into the venv's bin"
    r = run_trainer([str(exe)], can_dir, tmp_path / "w.npz")
    assert r.returncode == 0, r.stderr
    got, _ = weightfile.load(tmp_path / "w.npz")
    ref, ev = trained_reference("int8-numpy" if name == "int8" else "numpy", can_dir)
    report = __import__("json").loads(r.stdout)
    if name == "int8":  # the int8 scheme, bit for bit
        assert max_abs_diff(got, ref) == 0
    else:
        assert max_abs_diff(got, ref) <= ATOL
    assert report["samples"] == 600 and report["test_accuracy"] == pytest.approx(ev.accuracy, abs=0.02)
    assert report["test_loss"] == pytest.approx(ev.loss, rel=1e-3 if name != "int8" else 1e-7)  # printed %.9g


def test_trainer_reports_data_that_does_not_fit_in_one_line(can_dir, tmp_path):
    exe = str(BIN / "ecufl-train-c")
    r = subprocess.run([exe, "--layers", "300,8,339", "--data-dir", str(can_dir)], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip() == \
        "ecufl-train-c: training inputs have 339 values per sample: the network's first layer (--layers) takes 300"
    bad = tmp_path / "bad"
    bad.mkdir()
    x = can_like(20)
    write_idx(bad / "train-inputs.idx", x)
    r = subprocess.run([exe, "--layers", "339,8,339", "--data-dir", str(bad)], capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.strip() == \
        f"ecufl-train-c: {bad}/train-targets.idx: no such file (the targets or labels of {bad}/train-inputs.idx)"
    write_idx(bad / "train-targets.idx", x[:, :5].astype(np.float32))
    x[3, 9] = np.nan
    write_idx(bad / "train-inputs.idx", x)
    r = subprocess.run([exe, "--layers", "339,8,339", "--data-dir", str(bad)], capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.strip() == \
        f"ecufl-train-c: {bad}/train-inputs.idx: value {3 * 339 + 9} of the float32 data is not finite"
    np.nan_to_num(x, copy=False)
    write_idx(bad / "train-inputs.idx", x)
    r = subprocess.run([exe, "--layers", "339,8,339", "--data-dir", str(bad)], capture_output=True, text=True)
    assert r.returncode == 2 and "training targets have 5 values per sample" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


# -- the emulated board (kernels/arm/emulate.py): the board build's trainers under qemu ----------------------------
@pytest.mark.arm
def test_emulated_board_trains_the_can_autoencoder():
    """run_emulated hands any data to the ARM trainers as float32 IDX files and counts
    ecufl_net_train_f32: c within ATOL of numpy float32, int8 bit for bit int8-numpy."""
    from ecufl.kernels.arm.emulate import run_emulated

    x = can_like(120)
    p = init_params(SIZES, 3, scaled=True, dtype="float32")
    orders = [EpochOrder(120, 3).next(), EpochOrder(120, 4).next()]
    for kernel, ref_name in (("c", "numpy"), ("int8", "int8-numpy")):
        result = run_emulated(kernel, p, x, x, orders, 1.0, 10)
        ref = create(ref_name, p, dtype="float32")
        for o in orders:
            ref.train(x, x, o, 1.0, 10)
        assert max_abs_diff(result.params, ref.get_params()) <= (ATOL if kernel == "c" else 0.0)
        assert result.report["arm_instructions"] > 1e6 and result.report["projected_seconds"] > 0
    with pytest.raises(ValueError, match="int8_check_plain takes uint8 pixels and class labels only"):
        run_emulated("int8-plain", p, x, x, orders, 1.0, 10)
