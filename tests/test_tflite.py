"""The TFLite kernel against the numpy reference, the shipped models, the loader and the CLI.

Tolerance for trained weights (784-30-10, batch 10, lr 3.0, seed 1, one epoch on 10,000 samples):
TFLite computes in float32 like the float32 reference, only in another order (its matmul and
sigmoid kernels round differently). How far two float32 orders drift apart over 1,000 SGD steps
is measured by the float32 reference's own distance to the float64 reference, d32 (1.6e-5 here).
TFLite may be no worse than that: |tflite - numpy64| <= 4 * d32, hence |tflite - numpy32| <=
5 * d32 ~ 8e-5 by the triangle inequality; the documented fixed bound is ATOL = 1e-4.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from ecufl.kernels import EpochOrder, KernelUnavailable, create, init_params
from ecufl.kernels.tflite import catalog
from ecufl.kernels.tflite.kernel import TFLiteKernel
from ecufl.kernels.tflite.ops import non_builtin, op_codes, subgraph_ops

from conftest import ecufl_cmd

ATOL = 1e-4  # kernels/README.md, "TFLite kernel"


def max_abs(a, b) -> float:
    return max(float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64)))) for x, y in zip(a.flat(), b.flat()))


def train_pair(sizes, n, batch_size, images, labels, seed=1, lr=3.0):
    """numpy float64, numpy float32 and tflite trained from the same weights in the same order."""
    p = init_params(sizes, seed)
    order = EpochOrder(n, seed).next()
    out = {}
    for name, dt in (("numpy", "float64"), ("numpy", "float32"), ("tflite", "float32")):
        k = create(name, p.astype(dt), dtype=dt)
        k.train(images, labels, order, lr, batch_size)
        out[(name, dt)] = k
    return out


# -- shipped models ------------------------------------------------------------------------------
def test_every_standard_config_is_shipped_and_small():
    total = 0
    for sizes, b in catalog.STANDARD:
        path = catalog.PACKAGE_MODELS / catalog.model_filename(sizes, b)
        assert path.is_file(), f"missing shipped model {path.name}"
        total += path.stat().st_size
    assert total < 2 * 1024 * 1024, f"shipped models take {total:,} bytes"


@pytest.mark.parametrize("sizes,b", catalog.STANDARD, ids=lambda v: str(v))
def test_shipped_model_uses_builtin_ops_only_and_has_the_signatures(sizes, b):
    path = catalog.PACKAGE_MODELS / catalog.model_filename(sizes, b)
    assert non_builtin(path) == []
    names = {c.name for c in op_codes(path)}
    assert {"FULLY_CONNECTED", "LOGISTIC", "ASSIGN_VARIABLE", "READ_VARIABLE"} <= names
    from ecufl.kernels.tflite.runtime import load_interpreter

    it = load_interpreter(path)
    sigs = it.get_signature_list()
    assert sigs["train"]["inputs"] == ["lr_over_m", "x", "y"]
    n = len(sizes) - 1
    assert sorted(sigs["set_weights"]["inputs"]) == sorted([f"w{k}" for k in range(1, n + 1)] + [f"b{k}" for k in range(1, n + 1)])
    x = it.get_signature_runner("train").get_input_details()["x"]
    assert list(x["shape"]) == [b, sizes[0]]


def test_op_check_catches_a_flex_op(tmp_path):
    """The builtin-only check can fail: the same model with one Flex op added to its table."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    path = catalog.PACKAGE_MODELS / catalog.model_filename((784, 2, 10), 10)
    m = schema.ModelT.InitFromPackedBuf(path.read_bytes(), 0)
    flex = schema.OperatorCodeT()
    flex.builtinCode = flex.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
    flex.customCode = "FlexMatMul"
    m.operatorCodes.append(flex)
    builder = flatbuffers.Builder(1024)
    builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
    assert non_builtin(bytes(builder.Output())) == ["FlexMatMul"]
    bad = tmp_path / "flex.tflite"
    bad.write_bytes(bytes(builder.Output()))
    r = subprocess.run(ecufl_cmd() + ["tflite", "ops", str(bad)], capture_output=True, text=True)
    assert r.returncode == 1 and "FlexMatMul" in r.stderr


def test_train_subgraph_is_the_hand_written_backward_pass():
    ops = subgraph_ops(catalog.PACKAGE_MODELS / catalog.model_filename((784, 32, 16, 10), 10))
    train = ops["train"]
    assert train.count("LOGISTIC") == 3  # one per layer, forward only: sigmoid' is a (1 - a)
    assert train.count("ASSIGN_VARIABLE") == 6  # w1 b1 w2 b2 w3 b3
    assert train.count("BATCH_MATMUL") + train.count("FULLY_CONNECTED") == 3 + 3 + 2  # fwd, grad w, BP2


