"""``ecufl thesis [--quick]``: the results chapter of the thesis ecufl comes from, reproduced and judged.

The thesis ("Training Neural Networks on Embedded Devices") trains HDRNN (network.py: sigmoid,
quadratic cost, mini-batch SGD, lr 3.0, batch 10) for hidden layers of 2, 8, 32 and 128 neurons,
with and without an extra 16-neuron layer, and states five things (``STATEMENTS``). This module
runs the grid, writes every measured cell to ``cells.csv``, derives every figure the page shows
from that CSV alone (``analyse``: fits, ratios, verdicts) and writes ``derived.csv``,
``claims.json`` and ``index.html`` (ecufl/thesis_page.py).

Three experiments (what each measures and why it is built that way):

- ``accuracy``: the optimised C kernel (held to the numpy reference within 1e-4, kernels/README.md)
  trains every config for ``accuracy_epochs`` epochs from several seeds; after every epoch it
  evaluates the whole training set and the test set, so the train-test gap (the signature of
  overfitting, the cause statement 2 names) is measured, not assumed. The epoch count is
  network.py's own (30); the page shows how much test accuracy still moves over its last five
  epochs (``epochs.*`` in derived.csv) so the reader can judge whether the curves have settled.
  Experiment ``init`` records, per config and seed, the initial network's test accuracy and its
  output saturation (share of output sigmoids with sigma'(z) < 0.01): the quadratic cost's
  learning slowdown, which the data show to be what holds wide single-layer networks back.
- ``timing``: every kernel x every config, each cell in a fresh single-threaded process
  (``python -m ecufl.thesis_worker --worker``, BLAS pinned to one thread as ``ecufl bench`` does), seed 1,
  the same initial weights and sample order for every kernel. It trains ``timing_epochs`` epochs
  and times each on the training thread's CPU clock (the clock ecufl bench and the fleet use: on a
  shared machine wall time stretches with the load, CPU time much less); the seconds per epoch
  are those of the last epoch (the pruned kernel trains dense for one epoch, then prunes to 90%);
  network.py's per-sample loop trains ``textbook_limit`` samples per epoch, its time is scaled.
  ``--quick`` trains on the first 6,000 training images (times scaled to 60,000), 3 accuracy
  epochs from 2 seeds, and counts 200 instead of 2,000 samples per projection.
  Memory per cell, in that cell's process (ecufl/thesis_worker.py): resident memory before the
  kernel's module is imported, after the import (its code and runtime), then the high-water mark
  of creating the kernel and training alone (Linux ``clear_refs`` resets VmHWM) and of evaluation
  alone: each kernel's *own* footprint, beside the whole process's peak (VmHWM; ``ru_maxrss`` is
  kept across exec on Linux, so a worker's would include its parent's), which is mostly the uint8
  MNIST arrays and the Python runtime every kernel shares.
- ``projection``: the ARM board build of each native kernel (c, c-plain, eigen, int8,
  int8-plain) trains under ``qemu-arm -cpu cortex-a9`` with exact instruction counts, projected
  onto the ``imx6`` profile (1 GHz Cortex-A9) by the cost model of kernels/arm/COSTMODEL.md
  (``kernels.arm.bench.arm_bench_rows``: two sample counts, extrapolated to one epoch); the
  standalone trainer's own peak resident memory on the board comes from the same runs.
  numpy, textbook, TFLite and the pruned C path have no ARM trainer here, so they are not
  projected (the page says why).
"""

from __future__ import annotations

import csv
import json
import math
import os
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import click
import numpy as np

from ecufl import data as mnist
from ecufl import thesis_page
from ecufl.bench import SINGLE_THREAD_ENV, sizes_of
from ecufl.kernels import available
from ecufl.kernels.arm import emulate
from ecufl.kernels.arm.bench import arm_bench_rows
from ecufl.kernels.tflite import catalog
from ecufl.thesis_worker import CONFIGS, EPOCH, HIDDEN, KERNEL_SPECS, _base_row, n_params

STATEMENTS = {
    1: "Run time increases exponentially with the number of parameters.",
    2: "When a single hidden layer exceeds 32 neurons, accuracy decreases, due to overfitting.",
    3: "Adding another layer of 16 neurons improves accuracy without significantly increasing computation "
       "time; for larger networks it even reduces it.",
    4: "Peak memory stays constant regardless of the network configuration.",
    5: "The numpy implementation consistently takes longer than the C implementation; C has lower execution "
       "time and memory usage.",
}
ARM_KERNELS = ["c", "c-plain", "eigen", "int8", "int8-plain"]
CSV_COLUMNS = [
    "row", "experiment", "kernel", "config", "params", "hidden", "depth", "seed", "epoch", "samples",
    "train_accuracy", "test_accuracy", "train_loss", "test_loss", "output_saturation",
    "host_cpu_seconds", "host_cpu_seconds_per_epoch", "host_cpu_seconds_per_epoch_first",
    "host_wall_seconds_per_epoch",
    "baseline_rss_bytes", "kernel_import_bytes", "kernel_train_footprint_bytes", "kernel_eval_footprint_bytes", "process_peak_rss_bytes",
    "weight_bytes", "update_bytes",
    "imx6_seconds_per_epoch", "arm_instructions_per_epoch", "neon_share", "board_trainer_peak_rss_bytes",
    "partial", "error",
]


