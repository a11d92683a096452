"""Run one round of local training: (kernel, params, shard, hyper-parameters) -> (params, outcome).

This is the one place where a client's training happens, so that a device profile can send the
work elsewhere without the ClientApp changing: the profile ``host`` trains in this process with
``ecufl.kernels.create``; an emulated or real i.MX6 profile registers a trainer of its own
(``register_trainer``) that runs the same job in an external process (qemu-user, a board over
SSH) and fills the board-specific fields of the outcome.

Determinism: the sample order of every local epoch comes from ``EpochOrder`` seeded by
``order_seed(run seed, partition, round)``, never from wall-clock or process state, so a round
re-run after a server restart, or the same round trained by another kernel, sees the same order.
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

from ecufl.kernels import EpochOrder, Params, create, kernel_class


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


def train_in_process(job: TrainJob, images: np.ndarray, labels: np.ndarray) -> TrainOutcome:
    """Profile ``host``: the kernel runs in this Python process."""
    t0 = time.perf_counter()
    cls = kernel_class(job.kernel)  # raises KernelUnavailable with a one-line reason
    dtype = job.dtype or cls.dtypes[0]
    kernel = create(job.kernel, job.params.astype(dtype), dtype=dtype, **job.options)
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
