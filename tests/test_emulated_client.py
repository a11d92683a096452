"""A ClientApp whose node is an emulated i.MX6 (client/emulated.py): it trains with the ARM build of
its kernel under qemu-arm, reports ARM instructions, projected A9 seconds, the profile and the
trainer's peak memory; every way the board can fail is one line in the report's error, the reply
carries no weights, and the server's round goes on with the other clients."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Metadata
from flwr.app.message import make_message

from ecufl.client import emulated, runner
from ecufl.kernels.arm import count, emulate, profiles
from ecufl.kernels.arm.profiles import Profile
from ecufl import wire
from ecufl.server.strategy import ReportingFedAvg, check_reply
from ecufl.server.virtual_clock import VirtualClock, get_link
from test_arm_emulate import CrashingTrainer
from test_fleet_client import NODE, SIZES, call, config

pytestmark = pytest.mark.arm
BOARD = NODE | {"kernel": "c", "profile": "imx6"}


def as_reply_of(node: int, reply):
    """The client's reply as the server receives it from node ``node``."""
    meta = Metadata(run_id=1, message_id=f"m{node}", src_node_id=node, dst_node_id=0, reply_to_message_id=f"q{node}",
                    group_id="1", created_at=0.0, ttl=60.0, message_type="train")
    return make_message(meta, content=reply.content)


@pytest.fixture(scope="module")
def board_round(mnist_dir):
    return call(BOARD, config())


def test_every_emulated_profile_has_the_emulated_trainer():
    assert {p for p, t in runner.TRAINERS.items() if t is emulated.train_emulated} == {
        p.name for p in profiles.PROFILES.values() if p.emulated} == {"imx6", "imx6-792", "imx6-1200"}


def test_emulated_board_trains_and_reports_its_projection(board_round):
    reply, r = board_round
    assert r.error == "" and check_reply(reply.content, SIZES) == ""
    assert (r.profile, r.kernel, r.samples) == ("imx6", "c", 200)
    assert r.trainer.startswith("qemu-arm -cpu cortex-a9") and "ecufl-train-c" in r.trainer
    assert r.arm_instructions > 200 * 784 * 16  # at least one multiply-add per weight and sample, forward
    # projected A9 time of the counted training only; far below the emulated wall time on this host
    assert 0 < r.board_seconds_projected < r.train_seconds
    assert 0 < r.trainer_peak_rss_bytes < r.peak_rss_bytes  # the board trainer's, not the ClientApp's
    assert 0 < r.local_accuracy <= 1


def test_imx6_792_projects_the_same_instructions_slower(board_round, mnist_dir):
    _, fast = board_round
    _, slow = call(NODE | {"kernel": "c", "profile": "imx6-792"}, config())
    assert slow.arm_instructions == fast.arm_instructions  # same job, exact counts
    assert slow.board_seconds_projected == pytest.approx(fast.board_seconds_projected * 1e9 / 792e6)


def _fails(node: dict) -> str:
    reply, r = call(node, config())
    assert wire.ARRAYS not in reply.content.array_records
    assert check_reply(reply.content, SIZES) == "no weights in the reply"
    assert "\n" not in r.error
    return r.error


def test_kernel_without_arm_trainer_is_one_line(mnist_dir):
    assert _fails(NODE | {"kernel": "tflite", "profile": "imx6"}) .startswith(
        "emulated imx6 (tflite): kernel 'tflite' has no ARM trainer for emulation; ARM trainers: c, c-plain")


def test_unknown_profile_is_one_line(mnist_dir):
    assert _fails(NODE | {"kernel": "c", "profile": "imx7"}) .startswith("device profile 'imx7' has no trainer here")


def test_missing_qemu_is_one_line(mnist_dir, monkeypatch):
    monkeypatch.setattr(count, "QEMU", "qemu-arm-not-installed")
    emulate.qemu_baseline_rss.cache_clear()  # measured with qemu: make the first run need it again
    err = _fails(BOARD)
    emulate.qemu_baseline_rss.cache_clear()
    assert err.startswith("emulated imx6 (c): ") and "qemu-arm-not-installed not found" in err


def test_missing_plugin_is_one_line(mnist_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("ECUFL_QEMU_PLUGIN", str(tmp_path / "libinsncount.so"))
    emulate.qemu_baseline_rss.cache_clear()
    err = _fails(BOARD)
    emulate.qemu_baseline_rss.cache_clear()
    assert err.startswith("emulated imx6 (c): qemu instruction-counting plugin not found at")


def test_trainer_crash_is_one_line(mnist_dir, monkeypatch):
    monkeypatch.setitem(emulate.TRAINERS, "crash", CrashingTrainer())
    err = _fails(NODE | {"kernel": "crash", "profile": "imx6"})
    assert err.startswith("emulated imx6 (crash): trainer crash (epoch 1)") and "exit status 2" in err


def test_board_out_of_memory_is_one_line(mnist_dir, monkeypatch):
    monkeypatch.setitem(profiles.PROFILES, "tiny", Profile("tiny", 1e9, 2**20, "a board with 1 MiB"))
    monkeypatch.setitem(runner.TRAINERS, "tiny", emulated.train_emulated)
    err = _fails(NODE | {"kernel": "int8", "profile": "tiny"})
    assert err.startswith("emulated tiny (int8): trainer int8 exceeds the memory of profile tiny (1 MiB)")


def test_round_goes_on_without_the_failed_board(board_round, mnist_dir):
    """One board fails, one trains: the aggregate is the good board's weights, the failure is kept
    with its reason, and the virtual clock times the round by the board that trained."""
    good, good_report = board_round
    bad, _ = call(NODE | {"kernel": "tflite", "profile": "imx6"}, config())
    strategy = ReportingFedAvg(sizes=SIZES, seed=1)
    arrays, _ = strategy.aggregate_train(1, [as_reply_of(41, bad), as_reply_of(42, good)])
    want = wire.record_to_params(good.content.array_records[wire.ARRAYS]).flat()
    for a, b in zip(wire.record_to_params(arrays).flat(), want):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    kept = {r.node_id: r for r in strategy.replies[1]}
    assert not kept[41].accepted and "no ARM trainer" in kept[41].reason and kept[42].accepted
    clock = VirtualClock(get_link("ethernet-100"))
    rnd = clock.advance([clock.client(kept[42].report)])
    assert rnd["virtual_seconds"] > good_report.board_seconds_projected
