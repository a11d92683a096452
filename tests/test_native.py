"""The native kernels (c, c-plain, eigen) against the float32 numpy reference, and their trainers.

Tolerance (kernels/README.md, "Tolerances"): after one epoch of 10,000 samples every weight is
within ATOL = 1e-4 of the float32 numpy reference and test accuracy within 0.2 points.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ecufl.kernels import weights as weightfile
from ecufl.kernels import EpochOrder, available, create, init_params
from ecufl.kernels.native import NativeNet, library_path

ATOL = 1e-4
NATIVE = ["c", "c-plain", "eigen"]
BIN = Path(sys.executable).parent


def max_abs_diff(p, q) -> float:
    return max(float(np.max(np.abs(a.astype(np.float64) - b))) for a, b in zip(p.flat(), q.flat()))


def train_epoch(name, sizes, train, n, batch_size, seed=1, scaled=False, lr=3.0):
    k = create(name, init_params(sizes, seed, scaled=scaled, dtype="float32"), dtype="float32")
    order = EpochOrder(n, seed).next()
    k.train(train.images[:n], train.labels[:n], order, lr, batch_size)
    return k


# Well-conditioned runs (float32 numpy within 2e-5 of float64 numpy, see kernels/README.md).
# 784-128-10 (8 vectors of outputs per register block) with batch 32: the last mini-batch has 16.
CONFIGS = [([784, 30, 10], 10, False, 3.0), ([784, 32, 16, 10], 32, True, 3.0), ([784, 128, 10], 32, True, 0.5)]
SIZES = [tuple(c[0]) for c in CONFIGS]


@pytest.fixture(scope="module")
def runs(mnist_train, mnist_test):
    """One epoch of 10,000 samples per kernel and config: (params, accuracy)."""
    out = {}
    for sizes, bs, scaled, lr in CONFIGS:
        for name in ["numpy", *NATIVE]:
            k = train_epoch(name, sizes, mnist_train, 10_000, bs, scaled=scaled, lr=lr)
            out[(name, tuple(sizes))] = (k.get_params(), k.evaluate(mnist_test.images, mnist_test.labels).accuracy)
            k.close()
    return out


def test_registered_and_found_in_this_install():
    # no $ECUFL_NATIVE_LIB_DIR: the editable install (or wheel) must find its own libraries
    assert "ECUFL_NATIVE_LIB_DIR" not in os.environ
    for name, lib in [("c", "ecufl_c"), ("c-plain", "ecufl_c_plain"), ("eigen", "ecufl_eigen")]:
        assert name in available()
        assert library_path(lib).is_file()


@pytest.mark.parametrize("name", NATIVE)
@pytest.mark.parametrize("sizes", SIZES)
def test_one_epoch_matches_float32_reference(runs, name, sizes):
    ref, ref_acc = runs[("numpy", sizes)]
    got, acc = runs[(name, sizes)]
    assert max_abs_diff(got, ref) <= ATOL
    assert abs(acc - ref_acc) <= 0.002
    assert max_abs_diff(got, init_params(list(sizes), 1, dtype="float32")) > 1e-3  # it did train


@pytest.mark.parametrize("sizes", SIZES)
def test_plain_and_optimised_paths_agree(runs, sizes):
    assert max_abs_diff(runs[("c", sizes)][0], runs[("c-plain", sizes)][0]) <= ATOL


def test_paths_are_what_they_say():
    info = {n: create(n, init_params([784, 8, 10], 1, dtype="float32")).describe() for n in NATIVE}
    assert info["c-plain"]["path"] == "plain"
    # the optimised path this CPU can run: AVX2 where the CPU has AVX2+FMA (SSE2 there is a silent
    # fallback of the build), SSE2 on older x86, NEON on ARM
    import platform

    from test_simd_c import host_runs_avx2_fma

    want = "neon" if platform.machine().startswith("arm") else "avx2" if host_runs_avx2_fma() else "sse2"
    assert info["c"]["path"] == want, (info["c"]["path"], want)
    assert info["eigen"]["kernel"] == "eigen" and info["eigen"]["eigen"].startswith("3.")
    assert all(i["compiler"] for i in info.values())


@pytest.mark.parametrize("name", NATIVE)
def test_split_calls_and_batch_growth(mnist_train, name):
    """Training in pieces at batch multiples is the same computation; a batch above the
    preallocated size gets a bigger net and stays correct."""
    sizes, n = [784, 16, 10], 1000
    p0 = init_params(sizes, 3, dtype="float32")
    order = EpochOrder(n, 3).next()
    whole, parts = create(name, p0), create(name, p0)
    whole.train(mnist_train.images, mnist_train.labels, order, 3.0, 10)
    for k in range(0, n, 300):
        parts.train(mnist_train.images, mnist_train.labels, order[k:k + 300], 3.0, 10)
    assert all(np.array_equal(a, b) for a, b in zip(whole.get_params().flat(), parts.get_params().flat()))
    big, ref = create(name, p0), create("numpy", p0, dtype="float32")
    for k in (big, ref):
        k.train(mnist_train.images, mnist_train.labels, order, 3.0, 100)  # > default max_batch 64
    assert max_abs_diff(big.get_params(), ref.get_params()) <= ATOL


@pytest.mark.parametrize("name", NATIVE)
def test_bad_input_is_a_clear_error(mnist_train, name):
    k = create(name, init_params([784, 8, 10], 1, dtype="float32"))
    imgs, labels = mnist_train.images[:100], mnist_train.labels[:100]
    with pytest.raises(ValueError, match="order"):
        k.train(imgs, labels, np.array([0, 100], dtype=np.int32), 3.0, 10)
    with pytest.raises(ValueError, match="lr"):
        k.train(imgs, labels, np.arange(10, dtype=np.int32), float("nan"), 10)
    bad = labels.copy()
    bad[5] = 10
    with pytest.raises(ValueError, match="label"):
        k.train(imgs, bad, np.arange(10, dtype=np.int32), 3.0, 10)
    p = init_params([784, 8, 10], 1, dtype="float32")
    p.weights[1][0, 0] = np.nan
    with pytest.raises(ValueError, match="w2"):
        k.set_params(p)
    with pytest.raises(ValueError, match="layer size"):
        NativeNet(k.library, [784, 0, 10], 10)
    k.close()
    with pytest.raises(ValueError, match="closed"):
        k.get_params()


# ---- the standalone trainers --------------------------------------------------------------------

def trainer(name: str) -> str:
    exe = BIN / f"ecufl-train-{name}"
    assert exe.exists(), f"{exe} missing: the package build installs the trainers into the venv's bin"
    return str(exe)


@pytest.fixture(scope="module")
def raw_mnist(mnist_dir, tmp_path_factory) -> Path:
    """MNIST as raw IDX files (what the board has); the host trainers also read the .gz."""
    d = tmp_path_factory.mktemp("mnist-raw")
    for f in ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]:
        src = mnist_dir / f
        if src.exists():
            shutil.copy(src, d / f)
        else:
            with gzip.open(mnist_dir / f"{f}.gz") as g:
                (d / f).write_bytes(g.read())
    return d


@pytest.mark.parametrize("name,kernel", [("c", "c"), ("c-plain", "c-plain"), ("eigen", "eigen")])
def test_trainer_equals_the_python_binding(raw_mnist, mnist_train, tmp_path, name, kernel):
    """Same library code, same PRNG streams: the trainer's weights are the binding's, bit for bit."""
    out = tmp_path / "w.npz"
    r = subprocess.run([trainer(name), "--layers", "784,24,10", "--train-limit", "3000", "--epochs", "2",
                        "--batch-size", "16", "--lr", "2.5", "--seed", "7", "--data-dir", str(raw_mnist),
                        "--out", str(out), "--json"], capture_output=True, text=True, check=True)
    result = json.loads(r.stdout)
    assert result["samples"] == 6000 and 0.5 < result["test_accuracy"] <= 1
    assert result["peak_rss_bytes"] > 47_000_000
    params, meta = weightfile.load(out)
    assert meta["kernel"] == name and meta["sizes"] == [784, 24, 10]
    k = create(kernel, init_params([784, 24, 10], 7, dtype="float32"))
    order = EpochOrder(3000, 7)
    for _ in range(2):
        k.train(mnist_train.images[:3000], mnist_train.labels[:3000], order.next(), 2.5, 16)
    assert all(np.array_equal(a, b) for a, b in zip(params.flat(), k.get_params().flat()))


def test_trainer_init_file_and_gz(mnist_dir, mnist_train, tmp_path):
    """--init reads ecufl's own weight files (float64 from `ecufl init`); .gz MNIST is read too."""
    init = tmp_path / "init.npz"
    p64 = init_params([784, 12, 10], 5, scaled=True)
    weightfile.save(init, p64)
    out = tmp_path / "w.npz"
    subprocess.run([trainer("c"), "--layers", "784,12,10", "--init", str(init), "--train-limit", "1000", "--no-shuffle",
                    "--data-dir", str(mnist_dir), "--out", str(out)], check=True, capture_output=True)
    k = create("c", p64.astype("float32"))
    k.train(mnist_train.images, mnist_train.labels, np.arange(1000, dtype=np.int32), 3.0, 10)
    got, _ = weightfile.load(out)
    assert all(np.array_equal(a, b) for a, b in zip(got.flat(), k.get_params().flat()))