# -- against the reference ------------------------------------------------------------------------
def test_one_epoch_on_10000_samples_matches_the_float32_reference(mnist_train, mnist_test):
    n = 10_000
    k = train_pair([784, 30, 10], n, 10, mnist_train.images[:n], mnist_train.labels[:n])
    p64, p32, ptf = (k[key].get_params() for key in (("numpy", "float64"), ("numpy", "float32"), ("tflite", "float32")))
    d32 = max_abs(p32, p64)  # float32 rounding drift of the reference itself
    d_tf = max_abs(ptf, p32)
    assert max_abs(ptf, p64) <= 4 * d32, f"tflite is further from float64 than 4x the float32 reference ({d32:.2e})"
    assert d_tf <= ATOL, f"max |tflite - numpy32| = {d_tf:.2e} > {ATOL}"
    acc32 = k[("numpy", "float32")].evaluate(mnist_test.images, mnist_test.labels).accuracy
    acc_tf = k[("tflite", "float32")].evaluate(mnist_test.images, mnist_test.labels).accuracy
    assert abs(acc32 - acc_tf) <= 0.002
    assert acc_tf > 0.5  # it learned (0.75 after 10,000 samples)


@pytest.mark.parametrize("sizes,b,n", [([784, 32, 10], 32, 1000), ([784, 32, 16, 10], 10, 1005), ([784, 8, 10], 32, 999)])
def test_set_size_not_a_multiple_of_the_batch(mnist_train, sizes, b, n):
    k = train_pair(sizes, n, b, mnist_train.images[:n], mnist_train.labels[:n])
    assert n % b
    assert max_abs(k[("tflite", "float32")].get_params(), k[("numpy", "float32")].get_params()) <= ATOL


def test_a_lone_partial_mini_batch_is_exactly_the_reference_step(mnist_train):
    """m = 7 real rows in a batch-32 model (25 masked rows) against the reference's step on 7 rows."""
    p = init_params([784, 32, 10], 3, dtype="float32")
    order = np.arange(100, 107, dtype=np.int32)
    ref = create("numpy", p, dtype="float32")
    tfl = create("tflite", p)
    ref.train(mnist_train.images, mnist_train.labels, order, 3.0, 32)
    tfl.train(mnist_train.images, mnist_train.labels, order, 3.0, 32)
    delta = max_abs(ref.get_params(), p)
    assert delta > 1e-3  # the step moved the weights
    assert max_abs(tfl.get_params(), ref.get_params()) <= 1e-6  # one step: only last-bit roundings differ
    # an unmasked padding row would add its error to the bias gradient: a visible difference
    assert max_abs(tfl.get_params(), p) == pytest.approx(delta, rel=1e-4)


def test_batch_size_change_carries_the_weights_over(mnist_train):
    p = init_params([784, 32, 10], 2, dtype="float32")
    ref, tfl = create("numpy", p, dtype="float32"), create("tflite", p)
    for order, b in ((np.arange(0, 200), 10), (np.arange(200, 456), 32), (np.arange(456, 500), 10)):
        order = order.astype(np.int32)
        ref.train(mnist_train.images, mnist_train.labels, order, 3.0, b)
        tfl.train(mnist_train.images, mnist_train.labels, order, 3.0, b)
    assert max_abs(tfl.get_params(), ref.get_params()) <= ATOL
    assert tfl.describe()["batch_size"] == 10


def test_params_round_trip_bit_exact_and_evaluate_matches(mnist_test):
    p = init_params([784, 32, 16, 10], 5, dtype="float32")
    tfl = create("tflite", p)
    for a, b in zip(tfl.get_params().flat(), p.flat()):
        assert np.array_equal(a, b)
    tfl.train(np.zeros((1, 784), np.uint8), np.zeros(1, np.uint8), np.zeros(1, np.int32), 3.0, 10)  # opens a model
    q = init_params([784, 32, 16, 10], 6, dtype="float32")
    tfl.set_params(q)
    for a, b in zip(tfl.get_params().flat(), q.flat()):
        assert a.dtype == np.float32 and np.array_equal(a, b)
    ref = create("numpy", q, dtype="float32")
    e_tf = tfl.evaluate(mnist_test.images, mnist_test.labels)
    e_np = ref.evaluate(mnist_test.images, mnist_test.labels)
    assert abs(e_tf.correct - e_np.correct) <= 2 and e_tf.loss == pytest.approx(e_np.loss, rel=1e-5)
    info = tfl.describe()
    assert info["runtime"].startswith(("ai-edge-litert", "tflite-runtime")) and info["fast_invoke"]


def test_without_xnnpack_same_result(mnist_train):
    p = init_params([784, 8, 10], 1, dtype="float32")
    order = np.arange(300, dtype=np.int32)
    a, b = TFLiteKernel(p), TFLiteKernel(p, xnnpack=False)
    for k in (a, b):
        k.train(mnist_train.images, mnist_train.labels, order, 3.0, 10)
    assert max_abs(a.get_params(), b.get_params()) <= 1e-5
    assert b.describe()["delegate"] == "none"


