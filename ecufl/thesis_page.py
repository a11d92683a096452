"""The page of ``ecufl thesis``: index.html (self-contained, plots embedded) and the plots as PNG files.

Every number on the page is printed by ``num`` from a row of cells.csv, a line of derived.csv
(computed from cells.csv by ``ecufl.thesis.analyse``) or meta.json, and carries where it came from:
``<span data-src="cells:ROW:COLUMN" data-kind="KIND">`` (or ``derived:NAME``, ``meta:KEY``), so a
test can re-read each one from the files and format it again (``fmt``). Table cells without a
number are marked ``class="label"``. Plots are drawn from the same rows.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HIDDEN = (2, 8, 32, 128)
CONFIGS = [f"784-{h}-10" for h in HIDDEN] + [f"784-{h}-16-10" for h in HIDDEN]
VERDICT_COLOUR = {"holds": "#1a7f37", "does-not-hold": "#b42318", "conditional": "#9a6700"}


# --- numbers ---------------------------------------------------------------------------------------
def fmt(value: Any, kind: str) -> str:
    """The one way the page prints a number of kind ``kind``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if kind == "text":
        return str(value)
    v = float(value)
    if kind == "pct":  # a fraction shown as percent
        return f"{100 * v:.2f}%"
    if kind == "pp":  # a difference of fractions, in percentage points
        return f"{100 * v:+.2f} pp"
    if kind == "spread":  # a relative spread
        return f"{100 * v:.1f}%"
    if kind == "x":
        return f"{v:.2f}x"
    if kind == "f2":
        return f"{v:.2f}"
    if kind == "f3":
        return f"{v:.3f}"
    if kind == "s":
        return f"{v:.3g} s" if v < 100 else f"{v:.0f} s"
    if kind == "bytes":
        for unit, size in (("MiB", 2**20), ("KiB", 2**10)):
            if abs(v) >= size:
                return f"{v / size:.1f} {unit}"
        return f"{int(v)} B"
    if kind == "G":
        return f"{v / 1e9:.2f} G"
    if kind == "n":
        return f"{int(round(v)):,}"
    raise ValueError(f"unknown number kind {kind!r}")


def kind_of(name: str) -> str:
    """The kind of a derived.csv figure, from its name."""
    last = name.rsplit(".", 1)[-1]
    if last.startswith("slope"):
        return "f2"
    if last.startswith("r2"):
        return "f3"
    if last in ("test_mean", "test_min", "test_max", "train_mean"):
        return "pct"
    if last in ("gap_mean", "drop_from_best", "acc_delta", "last5_range", "last5_range_max"):
        return "pp"
    if last.startswith("sat_init"):
        return "spread"
    if last.startswith("process_spread"):
        return "spread"
    if last in ("process_max", "own_small", "own_large", "own_growth", "baseline", "eval_max"):
        return "bytes"
    if "ratio" in last or last in ("threshold", "param_step") or name.startswith("c5.speedup"):
        return "x"
    return "n"


def num(src: str, value: Any, kind: str) -> str:
    return f'<span data-src="{html.escape(src)}" data-kind="{kind}">{html.escape(fmt(value, kind))}</span>'


def dnum(derived: dict[str, float], name: str) -> str:
    return num(f"derived:{name}", derived.get(name), kind_of(name))


def cnum(row: dict[str, Any] | None, col: str, kind: str) -> str:
    if row is None:
        return '<span class="label">not run</span>'
    if row.get("error"):
        return f'<span class="label" title="{html.escape(row["error"])}">error</span>'
    return num(f"cells:{row['row']}:{col}", row.get(col), kind)


_PLACEHOLDER = re.compile(r"\{\{([A-Za-z0-9_.\-]+)\}\}")


def plain(text: str, derived: dict[str, float]) -> str:
    """A claim's text with its figures filled in (claims.json)."""
    return _PLACEHOLDER.sub(lambda m: fmt(derived.get(m.group(1)), kind_of(m.group(1))), text)


def marked(text: str, derived: dict[str, float]) -> str:
    """A claim's text for the page: figures as spans naming their derived.csv line."""
    out, pos = [], 0
    for m in _PLACEHOLDER.finditer(text):
        out.append(html.escape(text[pos:m.start()]))
        out.append(dnum(derived, m.group(1)))
        pos = m.end()
    out.append(html.escape(text[pos:]))
    return "".join(out)


