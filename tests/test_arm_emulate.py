"""Training under emulation: the ARM build of a kernel, run by qemu-arm -cpu cortex-a9 with the
counting plugin, returns the same weights as the kernel's truth on x86, exact counts, a projected
A9 time, the peak memory, and one clear line for every way it can go wrong."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from ecufl.kernels import EpochOrder, init_params
from ecufl.kernels.arm import count, emulate, microbench
from ecufl.kernels.arm.costmodel import CostModel
from ecufl.kernels.arm.profiles import Profile, UnknownProfile

pytestmark = pytest.mark.arm
SIZES = [784, 16, 10]


@pytest.fixture(scope="module")
def job(mnist_train):
    params = init_params(SIZES, 3, dtype="float32")
    shard = np.arange(5000, 5600)
    order = EpochOrder(len(shard), 11)
    orders = [shard[order.next()].astype(np.int32) for _ in range(2)]
    return params, mnist_train.images, mnist_train.labels, orders


def x86_int8(params, images, labels, orders, tmp_path):
    """The same int8 job runner built for this machine (plain ops): the x86 run of the kernel."""
    d = emulate.KERNELS_DIR / "int8"
    exe = tmp_path / "int8_check_x86"
    subprocess.run(["cc", "-O3", "-ffp-contract=off", "-o", str(exe), str(d / "int8_check.c"),
                    str(d / "int8_net.c"), str(d / "int8_ops_plain.c"), "-lm"], check=True)
    trainer = emulate.TRAINERS["int8-plain"]
    current = params
    for order in orders:
        used = np.unique(order)
        args = trainer.write_job(tmp_path, current, images[used], labels[used],
                                 np.searchsorted(used, order).astype(np.int32), 3.0, 10)
        subprocess.run([str(exe), *args], check=True, capture_output=True)
        current = trainer.read_params(tmp_path, params.sizes)
    return current


@pytest.mark.parametrize("kernel", ["int8", "int8-plain"])
def test_int8_trainer_matches_the_x86_run_bit_for_bit(job, kernel, tmp_path):
    params, images, labels, orders = job
    result = emulate.run_emulated(kernel, params, images, labels, orders, 3.0, 10, "imx6",
                                  model=CostModel.trm())
    truth = x86_int8(params, images, labels, orders, tmp_path)
    for a, b in zip(result.params.flat(), truth.flat()):
        assert np.array_equal(a.view(np.uint32), b.view(np.uint32))
    assert not np.array_equal(result.params.weights[0], params.weights[0])  # it did train
    r = result.report
    assert r["profile"] == "imx6" and r["epochs"] == 2 and r["samples"] == 1200
    assert r["arm_instructions"] == sum(r["instruction_classes"].values()) > 1_000_000
    assert r["projected_seconds"] == pytest.approx(r["projected_cycles"] / 1e9)
    assert r["cost_model"] == "TRM" and r["unpriced_classes"] == {}
    assert 0 < r["peak_rss_bytes"] < 64 * 2**20 and r["qemu_peak_rss_bytes"] > r["peak_rss_bytes"]


def test_counts_are_repeatable_and_the_clock_only_scales_time(job):
    params, images, labels, orders = job
    a = emulate.run_emulated("int8", params, images, labels, orders[:1], 3.0, 10, "imx6", model=CostModel.trm())
    b = emulate.run_emulated("int8", params, images, labels, orders[:1], 3.0, 10, "imx6-792", model=CostModel.trm())
    assert a.report["instruction_classes"] == b.report["instruction_classes"]
    assert b.report["projected_seconds"] == pytest.approx(a.report["projected_seconds"] * 1e9 / 792e6)


def test_neon_path_projects_faster_than_plain(job):
    params, images, labels, orders = job
    neon = emulate.run_emulated("int8", params, images, labels, orders[:1], 3.0, 10, "imx6", model=CostModel.trm())
    plain = emulate.run_emulated("int8-plain", params, images, labels, orders[:1], 3.0, 10, "imx6", model=CostModel.trm())
    assert neon.report["projected_seconds"] < plain.report["projected_seconds"]
    assert any(k.startswith("neon.") for k in neon.report["instruction_classes"])


def test_memory_of_the_profile_is_enforced(job):
    params, images, labels, orders = job
    tiny = Profile("tiny", 1e9, 1 * 2**20, "a board with 1 MiB")
    with pytest.raises(count.MemoryLimitExceeded, match=r"trainer int8 exceeds the memory of profile tiny \(1 MiB\)"):
        emulate.run_emulated("int8", params, images, labels, orders[:1], 3.0, 10, tiny)


def test_bad_inputs_are_one_line(job):
    params, images, labels, orders = job
    with pytest.raises(emulate.UnknownTrainer, match="kernel 'tflite' has no ARM trainer"):
        emulate.run_emulated("tflite", params, images, labels, orders, 3.0, 10, "imx6")
    with pytest.raises(UnknownProfile, match="unknown device profile 'imx9'"):
        emulate.run_emulated("int8", params, images, labels, orders, 3.0, 10, "imx9")
    with pytest.raises(ValueError, match="'host' does not emulate"):
        emulate.run_emulated("int8", params, images, labels, orders, 3.0, 10, "host")
    with pytest.raises(ValueError, match="out of range"):
        emulate.run_emulated("int8", params, images, labels, [np.array([70000], np.int32)], 3.0, 10, "imx6")


@dataclass(frozen=True)
class CrashingTrainer:
    """The micro-benchmark binary asked for a loop it does not have: exits 2 with a message."""

    kernel: str = "crash"
    functions: tuple[str, ...] = ("mb_alu",)

    def build(self) -> Path:
        return microbench.build()

    def write_job(self, workdir, params, images, labels, order, lr, batch_size):
        return ["no_such_loop", "1"]

    def read_params(self, workdir, sizes):
        raise AssertionError("never reached")


def test_trainer_that_fails_under_emulation_is_one_line(job, monkeypatch):
    params, images, labels, orders = job
    monkeypatch.setitem(emulate.TRAINERS, "crash", CrashingTrainer())
    with pytest.raises(count.EmulationError) as e:
        emulate.run_emulated("crash", params, images, labels, orders[:1], 3.0, 10, "imx6")
    msg = str(e.value)
    assert "trainer crash (epoch 1)" in msg and "exit status 2" in msg and "unknown loop no_such_loop" in msg
    assert "\n" not in msg


def test_train_shard_uses_the_clients_epoch_orders(job):
    params, images, labels, _ = job
    shard = np.arange(7000, 7250)
    a = emulate.train_shard("int8", params, images, labels, shard, 42, 2, 3.0, 10, "imx6", model=CostModel.trm())
    order = EpochOrder(len(shard), 42)
    orders = [shard[order.next()].astype(np.int32) for _ in range(2)]
    b = emulate.run_emulated("int8", params, images, labels, orders, 3.0, 10, "imx6", model=CostModel.trm())
    for x, y in zip(a.params.flat(), b.params.flat()):
        assert np.array_equal(x, y)
    assert a.report["instruction_classes"] == b.report["instruction_classes"] and a.report["samples"] == 500
    with pytest.raises(ValueError, match="epochs must be at least 1"):
        emulate.train_shard("int8", params, images, labels, shard, 42, 0, 3.0, 10, "imx6")


def test_client_round_gives_the_clients_outcome_fields(job):
    from types import SimpleNamespace

    from ecufl.client.runner import TrainOutcome

    params, images, labels, _ = job
    j = SimpleNamespace(kernel="c", params=params, shard=np.arange(100, 300), order_seed=9, epochs=1, lr=3.0,
                        batch_size=10, profile="imx6-1200")
    out = TrainOutcome(**emulate.client_round(j, images, labels, model=CostModel.trm()))
    assert out.samples == 200 and out.arm_instructions > 0 and 0 <= out.local_accuracy <= 1
    assert out.board_seconds_projected == pytest.approx(out.extra["projected_cycles"] / 1.2e9)
    assert out.extra["profile"] == "imx6-1200" and out.extra["peak_rss_bytes"] > 0