# -- errors ---------------------------------------------------------------------------------------
def test_missing_model_says_how_to_export_one():
    with pytest.raises(KernelUnavailable, match=r"ecufl tflite export --layers 784,64,10 --batch-size 10"):
        create("tflite", init_params([784, 64, 10], 1, dtype="float32"))
    k = create("tflite", init_params([784, 30, 10], 1, dtype="float32"))
    with pytest.raises(KernelUnavailable, match=r"batch size 7 \(have: 10\).*--layers 784,30,10 --batch-size 7"):
        k.train(np.zeros((7, 784), np.uint8), np.zeros(7, np.uint8), np.arange(7, dtype=np.int32), 3.0, 7)


def test_models_on_the_search_path_come_first(tmp_path, monkeypatch):
    src = catalog.PACKAGE_MODELS / catalog.model_filename((784, 2, 10), 10)
    (tmp_path / catalog.model_filename((784, 2, 10), 10)).write_bytes(src.read_bytes())
    monkeypatch.setenv("ECUFL_TFLITE_MODELS", str(tmp_path))
    assert catalog.find_model([784, 2, 10], 10) == tmp_path / src.name
    assert catalog.batch_sizes_for([784, 2, 10]) == [10, 32]


def test_no_runtime_gives_the_install_line(mnist_dir):
    """With neither runtime importable, `ecufl train --kernel tflite` fails in one line naming the fix."""
    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('ai_edge_litert', 'tflite_runtime'):\n"
        "            raise ImportError(f'blocked {name}')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from ecufl.cli import main\n"
        "main(['train', '--kernel', 'tflite', '--train-limit', '100', '--data-dir', sys.argv[1]])\n"
    )
    r = subprocess.run([sys.executable, "-c", code, str(mnist_dir)], capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install ai-edge-litert" in lines[0] and "tflite-runtime" in lines[0]


def test_runtime_loader_tries_in_order():
    from ecufl.kernels.tflite.runtime import find_runtime

    rt = find_runtime([("not-there", "no_such_tflite_module"), ("ai-edge-litert", "ai_edge_litert.interpreter")])
    assert rt.distribution == "ai-edge-litert" and rt.describe().startswith("ai-edge-litert ")
    with pytest.raises(ImportError, match="pip install ai-edge-litert"):
        find_runtime([("not-there", "no_such_tflite_module")])


# -- CLI ------------------------------------------------------------------------------------------
def test_cli_train_reaches_090(mnist_dir):
    """The issue's command: 784-30-10, batch 10, lr 3.0, seed 1, one epoch on all 60,000 samples."""
    import json

    r = subprocess.run(ecufl_cmd() + ["train", "--kernel", "tflite", "--layers", "784,30,10", "--epochs", "1",
                                      "--batch-size", "10", "--lr", "3.0", "--seed", "1", "--json",
                                      "--data-dir", str(mnist_dir)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["test_accuracy"] >= 0.90
    assert res["kernel_info"]["model"].endswith("hdrnn-784-30-10-b10.tflite")


@pytest.mark.parametrize("args,needle", [
    (["--layers", "784", "--batch-size", "10"], "--layers"),
    (["--layers", "784,30,10", "--batch-size", "0"], "--batch-size"),
    (["--layers", "784,30,10"], "--batch-size"),
    (["--standard", "--layers", "784,30,10"], "--standard"),
])
def test_cli_export_bad_flags_exit_2(args, needle):
    r = subprocess.run(ecufl_cmd() + ["tflite", "export"] + args, capture_output=True, text=True)
    assert r.returncode == 2 and needle in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_cli_models_and_ops():
    r = subprocess.run(ecufl_cmd() + ["tflite", "models"], capture_output=True, text=True)
    assert r.returncode == 0 and "hdrnn-784-30-10-b10.tflite" in r.stdout
    path = catalog.PACKAGE_MODELS / catalog.model_filename((784, 30, 10), 10)
    r = subprocess.run(ecufl_cmd() + ["tflite", "ops", str(path)], capture_output=True, text=True)
    assert r.returncode == 0 and "all operators are TFLite builtins" in r.stdout


def test_export_without_tensorflow_says_how_to_install_it(tmp_path):
    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'tensorflow':\n"
        "            raise ImportError('No module named tensorflow')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from ecufl.cli import main\n"
        "main(['tflite', 'export', '--layers', '784,30,10', '--batch-size', '10', '--out', sys.argv[1]])\n"
    )
    out = tmp_path / "m.tflite"
    r = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True)
    assert r.returncode == 1
    assert len(r.stderr.strip().splitlines()) == 1 and "pip install 'ecufl[export]'" in r.stderr
    assert not out.exists()


def test_cli_bench_runs_and_reports_every_column(mnist_dir):
    import json

    r = subprocess.run(ecufl_cmd() + ["tflite", "bench", "--configs", "784-2-10,784-8-10", "--samples", "205",
                                      "--repeats", "1", "--json", "--data-dir", str(mnist_dir)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert [row["config"] for row in out["rows"]] == ["784-2-10", "784-8-10"]
    for row in out["rows"]:
        assert row["samples"] == 205 and row["ratio"] == pytest.approx(row["tflite_epoch_s"] / row["numpy_epoch_s"])
        assert min(row["invoke_us"], row["step_us"], row["public_call_us"], row["numpy_step_us"]) > 0
    assert out["empty_invoke_us"] > 0
