"""The native kernels cross-compiled for the Cortex-A9 (kernels/cmake/armv7-cortex-a9.cmake) and
run under `qemu-arm -cpu cortex-a9`: PRNG, NEON path, weights against the x86 reference.

Finding (kept as a test): glibc's `log` on ARM differs from x86's FMA variant in the last bit of a
few doubles (seed 0: 2 of 23,860 initial draws; seed 4294967295: 1), so float64 initial weights can
differ by 1 ulp; rounded to float32 they are identical, which is what every kernel uses.
"""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from ecufl.kernels import weights as weightfile
from ecufl.kernels import EpochOrder, create, init_params

from test_prng_c import GOLDEN, check_against_golden, parse_dump

pytestmark = pytest.mark.arm
ROOT = Path(__file__).resolve().parent.parent
QEMU = ["qemu-arm", "-cpu", "cortex-a9"]
ATOL = 1e-4


@pytest.fixture(scope="module")
def arm_build(tmp_path_factory) -> Path:
    for tool in ("arm-linux-gnueabihf-gcc", "arm-linux-gnueabihf-g++", "qemu-arm", "cmake"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} missing: `make setup` installs the ARM toolchain and qemu-user")
    build = tmp_path_factory.mktemp("arm")
    subprocess.run(["cmake", "-S", str(ROOT / "kernels"), "-B", str(build), "-DECUFL_BUILD_PYTHON=OFF",
                    "-DECUFL_BUILD_INT8=OFF", f"-DCMAKE_TOOLCHAIN_FILE={ROOT / 'kernels/cmake/armv7-cortex-a9.cmake'}"],
                   check=True, capture_output=True)
    subprocess.run(["cmake", "--build", str(build), "-j2"], check=True, capture_output=True)
    return build


@pytest.fixture(scope="module")
def raw_mnist(mnist_dir, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("mnist-raw")
    for f in ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]:
        src = mnist_dir / f
        (d / f).write_bytes(src.read_bytes() if src.exists() else gzip.open(mnist_dir / f"{f}.gz").read())
    return d


@pytest.mark.parametrize("case", GOLDEN, ids=lambda c: f"seed{c['seed']}")
def test_arm_prng(arm_build, case):
    out = subprocess.run([*QEMU, str(arm_build / "ecufl-prng-dump"), str(case["seed"])],
                         check=True, capture_output=True, text=True).stdout
    dump = parse_dump(out)
    f64 = np.array([int(v, 16) for v in dump["init_784_30_10_f64"]], dtype=np.uint64)
    ref = init_params([784, 30, 10], case["seed"]).flat()
    ref64 = np.concatenate([a.ravel() for a in ref]).view(np.uint64)
    ulps = np.abs(f64.astype(np.int64) - ref64.astype(np.int64))
    assert ulps.max() <= 1 and np.count_nonzero(ulps) <= 5  # glibc log's last bit (module doc)
    assert np.array_equal(f64.view(np.float64).astype(np.float32), np.concatenate([a.ravel() for a in ref]).astype(np.float32))
    dump["init_784_30_10_f64"] = [f"{v:016x}" for v in ref64]  # the rest must match the golden file exactly
    check_against_golden(dump, case)


