"""``ecufl report RESULTS_DIR``: report.html (self-contained, matplotlib plots inlined as PNG) and a
rich table in the terminal, from a run's rounds.csv / clients.csv.

RESULTS_DIR is one run (it holds rounds.csv) or a folder of runs (a kernel shootout: one sub-folder
per kernel); runs are then compared side by side.

A client's round, as the server saw it (``reply_seconds``: round start -> its reply at the server),
is split into: startup (process start -> handler; a fresh process per message in deployment),
data (MNIST load + shard), setup (kernel + weights), train, serialise, and wait (the rest:
transport, queueing, polling sleeps).

Emulated i.MX6 clients also get their round projected for the board (server/virtual_clock.py,
kernels/arm/clientstack.py): "Round split on this host and on the board" sets, per kernel, the
host's measured parts beside the board's projected ones for each board mode (supernode: Python
ClientApp start, MNIST load, npy serialisation; agent: the native agent, which starts and loads once
per boot), the projected training, the link transfer, and the wait for the round's slowest client.

samples/s is samples trained (shard x local epochs) per wall second of ``Kernel.train``; it drops
when clients share cores. samples/CPU-s divides by the CPU seconds of ``Kernel.train`` instead,
which does not, and is the figure to hold against ``ecufl bench kernels`` (single thread):
``ecufl report RESULTS_DIR --bench BENCH.json`` (from ``ecufl bench kernels --json``) adds, per
kernel, the bench's samples per CPU-second for the same config and batch size and the ratio.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import re
import statistics
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import click
from ecufl.ui import console

PARTS = ["startup_seconds", "data_seconds", "setup_seconds", "train_seconds", "serialise_seconds"]


class ReportError(ValueError):
    pass


def _read(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def runs_in(folder: Path) -> list[Path]:
    folder = Path(folder)
    if (folder / "rounds.csv").exists():
        return [folder]
    runs = sorted(p for p in folder.iterdir() if (p / "rounds.csv").exists()) if folder.is_dir() else []
    if not runs:
        raise ReportError(f"{folder}: no rounds.csv here or in its sub-folders (not a results folder)")
    return runs


def _f(v: str | None) -> float:
    try:
        return float(v) if v not in (None, "") else 0.0
    except ValueError:
        return 0.0


def kernel_label(row: dict[str, str]) -> str:
    k = row.get("kernel") or "?"
    if ":" not in k and row.get("dtype"):
        k = f"{k}:{row['dtype']}"
    if row.get("profile") not in (None, "", "host"):  # an emulated board: its times are not the host's
        k = f"{k}@{row['profile']}"
    return k


def collect(folder: Path) -> dict[str, Any]:
    runs = runs_in(folder)
    out: dict[str, Any] = {"folder": Path(folder), "runs": []}
    for run in runs:
        rounds = _read(run / "rounds.csv")
        clients = _read(run / "clients.csv")
        out["runs"].append({"name": run.name if len(runs) > 1 else Path(folder).name, "path": run,
                            "rounds": rounds, "clients": clients})
    return out


def per_kernel(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per kernel (over every run, round and client): means of the time parts, peak memory, counts."""
    acc: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    errors: dict[str, int] = defaultdict(int)
    setups: dict[str, set[tuple[str, str, str, str]]] = defaultdict(set)  # (kernel, dtype, layers, batch)
    for run in data["runs"]:
        for row in run["clients"]:
            k = kernel_label(row)
            if row.get("accepted") != "1":
                errors[k] += 1
                continue
            parts = {p: _f(row.get(p)) for p in PARTS}
            reply = _f(row.get("reply_seconds"))
            for p, v in parts.items():
                acc[k][p].append(v)
            acc[k]["wait_seconds"].append(max(0.0, reply - sum(parts.values())))
            acc[k]["reply_seconds"].append(reply)
            acc[k]["peak_rss_bytes"].append(_f(row.get("peak_rss_bytes")))
            acc[k]["samples"].append(_f(row.get("samples")))
            acc[k]["trained"].append(_f(row.get("samples")) * max(1.0, _f(row.get("local_epochs"))))
            acc[k]["train_cpu_seconds"].append(_f(row.get("train_cpu_seconds")))
            acc[k]["local_accuracy"].append(_f(row.get("local_accuracy")))
            acc[k]["cpu_seconds"].append(_f(row.get("cpu_seconds")))
            acc[k]["bytes_sent"].append(_f(row.get("bytes_sent")))
            setups[k].add((row.get("kernel", "").split(":")[0], row.get("dtype", ""), row.get("layers", ""),
                           row.get("batch_size", "")))
    out = {}
    for k in sorted(set(acc) | set(errors)):
        a = acc.get(k, {})
        n = len(a.get("train_seconds", []))
        mean = {p: (statistics.fmean(v) if v else 0.0) for p, v in a.items()}
        train, cpu, trained = a.get("train_seconds", []), a.get("train_cpu_seconds", []), a.get("trained", [])
        out[k] = {"replies": n, "errors": errors.get(k, 0), **mean,
                  "peak_rss_bytes": max(a.get("peak_rss_bytes", [0])),
                  # samples trained (shard x local epochs) per second of Kernel.train, wall and CPU:
                  # the median over replies, as the bench takes the median over epochs (a client's
                  # first call in a fresh process is cold: BLAS start-up, first touch of buffers)
                  "samples_per_second": _median_rate(trained, train),
                  "samples_per_cpu_second": _median_rate(trained, cpu),
                  "setups": sorted(setups.get(k, ()))}
    return out


