"""``ecufl bench kernels``: one epoch of MNIST per kernel and layer config, in the same run.

How it measures (so figures from one run can be compared as ratios):
- Every (kernel, config, batch size) runs in a fresh Python subprocess (``python -m ecufl.bench
  --worker``), so peak RSS is that kernel's own high-water mark, not the harness's.
- Single-threaded: the worker limits BLAS to one thread (threadpoolctl) and sets
  OMP/OPENBLAS/MKL_NUM_THREADS=1, so numpy's BLAS and native kernels compete on equal terms.
- The worker trains ``repeats`` epochs from the same initial weights in the same order and reports
  the median samples/s; test accuracy is measured after the first epoch. It also reports samples
  per CPU-second of the training thread (median too; the fleet's clients use the same clock): on a
  loaded machine wall time stretches, CPU time much less, so that is the figure to compare across
  runs (``ecufl report --bench`` uses it).
- ``textbook`` (network.py's per-sample loop, float64 as the book runs it) is slow, so it trains on the first
  ``--textbook-limit`` samples of the epoch; its samples/s is still per sample, its accuracy is
  after that partial epoch (marked with *).
- GFLOP/s counts the arithmetic of one SGD step per sample: forward 2*W, weight gradient 2*W,
  back-propagated deltas 2*W' (W' = weights of all layers but the first, whose input delta is not
  needed), update 2*W/batch, with W the number of weights (biases are not counted). The machine's
  single-thread float32 GEMM peak is the best of several numpy (OpenBLAS) 512x512 sgemm runs.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import click

from ecufl import data as mnist
from ecufl.ui import console, fmt_bytes

DEFAULT_CONFIGS = ["784-2-10", "784-8-10", "784-32-10", "784-128-10", "784-32-16-10"]
SINGLE_THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def sizes_of(config: str) -> list[int]:
    return [int(v) for v in config.replace(",", "-").split("-")]


def train_flops_per_sample(sizes: list[int], batch_size: int) -> float:
    w = [a * b for a, b in zip(sizes[:-1], sizes[1:])]
    return 2 * sum(w) + 2 * sum(w) + 2 * sum(w[1:]) + 2 * sum(w) / batch_size


@dataclass
class BenchRow:
    kernel: str
    config: str
    batch_size: int
    samples: int
    samples_per_second: float
    epoch_seconds: float
    test_accuracy: float
    peak_rss_bytes: int
    gflops: float
    weight_bytes: int
    partial: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    samples_per_cpu_second: float = 0.0


def gemm_peak_gflops(n: int = 512, repeats: int = 7) -> float:
    """Best single-thread float32 GEMM rate numpy's BLAS reaches on this machine."""
    import numpy as np
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    best = float("inf")
    with threadpool_limits(1):
        a @ b
        for _ in range(repeats):
            t0 = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


# --- the worker: one kernel, one config, in its own process -------------------------------------
def worker(spec: dict[str, Any]) -> dict[str, Any]:
    from threadpoolctl import threadpool_limits

    from ecufl.kernels import EpochOrder, create, init_params, kernel_class
    from ecufl.train import peak_rss_bytes

    sizes = sizes_of(spec["config"])
    bs = spec["batch_size"]
    train = mnist.load("train")
    test = mnist.load("test")
    cls = kernel_class(spec["kernel"])
    # Every kernel runs in float32 where it can; the textbook loop runs as the book writes it (float64).
    dtype = cls.dtypes[0] if spec["kernel"] == "textbook" else ("float32" if "float32" in cls.dtypes else cls.dtypes[0])
    params = init_params(sizes, spec["seed"], dtype=dtype)
    order = EpochOrder(len(train), spec["seed"]).next()
    if spec.get("limit"):
        order = order[: spec["limit"]]
    rates, cpu_rates = [], []
    with threadpool_limits(1):
        kernel = create(spec["kernel"], params, dtype=dtype, **spec.get("options", {}))
        accuracy = None
        for r in range(spec["repeats"]):
            if r:
                kernel.set_params(params)
            t0, c0 = time.perf_counter(), time.thread_time()
            kernel.train(train.images, train.labels, order, spec["lr"], bs)
            dt, dc = time.perf_counter() - t0, time.thread_time() - c0
            rates.append(len(order) / dt)
            cpu_rates.append(len(order) / max(dc, 1e-9))
            if accuracy is None:
                accuracy = kernel.evaluate(test.images, test.labels).accuracy
        extra = kernel.describe()
        wbytes = kernel.weight_bytes()
        kernel.close()
    sps = statistics.median(rates)
    return asdict(BenchRow(
        kernel=spec["kernel"], config=spec["config"], batch_size=bs, samples=len(order),
        samples_per_second=sps, epoch_seconds=len(train) / sps, test_accuracy=accuracy,
        peak_rss_bytes=peak_rss_bytes(), gflops=sps * train_flops_per_sample(sizes, bs) / 1e9,
        weight_bytes=wbytes, partial=bool(spec.get("limit")), extra=extra,
        samples_per_cpu_second=statistics.median(cpu_rates),
    ))


