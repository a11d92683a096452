"""``ecufl tflite bench``: what the TFLite interpreter costs per SGD step, beside float32 numpy.

For each layer config, in one process and one run (ratios are what to read on a shared machine):
- epoch time over the same samples in the same order for numpy float32 (BLAS limited to one
  thread) and the TFLite kernel with and without the runtime's default XNNPACK delegate
  (one interpreter thread);
- the time of the interpreter's ``Invoke`` alone per step (inputs already set), and the time of
  a full step through the public ``SignatureRunner`` call (resize, allocate, set, invoke, copy
  outputs), against the kernel's direct path;
- the fixed cost of one Invoke: a subgraph without arithmetic (``empty_invoke_us``), and for
  reference a least-squares line through (FLOPs per step, Invoke time) over the configs (its
  intercept is only meaningful on a quiet machine: the kernels are not linear in FLOPs).
Epoch times: medians of ``repeats`` interleaved runs; per-step micro-timings: minimum of
``repeats`` interleaved loops.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np


def step_flops(sizes: Sequence[int], batch_size: int) -> float:
    """FLOPs of one SGD step (same count as ecufl bench): forward, weight gradient, deltas, update."""
    w = [a * b for a, b in zip(sizes[:-1], sizes[1:])]
    return batch_size * (4 * sum(w) + 2 * sum(w[1:])) + 2 * sum(w)


@dataclass
class OverheadRow:
    config: str
    batch_size: int
    samples: int
    numpy_epoch_s: float
    tflite_epoch_s: float
    tflite_plain_epoch_s: float  # without the XNNPACK delegate
    ratio: float  # tflite epoch time / numpy float32 epoch time
    step_us: float  # tflite: full step through the kernel's direct path
    invoke_us: float  # tflite: Invoke alone
    public_call_us: float  # tflite: one step through SignatureRunner.__call__
    numpy_step_us: float
    flops_per_step: float


# CPU time of this process, not wall time: every kernel here runs single-threaded (one interpreter
# thread, BLAS limited to one), so CPU time is its compute time, and the load that other processes
# put on a shared machine (waiting for a core) does not count. ``use_wall_clock()`` switches.
clock = time.process_time


def use_wall_clock(wall: bool) -> None:
    global clock
    clock = time.perf_counter if wall else time.process_time


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return statistics.median(times)


def measure(configs: Sequence[Sequence[int]], batch_size: int, images, labels, *, samples: int,
            repeats: int, seed: int = 1, lr: float = 3.0) -> list[OverheadRow]:
    from threadpoolctl import threadpool_limits

    from ..prng import EpochOrder, init_params
    from ..reference.network import NumpyKernel
    from .kernel import TFLiteKernel

    images, labels = images[:samples], labels[:samples]
    order = EpochOrder(len(labels), seed).next()
    rows = []
    with threadpool_limits(limits=1):
        for sizes in configs:
            params = init_params(sizes, seed, dtype="float32")

            def epoch(kernel):
                kernel.set_params(params)
                kernel.train(images, labels, order, lr, batch_size)

            ref = NumpyKernel(params, dtype="float32")
            fast = TFLiteKernel(params)
            plain = TFLiteKernel(params, xnnpack=False)
            for k in (ref, fast, plain):
                epoch(k)  # open the models, allocate, warm the caches before timing
            # Interleaved, so that load from other processes falls on all three alike.
            times: dict[str, list[float]] = {"numpy": [], "tflite": [], "plain": []}
            for _ in range(repeats):
                for key, k in (("numpy", ref), ("tflite", fast), ("plain", plain)):
                    t0 = clock()
                    epoch(k)
                    times[key].append(clock() - t0)
            t_np, t_tfl, t_plain = (statistics.median(times[key]) for key in ("numpy", "tflite", "plain"))

            # One mini-batch, set once; then Invoke alone, and the public runner call.
            model = fast._model
            sig = model.train
            x = images[order[:batch_size]].astype(np.float32) / np.float32(255)
            y = np.eye(sizes[-1], dtype=np.float32)[labels[order[:batch_size]]]
            step = np.asarray(lr / batch_size, dtype=np.float32)
            sig(outputs=(), x=x, y=y, lr_over_m=step)
            n_inv = max(50, min(2000, int(2e9 / max(step_flops(sizes, batch_size), 1) / 1000)))
            wrapper, sub = sig.wrapper, sig.subgraph

            def invokes():
                for _ in range(n_inv):
                    wrapper.Invoke(sub)

            run = sig.bind("x", "y", "lr_over_m")
            run(x, y, step)

            def direct_steps():
                for _ in range(n_inv):
                    run(x, y, step)

            def public_steps():
                for _ in range(n_inv):
                    sig.runner(x=x, y=y, lr_over_m=step)

            # Micro-timings: interleaved, and the minimum (the cost without interference), as timeit does.
            micro: dict[str, list[float]] = {"invoke": [], "direct": [], "public": []}
            for _ in range(repeats):
                for key, fn in (("invoke", invokes), ("direct", direct_steps), ("public", public_steps)):
                    t0 = clock()
                    fn()
                    micro[key].append((clock() - t0) / n_inv)
            t_inv, t_step, t_pub = (min(micro[key]) for key in ("invoke", "direct", "public"))
            n_steps = -(-len(labels) // batch_size)
            rows.append(OverheadRow(
                config="-".join(map(str, sizes)), batch_size=batch_size, samples=len(labels),
                numpy_epoch_s=t_np, tflite_epoch_s=t_tfl, tflite_plain_epoch_s=t_plain, ratio=t_tfl / t_np,
                step_us=t_step * 1e6, invoke_us=t_inv * 1e6, public_call_us=t_pub * 1e6,
                numpy_step_us=t_np / n_steps * 1e6, flops_per_step=step_flops(sizes, batch_size),
            ))
            for k in (ref, fast, plain):
                k.close()
    return rows


def empty_invoke_us(repeats: int = 5, n: int = 20000) -> float:
    """Invoke of a subgraph with no arithmetic: ``get_weights`` of the smallest shipped model
    (9 ops: CALL_ONCE, 4 VAR_HANDLE, 4 READ_VARIABLE of 1,600 floats in all). The interpreter's
    fixed cost of one invoke from Python, per-op dispatch included."""
    from . import catalog
    from .kernel import _Model
    from ..prng import init_params

    model = _Model(catalog.find_model((784, 2, 10), 10), [784, 2, 10])
    model.set_params(init_params([784, 2, 10], 1, dtype="float32"))
    sig = model.get
    sig()
    wrapper, sub = sig.wrapper, sig.subgraph

    def invokes():
        for _ in range(n):
            wrapper.Invoke(sub)

    return min(_median_time(invokes, 1) for _ in range(repeats)) / n * 1e6


def intercept_us(rows: Sequence[OverheadRow], field: str = "invoke_us") -> tuple[float, float]:
    """Least-squares (intercept in us, slope in ns per FLOP) of ``field`` against FLOPs per step."""
    x = np.array([r.flops_per_step for r in rows])
    y = np.array([getattr(r, field) for r in rows])
    slope, icept = np.polyfit(x, y, 1)
    return float(icept), float(slope * 1e3)


def as_dicts(rows: Sequence[OverheadRow]) -> list[dict]:
    return [asdict(r) for r in rows]
