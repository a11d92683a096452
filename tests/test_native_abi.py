"""The native kernels' one C ABI (kernels/common/ecufl_kernel.h) as a contract: every library
exports the core and exactly the optional symbols of its features, one binding drives them all,
errors are returned and kept per net, memory is sized at create, and the choice of c-sparse for
`c --prune` is made by the registry, not by a class returning another class's instance."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ecufl.kernels import KERNELS, EpochOrder, create, init_params, kernel_class
from ecufl.kernels.int8.pruned_c import PrunedCKernel
from ecufl.kernels.native import OPTIONAL, CKernel, NativeNet, ffi
from ecufl.kernels.registry import resolve
from test_int8 import assert_same_state

ROOT = Path(__file__).resolve().parent.parent
CORE = ["ecufl_net_create", "ecufl_net_destroy", "ecufl_net_error", "ecufl_net_set_params", "ecufl_net_get_params",
        "ecufl_net_init_params", "ecufl_net_train", "ecufl_net_evaluate", "ecufl_net_weight_bytes", "ecufl_net_describe"]
PRUNING = {"ecufl_net_set_mask"}
QUANTISED = {"ecufl_net_master_bytes", "ecufl_net_get_quantised", "ecufl_net_forward_trace"}
ANY_DATA = {"ecufl_net_train_f32", "ecufl_net_evaluate_f32"}  # issue 17: every library
# library -> (kernel family in describe(), optional symbols it must export)
LIBS = {
    "ecufl_c": ("c", ANY_DATA),
    "ecufl_c_plain": ("c", ANY_DATA),
    "ecufl_eigen": ("eigen", ANY_DATA),
    "ecufl_sparse_f32": ("c-sparse", ANY_DATA | PRUNING),
    "ecufl_int8": ("int8", ANY_DATA | PRUNING | QUANTISED),
    "ecufl_int8_plain": ("int8", ANY_DATA | PRUNING | QUANTISED),
}


def message(net: NativeNet) -> str:
    return ffi.string(net.lib.ecufl_net_error(net.net)).decode()


@pytest.mark.parametrize("lib", LIBS)
def test_core_and_exactly_its_optional_symbols(lib):
    family, optional = LIBS[lib]
    net = NativeNet(lib, [784, 16, 10], 8)
    assert all(net.has(s) for s in CORE)
    assert {s for s in OPTIONAL if net.has(s)} == optional
    info = net.describe()
    assert info["kernel"] == family and info["path"]


def test_a_missing_optional_call_is_a_one_line_error():
    net = NativeNet("ecufl_c", [784, 16, 10], 8)
    with pytest.raises(ValueError, match="ecufl_c: has no ecufl_net_set_mask"):
        net.set_mask(0, np.ones((16, 784), np.uint8), 8)
    with pytest.raises(ValueError, match="has no ecufl_net_get_quantised"):
        net.quantised(0)


@pytest.mark.parametrize("lib", LIBS)
def test_errors_are_returned_and_kept_per_net(lib, mnist_train):
    a, b = NativeNet(lib, [784, 16, 10], 8), NativeNet(lib, [784, 16, 10], 8)
    for net in (a, b):
        net.init_params(1)
    before = a.get_params()
    imgs, labels = mnist_train.images[:100], mnist_train.labels[:100]
    with pytest.raises(ValueError, match="order"):
        a.train(imgs, labels, np.array([0, 100], np.int32), 3.0, 8)
    with pytest.raises(ValueError, match="max_batch"):  # memory is sized at create: 9 > 8 is refused
        b.train(imgs, labels, np.arange(20, dtype=np.int32), 3.0, 9)
    assert "order" in message(a) and "max_batch" in message(b)  # b's failure did not overwrite a's message
    bad = labels.copy()
    bad[3] = 10
    with pytest.raises(ValueError, match="label"):
        a.train(imgs, bad, np.arange(10, dtype=np.int32), 3.0, 8)
    assert all(np.array_equal(x, y) for x, y in zip(before.flat(), a.get_params().flat()))  # refused = untouched
    a.train(imgs, labels, np.arange(16, dtype=np.int32), 3.0, 8)  # and the net still trains
    assert not all(np.array_equal(x, y) for x, y in zip(before.flat(), a.get_params().flat()))
    with pytest.raises(ValueError, match=f"{lib}: .*size"):
        NativeNet(lib, [784, 0, 10], 8)


@pytest.mark.parametrize("lib", [name for name, (_, opt) in LIBS.items() if PRUNING <= opt])
def test_bad_masks_are_refused(lib):
    net = NativeNet(lib, [784, 16, 10], 8)
    half = np.ones((16, 784), np.uint8)
    half[1::2] = 0  # rows alternate: not whole blocks of 8 rows
    with pytest.raises(ValueError, match="whole 8-row blocks"):
        net.set_mask(0, half, 8)
    with pytest.raises(ValueError, match="no weight layer 2"):
        net.set_mask(2, half, 1)
    with pytest.raises(ValueError, match="block 4"):
        net.set_mask(0, half, 4)


def test_c_with_prune_is_c_sparse_chosen_by_the_registry():
    p = init_params([784, 16, 10], 1, dtype="float32")
    assert resolve("c", {"prune": 0.5}) == "c-sparse" and resolve("c", {}) == "c" and resolve("c", {"prune": None}) == "c"
    assert resolve("int8", {"prune": 0.5}) == "int8"  # int8 prunes with its own library
    k = create("c", p, prune=0.5)
    assert type(k) is PrunedCKernel and k.name == "c-sparse" and k.describe()["kernel"] == "c-sparse"
    with pytest.raises(ValueError, match="c-sparse"):
        CKernel(p, prune=0.5)
    assert type(CKernel(p)) is CKernel
    assert CKernel.check_options(None, prune=0.5) == "float32"  # validated as c-sparse will run it
    with pytest.raises(ValueError, match="--prune: sparsity"):
        CKernel.check_options(None, prune=1.5)


def test_no_kernel_class_builds_another_class():
    p = init_params([784, 16, 10], 1, dtype="float32")
    for name in ["numpy", "textbook", "c", "c-plain", "eigen", "c-sparse", "int8", "int8-plain", "int8-numpy"]:
        cls = kernel_class(name)
        assert not any("__new__" in vars(c) for c in cls.__mro__ if c.__module__.startswith("ecufl")), name
        k = cls(p, dtype="float32")
        assert type(k) is cls and k.name == name == KERNELS[name].name
        k.close()


@pytest.mark.parametrize("kernel", ["int8", "int8-plain"])
def test_a_bigger_batch_prepares_a_new_net_with_the_masks(kernel, mnist_train, mnist_test):
    """Mid-training, after pruning, a batch above the net's max_batch (64) gets a new net: the
    masks and the int8 state carry over bit for bit (against int8-numpy, which has no such limit)."""
    p = init_params([784, 32, 16, 10], 2, dtype="float32")
    n = 2000
    order = EpochOrder(n, 2).next()
    opts = dict(prune=0.75, prune_warmup=0, prune_block=8)
    ck, nk = create(kernel, p, **opts), create("int8-numpy", p, **opts)
    for k in (ck, nk):
        k.train(mnist_train.images[:n], mnist_train.labels[:n], order[:1000], 3.0, 10)
        k.train(mnist_train.images[:n], mnist_train.labels[:n], order[1000:], 3.0, 100)
    assert ck._live().max_batch == 100
    assert_same_state(ck, nk, mnist_test.images[:150])  # 150 > the 100 samples the buffers hold
    assert ck.describe()["sparsity"] == pytest.approx(0.75, abs=1e-3)


def test_c_sparse_bigger_batch_keeps_the_masks(mnist_train):
    p = init_params([784, 32, 10], 3, dtype="float32")
    k = create("c-sparse", p, prune=0.9, prune_warmup=0)
    k.train(mnist_train.images[:1000], mnist_train.labels[:1000], np.arange(500, dtype=np.int32), 3.0, 10)
    dead = k.get_params().weights[0] == 0
    k.train(mnist_train.images[:1000], mnist_train.labels[:1000], np.arange(500, 1000, dtype=np.int32), 3.0, 100)
    assert k._live().max_batch == 100
    w = k.get_params().weights[0]
    assert np.all(w[dead] == 0) and np.all(w[~dead] != 0) and dead.mean() == pytest.approx(0.9, abs=1e-3)


# ---- the pruning and int8 libraries under AddressSanitizer + UBSan ---------------------------------

@pytest.fixture(scope="module")
def san_int8_build(tmp_path_factory) -> Path:
    build = tmp_path_factory.mktemp("sanitize-int8")
    subprocess.run(["cmake", "-S", str(ROOT / "kernels"), "-B", str(build), "-DECUFL_SANITIZE=ON", "-DECUFL_BUILD_PYTHON=ON",
                    "-DECUFL_BUILD_TRAINERS=OFF", "-DCMAKE_BUILD_TYPE=RelWithDebInfo"], check=True, capture_output=True)
    subprocess.run(["cmake", "--build", str(build), "-j2", "--target", "ecufl_int8", "ecufl_int8_plain", "ecufl_sparse_f32"],
                   check=True, capture_output=True)
    return build


SAN_DRIVER = r"""
import numpy as np
from ecufl import data
from ecufl.kernels import EpochOrder, create, init_params
tr = data.load("train")
for name in ["int8", "int8-plain", "c-sparse"]:
    for sizes, opts in [([784, 3, 10], {}), ([784, 32, 16, 10], dict(prune=0.8, prune_warmup=0)),
                        ([784, 24, 10], dict(prune=0.5, prune_warmup=0, prune_block=1, prune_schedule="gradual"))]:
        k = create(name, init_params(sizes, 5, dtype="float32"), **opts)
        order = EpochOrder(700, 5).next()
        k.train(tr.images[:700], tr.labels[:700], order[:333], 3.0, 13)
        k.train(tr.images[:700], tr.labels[:700], order[333:], 3.0, 70)  # a new, bigger net, masks re-applied
        k.set_params(k.get_params())
        ev = k.evaluate(tr.images[:333], tr.labels[:333])
        if name != "c-sparse":
            k.forward_trace(tr.images[:150]); k.quantised(0)
        assert np.isfinite(ev.loss) and k.weight_bytes() > 0
        try:
            k.train(tr.images[:700], tr.labels[:700], np.array([700], np.int32), 3.0, 13)
            raise SystemExit("no error")
        except ValueError:
            pass
        k.close()
print("ok")
"""


@pytest.mark.slow
def test_pruning_and_int8_libraries_under_sanitizers(san_int8_build):
    libasan = subprocess.run(["cc", "-print-file-name=libasan.so"], capture_output=True, text=True).stdout.strip()
    libubsan = subprocess.run(["cc", "-print-file-name=libubsan.so"], capture_output=True, text=True).stdout.strip()
    env = {"LD_PRELOAD": f"{libasan} {libubsan}", "ECUFL_NATIVE_LIB_DIR": str(san_int8_build),
           "ASAN_OPTIONS": "detect_leaks=0:exitcode=99", "UBSAN_OPTIONS": "print_stacktrace=1:exitcode=98"}
    import os

    r = subprocess.run([sys.executable, "-c", SAN_DRIVER], capture_output=True, text=True, env={**os.environ, **env})
    assert "Sanitizer" not in r.stderr and "runtime error" not in r.stderr, r.stderr[-3000:]
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-3000:]