# --- plots -----------------------------------------------------------------------------------------
def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _by(rows, experiment, col):
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for r in rows:
        if r["experiment"] == experiment and not r.get("error") and r.get(col) is not None:
            out.setdefault(r["kernel"], {})[r["config"]] = r
    return out


def plot_time(rows, derived) -> bytes:
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    for ax, (source, exp, col, title) in zip(axes, (
            ("host", "timing", "host_cpu_seconds_per_epoch", "this host: CPU seconds per epoch (training thread)"),
            ("imx6", "projection", "imx6_seconds_per_epoch", "i.MX6 (1 GHz Cortex-A9): projected seconds per epoch"))):
        for kernel, by_cfg in sorted(_by(rows, exp, col).items()):
            pts = sorted((r["params"], r[col]) for r in by_cfg.values() if r[col] > 0)
            if not pts:
                continue
            p, t = zip(*pts)
            line, = ax.plot(p, t, "o", label=kernel)
            key = f"c1.{source}.{kernel}"
            if key + ".slope" in derived:
                b = derived[key + ".slope"]
                # the fit line through the points' geometric centre with the fitted slope
                lp = [math.log(v) for v in p]
                lt = [math.log(v) for v in t]
                a = sum(lt) / len(lt) - b * sum(lp) / len(lp)
                xs = [min(p), max(p)]
                ax.plot(xs, [math.exp(a + b * math.log(x)) for x in xs], "-", color=line.get_color(), alpha=0.6)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("parameters (weights + biases)")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, ncol=2)
    fig.suptitle("Claim 1: time vs parameters, log-log (straight line = power law; lines: least-squares fits)",
                 fontsize=11)
    return _png(fig)


def _acc_series(rows):
    acc: dict[str, dict[int, list[dict[str, Any]]]] = {}
    for r in rows:
        if r["experiment"] == "accuracy" and not r.get("error") and r.get("test_accuracy") is not None:
            acc.setdefault(r["config"], {}).setdefault(int(r["epoch"]), []).append(r)
    return acc


def plot_accuracy(rows) -> bytes:
    acc = _acc_series(rows)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    for cfg in CONFIGS:
        if cfg not in acc:
            continue
        epochs = sorted(acc[cfg])
        style = "-" if cfg.count("-") == 2 else "--"
        test = [[x["test_accuracy"] for x in acc[cfg][e]] for e in epochs]
        gap = [[x["train_accuracy"] - x["test_accuracy"] for x in acc[cfg][e]] for e in epochs]
        mean = [sum(v) / len(v) for v in test]
        line, = axes[0].plot(epochs, [100 * m for m in mean], style, marker=".", label=cfg)
        axes[0].fill_between(epochs, [100 * min(v) for v in test], [100 * max(v) for v in test],
                             color=line.get_color(), alpha=0.15)
        axes[1].plot(epochs, [100 * sum(v) / len(v) for v in gap], style, marker=".", color=line.get_color(), label=cfg)
    axes[0].set_title("test accuracy (mean over seeds, band: min-max)", fontsize=10)
    axes[0].set_ylabel("%")
    axes[1].set_title("train accuracy - test accuracy (overfitting's signature)", fontsize=10)
    axes[1].set_ylabel("percentage points")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, ncol=2)
    fig.suptitle("Claims 2 and 3: accuracy per epoch, C kernel, lr 3.0, batch 10 (dashed: extra 16-neuron layer)",
                 fontsize=11)
    return _png(fig)


def plot_memory(rows) -> bytes:
    by = _by(rows, "timing", "kernel_train_footprint_bytes")
    board = _by(rows, "projection", "board_trainer_peak_rss_bytes")
    kernels = sorted(by)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    width = 0.8 / max(len(CONFIGS), 1)
    for j, cfg in enumerate(CONFIGS):
        xs = [i + (j - len(CONFIGS) / 2) * width for i in range(len(kernels))]
        axes[0].bar(xs, [by[k][cfg]["kernel_train_footprint_bytes"] / 2**20 if cfg in by[k] else 0 for k in kernels],
                    width, label=cfg)
        axes[1].bar(xs, [by[k][cfg]["process_peak_rss_bytes"] / 2**20 if cfg in by[k] else 0 for k in kernels],
                    width, label=cfg)
    bk = sorted(board)
    for j, cfg in enumerate(CONFIGS):
        xs = [i + (j - len(CONFIGS) / 2) * width for i in range(len(bk))]
        axes[2].bar(xs, [board[k][cfg]["board_trainer_peak_rss_bytes"] / 2**20 if cfg in board[k] else 0 for k in bk],
                    width, label=cfg)
    for ax, ks, title in ((axes[0], kernels, "each kernel's own training footprint (own process)"),
                          (axes[1], kernels, "whole process peak RSS (data set + runtime + kernel)"),
                          (axes[2], bk, "ARM standalone trainer on the emulated A9 (own peak RSS)")):
        ax.set_xticks(range(len(ks)))
        ax.set_xticklabels(ks, rotation=30, fontsize=8)
        ax.set_ylabel("MiB")
        ax.set_title(title, fontsize=10)
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].legend(fontsize=6, ncol=2)
    fig.suptitle("Claim 4: memory vs config, per kernel", fontsize=11)
    return _png(fig)