def _median_rate(samples: list[float], seconds: list[float]) -> float:
    rates = [n / t for n, t in zip(samples, seconds) if t > 0]
    return statistics.median(rates) if rates else 0.0


def load_bench(path: Path) -> dict[tuple[str, str, int], float]:
    """samples per CPU-second per (kernel, config, batch size) from ``ecufl bench kernels --json``."""
    import json

    try:
        doc = json.loads(Path(path).read_text())
        rows = doc["rows"]
        # per CPU-second where the bench has it (robust to load), else per wall second
        return {(r["kernel"], r["config"], int(r["batch_size"])): float(r.get("samples_per_cpu_second")
                                                                        or r["samples_per_second"])
                for r in rows if not r.get("error")}
    except FileNotFoundError:
        raise ReportError(f"--bench {path}: no such file")
    except (ValueError, KeyError, TypeError) as e:
        raise ReportError(f"--bench {path}: not the JSON of `ecufl bench kernels --json` ({type(e).__name__}: {e})")


def add_bench(kernels: dict[str, dict[str, Any]], bench: dict[tuple[str, str, int], float]) -> None:
    """Per kernel: the bench's samples/s for the same kernel, config and batch (bench runs float32
    where a kernel has it, so float64 client rows have no match), and CPU-s rate / bench rate."""
    for v in kernels.values():
        v["bench_samples_per_second"] = None
        for kernel, dtype, layers, batch in v.get("setups", []):
            hit = bench.get((kernel, layers, int(batch or 0)))
            if hit and dtype in ("", "float32", "int8"):
                v["bench_samples_per_second"] = hit
        b = v["bench_samples_per_second"]
        v["cpu_rate_over_bench"] = v["samples_per_cpu_second"] / b if b else None


SPLIT_COLUMNS = ["kernel", "where", "client-rounds", "client start s", "data s", "setup s", "train s", "serialise s",
                 "transfer s", "wait s", "round s"]