@dataclass
class Plan:
    quick: bool
    configs: list[str] = field(default_factory=lambda: list(CONFIGS))
    kernels: list[str] = field(default_factory=lambda: list(KERNEL_SPECS))
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    accuracy_epochs: int = 30
    timing_epochs: int = 2
    timing_train_size: int = EPOCH  # training-set size (samples per epoch) of the timing cells
    textbook_limit: int = 6000  # the per-sample loop is slow: per-sample time is extrapolated
    arm_kernels: list[str] = field(default_factory=lambda: list(ARM_KERNELS))
    arm_samples: int = 2000
    lr: float = 3.0
    batch_size: int = 10
    timeout: float = 900.0

    @classmethod
    def make(cls, quick: bool) -> "Plan":
        if not quick:
            return cls(quick=False)
        return cls(quick=True, seeds=[1, 2], accuracy_epochs=3, timing_train_size=6000, textbook_limit=1000,
                   arm_samples=200, timeout=300.0)


def _run_worker(mode: str, spec: dict[str, Any], timeout: float) -> Any:
    env = dict(os.environ, **SINGLE_THREAD_ENV)
    proc = subprocess.run([sys.executable, "-m", "ecufl.thesis_worker", mode, json.dumps(spec)],
                          capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        raise RuntimeError(lines[-1] if lines else f"worker exit {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


# --- the run ---------------------------------------------------------------------------------------
def run_grid(plan: Plan, progress=lambda msg: None) -> list[dict[str, Any]]:
    """All three experiments; rows in CSV_COLUMNS form (missing columns empty)."""
    rows: list[dict[str, Any]] = []
    # accuracy (one process) and the ARM projection (qemu processes) run side by side: neither is a
    # host-time measurement. The host timing cells run afterwards, alone.
    acc_result: dict[str, Any] = {}

    def accuracy() -> None:
        try:
            acc_result["rows"] = _run_worker("--accuracy-worker", {
                "configs": plan.configs, "seeds": plan.seeds, "epochs": plan.accuracy_epochs,
                "lr": plan.lr, "batch_size": plan.batch_size}, timeout=plan.timeout * len(plan.configs))
        except Exception as e:  # noqa: BLE001 - reported in the rows
            acc_result["error"] = _one_line(e)

    t = threading.Thread(target=accuracy, daemon=True)
    t.start()
    train = mnist.load("train")
    arm = [k for k in plan.arm_kernels if k in emulate.TRAINERS]
    missing = emulate.have_toolchain()
    if missing:
        for k in arm:
            for c in plan.configs:
                rows.append({**_base_row("projection", k, c), "error": missing})
    else:
        for r in arm_bench_rows(arm, plan.configs, "imx6", batch_sizes=(plan.batch_size,), samples=plan.arm_samples,
                                seed=1, lr=plan.lr, images=train.images, labels=train.labels, timeout=plan.timeout,
                                progress=lambda i, n, what: progress(f"imx6 projection [{i}/{n}] {what}")):
            row = _base_row("projection", r["kernel"], r["config"])
            row.update({"seed": 1, "samples": r.get("samples_counted", [0, 0])[-1], "error": r["error"]})
            if not r["error"]:
                row.update({"imx6_seconds_per_epoch": r["projected_seconds_per_epoch"],
                            "arm_instructions_per_epoch": r["arm_instructions_per_epoch"],
                            "neon_share": r["neon_instruction_share"],
                            "board_trainer_peak_rss_bytes": r["guest_peak_rss_bytes"]})
            rows.append(row)
    while t.is_alive():
        progress(f"accuracy: C kernel, {len(plan.configs)} configs x {len(plan.seeds)} seeds x "
                 f"{plan.accuracy_epochs} epochs")
        t.join(1.0)
    if "error" in acc_result:
        rows += [{**_base_row("accuracy", "c", c), "error": acc_result["error"]} for c in plan.configs]
    else:
        rows += acc_result["rows"]
    have = set(available())
    if "tflite" in plan.kernels and "tflite" in have:
        for c in plan.configs:  # TFLite needs one converted model per config; export the missing ones
            if catalog.find_model(sizes_of(c), plan.batch_size) is None:
                progress(f"tflite: exporting the training model for {c} (TensorFlow)")
                try:
                    _run_worker("--export-tflite", {"sizes": sizes_of(c), "batch_size": plan.batch_size}, plan.timeout)
                except Exception as e:  # noqa: BLE001 - the tflite cell then fails with its own line
                    progress(f"tflite export of {c} failed: {_one_line(e)}")
    cells = [(k, c) for c in plan.configs for k in plan.kernels]
    for i, (k, c) in enumerate(cells, 1):
        progress(f"timing [{i}/{len(cells)}] {k} {c}")
        spec = {"kernel": k, "config": c, "seed": 1, "epochs": plan.timing_epochs, "lr": plan.lr,
                "batch_size": plan.batch_size, "train_size": plan.timing_train_size,
                "limit": min(plan.textbook_limit, plan.timing_train_size) if k == "textbook" else plan.timing_train_size}
        try:
            rows.append(_run_worker("--worker", spec, plan.timeout))
        except Exception as e:  # noqa: BLE001 - one failed cell must not lose the others
            rows.append({**_base_row("timing", k, c), "error": _one_line(e)})
    for i, r in enumerate(rows):
        r["row"] = i
    return rows


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else repr(r[k]) if isinstance(r[k], float) else r[k])
                        for k in CSV_COLUMNS})


