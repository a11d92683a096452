"""Projected A9 bench rows: extrapolation from two subsets, FLOP count shared with the x86 rows,
NEON-peak percentage, and a failing kernel reported in its row without losing the others."""

from __future__ import annotations

import pytest

from ecufl import bench
from ecufl.kernels import EpochOrder, init_params
from ecufl.kernels.arm import bench as arm_bench
from ecufl.kernels.arm import emulate
from ecufl.kernels.arm.costmodel import CostModel

pytestmark = pytest.mark.arm


@pytest.mark.parametrize("sizes", [[784, 2, 10], [784, 128, 10], [784, 32, 16, 10]])
@pytest.mark.parametrize("bs", [10, 32])
def test_flops_are_the_x86_bench_flops(sizes, bs):
    assert arm_bench.train_flops_per_sample(sizes, bs) == bench.train_flops_per_sample(sizes, bs)


def test_subsets_are_whole_mini_batches():
    for bs in (1, 10, 32):
        n1, n2 = arm_bench._subset_sizes(bs, 2000)
        assert 0 < n1 < n2 <= 2000 and n1 % bs == 0 and n2 % bs == 0


def test_rows_for_int8_and_an_error_row(mnist_train):
    rows = arm_bench.arm_bench_rows(["int8", "numpy"], ["784-8-10"], "imx6-792", batch_sizes=(10,), samples=200,
                                    images=mnist_train.images, labels=mnist_train.labels, model=CostModel.trm())
    ok, bad = rows
    assert bad["kernel"] == "numpy" and "has no ARM trainer" in bad["error"]
    assert ok["error"] is None and ok["samples_counted"] == [50, 200] and ok["target"] == "imx6-792"
    assert ok["projected_seconds_per_epoch"] == pytest.approx(ok["projected_cycles_per_epoch"] / 792e6)
    flops = bench.train_flops_per_sample([784, 8, 10], 10) * 60000
    assert ok["projected_gflops"] == pytest.approx(flops / ok["projected_seconds_per_epoch"] / 1e9)
    assert ok["percent_of_neon_peak"] == pytest.approx(100 * flops / (4 * ok["projected_cycles_per_epoch"]))
    assert 0 < ok["neon_instruction_share"] < 1
    # the linear extrapolation predicts a third, longer run (the same order's first 600 samples)
    (i1, i2), (n1, n2) = ok["arm_instructions_counted"], ok["samples_counted"]
    predicted = i1 + (600 - n1) * (i2 - i1) / (n2 - n1)
    order = EpochOrder(len(mnist_train.images), 1).next().astype("int32")[:600]
    run = emulate.run_emulated("int8", init_params([784, 8, 10], 1, dtype="float32"), mnist_train.images,
                               mnist_train.labels, [order], 3.0, 10, "imx6", model=CostModel.trm())
    assert run.report["arm_instructions"] == pytest.approx(predicted, rel=0.01)
    epoch = i1 + (60000 - n1) * (i2 - i1) / (n2 - n1)
    assert ok["arm_instructions_per_epoch"] == pytest.approx(epoch, rel=1e-6)


def test_bench_cli_unknown_target_is_one_line_exit_2():
    import subprocess

    from conftest import ecufl_cmd

    proc = subprocess.run([*ecufl_cmd(), "bench", "kernels", "--kernels", "numpy", "--target", "imx7"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "--target: unknown device profile 'imx7'" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