def plot_board(rows) -> bytes:
    acc = _acc_series(rows)
    proj = _by(rows, "projection", "imx6_seconds_per_epoch").get("c", {})
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    for cfg in CONFIGS:
        if cfg not in acc or cfg not in proj:
            continue
        s = proj[cfg]["imx6_seconds_per_epoch"]
        epochs = sorted(acc[cfg])
        ys = [100 * sum(x["test_accuracy"] for x in acc[cfg][e]) / len(acc[cfg][e]) for e in epochs]
        ax.plot([e * s for e in epochs], ys, "-" if cfg.count("-") == 2 else "--", marker=".", label=cfg)
    ax.set_xscale("log")
    ax.set_xlabel("projected seconds on one i.MX6 (1 GHz A9) training all of MNIST, epoch after epoch\n"
                  "(a round of 4 ECUs on quarter shards costs each ECU a quarter of one epoch)")
    ax.set_ylabel("test accuracy %")
    ax.set_title("Projected board time vs accuracy (C kernel, NEON build)", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, ncol=2)
    return _png(fig)


# --- HTML ------------------------------------------------------------------------------------------
CSS = """
body{font-family:system-ui,sans-serif;max-width:1250px;margin:1em auto;padding:0 1em;color:#1f2328}
table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:13px}
td,th{border:1px solid #d0d7de;padding:3px 7px;text-align:right;vertical-align:top}
td.label,th{text-align:left;background:#f6f8fa}
.verdict{font-weight:bold;color:#fff;padding:1px 6px;border-radius:4px}
img{max-width:100%;border:1px solid #d0d7de;margin:.4em 0}
.note{color:#57606a;font-size:13px}
"""