_TEXT = ("experiment", "kernel", "config", "error")


def read_csv(path: Path) -> list[dict[str, Any]]:
    """cells.csv back as typed rows: numbers as float/int, empty cells as None."""
    out = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            row: dict[str, Any] = {}
            for k, v in r.items():
                if k in _TEXT:
                    row[k] = v or None
                elif v == "":
                    row[k] = None
                else:
                    x = float(v)
                    row[k] = int(x) if x.is_integer() and "." not in v and "e" not in v.lower() else x
            out.append(row)
    return out


# --- analysis: every derived figure, from the CSV rows alone ---------------------------------------
def _fit(x: list[float], y: list[float]) -> tuple[float, float, float]:
    """Least squares y = a + b x; returns (a, b, R^2)."""
    xa, ya = np.asarray(x, float), np.asarray(y, float)
    b, a = np.polyfit(xa, ya, 1)
    resid = ya - (a + b * xa)
    ss = float(((ya - ya.mean()) ** 2).sum())
    return float(a), float(b), 1.0 - float((resid ** 2).sum()) / ss if ss > 0 else 1.0


def _ok(r: dict[str, Any], col: str) -> bool:
    return not r.get("error") and r.get(col) is not None


def _series(rows, experiment: str, col: str) -> dict[str, dict[str, dict[str, Any]]]:
    """kernel -> config -> row, for the rows of one experiment with ``col`` measured."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for r in rows:
        if r["experiment"] == experiment and _ok(r, col):
            out.setdefault(r["kernel"], {})[r["config"]] = r
    return out


def _acc_table(rows) -> dict[tuple[str, int], list[dict[str, Any]]]:
    """(config, epoch) -> rows over seeds, accuracy experiment."""
    out: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in rows:
        if r["experiment"] == "accuracy" and _ok(r, "test_accuracy"):
            out.setdefault((r["config"], int(r["epoch"])), []).append(r)
    return out


def analyse(rows: list[dict[str, Any]]) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Derived figures (name -> number) and the five claims, computed from cells.csv's rows only."""
    d: dict[str, float] = {}
    claims = [
        _claim1(rows, d), _claim2(rows, d), _claim3(rows, d), _claim4(rows, d), _claim5(rows, d),
    ]
    _epochs(rows, d)
    return d, claims


def _claim(i: int, verdict: str, cause: str, evidence: str, figures: list[str]) -> dict[str, Any]:
    return {"id": i, "statement": STATEMENTS[i], "verdict": verdict, "cause": cause, "evidence": evidence,
            "figures": figures}


def F(d: dict[str, float], key: str) -> str:
    """A derived figure inside a claim's text: ``{{key}}``, rendered by the page from derived.csv."""
    return "{{" + key + "}}"


def _claim1(rows, d) -> dict[str, Any]:
    """Exponential growth, t = c e^(kP), makes the log-log slope between two sizes, k (P2 - P1) / ln(P2 / P1),
    grow in proportion to P; polynomial growth t ~ P^b keeps it at b. So the decisive figure is the
    local log-log slope between the two largest single-hidden-layer configs (784-32-10 -> 784-128-10)
    and whether it grew from the step before (784-8-10 -> 784-32-10)."""
    figs = []
    linear = accelerating = 0
    singles = [f"784-{h}-10" for h in HIDDEN]
    for source, col in (("host", "host_cpu_seconds_per_epoch"), ("imx6", "imx6_seconds_per_epoch")):
        exp = "timing" if source == "host" else "projection"
        for kernel, by_cfg in sorted(_series(rows, exp, col).items()):
            pts = [(r["params"], r[col]) for r in by_cfg.values() if r[col] > 0]
            chain = [by_cfg[c] for c in singles if c in by_cfg and by_cfg[c][col] > 0]
            if len(pts) < 4 or len(chain) < 3:
                continue
            p, t = zip(*pts)
            _, slope, r2_pow = _fit([math.log(v) for v in p], [math.log(v) for v in t])
            _, _, r2_exp = _fit(list(p), [math.log(v) for v in t])
            local = [math.log(b[col] / a[col]) / math.log(b["params"] / a["params"]) for a, b in zip(chain, chain[1:])]
            key = f"c1.{source}.{kernel}"
            d[key + ".slope"], d[key + ".r2_power"], d[key + ".r2_exp"] = slope, r2_pow, r2_exp
            d[key + ".slope_top"], d[key + ".slope_before_top"] = local[-1], local[-2]
            d[key + ".time_ratio"] = max(t) / min(t)
            d[key + ".param_ratio"] = max(p) / min(p)
            figs.append(key)
            linear += local[-1] <= 1.25
            accelerating += local[-1] > 2.0 and local[-1] > 2 * local[-2]
    if not figs:
        return _claim(1, "conditional", "no timing cells were measured", "table: timing", [])
    tops = [d[k + ".slope_top"] for k in figs]
    slopes = [d[k + ".slope"] for k in figs]
    d["c1.slope_top_min"], d["c1.slope_top_max"] = min(tops), max(tops)
    d["c1.slope_all_min"], d["c1.slope_all_max"] = min(slopes), max(slopes)
    d["c1.series"], d["c1.series_linear"], d["c1.series_accelerating"] = len(figs), linear, accelerating
    d["c1.param_step"] = n_params(sizes_of(singles[-1])) / n_params(sizes_of(singles[-2]))
    if linear > len(figs) / 2:
        verdict = "does-not-hold"
    elif accelerating > len(figs) / 2:
        verdict = "holds"
    else:
        verdict = "conditional"
    cause = (f"Time grows polynomially, at most linearly, with the parameter count P, not exponentially. From "
             f"784-32-10 to 784-128-10 ({F(d, 'c1.param_step')} the parameters) time grew as P^b with local exponent "
             f"b = {F(d, 'c1.slope_top_min')} to {F(d, 'c1.slope_top_max')} ({F(d, 'c1.series_linear')} of "
             f"{F(d, 'c1.series')} kernel series at most 1.25; {F(d, 'c1.series_accelerating')} accelerating); an "
             f"exponential would make that exponent grow in proportion to P, about fourfold per step here. Over the "
             f"whole grid the power-law exponents are {F(d, 'c1.slope_all_min')} to {F(d, 'c1.slope_all_max')}. Each "
             f"weight costs a fixed number of multiply-adds per sample (forward, gradient, update), hence b near 1 "
             f"for large networks; fixed per-sample and per-batch costs (interpreter and BLAS calls, sigmoid, the "
             f"zero-pixel scan) make small networks cost more than their share, hence b < 1 at the small end.")
    return _claim(1, verdict, cause, "plot: time vs parameters (log-log); table: fits of claim 1", figs)


