"""One training run with one kernel: what ``ecufl train`` and the benchmarks do.

The run is the experiment network.py makes: initial weights from the portable PRNG (or a
weight file), ``epochs`` passes over the training set in the PRNG's order, then evaluation on
the test set. Timings cover ``Kernel.train`` only; peak RSS is the process's high-water mark.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ecufl import data as mnist
from ecufl.kernels import weights as weightfile
from ecufl.kernels import EpochOrder, Params, create, init_params
from ecufl.kernels.base import check_sizes


@dataclass
class TrainConfig:
    kernel: str = "numpy"
    sizes: Sequence[int] = (784, 30, 10)
    epochs: int = 1
    batch_size: int = 10
    lr: float = 3.0
    seed: int = 1
    dtype: str | None = None
    scaled_init: bool = False
    init: str | None = None  # weight file to start from instead of the PRNG
    train_limit: int | None = None  # use only the first N training samples
    shuffle: bool = True
    data_dir: str | None = None
    kernel_options: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        """Raise ValueError with a message naming the flag at fault."""
        try:
            self.sizes = check_sizes(self.sizes)
        except ValueError as e:
            raise ValueError(f"--layers: {e}") from None
        if self.sizes[0] != 784:
            raise ValueError(f"--layers: the first layer must be 784 (28x28 MNIST pixels), got {self.sizes[0]}")
        if self.sizes[-1] != 10:
            raise ValueError(f"--layers: the last layer must be 10 (digits 0-9), got {self.sizes[-1]}")
        if self.epochs < 0:
            raise ValueError(f"--epochs must be >= 0, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {self.batch_size}")
        if not (np.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"--lr must be a positive finite number, got {self.lr}")
        if self.train_limit is not None and self.train_limit < 1:
            raise ValueError(f"--train-limit must be >= 1, got {self.train_limit}")
        if not 0 <= self.seed < 2**32:
            raise ValueError(f"--seed must be in 0..2^32-1, got {self.seed}")


@dataclass
class TrainResult:
    kernel: str
    sizes: list[int]
    dtype: str
    epochs: int
    samples: int
    train_seconds: float
    samples_per_second: float
    test_accuracy: float
    test_loss: float
    peak_rss_bytes: int
    epoch_seconds: list[float]
    kernel_info: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def peak_rss_bytes() -> int:
    """Peak resident memory of this process's own address space (Linux VmHWM), bytes.

    Not ``ru_maxrss``: Linux carries that across fork + exec, so a worker started by a big parent
    (``ecufl bench`` runs each kernel in a subprocess) would report the parent's peak. VmHWM starts
    afresh at exec. Elsewhere (no /proc) ru_maxrss is the best there is.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def initial_params(cfg: TrainConfig, dtype: str) -> Params:
    if cfg.init:
        params, _ = weightfile.load(cfg.init)
        if params.sizes != list(cfg.sizes):
            raise ValueError(f"--init {cfg.init}: layer sizes {params.sizes} differ from --layers {list(cfg.sizes)}")
        return params.astype(dtype)
    return init_params(cfg.sizes, cfg.seed, scaled=cfg.scaled_init, dtype=dtype)


def run(
    cfg: TrainConfig,
    *,
    progress: Callable[[int, int], None] | None = None,
    train_set: mnist.Dataset | None = None,
    test_set: mnist.Dataset | None = None,
) -> tuple[TrainResult, Params]:
    """Train and evaluate. ``progress(done, total)`` is called with sample counts during training."""
    cfg.validate()
    train_set = train_set or mnist.load("train", cfg.data_dir)
    test_set = test_set or mnist.load("test", cfg.data_dir)
    if cfg.train_limit:
        train_set = mnist.Dataset(train_set.images[: cfg.train_limit], train_set.labels[: cfg.train_limit])
    from ecufl.kernels import kernel_class

    cls = kernel_class(cfg.kernel)
    dtype = cfg.dtype or cls.dtypes[0]
    kernel = create(cfg.kernel, initial_params(cfg, dtype), dtype=dtype, **cfg.kernel_options)
    try:
        order = EpochOrder(len(train_set), cfg.seed, shuffle=cfg.shuffle)
        n = len(train_set)
        # Chunks of whole mini-batches, so a progress bar moves without changing the arithmetic.
        chunk = max(cfg.batch_size, (n // 100) // cfg.batch_size * cfg.batch_size) if progress else n
        epoch_seconds = []
        for epoch in range(cfg.epochs):
            idx = order.next()
            t0 = time.perf_counter()
            for k in range(0, n, chunk):
                kernel.train(train_set.images, train_set.labels, idx[k : k + chunk], cfg.lr, cfg.batch_size)
                if progress:
                    progress(epoch * n + min(k + chunk, n), cfg.epochs * n)
            epoch_seconds.append(time.perf_counter() - t0)
        ev = kernel.evaluate(test_set.images, test_set.labels)
        params = kernel.get_params()
        train_seconds = float(sum(epoch_seconds))
        result = TrainResult(
            kernel=cfg.kernel, sizes=list(cfg.sizes), dtype=dtype, epochs=cfg.epochs,
            samples=n * cfg.epochs, train_seconds=train_seconds,
            samples_per_second=(n * cfg.epochs / train_seconds) if train_seconds > 0 else 0.0,
            test_accuracy=ev.accuracy, test_loss=ev.loss, peak_rss_bytes=peak_rss_bytes(),
            epoch_seconds=epoch_seconds, kernel_info=kernel.describe(),
        )
        return result, params
    finally:
        kernel.close()
