"""The native kernels built with AddressSanitizer + UndefinedBehaviorSanitizer (-DECUFL_SANITIZE=ON,
int8 included): the PRNG program, the trainers (training with partial mini-batches, evaluation,
weight file out and in, every bad-argument path, a truncated data file) and the Python binding's
libraries run clean. The board agent's sanitizer build is in tests/test_hostile_agent.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ecufl.kernels import weights as weightfile
from ecufl.kernels import EpochOrder, create, init_params

from test_native import BAD_ARGS, raw_mnist  # noqa: F401  (fixture)
from test_prng_c import GOLDEN, check_against_golden, parse_dump

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
SAN_ENV = {"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:exitcode=99", "UBSAN_OPTIONS": "print_stacktrace=1:exitcode=98"}


@pytest.fixture(scope="module")
def san_build(tmp_path_factory) -> Path:
    build = tmp_path_factory.mktemp("sanitize")
    subprocess.run(["cmake", "-S", str(ROOT / "kernels"), "-B", str(build), "-DECUFL_SANITIZE=ON", "-DECUFL_BUILD_PYTHON=ON",
                    "-DECUFL_BUILD_INT8=ON", "-DCMAKE_BUILD_TYPE=RelWithDebInfo"], check=True, capture_output=True)
    subprocess.run(["cmake", "--build", str(build), "-j2"], check=True, capture_output=True)
    return build


def run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **SAN_ENV, **kw.pop("env", {})}, **kw)
    assert "Sanitizer" not in r.stderr and "runtime error" not in r.stderr, r.stderr[-3000:]
    return r


def test_prng_under_sanitizers(san_build):
    for case in GOLDEN[:2]:
        r = run([str(san_build / "ecufl-prng-dump"), str(case["seed"])])
        assert r.returncode == 0
        check_against_golden(parse_dump(r.stdout), case)


@pytest.mark.parametrize("name", ["c", "c-plain", "eigen"])
def test_trainers_under_sanitizers(san_build, raw_mnist, mnist_train, tmp_path, name):  # noqa: F811
    sizes, n = [784, 20, 12, 10], 1500
    init = tmp_path / "init.npz"
    weightfile.save(init, init_params(sizes, 9))
    out = tmp_path / "w.npz"
    r = run([str(san_build / f"ecufl-train-{name}"), "--layers", "784,20,12,10", "--train-limit", str(n), "--epochs", "2",
             "--batch-size", "7", "--init", str(init), "--seed", "9", "--data-dir", str(raw_mnist), "--out", str(out), "--json"])
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["samples"] == 2 * n
    ref = create("numpy", init_params(sizes, 9, dtype="float32"), dtype="float32")
    order = EpochOrder(n, 9)
    for _ in range(2):
        ref.train(mnist_train.images[:n], mnist_train.labels[:n], order.next(), 3.0, 7)
    got, _ = weightfile.load(out)
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(got.flat(), ref.get_params().flat())) <= 1e-4


def test_int8_trainer_under_sanitizers(san_build, raw_mnist, tmp_path):  # noqa: F811
    """The int8 kernel (int8 and block-list code, built since ECUFL_BUILD_INT8=ON here) trains, writes
    and reads its weights clean under the sanitizers."""
    exe = next(san_build.rglob("ecufl-train-int8"), None)
    assert exe is not None, "the sanitizer build made no ecufl-train-int8"
    init = tmp_path / "init.npz"
    weightfile.save(init, init_params([784, 20, 10], 9))
    out = tmp_path / "w.npz"
    r = run([str(exe), "--layers", "784,20,10", "--train-limit", "700", "--epochs", "2", "--batch-size", "7",
             "--init", str(init), "--seed", "9", "--data-dir", str(raw_mnist), "--out", str(out), "--json"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout)["samples"] == 1400
    got, _ = weightfile.load(out)
    assert got.sizes == [784, 20, 10]


def test_bad_arguments_under_sanitizers(san_build, raw_mnist, tmp_path):  # noqa: F811
    init = tmp_path / "init.npz"
    weightfile.save(init, init_params([784, 12, 10], 1))
    junk = tmp_path / "junk.npz"
    junk.write_bytes(os.urandom(3000))
    trunc = tmp_path / "trunc"  # the images file 5 bytes short: the reader's truncation path under ASan too
    trunc.mkdir()
    for f in raw_mnist.iterdir():
        data = f.read_bytes()
        (trunc / f.name).write_bytes(data[: len(data) - 5] if "train-images" in f.name else data)
    for args, code, needle in BAD_ARGS:
        args = [a.format(init=init, junk=junk, trunc=trunc) for a in args]
        for name in ("c", "eigen"):
            # error exits return without freeing what was loaded: leaks are not the point here
            r = run([str(san_build / f"ecufl-train-{name}"), "--data-dir", str(raw_mnist), "--train-limit", "100", *args],
                    env={"ASAN_OPTIONS": "detect_leaks=0:exitcode=99"})
            assert r.returncode == code and needle in r.stderr, r.stderr


PY_DRIVER = r"""
import numpy as np, sys
from ecufl import data
from ecufl.kernels.native import NativeNet
from ecufl.kernels import init_params, EpochOrder
tr = data.load("train")
for lib in ["ecufl_c", "ecufl_c_plain", "ecufl_eigen"]:
    for sizes, bs in [([784, 3, 10], 1), ([784, 33, 17, 10], 13)]:
        net = NativeNet(lib, sizes, bs)
        net.init_params(5, True)
        net.train(tr.images[:700], tr.labels[:700], EpochOrder(700, 5).next(), 3.0, bs)
        loss, correct = net.evaluate(tr.images[:333], tr.labels[:333])
        p = net.get_params(); net.set_params(p)
        assert np.isfinite(loss) and 0 <= correct <= 333
        for bad in (np.array([700], np.int32),):
            try:
                net.train(tr.images[:700], tr.labels[:700], bad, 3.0, bs)
                sys.exit("no error")
            except ValueError:
                pass
print("ok")
"""


def test_python_binding_under_sanitizers(san_build):
    libasan = subprocess.run(["cc", "-print-file-name=libasan.so"], capture_output=True, text=True).stdout.strip()
    libubsan = subprocess.run(["cc", "-print-file-name=libubsan.so"], capture_output=True, text=True).stdout.strip()
    r = run([sys.executable, "-c", PY_DRIVER],
            env={"LD_PRELOAD": f"{libasan} {libubsan}", "ECUFL_NATIVE_LIB_DIR": str(san_build),
                 "ASAN_OPTIONS": "detect_leaks=0:exitcode=99"})  # Python itself "leaks" at exit
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-3000:]