def board_split(data: dict[str, Any]) -> list[list[str]]:
    """Per kernel: the mean round split on this host and projected for the board in each mode
    (rows only for kernels whose clients carry board projections)."""
    host: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    board: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    own: dict[str, set[str]] = defaultdict(set)
    for run in data["runs"]:
        slowest = {r.get("round"): _f(r.get("virtual_seconds")) for r in run["rounds"]}
        for row in run["clients"]:
            if row.get("accepted") != "1" or not row.get("board_mode"):
                continue
            k = kernel_label(row)
            own[k].add(row["board_mode"])
            parts = [_f(row.get(p)) for p in PARTS]
            reply = _f(row.get("reply_seconds"))
            for name, v in zip(("start", "data", "setup", "train", "serialise"), parts):
                host[k][name].append(v)
            host[k]["wait"].append(max(0.0, reply - sum(parts)))
            host[k]["round"].append(reply)
            train, transfer = _f(row.get("projected_seconds")), _f(row.get("transfer_seconds"))
            for mode in ("supernode", "agent"):
                if row.get(f"board_{mode}_serialise_seconds") in (None, ""):
                    continue
                b = board[(k, mode)]
                vals = {p: _f(row.get(f"board_{mode}_{p}_seconds")) for p in ("start", "data", "serialise", "io")}
                total = train + transfer + sum(vals.values())
                b["start"].append(vals["start"])
                b["data"].append(vals["data"])
                b["train"].append(train)
                b["serialise"].append(vals["serialise"])
                b["transfer"].append(transfer + vals["io"])  # the agent's TLS and record I/O go with the transfer
                wait = max(0.0, slowest.get(row.get("round"), 0.0) - total) if mode == row["board_mode"] else 0.0
                b["wait"].append(wait)
                b["round"].append(total + wait)  # as the host's: until the round's slowest client is in
    rows = []

    def cell(d: dict[str, list[float]], p: str, fmt: str = "{:.3f}") -> str:
        return fmt.format(statistics.fmean(d[p])) if d.get(p) else "-"

    for k in sorted(host):
        h = host[k]
        rows.append([k, "this host (measured)", str(len(h["train"])), cell(h, "start"), cell(h, "data"), cell(h, "setup"),
                     cell(h, "train"), cell(h, "serialise", "{:.4f}"), "in wait", cell(h, "wait"), cell(h, "round")])
        for mode in ("supernode", "agent"):
            b = board.get((k, mode))
            if not b:
                continue
            where = f"A9 projected, {mode} mode" + (" (this run's)" if mode in own[k] else "")
            rows.append([k, where, str(len(b["train"])), cell(b, "start"), cell(b, "data"), "not counted",
                         cell(b, "train"), cell(b, "serialise", "{:.4f}"), cell(b, "transfer", "{:.4f}"),
                         cell(b, "wait") if mode in own[k] else "-", cell(b, "round")])
    return rows


# --- plots -----------------------------------------------------------------------------------------
def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def plots(data: dict[str, Any], kernels: dict[str, dict[str, Any]]) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def accuracy_plot(xlabel: str, series: dict[str, list[tuple[float, float]]]) -> str:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for name, pts in series.items():
            ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", label=name)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test accuracy (global model)")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        return _png(fig)

    figs = {"Accuracy per round": accuracy_plot(
        "round", {run["name"]: [(int(r["round"]), _f(r["test_accuracy"])) for r in run["rounds"]] for run in data["runs"]})}

    # FedScale-style virtual time (server/virtual_clock.py): projected board time + link transfer
    timed = [run for run in data["runs"] if any(r.get("virtual_time") for r in run["rounds"])]
    if timed:
        figs["Accuracy against projected board time"] = accuracy_plot(
            "virtual time (s): projected board training + transfer, slowest client per round",
            {run["name"]: [(0.0 if r["round"] == "0" else _f(r.get("virtual_time")), _f(r["test_accuracy"]))
                           for r in run["rounds"] if r["round"] == "0" or r.get("virtual_time")] for run in timed})

    names = list(kernels)
    parts = PARTS + ["wait_seconds"]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    bottom = [0.0] * len(names)
    for p in parts:
        vals = [kernels[k].get(p, 0.0) for k in names]
        ax.bar(names, vals, bottom=bottom, label=p.replace("_seconds", ""))
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_ylabel("seconds per client round (mean)")
    ax.legend(fontsize=8, ncol=3)
    ax.tick_params(axis="x", rotation=20)
    figs["Round time per kernel: startup / data / setup / train / serialise / wait"] = _png(fig)

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(names, [kernels[k]["peak_rss_bytes"] / 2**20 for k in names], color="tab:purple")
    ax.set_ylabel("peak RSS of the client process (MiB)")
    ax.tick_params(axis="x", rotation=20)
    figs["Peak memory per kernel"] = _png(fig)

    fig, ax = plt.subplots(figsize=(6, 3.5))
    series: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run in data["runs"]:
        for row in run["clients"]:
            if row.get("accepted") == "1":
                series[kernel_label(row)][int(row["round"])].append(_f(row["train_seconds"]))
    for k, by_round in sorted(series.items()):
        xs = sorted(by_round)
        ax.plot(xs, [statistics.fmean(by_round[x]) for x in xs], marker="o", label=k)
    ax.set_xlabel("round")
    ax.set_ylabel("train seconds (mean over clients)")
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize=8)
    figs["Training seconds per round per kernel"] = _png(fig)
    return figs


