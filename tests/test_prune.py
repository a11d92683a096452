"""Magnitude pruning: masks, schedules, the kept mask, the sparse C path bit for bit, real bytes."""

from __future__ import annotations

import numpy as np
import pytest

from ecufl.kernels import EpochOrder, create, init_params
from ecufl.kernels.prune import PruneOptions, PruneSchedule, check_sparsity, magnitude_mask, pruned_layers
from test_int8 import assert_same_state, bits


def test_magnitude_mask_drops_the_smallest_and_only_grows():
    w = np.array([[0.5, -0.1, 0.3], [-2.0, 0.05, 0.2]], np.float32)
    m1 = magnitude_mask(w, 0.5)
    assert m1.tolist() == [[True, False, True], [True, False, False]]
    w2 = np.where(m1, w, 0).astype(np.float32)
    w2[0, 0] = 0.01  # now the smallest live weight
    m2 = magnitude_mask(w2, 4 / 6, alive=m1)
    assert not np.any(m2 & ~m1) and m2.sum() == 2 and not m2[0, 0]
    assert magnitude_mask(w, 0.0).all()


def test_block_mask_keeps_whole_blocks():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((32, 50)).astype(np.float32)
    m = magnitude_mask(w, 0.75, block=8)
    blocks = m.reshape(4, 8, 50)
    assert np.all(blocks.all(axis=1) == blocks.any(axis=1)) and blocks.all(axis=1).sum() == 50
    score = np.abs(w.astype(np.float64)).reshape(4, 8, 50).sum(axis=1)
    assert score[blocks.all(axis=1)].min() >= score[~blocks.all(axis=1)].max()
    assert magnitude_mask(w[:30], 0.5, block=8).sum() == 30 * 25  # 30 rows: single weights


def test_sparsity_validation():
    assert check_sparsity("0.9") == 0.9
    for bad in (1.0, 1.5, -0.1, float("nan"), "x"):
        with pytest.raises(ValueError, match="--prune"):
            check_sparsity(bad)
    with pytest.raises(ValueError, match="--prune-schedule"):
        PruneOptions.from_options({"prune": 0.5, "prune_schedule": "sometimes"})
    with pytest.raises(ValueError, match="--prune-block"):
        PruneOptions.from_options({"prune": 0.5, "prune_block": 4})
    with pytest.raises(ValueError, match="needs --prune"):
        PruneOptions.from_options({"prune_warmup": 2})
    assert pruned_layers([784, 32, 16, 10]) == [0, 1] and pruned_layers([784, 10]) == []


def test_schedule_events_do_not_depend_on_how_the_epoch_is_split():
    def events(splits, opts):
        sched = PruneSchedule(opts)
        seen, pos = [], 0
        for n in splits:
            for start, stop, s in sched.segments(n, 1000, 10):
                if s is not None:
                    seen.append((pos + start, round(s, 9)))
            pos += n
        return seen

    oneshot = PruneOptions(0.9)
    assert events([3000], oneshot) == events([500, 500, 700, 1300], oneshot) == [(1000, 0.9)]
    gradual = PruneOptions(0.8, "gradual", warmup=1, ramp=1)
    e = events([3000], gradual)
    assert e == events([10, 990, 20, 1980], gradual)
    assert len(e) == 10 and e[-1] == (2000, 0.8) and e[0][0] == 1100
    assert all(a[1] < b[1] for a, b in zip(e, e[1:]))  # rises monotonically
    assert e[0][1] == pytest.approx(0.8 * (1 - 0.9**3))  # cubic (Zhu & Gupta)


@pytest.mark.parametrize("kernel", ["int8-plain", "int8"])
@pytest.mark.parametrize("schedule, block", [("oneshot", 8), ("gradual", 8), ("gradual", 1)])
def test_pruned_c_bit_exact_with_numpy(kernel, schedule, block, mnist_train, mnist_test):
    sizes = [784, 32, 16, 10]
    n = 3000
    images, labels = mnist_train.images[:n], mnist_train.labels[:n]
    p = init_params(sizes, 4, dtype="float32")
    order = EpochOrder(n, 4).next()
    opts = dict(prune=0.75, prune_schedule=schedule, prune_warmup=0, prune_ramp=1, prune_block=block)
    ck, nk = create(kernel, p, **opts), create("int8-numpy", p, **opts)
    for k in (ck, nk):
        k.train(images, labels, order[:1230], 3.0, 10)
        k.train(images, labels, order[1230:], 3.0, 10)
        k.train(images, labels, order, 3.0, 10)  # second epoch with the mask kept
    assert_same_state(ck, nk, mnist_test.images[:200])
    d = ck.describe()
    assert d["sparsity"] == pytest.approx(0.75, abs=1e-4) and d["prune_schedule"] == schedule
    assert ck.weight_bytes() == nk.weight_bytes()