def _mean(v: list[float]) -> float:
    return float(statistics.fmean(v))


def _init_saturation(rows) -> dict[str, float]:
    """config -> mean over seeds of the initial network's output saturation (experiment ``init``)."""
    by: dict[str, list[float]] = {}
    for r in rows:
        if r["experiment"] == "init" and _ok(r, "output_saturation"):
            by.setdefault(r["config"], []).append(r["output_saturation"])
    return {c: _mean(v) for c, v in by.items()}


def _claim2(rows, d) -> dict[str, Any]:
    acc = _acc_table(rows)
    sat = _init_saturation(rows)
    if not acc:
        return _claim(2, "conditional", "the accuracy experiment produced no rows", "table: accuracy", [])
    last = max(e for _, e in acc)
    pairs = [(f"784-{h}-10", "784-32-10") for h in HIDDEN if h > 32] + \
            [(f"784-{h}-16-10", "784-32-16-10") for h in HIDDEN if h > 32]
    pairs = [(big, ref) for big, ref in pairs if (big, last) in acc and (ref, last) in acc]
    lower_epochs, overfit_epochs, figs = [], [], []
    epochs = sorted({e for _, e in acc})
    for big, ref in pairs:
        for e in epochs:
            b, r = acc.get((big, e)), acc.get((ref, e))
            if not b or not r:
                continue
            bt, rt = [x["test_accuracy"] for x in b], [x["test_accuracy"] for x in r]
            btr, rtr = [x["train_accuracy"] for x in b], [x["train_accuracy"] for x in r]
            if max(bt) < min(rt):  # lower in every seed: beyond the spread
                lower_epochs.append((big, e))
                if _mean(btr) > _mean(rtr):  # fits the training set better while testing worse: overfitting
                    overfit_epochs.append((big, e))
        for cfg in (big, ref):
            rs = acc[(cfg, last)]
            k = f"c2.{cfg}"
            d[k + ".test_mean"] = _mean([x["test_accuracy"] for x in rs])
            d[k + ".test_min"] = min(x["test_accuracy"] for x in rs)
            d[k + ".test_max"] = max(x["test_accuracy"] for x in rs)
            d[k + ".train_mean"] = _mean([x["train_accuracy"] for x in rs])
            d[k + ".gap_mean"] = d[k + ".train_mean"] - d[k + ".test_mean"]
            # how far test accuracy fell from its best epoch (overfitting's other signature)
            best = max(_mean([x["test_accuracy"] for x in acc[(cfg, e)]]) for e in epochs if (cfg, e) in acc)
            d[k + ".drop_from_best"] = best - d[k + ".test_mean"]
            if cfg in sat:
                d[k + ".sat_init"] = sat[cfg]
            figs.append(k)
    d["c2.last_epoch"] = last
    d["c2.seeds"] = len(acc[(pairs[0][0], last)]) if pairs else 0
    d["c2.cells_lower"] = len(lower_epochs)
    d["c2.cells_compared"] = len(pairs) * len(epochs)
    d["c2.cells_overfit"] = len(overfit_epochs)
    if not pairs:
        return _claim(2, "conditional", "configs above 32 hidden neurons were not measured", "table: accuracy", [])
    big, ref = pairs[0]
    k, r = f"c2.{big}", f"c2.{ref}"
    if not lower_epochs:
        verdict = "does-not-hold"
        cause = (f"Wider is better at every epoch and seed: after {F(d, 'c2.last_epoch')} epochs {big} tests at "
                 f"{F(d, k + '.test_mean')} ({F(d, k + '.test_min')}-{F(d, k + '.test_max')} over "
                 f"{F(d, 'c2.seeds')} seeds) against {F(d, r + '.test_mean')} for {ref}. The larger network does fit "
                 f"the training set more closely (train-test gap {F(d, k + '.gap_mean')} vs "
                 f"{F(d, r + '.gap_mean')}), the signature of overfitting, but it does not cost test accuracy "
                 f"within these epochs; in {F(d, 'c2.cells_lower')} of {F(d, 'c2.cells_compared')} "
                 f"(config, epoch) comparisons was the wider network lower in every seed.")
    elif len(lower_epochs) == len(pairs) * len(epochs) and len(overfit_epochs) == len(lower_epochs):
        verdict = "holds"
        cause = (f"The wider network tests lower in all {F(d, 'c2.cells_compared')} comparisons while fitting the "
                 f"training set better (gap {F(d, k + '.gap_mean')} vs {F(d, r + '.gap_mean')}): overfitting.")
    else:
        verdict = "conditional"
        slowdown = ""
        if k + ".sat_init" in d and r + ".sat_init" in d and d[k + ".sat_init"] > d[r + ".sat_init"]:
            slowdown = (f" What slows it: at the initial weights {F(d, k + '.sat_init')} of {big}'s output sigmoids "
                        f"are saturated (sigma'(z) < 0.01) against {F(d, r + '.sat_init')} of {ref}'s: each output "
                        f"sums h hidden activations with N(0,1) weights, so its input spreads as sqrt(h), and the "
                        f"quadratic cost's gradient carries sigma'(z): the learning slowdown of network.py's cost, "
                        f"cured by cross-entropy or weights scaled by 1/sqrt(n_in), not a sign of overfitting.")
        cause = (f"The wider network tests lower in every seed in {F(d, 'c2.cells_lower')} of "
                 f"{F(d, 'c2.cells_compared')} (config, epoch) comparisons; in {F(d, 'c2.cells_overfit')} of "
                 f"those it also fits the training set better (overfitting), in the others it is behind on the "
                 f"training set too (slower learning, not overfitting). After {F(d, 'c2.last_epoch')} epochs: "
                 f"{big} {F(d, k + '.test_mean')} vs {ref} {F(d, r + '.test_mean')}, train-test gaps "
                 f"{F(d, k + '.gap_mean')} vs {F(d, r + '.gap_mean')}.{slowdown}")
    return _claim(2, verdict, cause, "plot: accuracy per epoch; plot: train-test gap; table: accuracy", figs)


