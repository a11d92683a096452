"""The exporter (TensorFlow): the shipped models are exactly what it writes today, and a model it
exports for a new config trains like the reference. Heavy: needs the `export` extra (TensorFlow)."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from conftest import ecufl_cmd
from ecufl.kernels.tflite import catalog

pytestmark = pytest.mark.heavy


def test_shipped_models_are_byte_identical_to_a_fresh_export(tmp_path):
    # The converter is deterministic for a given TensorFlow release (the export extra pins one),
    # so any difference means the shipped files drifted from export.py.
    r = subprocess.run(ecufl_cmd() + ["tflite", "export", "--standard", "--out-dir", str(tmp_path)],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    drifted = []
    for sizes, b in catalog.STANDARD:
        name = catalog.model_filename(sizes, b)
        if (tmp_path / name).read_bytes() != (catalog.PACKAGE_MODELS / name).read_bytes():
            drifted.append(name)
    assert not drifted, (f"shipped models differ from a fresh export: {drifted}; regenerate with "
                         "`ecufl tflite export --standard --out-dir kernels/tflite/models`")


def test_exported_new_config_trains_like_the_reference(tmp_path, monkeypatch, mnist_train):
    from ecufl.kernels import create, init_params
    from ecufl.kernels.tflite.ops import non_builtin

    out = tmp_path / catalog.model_filename((784, 20, 12, 10), 7)
    r = subprocess.run(ecufl_cmd() + ["tflite", "export", "--layers", "784,20,12,10", "--batch-size", "7",
                                      "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert non_builtin(out) == []
    monkeypatch.setenv("ECUFL_TFLITE_MODELS", str(tmp_path))
    p = init_params([784, 20, 12, 10], 4, dtype="float32")
    order = np.arange(500, dtype=np.int32)[::-1].copy()  # 71 full mini-batches of 7 and one of 3
    ref, tfl = create("numpy", p, dtype="float32"), create("tflite", p)
    for k in (ref, tfl):
        k.train(mnist_train.images, mnist_train.labels, order, 3.0, 7)
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(ref.get_params().flat(), tfl.get_params().flat()))
    assert diff <= 1e-4
    assert tfl.describe()["model"] == str(out)
