"""Projected Cortex-A9 rows for ``ecufl bench kernels --target imx6``.

Per kernel, layer config and batch size: the ARM trainer trains the first N1 and the first N2
samples of the seed's epoch order under emulation (exact instruction counts of the training
function), and one full epoch (60,000 samples) is extrapolated linearly,
``counts(epoch) = counts(N1) + (60000 - N1) * (counts(N2) - counts(N1)) / (N2 - N1)``,
which is exact for code whose work per sample does not depend on the data, and an estimate
where it does (kernels that skip zero pixels). Then the cost model gives cycles, the profile's
clock gives seconds; GFLOP/s counts the same nominal FLOP per sample as the x86 rows (see
``ecufl/bench.py``); % NEON peak = nominal FLOP / (cycles x 4). A kernel that skips the zero
pixels of MNIST does less arithmetic than nominal, so that figure can pass 100%; the rows also
give the FLOP the counted instructions really performed (costmodel.FLOP_PER_INSTRUCTION) and
their share of the peak: how busy the NEON unit was.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from .costmodel import CostModel, executed_flops, memory_cycles, seconds_range
from .emulate import run_emulated, trainer_for
from .profiles import Profile
from .profiles import get as get_profile

EPOCH = 60_000


def train_flops_per_sample(sizes: list[int], batch_size: int) -> float:
    """The x86 bench's count (ecufl/bench.py): forward 2W, weight gradient 2W, deltas 2W', update 2W/m."""
    w = [a * b for a, b in zip(sizes[:-1], sizes[1:])]
    return 2 * sum(w) + 2 * sum(w) + 2 * sum(w[1:]) + 2 * sum(w) / batch_size


def _subset_sizes(batch_size: int, samples: int) -> tuple[int, int]:
    """N1 < N2 <= samples, both whole numbers of mini-batches (no partial batch in either)."""
    n2 = max(2, samples // batch_size) * batch_size
    n1 = max(1, (n2 // batch_size) // 4) * batch_size
    return n1, n2


def arm_bench_rows(kernels: list[str], configs: list[str], profile: str | Profile = "imx6", *,
                   batch_sizes: tuple[int, ...] = (10,), samples: int = 2000, seed: int = 1, lr: float = 3.0,
                   images: np.ndarray, labels: np.ndarray,
                   model: CostModel | None = None, timeout: float | None = 1800.0,
                   progress: Callable[[int, int, str], None] | None = None,
                   memory: bool = True) -> list[dict[str, Any]]:
    """One row per (kernel, config, batch size); a row that failed carries ``error`` (one line).

    ``memory`` (default): the plugin's cache model runs with the profile's hierarchy, and the rows
    carry the epoch's miss counts, the memory term and projected seconds with an error bar
    (extrapolated like the instruction counts)."""
    from ..prng import EpochOrder, init_params

    prof = get_profile(profile) if isinstance(profile, str) else profile
    model = model or CostModel.load()
    order = EpochOrder(len(images), seed).next().astype(np.int32)
    specs = [(k, c, b) for b in batch_sizes for c in configs for k in kernels]
    rows = []
    for i, (kernel, config, bs) in enumerate(specs):
        if progress:
            progress(i + 1, len(specs), f"{kernel} {config} batch {bs}")
        sizes = [int(v) for v in config.replace(",", "-").split("-")]
        row: dict[str, Any] = {"kernel": kernel, "config": config, "batch_size": bs, "target": prof.name,
                               "clock_hz": prof.clock_hz, "error": None}
        try:
            trainer_for(kernel)
            params = init_params(sizes, seed, dtype="float32")
            n1, n2 = _subset_sizes(bs, min(samples, len(order)))
            runs = [run_emulated(kernel, params, images, labels, [order[:n]], lr, bs, prof, model=model,
                                 timeout=timeout, memory=memory) for n in (n1, n2)]
        except Exception as e:  # one failed row must not lose the others: it is reported in the row
            row["error"] = str(e).splitlines()[0] if str(e) else type(e).__name__
            rows.append(row)
            continue
        c1, c2 = (r.report["instruction_classes"] for r in runs)
        per_sample = {k: (c2.get(k, 0) - c1.get(k, 0)) / (n2 - n1) for k in set(c1) | set(c2)}
        epoch_counts = {k: max(0, round(c1.get(k, 0) + (EPOCH - n1) * v)) for k, v in per_sample.items()}
        proj = model.project(epoch_counts, prof)
        flops = train_flops_per_sample(sizes, bs) * EPOCH
        neon = sum(v for k, v in epoch_counts.items() if k.startswith("neon."))
        total = sum(epoch_counts.values())
        row.update({
            "samples_counted": [n1, n2],
            "arm_instructions_counted": [sum(c1.values()), sum(c2.values())],
            "arm_instructions_per_epoch": total,
            "neon_instruction_share": neon / total if total else 0.0,
            "projected_cycles_per_epoch": proj.cycles,
            "projected_seconds_per_epoch": proj.seconds,
            "projected_gflops": flops / proj.seconds / 1e9 if proj.seconds else math.nan,
            "percent_of_neon_peak": 100 * proj.neon_peak_fraction(flops),
            # FLOP the instructions really performed (zero-pixel skipping does fewer than nominal)
            "executed_gflop_per_epoch": executed_flops(epoch_counts) / 1e9,
            "percent_of_neon_peak_executed": 100 * proj.neon_peak_fraction(executed_flops(epoch_counts)),
            "guest_peak_rss_bytes": max(r.report["peak_rss_bytes"] for r in runs),
            "cost_model": proj.model,
            "unpriced_classes": proj.unpriced,
            "emulated_wall_seconds": sum(r.report["emulated_wall_seconds"] for r in runs),
        })
        if all("cache" in r.report for r in runs) and prof.clock_hz:
            row.update(_memory_columns(runs[0].report["cache"], runs[1].report["cache"], n1, n2, proj.cycles, prof,
                                       model.memory_system(prof.memory)))
        rows.append(row)
    return rows


def _memory_columns(k1: dict, k2: dict, n1: int, n2: int, core_cycles: float, prof: Profile,
                    memsys: Any = None) -> dict[str, Any]:
    """Cache counts of one epoch (linear in samples from the two runs, as the instructions) and
    the memory term; the two runs start cold, the slope is the steady state."""

    def epoch(a: float, b: float) -> int:
        return max(0, round(a + (EPOCH - n1) * (b - a) / (n2 - n1)))

    cache = {}
    for level, v in k2.items():
        if isinstance(v, dict):
            cache[level] = dict(v) | {c: epoch(k1[level][c], v[c]) for c in ("accesses", "misses", "writebacks")}
        else:
            cache[level] = epoch(k1[level], v)
    memsys = memsys or prof.memory
    mem = memory_cycles(cache, memsys, prof.clock_hz)
    sec = seconds_range(core_cycles, mem, prof.clock_hz)
    return {
        "cache_per_epoch": cache,
        "cache_misses_per_epoch": {"l1d": cache["l1d"]["misses"], "l1i": cache["l1i"]["misses"],
                                   "l2": cache["l2"]["misses"], "dram_line_reads": cache["dram_line_reads"],
                                   "dram_line_writes": cache["dram_line_writes"]},
        "memory_cycles_per_epoch": mem,
        "projected_seconds_per_epoch_with_memory": sec["with_memory"],
        "projected_seconds_per_epoch_range": [sec["low"], sec["high"]],
        "memory_system": {"l1d": memsys.l1d, "l1i": memsys.l1i, "l2": memsys.l2,
                          "l2_hit_cycles": list(memsys.l2_hit_cycles), "dram_bandwidth": list(memsys.dram_bandwidth)},
    }


def _markdown(rows: list[dict[str, Any]]) -> str:
    head = ("| kernel | config | batch | A9 s/epoch | GFLOP/s (nominal) | % NEON peak (nominal) | "
            "% NEON peak (executed FLOP) | ARM instr./epoch | NEON share |")
    lines = [head, "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if r["error"]:
            lines.append(f"| {r['kernel']} | {r['config']} | {r['batch_size']} | error: {r['error']} ||||||")
            continue
        lines.append(f"| {r['kernel']} | {r['config']} | {r['batch_size']} | {r['projected_seconds_per_epoch']:.2f} | "
                     f"{r['projected_gflops']:.2f} | {r['percent_of_neon_peak']:.1f} | "
                     f"{r['percent_of_neon_peak_executed']:.1f} | {r['arm_instructions_per_epoch'] / 1e9:.2f} G | "
                     f"{100 * r['neon_instruction_share']:.0f}% |")
    return "\n".join(lines)