SIGNIFICANT = 1.10  # more than 10% more time counts as a significant increase


def _claim3(rows, d) -> dict[str, Any]:
    acc = _acc_table(rows)
    last = max((e for _, e in acc), default=0)
    improved, figs = [], []
    for h in HIDDEN:
        one, two = f"784-{h}-10", f"784-{h}-16-10"
        if (one, last) not in acc or (two, last) not in acc:
            continue
        a1, a2 = [x["test_accuracy"] for x in acc[(one, last)]], [x["test_accuracy"] for x in acc[(two, last)]]
        k = f"c3.h{h}"
        d[k + ".acc_delta"] = _mean(a2) - _mean(a1)
        sat = _init_saturation(rows)
        if one in sat and two in sat:
            d[k + ".sat_init_one"], d[k + ".sat_init_two"] = sat[one], sat[two]
        d[k + ".param_ratio"] = n_params(sizes_of(two)) / n_params(sizes_of(one))
        if min(a2) > max(a1):
            improved.append(h)
        figs.append(k)
    time_ratios: dict[str, list[float]] = {"host": [], "imx6": []}
    reduced_at_largest: dict[str, list[bool]] = {"host": [], "imx6": []}
    for source, exp, col in (("host", "timing", "host_cpu_seconds_per_epoch"),
                             ("imx6", "projection", "imx6_seconds_per_epoch")):
        for kernel, by_cfg in sorted(_series(rows, exp, col).items()):
            for h in HIDDEN:
                one, two = by_cfg.get(f"784-{h}-10"), by_cfg.get(f"784-{h}-16-10")
                if one and two and one[col] > 0:
                    ratio = two[col] / one[col]
                    d[f"c3.{source}.{kernel}.h{h}.time_ratio"] = ratio
                    time_ratios[source].append(ratio)
                    if h == max(HIDDEN):
                        reduced_at_largest[source].append(ratio < 1.0)
    for s in ("host", "imx6"):
        if time_ratios[s]:
            d[f"c3.{s}.time_ratio_min"], d[f"c3.{s}.time_ratio_max"] = min(time_ratios[s]), max(time_ratios[s])
            d[f"c3.{s}.significant"] = sum(r > SIGNIFICANT for r in time_ratios[s])
            d[f"c3.{s}.pairs"] = len(time_ratios[s])
            d[f"c3.{s}.reduced_at_largest"] = sum(reduced_at_largest[s])
            d[f"c3.{s}.kernels_at_largest"] = len(reduced_at_largest[s])
    d["c3.improved"], d["c3.bases"] = len(improved), len(figs)
    d["c3.threshold"] = SIGNIFICANT
    if not figs:
        return _claim(3, "conditional", "no accuracy rows", "table: accuracy", [])
    # time is judged on the exact projected counts where there are any (host CPU time is noisy)
    s = "imx6" if time_ratios["imx6"] else "host"
    time_ok = d.get(f"c3.{s}.significant", 0) == 0
    reduces = reduced_at_largest[s] and all(reduced_at_largest[s])
    acc_text = (f"the extra layer raises test accuracy beyond the seed spread for {F(d, 'c3.improved')} of "
                f"{F(d, 'c3.bases')} hidden sizes (after {F(d, 'c2.last_epoch')} epochs: "
                + ", ".join(f"{h} neurons {F(d, f'c3.h{h}.acc_delta')}" for h in HIDDEN if f"c3.h{h}" in figs) + ")")
    time_text = (f"time per epoch changes by a factor {F(d, f'c3.{s}.time_ratio_min')}-{F(d, f'c3.{s}.time_ratio_max')} "
                 f"({s}{' projected, exact counts' if s == 'imx6' else ' CPU time'}; "
                 f"{F(d, f'c3.{s}.significant')} of {F(d, f'c3.{s}.pairs')} kernel/size pairs over "
                 f"{F(d, 'c3.threshold')}), which tracks the parameter count ("
                 + ", ".join(f"{h}: {F(d, f'c3.h{h}.param_ratio')}" for h in HIDDEN if f"c3.h{h}" in figs)
                 + f"); at 128 neurons {F(d, f'c3.{s}.reduced_at_largest')} of {F(d, f'c3.{s}.kernels_at_largest')} "
                 f"kernels got faster")
    if len(improved) == len(figs) and time_ok and reduces:
        verdict = "holds"
    elif not improved and not time_ok:
        verdict = "does-not-hold"
    else:
        verdict = "conditional"
    top = f"c3.h{max(HIDDEN)}"
    sat_text = (f" Why accuracy improves: the output layer then sums 16 inputs instead of h, so fewer output sigmoids "
                f"start saturated (at {max(HIDDEN)} hidden neurons {F(d, top + '.sat_init_one')} -> "
                f"{F(d, top + '.sat_init_two')} at the initial weights) and the quadratic cost's learning slowdown "
                f"shrinks.") if top + ".sat_init_one" in d else ""
    cause = (f"{acc_text[0].upper()}{acc_text[1:]}; {time_text}. The extra 16-neuron layer adds h x 16 + 16 x 10 "
             f"weights and removes h x 10, a small change beside the 784 x h first layer, so time hardly moves; "
             f"it cannot make a network with more weights faster.{sat_text}")
    return _claim(3, verdict, cause, "table: extra layer; plot: time vs parameters; plot: accuracy per epoch", figs)