BAD_ARGS = [
    (["--lr", "nan"], 2, "--lr"),
    (["--lr", "-1"], 2, "--lr"),
    (["--layers", "784"], 2, "--layers"),
    (["--layers", "784,x,10"], 2, "--layers"),
    (["--layers", "100,10"], 2, "784"),
    (["--batch-size", "0"], 2, "--batch-size"),
    (["--seed", "-3"], 2, "--seed"),
    (["--epochs"], 2, "--epochs"),
    (["--bogus"], 2, "--bogus"),
    (["--data-dir", "/nonexistent"], 1, "/nonexistent/train-images"),
    (["--init", "/nonexistent.npz"], 1, "/nonexistent.npz"),
    (["--init", "{init}", "--layers", "784,30,10"], 1, "w1"),
    (["--init", "{junk}"], 1, "not an ecufl weight file"),
    (["--data-dir", "{trunc}"], 1, "truncated"),
]


@pytest.mark.parametrize("args,code,needle", BAD_ARGS, ids=lambda v: str(v))
def test_trainer_bad_arguments(raw_mnist, tmp_path, args, code, needle):
    init = tmp_path / "init.npz"
    weightfile.save(init, init_params([784, 12, 10], 1))
    junk = tmp_path / "junk.npz"
    junk.write_bytes(os.urandom(3000))
    trunc = tmp_path / "trunc"
    trunc.mkdir()
    for f in raw_mnist.iterdir():
        data = f.read_bytes()
        (trunc / f.name).write_bytes(data[: len(data) - 5] if "train-images" in f.name else data)
    args = [a.format(init=init, junk=junk, trunc=trunc) for a in args]
    for name in ("c", "eigen"):
        r = subprocess.run([trainer(name), "--data-dir", str(raw_mnist), "--train-limit", "100", *args],
                           capture_output=True, text=True)
        assert r.returncode == code, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0], r.stderr
        assert lines[0].startswith(f"ecufl-train-{name}: ")