# --- output ----------------------------------------------------------------------------------------
KERNEL_COLUMNS = ["kernel", "client-rounds", "errors", "samples/s", "samples/CPU-s", "train s", "setup s", "data s", "startup s",
                  "serialise s", "wait s", "peak RSS MiB", "local acc"]


BENCH_COLUMNS = ["bench samples/CPU-s", "CPU-s rate / bench"]


def _bench_cells(v: dict[str, Any]) -> list[str]:
    b, r = v.get("bench_samples_per_second"), v.get("cpu_rate_over_bench")
    return [f"{b:,.0f}" if b else "-", f"{r:.2f}" if r else "-"]


def kernel_columns(kernels: dict[str, dict[str, Any]]) -> list[str]:
    return KERNEL_COLUMNS + (BENCH_COLUMNS if any("bench_samples_per_second" in v for v in kernels.values()) else [])


def kernel_rows(kernels: dict[str, dict[str, Any]]) -> list[list[str]]:
    return [[k, str(v["replies"]), str(v["errors"]), f"{v['samples_per_second']:,.0f}",
             f"{v['samples_per_cpu_second']:,.0f}",
             f"{v.get('train_seconds', 0):.3f}", f"{v.get('setup_seconds', 0):.3f}", f"{v.get('data_seconds', 0):.3f}",
             f"{v.get('startup_seconds', 0):.2f}", f"{v.get('serialise_seconds', 0):.4f}",
             f"{v.get('wait_seconds', 0):.2f}", f"{v['peak_rss_bytes'] / 2**20:.0f}",
             f"{v.get('local_accuracy', 0):.4f}"] + (_bench_cells(v) if "bench_samples_per_second" in v else [])
            for k, v in kernels.items()]


def table(folder: Path, bench: dict | None = None):
    from rich.table import Table

    data = collect(folder)
    kernels = per_kernel(data)
    if bench is not None:
        add_bench(kernels, bench)
    finals = ", ".join(f"{r['name']}: {_f(r['rounds'][-1]['test_accuracy']):.4f} after round {r['rounds'][-1]['round']}"
                       for r in data["runs"] if r["rounds"])
    t = Table(title=f"ecufl report: {Path(folder).name}", caption=f"global test accuracy: {finals}")
    for c in kernel_columns(kernels):
        t.add_column(c, justify="left" if c == "kernel" else "right")
    for row in kernel_rows(kernels):
        t.add_row(*row)
    return t


def _html_table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _markdown_html(text: str) -> str:
    """The markdown ecufl writes itself (paragraphs and pipe tables, `code`) as HTML."""
    out, table = [], []

    def flush() -> None:
        if table:
            head, body = table[0], [r for r in table[1:] if not set("".join(r)) <= set("-: ")]
            out.append(_html_table(head, body))
            table.clear()

    for line in text.splitlines():
        if line.startswith("|"):
            table.append([c.strip() for c in line.strip().strip("|").split("|")])
            continue
        flush()
        if line.strip():
            out.append("<p>" + re.sub(r"`([^`]*)`", r"<code>\1</code>", html.escape(line)) + "</p>")
    flush()
    return "".join(out)


