"""Run one round of local training: (kernel, params, shard, hyper-parameters) -> (params, outcome).

This is the one place where a client's training happens, so that a device profile can send the
work elsewhere without the ClientApp changing: the profile ``host`` trains in this process with
``ecufl.kernels.create``; an emulated or real i.MX6 profile registers a trainer of its own
(``register_trainer``) that runs the same job in an external process (qemu-user, a board over
SSH) and fills the board-specific fields of the outcome.

Determinism: the sample order of every local epoch comes from ``EpochOrder`` seeded by
``order_seed(run seed, partition, round)``, never from wall-clock or process state, so a round
re-run after a server restart, or the same round trained by another kernel, sees the same order.

Kept kernels: a process that trains many rounds (a simulation actor, a warm node's parent and the
ClientApps forked from it) keeps the latest kernel it built (``KEEPABLE`` kernels only: pure
memory, no thread, socket or interpreter) and loads each round's global weights into it with
``set_params``; a new kernel, dtype or layer sizes replaces it. Weights after training are
bit-identical to those of a freshly created kernel (``tests/test_fleet_warm.py``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from ecufl.client import task
from ecufl.kernels import EpochOrder, Kernel, Params, create, init_params, kernel_class


@dataclass
class TrainJob:
    kernel: str
    dtype: str | None  # None: the kernel's default arithmetic
    profile: str
    params: Params  # the global weights of this round
    shard: np.ndarray  # indices into the MNIST training set
    lr: float
    batch_size: int
    epochs: int
    order_seed: int
    options: dict[str, Any] = field(default_factory=dict)  # kernel options, e.g. {"agent": board} for `remote`


@dataclass
class TrainOutcome:
    params: Params
    dtype: str
    samples: int
    setup_seconds: float
    train_seconds: float
    train_cpu_seconds: float
    local_loss: float
    local_accuracy: float
    trainer: str
    arm_instructions: int | None = None
    board_seconds_projected: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# A lock file that the clients of one host take turns on while they train (set by `ecufl fleet up
# --one-trainer`): each timing is then that of a core of its own, as on separate ECUs.
TRAIN_LOCK_ENV = "ECUFL_TRAIN_LOCK"


@contextlib.contextmanager
def one_trainer_at_a_time():
    path = os.environ.get(TRAIN_LOCK_ENV)
    if not path:
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # released when the file closes, also if training raises
        yield


def order_seed(seed: int, partition_id: int, server_round: int) -> int:
    """A 32-bit seed for one client's epoch orders in one round, from (run seed, partition, round)."""
    return int(np.random.SeedSequence([seed, partition_id, server_round]).generate_state(1)[0])


# Kernels whose state is plain memory (weights and scratch buffers): safe to keep across messages
# and to inherit through fork(). Not tflite (an interpreter), not remote (a TLS connection), not
# int8/pruned kernels (scales and masks that set_params does not reset the same way).
KEEPABLE = frozenset({"numpy", "textbook", "c", "c-plain", "eigen"})
_KEPT: dict[tuple, Kernel] = {}


def _keep(key: tuple, kernel: Kernel) -> None:
    for old in [k for k in _KEPT if k != key]:
        _KEPT.pop(old).close()
    _KEPT[key] = kernel


def _kernel(job: TrainJob) -> tuple[Kernel, str, bool]:
    """(kernel holding this round's global weights, its dtype, whether it is kept for later rounds)."""
    cls = kernel_class(job.kernel)  # raises KernelUnavailable with a one-line reason
    dtype = job.dtype or cls.dtypes[0]
    params = job.params.astype(dtype)
    if job.kernel not in KEEPABLE or job.options:
        return create(job.kernel, params, dtype=dtype, **job.options), dtype, False
    key = (job.kernel, dtype, tuple(params.sizes))
    kernel = _KEPT.get(key)
    if kernel is not None:
        kernel.set_params(params)
        return kernel, dtype, True
    kernel = create(job.kernel, params, dtype=dtype)
    _keep(key, kernel)
    task.note("kernel", name=job.kernel, dtype=dtype, sizes=list(params.sizes))
    return kernel, dtype, True


def prepare_kernel(name: str, dtype: str, sizes: list[int]) -> bool:
    """Build and keep the kernel a ClientApp noted (a warm parent); True if it was not kept yet."""
    key = (name, dtype, tuple(sizes))
    if name not in KEEPABLE or key in _KEPT:
        return False
    _keep(key, create(name, init_params(list(sizes), 1, dtype=dtype), dtype=dtype))
    return True


def train_in_process(job: TrainJob, images: np.ndarray, labels: np.ndarray) -> TrainOutcome:
    """Profile ``host``: the kernel runs in this Python process."""
    t0 = time.perf_counter()
    kernel, dtype, kept = _kernel(job)
    setup = time.perf_counter() - t0
    try:
        # The epoch orders are drawn before the clock starts, as the bench draws its order: the
        # shuffle (random.shuffle's algorithm in Python) takes ~5 ms per 15,000 samples, a quarter
        # of what the c kernel needs to train them, and is not the kernel's cost.
        t0 = time.perf_counter()
        order = EpochOrder(len(job.shard), job.order_seed)
        epochs = [job.shard[order.next()] for _ in range(job.epochs)]
        setup += time.perf_counter() - t0
        # One thread, timed on that thread's own CPU clock: as `ecufl bench kernels` measures, and
        # as an ECU's single core runs it. The process clock would also count Flower's gRPC and
        # Ray's threads, which run while the kernel trains and are not the kernel's cost.
        with one_trainer_at_a_time(), threadpool_limits(1):
            t0, c0 = time.perf_counter(), time.thread_time()
            for epoch in epochs:
                kernel.train(images, labels, epoch, job.lr, job.batch_size)
            train, train_cpu = time.perf_counter() - t0, time.thread_time() - c0
        ev = kernel.evaluate(images[job.shard], labels[job.shard])
        params = kernel.get_params()
        # a kernel that trains in another process (the board agent of kernel `remote`) names that
        # process's own peak memory and training CPU: the board's figures, not this ClientApp's
        described = kernel.describe()
        own = described.get("trainer_peak_rss_bytes")
        train_cpu = described.get("trainer_train_cpu_seconds", train_cpu)
    finally:
        if not kept:
            kernel.close()
    return TrainOutcome(params=params, dtype=dtype, samples=len(job.shard), setup_seconds=setup,
                        train_seconds=train, train_cpu_seconds=train_cpu, local_loss=ev.loss, local_accuracy=ev.accuracy,
                        trainer="in-process", extra={} if own is None else {"peak_rss_bytes": int(own)})


Trainer = Callable[[TrainJob, np.ndarray, np.ndarray], TrainOutcome]
TRAINERS: dict[str, Trainer] = {"host": train_in_process}


def register_trainer(profile: str, trainer: Trainer) -> None:
    """Route jobs of ``profile`` to ``trainer`` (used by the emulated / board profiles)."""
    TRAINERS[profile] = trainer


def run(job: TrainJob, images: np.ndarray, labels: np.ndarray) -> TrainOutcome:
    trainer = TRAINERS.get(job.profile)
    if trainer is None:
        raise ValueError(f"device profile {job.profile!r} has no trainer here; profiles: {', '.join(TRAINERS)}")
    return trainer(job, images, labels)