def test_wide_pruned_layer_bit_exact_with_numpy(mnist_train, mnist_test):
    """136 hidden units: 17 blocks of 8 rows per pixel, more than the 16 entries the block list
    writes per pixel in one go (block_list.h), and an AVX2 forward tail of one vector."""
    sizes = [784, 136, 10]
    n = 1000
    p = init_params(sizes, 8, dtype="float32", scaled=True)
    order = EpochOrder(n, 8).next()
    opts = dict(prune=0.05, prune_warmup=0)  # most pixels keep all 17 blocks
    ck, nk = create("int8", p, **opts), create("int8-numpy", p, **opts)
    for k in (ck, nk):
        k.train(mnist_train.images[:n], mnist_train.labels[:n], order, 3.0, 10)
    assert_same_state(ck, nk, mnist_test.images[:100])
    dense = create("int8", p)  # and the dense AVX2 path at this width
    dense_ref = create("int8-numpy", p)
    for k in (dense, dense_ref):
        k.train(mnist_train.images[:n], mnist_train.labels[:n], order[:300], 3.0, 10)
    assert_same_state(dense, dense_ref, mnist_test.images[:100])


def test_mask_is_kept_through_training_and_set_params(mnist_train):
    p = init_params([784, 64, 10], 6, dtype="float32")
    k = create("int8", p, prune=0.9, prune_warmup=0)
    order = np.arange(2000, dtype=np.int32)
    k.train(mnist_train.images, mnist_train.labels, order, 3.0, 10)
    w1 = k.get_params().weights[0]
    dead = w1 == 0
    assert dead.mean() == pytest.approx(0.9, abs=1e-3)
    k.train(mnist_train.images, mnist_train.labels, order, 3.0, 10)
    assert np.all(k.get_params().weights[0][dead] == 0)
    k.set_params(init_params([784, 64, 10], 7, dtype="float32"))  # dense weights from a server
    assert np.all(k.get_params().weights[0][dead] == 0) and np.all(k.get_params().weights[0][~dead] != 0)
    assert np.count_nonzero(k.get_params().weights[1]) == 640  # the output layer is never pruned


def test_memory_is_the_sparse_footprint():
    sizes = [784, 128, 10]
    p = init_params(sizes, 1, dtype="float32")
    dense = create("int8", p)
    out = {}
    for s in (0.5, 0.75, 0.9):
        k = create("int8", p, prune=s, prune_warmup=0)
        k.train(np.zeros((10, 784), np.uint8), np.zeros(10, np.uint8), np.arange(10, dtype=np.int32), 1.0, 10)
        nnz = 8 * round((1 - s) * 784 * 16)  # kept 8-row blocks
        # block-CSC: int8 values, one uint16 row index per block, int32 column pointers; dense output layer
        assert k.weight_bytes() == nnz + 2 * nnz // 8 + 785 * 4 + 2 * 128 + 8 + 1280 + 2 * 10 + 8
        assert k.describe()["master_bytes"] == 4 * (nnz + 128 + 1280 + 10)
        out[s] = k.weight_bytes()
    assert out[0.9] < out[0.75] < out[0.5] < dense.weight_bytes()
    single = create("int8", p, prune=0.5, prune_warmup=0, prune_block=1)
    single.train(np.zeros((10, 784), np.uint8), np.zeros(10, np.uint8), np.arange(10, dtype=np.int32), 1.0, 10)
    assert single.weight_bytes() > dense.weight_bytes()  # one uint16 index per int8 weight: worse than dense


def test_prune_accuracy_after_warmup(mnist_train, mnist_test):
    """One dense epoch then 90% one-shot pruning and a second epoch: close to the unpruned net."""
    p = init_params([784, 64, 10], 1, dtype="float32", scaled=True)
    n = 20000
    order = EpochOrder(n, 1)
    dense, pruned = create("int8", p), create("int8", p, prune=0.9)
    for _ in range(2):
        o = order.next()
        for k in (dense, pruned):
            k.train(mnist_train.images[:n], mnist_train.labels[:n], o, 3.0, 10)
    a_dense = dense.evaluate(mnist_test.images, mnist_test.labels).accuracy
    a_pruned = pruned.evaluate(mnist_test.images, mnist_test.labels).accuracy
    assert pruned.describe()["sparsity"] == pytest.approx(0.9, abs=1e-4)
    # This run (784-64-10, 20,000 samples, 2 epochs) measured 1.91 points below dense (0.9360 vs
    # 0.9169, 2026-12-06); kernels/README.md's 0.73 is 784-128-10 on full epochs. Held at 2.5 points:
    # the measured figure plus a 0.59-point margin (was 3)
    assert a_pruned >= a_dense - 0.025, (a_dense, a_pruned)


def test_float_kernels_refuse_prune_with_one_line():
    from test_int8 import test_bad_input_one_line_exit_2 as run

    run(["--kernel", "numpy", "--prune", "0.5"], "takes no option --prune")


