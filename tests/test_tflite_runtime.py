"""The shipped models on the older stand-alone runtime a board gets: tflite-runtime with numpy 1.x.

armv7l wheels of tflite-runtime end at 2.13.0 (CPython 3.8-3.10, built against numpy 1.x); on
x86_64 CPython 3.11 the oldest one PyPI has is 2.14.0. This test installs tflite-runtime 2.14.0 and
numpy<2 into a fresh venv (from PyPI) and trains there with ai_edge_litert absent, so the loader
falls back to tflite_runtime, and the result must match the float32 reference. Heavy: network
install into a new venv.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from conftest import ROOT

pytestmark = pytest.mark.heavy

CHECK = textwrap.dedent("""
    import sys
    import numpy as np
    sys.path.insert(0, sys.argv[1])
    from ecufl.kernels.tflite import runtime
    from ecufl.kernels.tflite.kernel import TFLiteKernel
    from ecufl.kernels.reference.network import NumpyKernel
    from ecufl.kernels import init_params
    assert runtime.RUNTIME.distribution == "tflite-runtime", runtime.RUNTIME
    rng = np.random.RandomState(0)
    images = rng.randint(0, 256, size=(600, 784)).astype(np.uint8)
    labels = rng.randint(0, 10, 600).astype(np.uint8)
    worst = 0.0
    for sizes, b in (([784, 30, 10], 10), ([784, 32, 16, 10], 32)):
        p = init_params(sizes, 1, dtype="float32")
        k, r = TFLiteKernel(p), NumpyKernel(p, dtype="float32")
        order = np.arange(595, dtype=np.int32)  # not a multiple of either batch size
        k.train(images, labels, order, 3.0, b)
        r.train(images, labels, order, 3.0, b)
        assert k.describe()["fast_invoke"]
        worst = max(worst, max(float(np.abs(x - y).max()) for x, y in zip(k.get_params().flat(), r.get_params().flat())))
    print(runtime.RUNTIME.describe(), np.__version__, f"{worst:.3e}")
""")


def test_shipped_models_train_on_tflite_runtime_with_numpy1(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    r = subprocess.run([str(py), "-m", "pip", "install", "-q", "tflite-runtime==2.14.0", "numpy<2"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    # ecufl.kernels straight from the source tree (numpy is all it needs); no ai_edge_litert here.
    root = tmp_path / "src"
    (root / "ecufl").mkdir(parents=True)
    (root / "ecufl" / "__init__.py").write_text("")
    (root / "ecufl" / "kernels").symlink_to(ROOT / "kernels")
    r = subprocess.run([str(py), "-c", CHECK, str(root)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    dist, version, numpy_version, worst = r.stdout.split()
    assert (dist, version) == ("tflite-runtime", "2.14.0") and numpy_version.startswith("1.")
    assert float(worst) <= 1e-4