def _claim4(rows, d) -> dict[str, Any]:
    figs = []
    flat_process, growing_own = 0, 0
    for kernel, by_cfg in sorted(_series(rows, "timing", "process_peak_rss_bytes").items()):
        if len(by_cfg) < 2:
            continue
        proc = [r["process_peak_rss_bytes"] for r in by_cfg.values()]
        own = {c: r["kernel_train_footprint_bytes"] + 0 for c, r in by_cfg.items()}
        small, large = min(by_cfg.values(), key=lambda r: r["params"]), max(by_cfg.values(), key=lambda r: r["params"])
        k = f"c4.{kernel}"
        d[k + ".process_spread"] = max(proc) / min(proc) - 1
        d[k + ".process_max"] = max(proc)
        d[k + ".own_small"] = own[small["config"]]
        d[k + ".own_large"] = own[large["config"]]
        d[k + ".own_growth"] = own[large["config"]] - own[small["config"]]
        d[k + ".baseline"] = _mean([r["baseline_rss_bytes"] for r in by_cfg.values()])
        d[k + ".eval_max"] = max(r["kernel_eval_footprint_bytes"] for r in by_cfg.values())
        if d[k + ".process_spread"] <= 0.10:
            flat_process += 1
        # the kernel's own memory grows by more than the float32 weights it gained (and at least 256 KiB)
        if d[k + ".own_growth"] > max(256 * 1024, 4 * (large["params"] - small["params"])):
            growing_own += 1
        figs.append(k)
    d["c4.kernels"], d["c4.flat_process"], d["c4.growing_own"] = len(figs), flat_process, growing_own
    if not figs:
        return _claim(4, "conditional", "no memory cells were measured", "plot: memory", [])
    d["c4.process_spread_max"] = max(d[k + ".process_spread"] for k in figs)
    big = "c4.c" if "c4.c" in figs else figs[0]
    if flat_process == len(figs) and growing_own == 0:
        verdict = "holds"
    elif flat_process == 0:
        verdict = "does-not-hold"
    else:
        verdict = "conditional"
    cause = (f"The whole process's peak is flat in {F(d, 'c4.flat_process')} of {F(d, 'c4.kernels')} kernels (within "
             f"10%; largest spread {F(d, 'c4.process_spread_max')}) because it is dominated by what every cell holds "
             f"anyway: the uint8 MNIST arrays and the runtime (resident before the kernel exists: "
             f"{F(d, big + '.baseline')}). The kernel's own footprint is not constant: it grows with the weights, "
             f"activations and gradients it holds (c: {F(d, 'c4.c.own_small')} at the smallest config, "
             f"{F(d, 'c4.c.own_large')} at the largest); it grew by more than its weights in "
             f"{F(d, 'c4.growing_own')} of {F(d, 'c4.kernels')} kernels. On an ECU the flat part is the data, "
             f"which a client holds as a shard.") if "c4.c" in figs else "c kernel not measured"
    return _claim(4, verdict, cause, "plot: memory per kernel and config; table: memory", figs)