def test_arm_optimised_build_is_neon(arm_build):
    r = subprocess.run([*QEMU, str(arm_build / "ecufl-train-c"), "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "usage" in r.stdout
    dis = subprocess.run(["arm-linux-gnueabihf-objdump", "-d", str(arm_build / "ecufl-train-c")],
                         capture_output=True, text=True, check=True).stdout
    assert "vmla.f32\tq" in dis
    assert "vfma" not in dis  # the A9 has no fused multiply-add


@pytest.fixture(scope="module")
def numpy_run(mnist_train, mnist_test):
    sizes, n = [784, 30, 10], 3000
    k = create("numpy", init_params(sizes, 1, dtype="float32"), dtype="float32")
    k.train(mnist_train.images[:n], mnist_train.labels[:n], EpochOrder(n, 1).next(), 3.0, 10)
    return k.get_params(), k.evaluate(mnist_test.images, mnist_test.labels).accuracy


@pytest.mark.parametrize("name", ["c", "c-plain", "eigen"])
def test_arm_trainer_matches_reference(arm_build, raw_mnist, numpy_run, tmp_path, name):
    out = tmp_path / "w.npz"
    r = subprocess.run([*QEMU, str(arm_build / f"ecufl-train-{name}"), "--train-limit", "3000", "--data-dir",
                        str(raw_mnist), "--out", str(out), "--json"], capture_output=True, text=True, check=True)
    result = json.loads(r.stdout)
    assert result["kernel_info"]["path"] in ({"c-plain": "plain"}.get(name, "neon"),)
    params, _ = weightfile.load(out)
    ref, ref_acc = numpy_run
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(params.flat(), ref.flat()))
    assert diff <= ATOL
    assert abs(result["test_accuracy"] - ref_acc) <= 0.002


def test_arm_narrow_first_layer_matches_reference(arm_build, raw_mnist, mnist_train, tmp_path):
    # 784-8-10 is 2 NEON vectors of outputs: the optimised path steps the first layer by sample
    # (hdrnn_opt.c first_layer_step_by_sample); 784-30-10 above goes by pixel.
    sizes, n = [784, 8, 10], 3000
    k = create("numpy", init_params(sizes, 1, dtype="float32"), dtype="float32")
    k.train(mnist_train.images[:n], mnist_train.labels[:n], EpochOrder(n, 1).next(), 3.0, 10)
    out = tmp_path / "w.npz"
    subprocess.run([*QEMU, str(arm_build / "ecufl-train-c"), "--layers", "784,8,10", "--train-limit", str(n),
                    "--data-dir", str(raw_mnist), "--out", str(out)], capture_output=True, text=True, check=True)
    params, _ = weightfile.load(out)
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(params.flat(), k.get_params().flat()))
    assert diff <= ATOL
    init = init_params(sizes, 1, dtype="float32")
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(params.flat(), init.flat())) > 1e-3  # it did train


def test_arm_trainer_bad_arguments(arm_build, raw_mnist):
    for args, needle in [(["--lr", "nan"], "--lr"), (["--layers", "784"], "--layers"), (["--data-dir", "/nope"], "/nope")]:
        r = subprocess.run([*QEMU, str(arm_build / "ecufl-train-c"), *args], capture_output=True, text=True)
        assert r.returncode in (1, 2) and len(r.stderr.strip().splitlines()) == 1 and needle in r.stderr


@pytest.mark.parametrize("name", ["c", "c-plain", "eigen"])
def test_arm_trainers_train_the_can_autoencoder(arm_build, tmp_path, name):
    """Any data (issue 17): the CAN-shaped autoencoder from float32 IDX files (tests/test_any_data.py),
    on the board build under qemu, within ATOL of the host's numpy float32 and of the host trainer."""
    from test_any_data import BIN, SIZES, can_like, max_abs_diff, run_trainer, train, write_idx

    x = can_like(400)
    for split, rows in (("train", x[:300]), ("test", x[300:])):
        write_idx(tmp_path / f"{split}-inputs.idx", rows)
        write_idx(tmp_path / f"{split}-targets.idx", rows)
    weightfile.save(tmp_path / "init.npz", init_params(SIZES, 3, scaled=True, dtype="float32"))
    r = run_trainer([*QEMU, str(arm_build / f"ecufl-train-{name}")], tmp_path, tmp_path / "arm.npz")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["kernel_info"]["path"] == {"c-plain": "plain"}.get(name, "neon")
    arm, _ = weightfile.load(tmp_path / "arm.npz")
    ref = train("numpy", x[:300], x[:300])
    assert max_abs_diff(arm, ref.get_params()) <= ATOL
    r = run_trainer([str(BIN / f"ecufl-train-{name}")], tmp_path, tmp_path / "host.npz")
    assert r.returncode == 0, r.stderr
    host, _ = weightfile.load(tmp_path / "host.npz")
    assert max_abs_diff(arm, host) <= ATOL
