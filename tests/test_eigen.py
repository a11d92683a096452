"""The eigen kernel's own checks (tests/test_native.py holds the ones it shares with the C kernel).

- Its first layer is padded to a multiple of 8 columns and multiplied in column panels of fixed
  width (128, 32, 8; kernels/eigen/hdrnn_eigen.cpp): widths that use every panel size, the
  padding, and a net whose padded layer is the output layer, against the float32 reference.
- Training and evaluation never allocate: a build with EIGEN_RUNTIME_NO_MALLOC (and Eigen's
  asserts on) aborts on any heap allocation by Eigen inside them. A control program shows that
  such a build does abort on a product evaluated into a temporary.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from ecufl.kernels import EpochOrder, create, init_params

ROOT = Path(__file__).resolve().parent.parent
ATOL = 1e-4  # kernels/README.md, "Tolerances (native kernels)"

# (sizes, batch, samples): the first layer's width -> panels; samples leave a partial last batch.
PANEL_CONFIGS = [
    ([784, 2, 10], 10, 1995),        # one 8-wide panel, 6 padding columns
    ([784, 10], 32, 2000),           # no hidden layer: the padded layer is the output (8 + 8)
    ([784, 40, 10], 32, 2000),       # 32 + 8
    ([784, 136, 12, 10], 10, 1995),  # 128 + 8, then two unpadded layers
]


def max_abs_diff(p, q) -> float:
    return max(float(np.max(np.abs(a.astype(np.float64) - b))) for a, b in zip(p.flat(), q.flat()))


@pytest.mark.parametrize("sizes, batch, n", PANEL_CONFIGS, ids=lambda v: "-".join(map(str, v)) if isinstance(v, list) else str(v))
def test_panels_match_float32_reference(mnist_train, mnist_test, sizes, batch, n):
    init = init_params(sizes, 1, scaled=True, dtype="float32")
    order = EpochOrder(n, 1).next()
    got = {}
    for name in ("numpy", "eigen"):
        k = create(name, init, dtype="float32")
        k.train(mnist_train.images[:n], mnist_train.labels[:n], order, 3.0, batch)
        got[name] = (k.get_params(), k.evaluate(mnist_test.images, mnist_test.labels).accuracy)
        k.close()
    (ref, ref_acc), (params, acc) = got["numpy"], got["eigen"]
    assert [a.shape for a in params.flat()] == [a.shape for a in ref.flat()]  # padding stays inside
    assert max_abs_diff(params, ref) <= ATOL
    assert abs(acc - ref_acc) <= 0.002
    assert max_abs_diff(params, init) > 1e-3  # it did train


NO_MALLOC_RUN = """
import json, sys
from ecufl import data
from ecufl.kernels import EpochOrder, create, init_params
train, test = data.load("train"), data.load("test")
for sizes, batch in [([784, 2, 10], 10), ([784, 10], 32), ([784, 32, 16, 10], 32), ([784, 136, 12, 10], 10),
                     ([784, 300, 100, 10], 64)]:
    k = create("eigen", init_params(sizes, 1, dtype="float32"), dtype="float32")
    assert k.describe()["no_malloc_checked"] is True, k.describe()
    k.train(train.images[:1000], train.labels[:1000], EpochOrder(1000, 1).next()[:999], 3.0, batch)
    k.evaluate(test.images[:999], test.labels[:999])
    k.close()
print("trained without allocating")
"""

CONTROL = """
#include <Eigen/Dense>
int main() {
    Eigen::MatrixXf d = Eigen::MatrixXf::Ones(4, 3), w = Eigen::MatrixXf::Ones(5, 3), out(4, 5);
    Eigen::internal::set_is_malloc_allowed(false);
    out = ((d * w.transpose()).array() * 2.0f).matrix();  // the product needs a temporary
    return 0;
}
"""


@pytest.mark.slow
def test_training_never_allocates(tmp_path, mnist_dir):
    for tool in ("cmake", "c++", "pkg-config"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} missing: `make setup` installs the build tools")
    # The control: such a build aborts when Eigen allocates (the check can fail).
    (tmp_path / "control.cpp").write_text(textwrap.dedent(CONTROL))
    cflags = subprocess.run(["pkg-config", "--cflags", "eigen3"], check=True, capture_output=True, text=True).stdout.split()
    subprocess.run(["c++", "-std=c++17", "-DEIGEN_RUNTIME_NO_MALLOC", *cflags, str(tmp_path / "control.cpp"),
                    "-o", str(tmp_path / "control")], check=True)
    control = subprocess.run([str(tmp_path / "control")], capture_output=True, text=True)
    assert control.returncode != 0 and "heap allocation is forbidden" in control.stderr

    # The kernel, built with the same check (Debug: no NDEBUG, so Eigen's asserts are on).
    build = tmp_path / "build"
    subprocess.run(["cmake", "-S", str(ROOT / "kernels"), "-B", str(build), "-DCMAKE_BUILD_TYPE=Debug",
                    "-DCMAKE_CXX_FLAGS_DEBUG=", "-DCMAKE_CXX_FLAGS=-DEIGEN_RUNTIME_NO_MALLOC",
                    "-DECUFL_BUILD_PYTHON=OFF", "-DECUFL_BUILD_TRAINERS=OFF", "-DECUFL_BUILD_INT8=OFF"],
                   check=True, capture_output=True)
    subprocess.run(["cmake", "--build", str(build), "--target", "ecufl_eigen"], check=True, capture_output=True)
    env = dict(os.environ, ECUFL_NATIVE_LIB_DIR=str(build), ECUFL_DATA=str(mnist_dir))
    run = subprocess.run([sys.executable, "-c", NO_MALLOC_RUN], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "trained without allocating" in run.stdout


def test_describe_says_release_build_is_unchecked():
    # the installed library is the fast one: Eigen's asserts and the allocation check are off
    k = create("eigen", init_params([784, 8, 10], 1, dtype="float32"), dtype="float32")
    info = k.describe()
    k.close()
    assert info["kernel"] == "eigen" and info["no_malloc_checked"] is False
