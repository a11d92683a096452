"""The ECU ClientApp called in-process on real MNIST: its report, its determinism, its failures."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Metadata, RecordDict
from flwr.app.message import make_message

from ecufl.client import runner, task
from ecufl.client.client_app import train
from ecufl.kernels import KERNELS, available, init_params
from ecufl.kernels.registry import KernelSpec
from ecufl import wire
from ecufl.proto import RoundReport
from ecufl.server.strategy import check_reply

SIZES = [784, 16, 10]


def config(**over) -> ConfigRecord:
    c = {"layers": "784-16-10", "lr": 3.0, "batch-size": 10, "local-epochs": 1, "seed": 1, "split-alpha": 0.0,
         "train-limit": 600, "num-partitions": 3, "kernel": "", "profile": "",
         "server-round": 1}
    c.update(over)
    return ConfigRecord(c)


def call(node_config: dict, cfg: ConfigRecord, params=None):
    params = params or init_params(SIZES, 1, dtype="float32")
    meta = Metadata(run_id=1, message_id="m1", src_node_id=0, dst_node_id=7, reply_to_message_id="", group_id="1",
                    created_at=0.0, ttl=600.0, message_type="train")
    msg = make_message(meta, RecordDict({wire.ARRAYS: wire.params_to_record(params), wire.CONFIG: cfg}))
    ctx = Context(run_id=1, node_id=7, node_config=node_config, state=RecordDict(), run_config={})
    reply = train(msg, ctx)
    report = RoundReport()
    report.ParseFromString(reply.content.config_records[wire.REPORT][wire.REPORT_BYTES])
    return reply, report


NODE = {"partition-id": 1, "num-partitions": 3, "kernel": "numpy:float32"}


def test_train_reply_and_report(mnist_dir):
    reply, r = call(NODE, config())
    assert r.error == ""
    assert check_reply(reply.content, SIZES) == ""  # what the server will accept
    assert (r.node_id, r.partition_id, r.num_partitions, r.server_round) == (7, 1, 3, 1)
    assert (r.kernel, r.dtype, list(r.layers), r.samples) == ("numpy:float32", "float32", SIZES, 200)
    assert r.train_seconds > 0 and r.cpu_seconds > 0 and r.peak_rss_bytes > 50 * 2**20
    assert 0 < r.train_cpu_seconds <= r.cpu_seconds
    assert r.bytes_received == r.bytes_sent > 4 * (784 * 16 + 16 + 16 * 10 + 10)  # float32 payload + npy headers
    assert 0 < r.local_accuracy <= 1 and r.profile == "host" and r.trainer == "in-process"
    assert not r.HasField("arm_instructions")  # filled only by board profiles
    assert reply.content.metric_records[wire.METRICS][wire.NUM_EXAMPLES] == 200
    # the process keeps MNIST: a second message spends no time loading it
    _, again = call(NODE, config())
    assert again.data_seconds == 0.0


def test_same_seed_partition_round_gives_identical_weights(mnist_dir):
    a, _ = call(NODE, config())
    b, _ = call(NODE, config())
    c, _ = call(NODE, config(**{"server-round": 2}))
    wa, wb, wc = (wire.record_to_params(m.content.array_records[wire.ARRAYS]).flat() for m in (a, b, c))
    assert all(np.array_equal(x, y) for x, y in zip(wa, wb))
    assert not all(np.array_equal(x, y) for x, y in zip(wa, wc))  # another round, another epoch order


def test_scenario_kernel_overrides_node_config(mnist_dir):
    _, r = call(NODE, config(**{"kernel": "numpy,numpy:float64,numpy"}))
    assert (r.kernel, r.dtype) == ("numpy:float64", "float64")


def test_missing_kernel_is_a_clear_client_failure(mnist_dir, monkeypatch):
    missing = [k for k in KERNELS if k not in available()]
    if not missing:  # every kernel built here: register one whose module does not exist
        monkeypatch.setitem(KERNELS, "ghost", KernelSpec("ghost", "ghost_module", "Ghost", "absent", "nothing"))
        missing = ["ghost"]
    reply, r = call(NODE | {"kernel": missing[0]}, config())
    assert f"kernel {missing[0]!r} is not available here" in r.error
    assert wire.ARRAYS not in reply.content.array_records
    assert check_reply(reply.content, SIZES) == "no weights in the reply"


def test_unknown_profile_and_bad_partition(mnist_dir):
    _, r = call(NODE | {"profile": "imx6-nowhere"}, config())
    assert "device profile 'imx6-nowhere' has no trainer here" in r.error
    _, r = call({"partition-id": 5}, config())
    assert "partition-id=5 is outside 0..2" in r.error


@pytest.mark.parametrize("fault,reason", [("nan", "NaN/Inf"), ("inf", "NaN/Inf"), ("shape", "wrong shape"),
                                          ("dtype", "wrong dtype")])
def test_a_damaged_reply_is_caught_by_the_servers_check(mnist_dir, fault, reason):
    """tests/faults.py damages a real reply as the fault app's mod does; the server's check names it."""
    from faults import damage

    reply, _ = call(NODE, config())
    assert check_reply(reply.content, SIZES) == ""
    assert reason in check_reply(damage(reply, fault).content, SIZES)


def test_kernel_alternatives_are_chosen_on_the_node(mnist_dir):
    """"a|b": a when it loads here; a kernel this machine lacks falls through to the next."""
    assert task.choose("numpy:float32|c") == "numpy:float32"
    assert task.choose("no-such-kernel|numpy:float32") == "numpy:float32"
    _, r = call(NODE, config(kernel="no-such-kernel|numpy:float64"))
    assert r.error == "" and r.kernel == "numpy:float64"


def test_order_seed_depends_only_on_seed_partition_round():
    assert runner.order_seed(1, 2, 3) == runner.order_seed(1, 2, 3)
    assert len({runner.order_seed(1, p, r) for p in range(4) for r in range(4)}) == 16


def test_shards_agree_and_cover(mnist_train):
    ident = lambda p: task.Identity(p, 4, "numpy", None, "host")  # noqa: E731
    parts = [task.shard(mnist_train.labels, ident(p), 5, 0.0, 1000)[0] for p in range(4)]
    assert sorted(np.concatenate(parts).tolist()) == list(range(1000))
    skewed = [task.shard(mnist_train.labels, ident(p), 5, 0.3, 0)[0] for p in range(4)]
    assert sum(len(s) for s in skewed) == 60000


def test_clients_take_turns_to_train_under_the_train_lock(tmp_path, monkeypatch, mnist_train):
    """ECUFL_TRAIN_LOCK (`ecufl fleet up --one-trainer`): a client trains only while it holds the
    host's lock file, and its clock starts once it has it; without the variable nothing waits."""
    import fcntl
    import threading
    import time

    def job():
        return runner.TrainJob(kernel="numpy", dtype="float32", profile="host",
                               params=init_params([784, 8, 10], 1, dtype="float32"), shard=np.arange(500),
                               lr=3.0, batch_size=10, epochs=1, order_seed=1)

    lock = tmp_path / "train.lock"
    monkeypatch.setenv(runner.TRAIN_LOCK_ENV, str(lock))
    held = open(lock, "a")
    fcntl.flock(held, fcntl.LOCK_EX)  # another client is training
    done: list = []
    t = threading.Thread(target=lambda: done.append((runner.run(job(), mnist_train.images, mnist_train.labels),
                                                     time.perf_counter())))
    t.start()
    # the client is blocked on the lock: the kernel lists it as a waiter ("->") on the file's inode
    inode = f":{os.stat(lock).st_ino} "
    for _ in range(600):
        if any(ln.split()[1:2] == ["->"] and inode in ln for ln in Path("/proc/locks").read_text().splitlines()):
            break
        assert t.is_alive() and not done, "the client trained without waiting for the lock"
        time.sleep(0.1)
    else:
        raise AssertionError("the client never waited for the lock")
    assert not done  # waiting for its turn
    released = time.perf_counter()
    fcntl.flock(held, fcntl.LOCK_UN)
    held.close()
    t.join(120)
    assert done
    outcome, finished = done[0]
    # its training clock started after the lock was released (same monotonic clock): an order of
    # events, not a speed; a clock started before the wait would put the start before the release
    assert finished - outcome.train_seconds >= released, (finished, outcome.train_seconds, released)
    # released: the next client goes straight in, and so does one without a lock
    assert runner.run(job(), mnist_train.images, mnist_train.labels).samples == 500
    monkeypatch.delenv(runner.TRAIN_LOCK_ENV)
    assert runner.run(job(), mnist_train.images, mnist_train.labels).samples == 500