# --- the float32 C kernel's pruning path (c-sparse) ------------------------------------------------
class MaskedNumpy:
    """The float32 numpy reference with masks applied to the gradients: the truth for c-sparse."""

    def __init__(self, params):
        from ecufl.kernels.reference import NumpyKernel

        self.k = NumpyKernel(params, dtype="float32")
        self.masks = [None] * len(params.weights)

    def set_masks(self, masks):
        self.masks = masks
        for l, m in enumerate(masks):
            if m is not None:
                self.k.w[l][~m] = 0

    def train(self, images, labels, order, lr, bs):
        for c in range(0, len(order), bs):
            idx = order[c : c + bs]
            x = images[idx].astype(np.float32) / np.float32(255)
            gw, gb = self.k.gradients(x, np.eye(10, dtype=np.float32)[labels[idx]])
            step = np.float32(lr / len(idx))
            for l, m in enumerate(self.masks):
                g = gw[l] * step
                if m is not None:
                    g[~m] = 0
                self.k.w[l] -= g
                self.k.b[l] -= gb[l] * step


@pytest.mark.parametrize("block, sparsity", [(8, 0.75), (8, 0.9), (1, 0.75)])
def test_c_sparse_matches_masked_float_reference(block, sparsity, mnist_train, mnist_test):
    """Float arithmetic, so the float tolerance of kernels/README.md (1e-4 after an epoch of 10,000)."""
    sizes = [784, 32, 16, 10]
    p = init_params(sizes, 2, dtype="float32")
    order = EpochOrder(len(mnist_train), 2).next()[:10000]
    ck = create("c-sparse", p, prune=sparsity, prune_warmup=0, prune_block=block)
    ck.train(mnist_train.images, mnist_train.labels, order[:10], 3.0, 10)  # prunes at step 0, then trains
    ref = MaskedNumpy(p)
    ref.set_masks(ck.masks)
    ref.train(mnist_train.images, mnist_train.labels, order[:10], 3.0, 10)
    ck.train(mnist_train.images, mnist_train.labels, order[10:], 3.0, 10)
    ref.train(mnist_train.images, mnist_train.labels, order[10:], 3.0, 10)
    got = ck.get_params()
    for l, (a, b) in enumerate(zip(got.flat(), ref.k.get_params().flat())):
        assert np.max(np.abs(a - b)) < 1e-4, f"array {l}"
    assert np.all(got.weights[0][~ck.masks[0]] == 0) and np.all(got.weights[1][~ck.masks[1]] == 0)
    acc_c = ck.evaluate(mnist_test.images, mnist_test.labels).accuracy
    acc_r = ref.k.evaluate(mnist_test.images, mnist_test.labels).accuracy
    assert abs(acc_c - acc_r) <= 0.002
    assert ck.weight_bytes() < p.nbytes() / 2 and ck.describe()["sparsity"] == pytest.approx(sparsity, abs=1e-3)


def test_c_sparse_unpruned_matches_numpy_float32(mnist_train):
    p = init_params([784, 30, 10], 1, dtype="float32")
    order = EpochOrder(len(mnist_train), 1).next()[:10000]
    a, b = create("numpy", p, dtype="float32"), create("c-sparse", p)
    for k in (a, b):
        k.train(mnist_train.images, mnist_train.labels, order, 3.0, 10)
    for x, y in zip(a.get_params().flat(), b.get_params().flat()):
        assert np.max(np.abs(x - y)) < 1e-4


def test_c_kernel_prunes_through_the_cli():
    import json
    import subprocess

    from conftest import ecufl_cmd

    proc = subprocess.run(ecufl_cmd() + ["train", "--kernel", "c", "--prune", "0.9", "--layers", "784,32,10",
                                         "--train-limit", "2000", "--epochs", "2", "--json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)["kernel_info"]
    assert info["path"] == "block-csc-float32" and info["sparsity"] == pytest.approx(0.9, abs=1e-3)
    assert info["weight_bytes"] < 784 * 32 * 4 / 5


@pytest.mark.parametrize("args, message", [
    (["--kernel", "c", "--prune", "1.5"], "--prune: sparsity must be in [0, 1)"),
    (["--kernel", "c", "--prune", "-0.1"], "--prune: sparsity must be in [0, 1)"),
    (["--kernel", "c-sparse", "--prune", "0.5", "--dtype", "float64"], "--dtype float64"),
])
def test_c_prune_bad_input(args, message):
    from test_int8 import test_bad_input_one_line_exit_2 as run

    run(args, message)


@pytest.mark.parametrize("args, message", [
    (["--sparsities", "1.5"], "--sparsities: sparsity must be in [0, 1)"),
    (["--configs", "784-10"], "--configs: expected configs like 784-32-10 with a hidden layer"),
])
def test_bench_prune_bad_flags(args, message):
    import subprocess

    from conftest import ecufl_cmd

    proc = subprocess.run(ecufl_cmd() + ["bench", "prune", *args], capture_output=True, text=True, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and message in lines[0], proc.stderr