def build(folder: Path, bench: dict | None = None) -> Path:
    """Write ``report.html`` into ``folder``; returns its path."""
    folder = Path(folder)
    data = collect(folder)
    kernels = per_kernel(data)
    if bench is not None:
        add_bench(kernels, bench)
    figs = plots(data, kernels)
    sections = [f"<h1>ecufl report: {html.escape(folder.name)}</h1>",
                "<h2>Kernels</h2>", _html_table(kernel_columns(kernels), kernel_rows(kernels))]
    split = board_split(data)
    if split:
        sections.append(
            "<h2>Round split on this host and on the board</h2><p>Seconds per client round (mean over clients and "
            "rounds). Board rows are projected for the A9 (counted ARM instructions x the cost model, "
            "kernels/arm/COSTMODEL.md; the Python client stack from kernels/arm/measured/client-stack-a9.json, "
            "whose flwr/ecufl imports are extrapolated from this host's ratio). A supernode board pays the "
            "ClientApp start and the MNIST load only in rounds where the host's ClientApp was a fresh process "
            "(Flower's plain path; a warm node forks it); an agent board starts and loads once per boot. "
            "Board wait = the round's slowest client minus this one, in the run's own mode only.</p>"
            + _html_table(SPLIT_COLUMNS, split))
    for title, png in figs.items():
        sections.append(f"<h2>{html.escape(title)}</h2><img alt='{html.escape(title)}' src='data:image/png;base64,{png}'>")
    for run in data["runs"]:
        cols = ["round", "clients_asked", "clients_replied", "clients_accepted", "test_accuracy", "test_loss",
                "wall_seconds", "slowest_train_seconds", "overhead_seconds", "aggregate_seconds",
                "virtual_seconds", "virtual_time"]
        rows = [[(f"{_f(r.get(c)):.4f}" if c not in ("round", "clients_asked", "clients_replied", "clients_accepted")
                  else r.get(c, "")) for c in cols] for r in run["rounds"]]
        sections.append(f"<h2>Rounds: {html.escape(run['name'])}</h2>" + _html_table(cols, rows))
        can_table = run["path"] / "can-table.md"  # workload = can: the server's scoring (server/can_eval.py)
        if can_table.is_file():
            sections.append("<h3>CAN anomaly detection: federated vs local-only vs centralised</h3>"
                            + _markdown_html(can_table.read_text()))
        rejected = [[r["round"], r["node_id"], r["partition_id"], r["kernel"], r["reject_reason"]]
                    for r in run["clients"] if r.get("accepted") != "1"]
        if rejected:
            per_node = Counter(r[1] for r in rejected)
            sections.append("<h3>Rejected or failed replies</h3><p>per node: "
                            + html.escape(", ".join(f"node {n}: {c}" for n, c in sorted(per_node.items())))
                            + "</p>" + _html_table(["round", "node", "partition", "kernel", "reason"], rejected))
    style = ("body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}"
             "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 6px;"
             "text-align:right;font-size:13px}th{background:#eee}img{max-width:100%}")
    doc = (f"<!doctype html><html><head><meta charset='utf-8'><title>ecufl report {html.escape(folder.name)}"
           f"</title><style>{style}</style></head><body>{''.join(sections)}"
           f"<p><small>From {html.escape(str(folder))}; split of a client's round: {html.escape(__doc__.split('is split into:')[1].strip())}"
           "</small></p></body></html>")
    out = folder / "report.html"
    out.write_text(doc)
    return out


@click.command("report")
@click.argument("results_dir", type=click.Path(file_okay=False))
@click.option("--bench", "bench_json", type=click.Path(dir_okay=False), default=None,
              help="JSON of the bench, e.g. from `ecufl bench kernels --kernels numpy,c --configs 784-30-10 "
                   "--json`: compare each kernel's samples per CPU-second with it.")
def report(results_dir, bench_json):
    """Write RESULTS_DIR/report.html (plots, tables) and print the per-kernel table."""

    try:
        bench = load_bench(Path(bench_json)) if bench_json else None
        out = build(Path(results_dir), bench)
    except ReportError as e:
        raise click.UsageError(str(e))
    console.print(table(Path(results_dir), bench))
    split = board_split(collect(Path(results_dir)))
    if split:
        from rich.table import Table

        t = Table(title="Round split on this host and on the board (s per client round, mean)")
        for c in SPLIT_COLUMNS:
            t.add_column(c, justify="left" if c in ("kernel", "where") else "right")
        for row in split:
            t.add_row(*row)
        console.print(t)
    click.echo(f"report: {out}")  # plain echo: a path must not be wrapped