RENDER_CHECK = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var bad = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); });
  var tables = Array.prototype.slice.call(document.querySelectorAll('table'));
  var empty = tables.filter(function (t) { return t.rows.length < 2; });
  var ok = bad.length === 0 && empty.length === 0;
  document.body.setAttribute('data-render', (ok ? 'ok' : 'fail') + ' images=' + imgs.length + ' tables=' +
    tables.length + ' broken-images=' + bad.length + ' empty-tables=' + empty.length);
  if (!ok) { console.error('render check failed: ' + bad.length + ' images, ' + empty.length + ' tables'); }
});
"""


def _lbl(text: str, title: str | None = None) -> str:
    t = f' title="{html.escape(title)}"' if title else ""
    return f'<td class="label"{t}>{html.escape(text)}</td>'


def _grid(rows, experiment, col, kind, kernels, configs) -> str:
    by: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        if r["experiment"] == experiment:
            by[(r["kernel"], r["config"])] = r
    head = "<tr><th>kernel</th>" + "".join(f"<th>{c}</th>" for c in configs) + "</tr>"
    body = []
    for k in kernels:
        cells = []
        for c in configs:
            r = by.get((k, c))
            cell = cnum(r, col, kind)
            if r is not None and not r.get("error") and r.get("partial"):
                cell += '<span class="label">*</span>'
            cells.append(f"<td>{cell}</td>")
        body.append("<tr>" + _lbl(k) + "".join(cells) + "</tr>")
    return "<table>" + head + "".join(body) + "</table>"


def _img(name: str, png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def page(rows, derived, claims, meta, plots: dict[str, bytes]) -> str:
    kernels_t = []
    for r in rows:
        if r["experiment"] == "timing" and r["kernel"] not in kernels_t:
            kernels_t.append(r["kernel"])
    kernels_p = []
    for r in rows:
        if r["experiment"] == "projection" and r["kernel"] not in kernels_p:
            kernels_p.append(r["kernel"])
    configs = [c for c in CONFIGS if any(r["config"] == c for r in rows)]
    h: list[str] = []
    h.append("<!doctype html><html lang=en><head><meta charset=utf-8><title>ecufl thesis: results chapter</title>"
             f"<style>{CSS}</style></head><body>")
    h.append("<h1>Training neural networks on embedded devices: the results chapter, reproduced and judged</h1>")
    h.append(f'<p class="note">Command: <code>{num("meta:command", meta.get("command"), "text")}</code>; started '
             f'{num("meta:started", meta.get("started"), "text")}, took '
             f'{num("meta:minutes", meta.get("minutes"), "f2")} minutes on a '
             f'{num("meta:cpus", meta.get("cpus"), "n")}-core {num("meta:host", meta.get("host"), "text")} '
             f'machine shared with other jobs (load average at start {num("meta:load0", meta.get("load0"), "f2")}). '
             "Every number below is read from this run's <code>cells.csv</code> (each measured cell) or "
             "<code>derived.csv</code> (fits and ratios computed from cells.csv by <code>ecufl.thesis.analyse</code>); "
             "hover-free check: each number's element names its source line. Verdicts are computed from the same "
             "rows (<code>claims.json</code>).</p>")
    # claims
    h.append("<h2>Verdicts</h2><table><tr><th>#</th><th>statement (thesis)</th><th>verdict</th><th>cause, measured</th>"
             "<th>evidence</th></tr>")
    for c in claims:
        colour = VERDICT_COLOUR.get(c["verdict"], "#57606a")
        h.append(f'<tr><td class="label">{c["id"]}</td>{_lbl(c["statement"])}'
                 f'<td class="label"><span class="verdict" style="background:{colour}">{c["verdict"]}</span></td>'
                 f'<td class="label" style="max-width:560px">{marked(c["cause"], derived)}</td>{_lbl(c["evidence"])}</tr>')
    h.append("</table>")
    # method
    plan = meta.get("plan") or {}
    h.append("<h2>Method</h2><ul>")
    h.append("<li><b>Hyper-parameters</b>: the thesis' (network.py's): sigmoid, quadratic cost, mini-batch SGD, "
             "learning rate 3.0, batch 10, network.py's initial weights and sample order from seed s "
             "(every kernel draws them bit for bit alike).</li>")
    if "epochs.last" in derived:
        h.append(f"<li><b>Epochs</b> (accuracy experiment): {dnum(derived, 'epochs.last')}. network.py trains 30 "
                 "epochs, and the thesis' claims about accuracy are about the trained network, so the full run uses "
                 "the same (<code>--quick</code> uses fewer: its accuracy verdicts describe early training only). "
                 f"Over the last five epochs the seed-mean test accuracy of every config moved by at most "
                 f"{dnum(derived, 'epochs.last5_range_max')}; the best epoch was between "
                 f"{dnum(derived, 'epochs.best_epoch_min')} and {dnum(derived, 'epochs.best_epoch_max')}.</li>")
    h.append("<li><b>Accuracy</b>: the optimised C kernel (held to the numpy reference within 1e-4 in weights), "
             "train and test accuracy after every epoch, several seeds; spread shown as min-max.</li>")
    h.append("<li><b>Time</b>: every kernel and config in its own single-threaded process, seed 1 (same weights and "
             "order for all kernels); CPU seconds of the training thread for the last of "
             f"{html.escape(str(plan.get('timing_epochs', '?')))} epochs (first epoch in cells.csv too), scaled to "
             "60,000 samples where fewer were trained (* in the tables: the per-sample textbook loop, and every "
             "kernel in --quick). Compare kernels as ratios within this run.</li>")
    h.append("<li><b>Memory</b>: per cell, in that cell's own process: resident memory before the kernel's module is "
             "imported (the MNIST arrays and Python), after it (the kernel's code and runtime), then the high-water "
             "mark of creating the kernel and training alone and of evaluation alone (Linux clear_refs resets it): the "
             "kernel's <i>own</i> footprint; the whole process's peak (VmHWM) beside it. (<code>ru_maxrss</code>, "
             "which ecufl bench reports, is kept across exec on Linux: a worker's includes its parent's peak, the "
             "same bar for every kernel.) On the emulated board: the ARM standalone trainer's own peak (qemu's baseline subtracted), holding "
             "only the samples it was given.</li>")
    h.append("<li><b>Projected i.MX6 time</b>: the native kernels' ARM builds under <code>qemu-arm -cpu cortex-a9</code>, "
             "exact instruction counts of the training function for two sample counts, extrapolated to an epoch, "
             "times the Cortex-A9 cost model (kernels/arm/COSTMODEL.md: TRM issue cycles; caches, latency chains and "
             "mispredictions not modelled, so optimistic for 784-128 whose weights exceed the L1). "
             "<b>Not projected</b>: numpy and textbook (they would need Debian's armhf python3 + python3-numpy in a "
             "sysroot under qemu-arm, counting the whole interpreter; not done in this run), TFLite (ai-edge-litert "
             "ships no 32-bit ARM wheel; tflite-runtime's last armv7l wheels predate this Python), and the pruned C "
             "path (no ARM trainer for c-sparse yet). Their board time is therefore not claimed; their host ratios "
             "to C are.</li></ul>")
    # plots
    h.append("<h2>Claim 1: time vs parameters</h2>" + _img("time", plots["time"], "time vs parameters, log-log"))
    h.append("<table><tr><th>series</th><th>power-law exponent b (t ~ P^b)</th><th>R² of log t vs log P</th>"
             "<th>R² of log t vs P (exponential)</th><th>time largest / smallest</th><th>params largest / smallest</th></tr>")
    for k in sorted({n.rsplit(".", 1)[0] for n in derived if n.startswith(("c1.host.", "c1.imx6."))}):
        h.append("<tr>" + _lbl(k[3:]) + "".join(f"<td>{dnum(derived, k + s)}</td>" for s in
                                                (".slope_before_top", ".slope_top", ".slope", ".r2_power", ".r2_exp", ".time_ratio", ".param_ratio")) + "</tr>")
    h.append("</table>")
    h.append("<h3>Host CPU seconds per epoch (60,000 samples)</h3>"
             + _grid(rows, "timing", "host_cpu_seconds_per_epoch", "s", kernels_t, configs))
    h.append("<h3>Projected i.MX6 seconds per epoch</h3>"
             + _grid(rows, "projection", "imx6_seconds_per_epoch", "s", kernels_p, configs))
    h.append("<h3>ARM instructions per epoch (counted under qemu)</h3>"
             + _grid(rows, "projection", "arm_instructions_per_epoch", "G", kernels_p, configs))
    h.append("<h2>Claims 2 and 3: accuracy</h2>" + _img("accuracy", plots["accuracy"], "accuracy per epoch"))
    h.append(_acc_table(rows, configs))
    h.append(_saturation_table(rows, configs))
    h.append("<h3>Extra 16-neuron layer (claim 3)</h3><table><tr><th>hidden</th><th>test accuracy change</th>"
             "<th>parameters ratio</th>" + "".join(f"<th>{k} time ratio (host)</th>" for k in kernels_t)
             + "".join(f"<th>{k} time ratio (imx6)</th>" for k in kernels_p) + "</tr>")
    for hid in HIDDEN:
        if f"c3.h{hid}.acc_delta" not in derived:
            continue
        h.append(f"<tr>{_lbl(f'784-{hid}-10 → 784-{hid}-16-10')}<td>{dnum(derived, f'c3.h{hid}.acc_delta')}</td>"
                 f"<td>{dnum(derived, f'c3.h{hid}.param_ratio')}</td>"
                 + "".join(f"<td>{dnum(derived, f'c3.host.{k}.h{hid}.time_ratio')}</td>" for k in kernels_t)
                 + "".join(f"<td>{dnum(derived, f'c3.imx6.{k}.h{hid}.time_ratio')}</td>" for k in kernels_p) + "</tr>")
    h.append("</table>")
    h.append("<h3>Test accuracy of every kernel after the timed epochs (seed 1, same order and epochs)</h3>"
             '<p class="note">Comparable across kernels within a column; * = trained on fewer samples per epoch '
             "(not comparable).</p>" + _grid(rows, "timing", "test_accuracy", "pct", kernels_t, configs))
    h.append("<h2>Claim 4: memory</h2>" + _img("memory", plots["memory"], "memory per kernel and config"))
    h.append("<h3>Each kernel's own training footprint</h3>"
             + _grid(rows, "timing", "kernel_train_footprint_bytes", "bytes", kernels_t, configs))
    h.append("<h3>Each kernel's code and runtime (resident memory its import added)</h3>"
             + _grid(rows, "timing", "kernel_import_bytes", "bytes", kernels_t, configs))
    h.append("<h3>Each kernel's own evaluation footprint (10,000 test images)</h3>"
             + _grid(rows, "timing", "kernel_eval_footprint_bytes", "bytes", kernels_t, configs))
    h.append("<h3>Whole process peak RSS</h3>"
             + _grid(rows, "timing", "process_peak_rss_bytes", "bytes", kernels_t, configs))
    h.append("<h3>ARM standalone trainer's own peak RSS on the emulated A9</h3>"
             + _grid(rows, "projection", "board_trainer_peak_rss_bytes", "bytes", kernels_p, configs))
    h.append("<h3>Weight bytes held by the kernel / update bytes a client sends (float32)</h3>"
             + _grid(rows, "timing", "weight_bytes", "bytes", kernels_t, configs)
             + _grid(rows, "timing", "update_bytes", "bytes", kernels_t[:1], configs))
    h.append("<h2>Claim 5 and the optimisations the thesis left pending</h2>")
    h.append("<table><tr><th>kernel</th><th>speed-up vs plain C, host (geometric mean over configs)</th>"
             "<th>speed-up vs plain C, projected i.MX6</th></tr>")
    for k in kernels_t + [k for k in kernels_p if k not in kernels_t]:
        h.append(f"<tr>{_lbl(k)}<td>{dnum(derived, f'c5.speedup.host.{k}')}</td>"
                 f"<td>{dnum(derived, f'c5.speedup.imx6.{k}')}</td></tr>")
    h.append("</table>")
    h.append("<table><tr><th>config</th><th>numpy / c time</th><th>textbook / c time</th>"
             "<th>numpy / c own memory</th></tr>")
    for cfg in configs:
        if f"c5.{cfg}.numpy.time_ratio" in derived:
            h.append(f"<tr>{_lbl(cfg)}<td>{dnum(derived, f'c5.{cfg}.numpy.time_ratio')}</td>"
                     f"<td>{dnum(derived, f'c5.{cfg}.textbook.time_ratio')}</td>"
                     f"<td>{dnum(derived, f'c5.{cfg}.numpy.own_mem_ratio')}</td></tr>")
    h.append("</table>")
    h.append("<h2>Projected board time vs accuracy</h2>" + _img("board", plots["board"], "board time vs accuracy"))
    failed = [r for r in rows if r.get("error")]
    if failed:
        h.append("<h2>Cells that failed</h2><table><tr><th>experiment</th><th>kernel</th><th>config</th><th>error</th></tr>")
        for r in failed:
            h.append("<tr>" + _lbl(r["experiment"]) + _lbl(r["kernel"]) + _lbl(r["config"]) + _lbl(r["error"]) + "</tr>")
        h.append("</table>")
    h.append(f"<script>{RENDER_CHECK}</script></body></html>")
    return "\n".join(h)


def _acc_table(rows, configs) -> str:
    last: dict[tuple[str, int], dict[str, Any]] = {}
    top = 0
    for r in rows:
        if r["experiment"] == "accuracy" and not r.get("error") and r.get("epoch") is not None:
            top = max(top, int(r["epoch"]))
    for r in rows:
        if r["experiment"] == "accuracy" and not r.get("error") and r.get("epoch") == top:
            last[(r["config"], int(r["seed"]))] = r
    seeds = sorted({s for _, s in last})
    head = ("<h3>After the last epoch, per seed: test accuracy / train accuracy</h3><table><tr><th>config</th>"
            + "".join(f"<th>seed {s} test</th><th>seed {s} train</th>" for s in seeds) + "</tr>")
    body = []
    for cfg in configs:
        if not any((cfg, s) in last for s in seeds):
            continue
        body.append("<tr>" + _lbl(cfg) + "".join(
            f"<td>{cnum(last.get((cfg, s)), 'test_accuracy', 'pct')}</td>"
            f"<td>{cnum(last.get((cfg, s)), 'train_accuracy', 'pct')}</td>" for s in seeds) + "</tr>")
    return head + "".join(body) + "</table>"


def _saturation_table(rows, configs) -> str:
    """Output saturation (fraction of output sigmoids with sigma' < 0.01 on 2,000 test images) per seed,
    at the initial weights and after the last epoch: the test of the cause behind claims 2 and 3."""
    init = {(r["config"], r["seed"]): r for r in rows if r["experiment"] == "init" and not r.get("error")}
    top = max((r["epoch"] for r in rows if r["experiment"] == "accuracy" and not r.get("error")
               and r.get("output_saturation") is not None), default=None)
    last = {(r["config"], r["seed"]): r for r in rows if r["experiment"] == "accuracy" and r.get("epoch") == top
            and not r.get("error")}
    seeds = sorted({s for _, s in init})
    if not seeds:
        return ""
    out = ["<h3>Saturated output sigmoids (sigma'(z) &lt; 0.01, 2,000 test images): at the initial weights / after "
           "the last epoch</h3><table><tr><th>config</th>"
           + "".join(f"<th>seed {s} initial</th><th>seed {s} trained</th>" for s in seeds) + "</tr>"]
    for cfg in configs:
        out.append("<tr>" + _lbl(cfg) + "".join(
            f"<td>{cnum(init.get((cfg, s)), 'output_saturation', 'spread')}</td>"
            f"<td>{cnum(last.get((cfg, s)), 'output_saturation', 'spread')}</td>" for s in seeds) + "</tr>")
    return "".join(out) + "</table>"


def _md_grid(rows, experiment, col, kind, configs) -> list[str]:
    by = {(r["kernel"], r["config"]): r for r in rows if r["experiment"] == experiment}
    kernels = list(dict.fromkeys(r["kernel"] for r in rows if r["experiment"] == experiment))
    out = ["| kernel | " + " | ".join(configs) + " |", "|---|" + "---:|" * len(configs)]
    for k in kernels:
        cells = []
        for c in configs:
            r = by.get((k, c))
            cells.append("-" if r is None else "error" if r.get("error") else
                         fmt(r.get(col), kind) + ("*" if r.get("partial") else ""))
        out.append(f"| {k} | " + " | ".join(cells) + " |")
    return out


def markdown(rows, derived, claims, meta) -> str:
    """summary.md: the verdicts and the main tables, printed from the same rows as the page."""
    configs = [c for c in CONFIGS if any(r["config"] == c for r in rows)]
    md = ["# ecufl thesis: verdicts and tables", "",
          f"`{meta.get('command')}`, started {meta.get('started')}, {fmt(meta.get('minutes'), 'f2')} minutes "
          f"(load average at start {fmt(meta.get('load0'), 'f2')}). Generated from `cells.csv` by the command; "
          f"the page (`ecufl thesis --from-csv cells.csv`) has every table and plot.", "",
          "| # | statement | verdict | cause, measured |", "|---|---|---|---|"]
    for c in claims:
        md.append(f"| {c['id']} | {c['statement']} | **{c['verdict']}** | {plain(c['cause'], derived)} |")
    md += ["", "## Host CPU seconds per epoch (60,000 samples; * scaled from fewer)", ""]
    md += _md_grid(rows, "timing", "host_cpu_seconds_per_epoch", "s", configs)
    md += ["", "## Projected i.MX6 (1 GHz Cortex-A9) seconds per epoch", ""]
    md += _md_grid(rows, "projection", "imx6_seconds_per_epoch", "s", configs)
    md += ["", "## Each kernel's own training footprint (its own process)", ""]
    md += _md_grid(rows, "timing", "kernel_train_footprint_bytes", "bytes", configs)
    md += ["", "## Whole-process peak RSS", ""]
    md += _md_grid(rows, "timing", "process_peak_rss_bytes", "bytes", configs)
    md += ["", "## Test accuracy after the timed epochs (seed 1, same order for every kernel)", ""]
    md += _md_grid(rows, "timing", "test_accuracy", "pct", configs)
    return "\n".join(md) + "\n"


def write(out: Path, rows, derived, claims, meta) -> None:
    plots = {"time": plot_time(rows, derived), "accuracy": plot_accuracy(rows), "memory": plot_memory(rows),
             "board": plot_board(rows)}
    for name, png in plots.items():
        (out / f"{name}.png").write_bytes(png)
    (out / "index.html").write_text(page(rows, derived, claims, meta, plots))
    (out / "summary.md").write_text(markdown(rows, derived, claims, meta))


def sources(text: str) -> list[tuple[str, str, str]]:
    """Every (data-src, data-kind, shown text) of a page: what a test re-reads from the files."""
    return re.findall(r'<span data-src="([^"]*)" data-kind="([^"]*)">([^<]*)</span>', text)


__all__ = ["fmt", "kind_of", "plain", "marked", "write", "sources"]