def run_worker(spec: dict[str, Any], timeout: float) -> BenchRow:
    env = dict(os.environ, **SINGLE_THREAD_ENV)
    try:
        proc = subprocess.run([sys.executable, "-m", "ecufl.bench", "--worker", json.dumps(spec)],
                              capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return _failed(spec, f"timed out after {timeout:.0f} s")
    if proc.returncode != 0:
        lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
        return _failed(spec, lines[-1] if lines else f"exit {proc.returncode}")
    return BenchRow(**json.loads(proc.stdout.strip().splitlines()[-1]))


def _failed(spec: dict[str, Any], error: str) -> BenchRow:
    return BenchRow(spec["kernel"], spec["config"], spec["batch_size"], 0, 0.0, 0.0, 0.0, 0, 0.0, 0,
                    error=error)


def print_table(title: str, headers: list[str], rows: list[list[str]], note: str, *, markdown: bool) -> None:
    """A benchmark table as markdown (for the README) or as a rich table (never wrapped in a pipe)."""
    from rich.console import Console
    from rich.table import Table


    if markdown:
        click.echo("| " + " | ".join(headers) + " |")
        click.echo("|" + "---|" * len(headers))
        for row in rows:
            click.echo("| " + " | ".join(row) + " |")
        click.echo(f"\n{note}")
        return
    t = Table(title=title, caption=note)
    for h in headers:
        t.add_column(h, justify="left" if h in ("kernel", "config") else "right")
    for row in rows:
        t.add_row(*row)
    (console if console.is_terminal else Console(width=200)).print(t)


# --- the command -------------------------------------------------------------------------------
@click.group()
def bench():
    """Benchmarks: kernels against each other, measured in one run."""


@bench.command("kernels")
@click.option("--kernels", "kernel_list", help="Comma-separated kernels (default: every available one).")
@click.option("--configs", default=",".join(DEFAULT_CONFIGS), show_default=True,
              help="Comma-separated layer configs like 784-32-10.")
@click.option("--batch-sizes", default="10", show_default=True, help="Comma-separated batch sizes.")
@click.option("--repeats", default=3, show_default=True, type=int, help="Epochs timed per row (median).")
@click.option("--lr", default=3.0, show_default=True, type=float)
@click.option("--seed", default=1, show_default=True, type=int)
@click.option("--textbook-limit", default=3000, show_default=True, type=int,
              help="Samples the textbook loop trains on per epoch.")
@click.option("--timeout", default=900.0, show_default=True, type=float, help="Seconds per row.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--markdown", is_flag=True, help="Print a markdown table.")
@click.option("--target", default="host", show_default=True,
              help="Also project each kernel's ARM build onto a device profile (imx6, imx6-792, imx6-1200): "
                   "exact instruction counts under qemu-arm x the Cortex-A9 cost model (kernels/arm).")
@click.option("--arm-samples", default=2000, show_default=True, type=int,
              help="Samples counted per projected row (two subsets, extrapolated to an epoch).")
def bench_kernels(kernel_list, configs, batch_sizes, repeats, lr, seed, textbook_limit, timeout, as_json,
                  markdown, target, arm_samples):
    """Time one epoch per kernel and config; ratios to the numpy reference from the same run."""
    from ecufl.kernels import KERNELS, available

    have = available()
    kernels = kernel_list.split(",") if kernel_list else [k for k in have]
    for k in kernels:
        if k not in KERNELS:
            raise click.UsageError(f"--kernels: unknown kernel {k!r}; kernels: {', '.join(KERNELS)}")
        if k not in have:
            raise click.UsageError(f"--kernels: kernel {k!r} is not available here; to get it: {KERNELS[k].how_to_get}")
    try:
        cfgs = [c.strip() for c in configs.split(",") if c.strip()]
        for c in cfgs:
            s = sizes_of(c)
            if s[0] != 784 or s[-1] != 10 or len(s) < 2 or min(s) < 1:
                raise ValueError(c)
        sizes_bs = [int(b) for b in batch_sizes.split(",")]
        if min(sizes_bs) < 1:
            raise ValueError(batch_sizes)
    except ValueError:
        raise click.UsageError(f"--configs/--batch-sizes: expected e.g. 784-32-10 and 10,32; got {configs!r} / {batch_sizes!r}")
    if repeats < 1:
        raise click.UsageError(f"--repeats must be >= 1, got {repeats}")

    if target != "host":
        from ecufl.kernels.arm import emulate, profiles

        try:
            profiles.get(target)
        except profiles.UnknownProfile as e:
            raise click.UsageError(f"--target: {e}")
        if arm_samples < 2:
            raise click.UsageError(f"--arm-samples must be >= 2, got {arm_samples}")
        missing = emulate.have_toolchain()
        if missing:
            raise click.UsageError(f"--target {target}: {missing}")

    peak = gemm_peak_gflops()
    rows: list[BenchRow] = []
    specs = [dict(kernel=k, config=c, batch_size=b, repeats=1 if k == "textbook" else repeats, lr=lr, seed=seed,
                  limit=textbook_limit if k == "textbook" else None)
             for b in sizes_bs for c in cfgs for k in kernels]
    with console.status("") as status:
        for i, spec in enumerate(specs, 1):
            status.update(f"[{i}/{len(specs)}] {spec['kernel']} {spec['config']} batch {spec['batch_size']}")
            rows.append(run_worker(spec, timeout))
    ref = {(r.config, r.batch_size): r.samples_per_second for r in rows if r.kernel == "numpy" and not r.error}
    out = []
    for r in rows:
        d = asdict(r)
        base = ref.get((r.config, r.batch_size))
        d["ratio_to_numpy"] = r.samples_per_second / base if base and not r.error else None
        d["percent_of_gemm_peak"] = 100 * r.gflops / peak if not r.error else None
        out.append(d)
    if target != "host":  # projected Cortex-A9 rows beside the x86 ones (kernels/arm/bench.py)
        from ecufl.kernels.arm.bench import arm_bench_rows
        from ecufl.kernels.arm.emulate import TRAINERS

        train = mnist.load("train")
        with console.status("") as status:
            a9 = arm_bench_rows([k for k in kernels if k in TRAINERS], cfgs, target, batch_sizes=tuple(sizes_bs),
                                samples=arm_samples, seed=seed, lr=lr, timeout=timeout,
                                images=train.images, labels=train.labels,
                                progress=lambda i, n, what: status.update(f"[{i}/{n}] {target}: {what}"))
        by_key = {(r["kernel"], r["config"], r["batch_size"]): r for r in a9}
        for d in out:
            d["target"] = by_key.get((d["kernel"], d["config"], d["batch_size"]))
    if as_json:
        click.echo(json.dumps({"gemm_peak_gflops": peak, "rows": out, "how": __doc__.split("How it measures")[1].strip()}, indent=1))
        return
    headers = ["kernel", "config", "batch", "samples/s", "x numpy", "s/epoch", "GFLOP/s", "% peak",
               "test acc", "peak RSS", "weights"]
    table = []
    for d in out:
        if d["error"]:
            table.append([d["kernel"], d["config"], str(d["batch_size"]), "error: " + d["error"]] + [""] * 7)
            continue
        table.append([
            d["kernel"], d["config"], str(d["batch_size"]), f"{d['samples_per_second']:,.0f}",
            f"{d['ratio_to_numpy']:.2f}" if d["ratio_to_numpy"] else "-", f"{d['epoch_seconds']:.2f}",
            f"{d['gflops']:.2f}", f"{d['percent_of_gemm_peak']:.1f}",
            f"{d['test_accuracy']:.4f}" + ("*" if d["partial"] else ""), fmt_bytes(d["peak_rss_bytes"]),
            fmt_bytes(d["weight_bytes"]),
        ])
    note = (f"single-thread float32 GEMM peak of this machine: {peak:.1f} GFLOP/s; "
            f"* = accuracy after a partial epoch of {textbook_limit} samples")
    if target != "host":
        headers += [f"{target} s/epoch", f"{target} GFLOP/s", "% NEON peak"]
        for d, row in zip(out, table):
            a = d["target"]
            row += (["-", "-", "-"] if a is None else [f"error: {a['error']}", "", ""] if a["error"] else
                    [f"{a['projected_seconds_per_epoch']:.2f}", f"{a['projected_gflops']:.2f}",
                     f"{a['percent_of_neon_peak']:.1f}"])
        note += (f"; {target}: projected single Cortex-A9 core from exact ARM instruction counts "
                 f"(qemu-arm -cpu cortex-a9, kernels/arm/COSTMODEL.md), NEON peak 4 FLOP/cycle")
    print_table("ecufl bench kernels: one epoch of MNIST (60,000 samples), single thread", headers, table, note,
                markdown=markdown)

if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        print(json.dumps(worker(json.loads(sys.argv[2]))))
    else:
        bench()