def _claim5(rows, d) -> dict[str, Any]:
    s = _series(rows, "timing", "host_cpu_seconds_per_epoch")
    c, figs = s.get("c", {}), []
    faster_time = faster_than_textbook = lower_mem = compared = 0
    for config in CONFIGS:
        if config not in c:
            continue
        for other in ("numpy", "textbook"):
            o = s.get(other, {}).get(config)
            if not o:
                continue
            k = f"c5.{config}.{other}"
            d[k + ".time_ratio"] = o["host_cpu_seconds_per_epoch"] / c[config]["host_cpu_seconds_per_epoch"]
            d[k + ".own_mem_ratio"] = (o["kernel_train_footprint_bytes"] + 1) / (c[config]["kernel_train_footprint_bytes"] + 1)
            if other == "numpy":
                compared += 1
                faster_time += d[k + ".time_ratio"] > 1
                lower_mem += o["kernel_train_footprint_bytes"] > c[config]["kernel_train_footprint_bytes"]
            else:
                faster_than_textbook += d[k + ".time_ratio"] > 1
            figs.append(k)
    d["c5.compared"], d["c5.c_faster"], d["c5.c_less_memory"] = compared, faster_time, lower_mem
    d["c5.c_faster_than_textbook"] = faster_than_textbook
    ratios = [d[f"c5.{cfg}.numpy.time_ratio"] for cfg in CONFIGS if f"c5.{cfg}.numpy.time_ratio" in d]
    if ratios:
        d["c5.numpy_ratio_min"], d["c5.numpy_ratio_max"] = min(ratios), max(ratios)
    tb = [d[f"c5.{cfg}.textbook.time_ratio"] for cfg in CONFIGS if f"c5.{cfg}.textbook.time_ratio" in d]
    if tb:
        d["c5.textbook_ratio_min"], d["c5.textbook_ratio_max"] = min(tb), max(tb)
    # which optimisation gave the most: each kernel's speed against the plain C loops, same config
    for source, exp, col in (("host", "timing", "host_cpu_seconds_per_epoch"),
                             ("imx6", "projection", "imx6_seconds_per_epoch")):
        ser = _series(rows, exp, col)
        base = ser.get("c-plain", {})
        for kernel, by_cfg in ser.items():
            ratios = [base[cfg][col] / r[col] for cfg, r in by_cfg.items() if cfg in base and r[col] > 0]
            if ratios:
                d[f"c5.speedup.{source}.{kernel}"] = float(np.exp(np.mean(np.log(ratios))))
    if not compared:
        return _claim(5, "conditional", "numpy or c was not measured", "table: timing", [])
    mem = (f"its own training footprint is smaller than numpy's in {F(d, 'c5.c_less_memory')} of "
           f"{F(d, 'c5.compared')} configs")
    if faster_time == compared and lower_mem == compared:
        verdict = "holds"
    elif faster_time == 0:
        verdict = "does-not-hold"
    else:
        verdict = "conditional"
    best = {}
    for source in ("host", "imx6"):
        cands = {k.rsplit(".", 1)[-1]: v for k, v in d.items() if k.startswith(f"c5.speedup.{source}.")}
        cands = {k: v for k, v in cands.items() if k != "c-plain"}
        if cands:
            best[source] = max(cands, key=cands.get)
    most = " and ".join(f"{k}'s on {'this host' if s == 'host' else 'the projected i.MX6'} "
                        f"({F(d, f'c5.speedup.{s}.{k}')}, geometric mean over configs)" for s, k in best.items())
    cause = (f"C is faster than numpy in {F(d, 'c5.c_faster')} of {F(d, 'c5.compared')} configs, by "
             f"{F(d, 'c5.numpy_ratio_min')}-{F(d, 'c5.numpy_ratio_max')} (CPU seconds per epoch, same run; "
             f"network.py's per-sample loop: {F(d, 'c5.textbook_ratio_min')}-{F(d, 'c5.textbook_ratio_max')}); "
             f"{mem}. numpy pays a fixed Python and BLAS call cost per mini-batch of 10 that C does not, and C skips "
             f"MNIST's zero pixels in the first layer." + (f" Against the plain C loops the largest speed-up is {most}." if most else ""))
    return _claim(5, verdict, cause, "table: timing; table: speed-up against plain C; plot: memory", figs)


def _epochs(rows, d) -> None:
    """Has test accuracy settled by the last epoch? Change of the seed mean over the last five epochs."""
    acc = _acc_table(rows)
    if not acc:
        return
    last = max(e for _, e in acc)
    changes, best_epochs = [], []
    for cfg in CONFIGS:
        series = {e: _mean([x["test_accuracy"] for x in acc[(cfg, e)]]) for e in range(1, last + 1) if (cfg, e) in acc}
        if len(series) < 2:
            continue
        window = [series[e] for e in series if e > last - 5]
        d[f"epochs.{cfg}.last5_range"] = max(window) - min(window)
        d[f"epochs.{cfg}.best_epoch"] = max(series, key=series.get)
        changes.append(d[f"epochs.{cfg}.last5_range"])
        best_epochs.append(d[f"epochs.{cfg}.best_epoch"])
    if changes:
        d["epochs.last"] = last
        d["epochs.last5_range_max"] = max(changes)
        d["epochs.best_epoch_min"], d["epochs.best_epoch_max"] = min(best_epochs), max(best_epochs)


def write_derived(path: Path, derived: dict[str, float]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "value"])
        for k in sorted(derived):
            w.writerow([k, repr(float(derived[k]))])


def read_derived(path: Path) -> dict[str, float]:
    with open(path, newline="") as f:
        return {r["name"]: float(r["value"]) for r in csv.DictReader(f)}


def write_outputs(out: Path, rows: list[dict[str, Any]], meta: dict[str, Any]) -> dict[str, Any]:
    """cells.csv, then everything else from cells.csv as read back: derived.csv, claims.json, index.html."""
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "cells.csv", rows)
    cells = read_csv(out / "cells.csv")
    derived, claims = analyse(cells)
    write_derived(out / "derived.csv", derived)
    derived = read_derived(out / "derived.csv")
    rendered = [dict(c, cause=thesis_page.plain(c["cause"], derived)) for c in claims]
    (out / "claims.json").write_text(json.dumps(rendered, indent=1) + "\n")
    (out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    thesis_page.write(out, cells, derived, claims, meta)
    return {"claims": rendered, "derived": derived}


# --- the command -----------------------------------------------------------------------------------
@click.command("thesis")
@click.option("--quick", is_flag=True, help="A small grid (fewer epochs, seeds and samples): minutes, what CI runs.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False),
              help="Results folder (default: results/thesis-<time>).")
@click.option("--kernels", "kernel_list", help=f"Comma-separated subset of: {', '.join(KERNEL_SPECS)}.")
@click.option("--from-csv", "from_csv", type=click.Path(dir_okay=False, exists=False),
              help="Re-derive the page, claims and plots from a cells.csv (no training).")
def thesis(quick, out_dir, kernel_list, from_csv):
    """The thesis' results chapter: the grid of configs x kernels, a verdict per statement, one HTML page."""
    plan = Plan.make(quick)
    if kernel_list:
        ks = [k.strip() for k in kernel_list.split(",") if k.strip()]
        bad = [k for k in ks if k not in KERNEL_SPECS]
        if bad or not ks:
            raise click.UsageError(f"--kernels: unknown kernel {bad[0] if bad else kernel_list!r}; "
                                   f"kernels: {', '.join(KERNEL_SPECS)}")
        plan.kernels = ks
        plan.arm_kernels = [k for k in ARM_KERNELS if k in ks]
    out = Path(out_dir) if out_dir else Path("results") / time.strftime("thesis-%Y%m%d-%H%M%S")
    if from_csv:
        if not Path(from_csv).is_file():
            raise click.UsageError(f"--from-csv: {from_csv} is not a file")
        rows = read_csv(Path(from_csv))
        meta = {"command": "ecufl thesis --from-csv " + from_csv, "from_csv": from_csv}
        meta_src = Path(from_csv).with_name("meta.json")
        if meta_src.is_file():
            meta = dict(json.loads(meta_src.read_text()), rederived_from=from_csv)
    else:
        try:
            mnist.load("test")
        except mnist.DataError as e:
            raise click.ClickException(str(e))
        t0 = time.time()
        start = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        load0 = os.getloadavg()[0]
        err = click.get_text_stream("stderr")
        rows = run_grid(plan, progress=lambda msg: err.write(f"\r\033[K{msg}") and err.flush())
        err.write("\r\033[K")
        meta = {"command": "ecufl thesis" + (" --quick" if quick else "") +
                (f" --kernels {kernel_list}" if kernel_list else ""),
                "started": start, "minutes": round((time.time() - t0) / 60, 1),
                "load_average": [round(load0, 2), round(os.getloadavg()[0], 2)], "load0": round(load0, 2), "cpus": os.cpu_count(),
                "plan": asdict(plan), "host": os.uname().machine}
    result = write_outputs(out, rows, meta)
    for c in result["claims"]:
        click.echo(f"{c['id']}. {c['verdict']:14s} {c['statement']}")
    failed = sum(1 for r in rows if r.get("error"))
    if failed:
        click.echo(f"{failed} of {len(rows)} cells failed (their error is in cells.csv)")
    click.echo(f"wrote {out / 'index.html'}")


if __name__ == "__main__":
    thesis()
