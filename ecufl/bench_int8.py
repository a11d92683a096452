"""``ecufl bench prune``: float32 C against int8, dense and pruned, trained for several epochs.

The table of issue 7: for each layer config, test accuracy after ``--epochs`` epochs (full MNIST,
lr 3, batch 10, seed 1: the book's run), time per epoch and the weight memory the kernel reports
(``Kernel.weight_bytes``: int8 values + indices for int8, float32 for float kernels; the int8
kernels' float32 training masters are shown separately), for float C vs int8 and sparsity
0/50/75/90%.

How it measures:
- each config runs in a fresh subprocess (``python -m ecufl.bench_int8 --worker``), single-threaded
  (OMP/OPENBLAS/MKL_NUM_THREADS=1 and threadpoolctl); all its rows train side by side from the same
  initial weights and the same epoch orders (``init_params`` / ``EpochOrder`` of the seed),
  interleaved epoch by epoch, so a burst of load on this shared machine hits every kernel alike;
- time per epoch is the fastest epoch of a row (the least disturbed one); pruning is one-shot
  after a dense warm-up epoch (``prune.py``), so a pruned row's time is taken over the epochs
  after pruning;
- ``L1 work`` (pruned rows): the first layer's multiply-adds per training sample left after skipping
  zero pixels and pruned weights, as a fraction of skipping zero pixels alone (``first_layer_work``);
- ratios (``x float C``) are to the dense float C row of the same config in the same run:
  ``c`` (issue 5's optimised kernel) where it is built, else ``c-sparse`` at 0% (the float C
  pruning path of this package, unpruned).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

import click

from ecufl.bench import bench, print_table  # the `ecufl bench` group: this module adds `prune` to it
from ecufl.ui import console, fmt_bytes

SINGLE_THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
DEFAULT_CONFIGS = "784-32-10,784-128-10"
DEFAULT_SPARSITIES = "0.5,0.75,0.9"


def worker(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """All rows of one config in one process, interleaved epoch by epoch (see the module doc)."""
    from threadpoolctl import threadpool_limits

    from ecufl import data as mnist
    from ecufl.kernels import EpochOrder, create, init_params

    sizes = [int(v) for v in spec["config"].split("-")]
    train, test = mnist.load("train"), mnist.load("test")
    params = init_params(sizes, spec["seed"], dtype="float32", scaled=spec.get("scaled_init", False))
    order = EpochOrder(len(train), spec["seed"])
    rows = spec["rows"]
    seconds: list[list[float]] = [[] for _ in rows]
    with threadpool_limits(1):
        kernels, errors = [], {}
        for r, (name, s) in enumerate(rows):
            try:
                kernels.append(create(name, params, dtype="float32", **({"prune": s} if s else {})))
            except Exception as e:  # a kernel that is not built here: its row says so, the others run
                kernels.append(None)
                errors[r] = f"{type(e).__name__}: {e}"
        for _ in range(spec["epochs"]):
            idx = order.next()
            for r, k in enumerate(kernels):
                if k is None:
                    continue
                t0 = time.perf_counter()
                k.train(train.images, train.labels, idx, spec["lr"], spec["batch_size"])
                seconds[r].append(time.perf_counter() - t0)
        out = []
        common = {x: spec[x] for x in ("config", "epochs", "lr", "batch_size", "seed", "scaled_init")}
        for r, ((name, s), k, secs) in enumerate(zip(rows, kernels, seconds)):
            if k is None:
                out.append({**common, "kernel": name, "prune": s, "error": errors[r]})
                continue
            ev = k.evaluate(test.images, test.labels)
            info = k.describe()
            timed = secs[1:] if s and len(secs) > 1 else secs  # after the dense warm-up epoch
            out.append({**common, "kernel": name, "prune": s, "accuracy": ev.accuracy, "epoch_seconds": secs,
                        "seconds_per_epoch": min(timed), "weight_bytes": k.weight_bytes(),
                        "bits": info.get("bits", 32), "sparsity": info.get("sparsity", 0.0),
                        "master_bytes": info.get("master_bytes"), "path": info.get("path", ""),
                        "first_layer_work": first_layer_work(train.images, getattr(k, "masks", [None])[0])})
            k.close()
    return out


def first_layer_work(images, mask) -> float:
    """Multiply-adds of the first layer per training sample that a kernel skipping zero pixels AND
    pruned weights still does, as a fraction of what skipping zero pixels alone leaves (1.0 unpruned).

    Magnitude pruning keeps the weights that training grew, which sit at the pixels that are often
    nonzero: 90% of the weights pruned removes much less than 90% of this work. It bounds the
    speed-up of the pruned forward pass and weight gradient (the rest of a step is not pruned)."""
    import numpy as np

    if mask is None:
        return 1.0
    nonzero = images[::10] != 0  # every 10th training image: 6,000 samples
    kept_per_pixel = np.count_nonzero(mask, axis=0).astype(np.float64)
    return float((nonzero @ kept_per_pixel).sum() / (nonzero.sum() * mask.shape[0]))


def run_worker(spec: dict[str, Any], timeout: float) -> list[dict[str, Any]]:
    env = dict(os.environ, **SINGLE_THREAD_ENV)
    base = [{**spec, "kernel": k, "prune": s} for k, s in spec["rows"]]
    try:
        proc = subprocess.run([sys.executable, "-m", "ecufl.bench_int8", "--worker", json.dumps(spec)],
                              capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return [{**b, "error": f"timed out after {timeout:.0f} s"} for b in base]
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        return [{**b, "error": lines[-1] if lines else f"exit {proc.returncode}"} for b in base]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def plan(configs: list[str], sparsities: list[float], with_c: bool, with_numpy: bool) -> list[tuple[str, float]]:
    rows: list[tuple[str, float]] = []
    if with_numpy:
        rows.append(("numpy", 0.0))
    if with_c:
        rows.append(("c", 0.0))
    rows += [("c-sparse", 0.0)] + [("c-sparse", s) for s in sparsities]
    rows += [("int8", 0.0)] + [("int8", s) for s in sparsities]
    return rows


@bench.command("prune")
@click.option("--configs", default=DEFAULT_CONFIGS, show_default=True, help="Comma-separated layer configs.")
@click.option("--sparsities", default=DEFAULT_SPARSITIES, show_default=True, help="Comma-separated pruning targets.")
@click.option("--epochs", default=5, show_default=True, type=int)
@click.option("--lr", default=3.0, show_default=True, type=float)
@click.option("--batch-size", default=10, show_default=True, type=int)
@click.option("--seed", default=1, show_default=True, type=int)
@click.option("--scaled-init", is_flag=True, help="Initial weights divided by sqrt(n_in) (network2.py).")
@click.option("--no-numpy", is_flag=True, help="Leave out the numpy float32 reference row.")
@click.option("--timeout", default=3600.0, show_default=True, type=float, help="Seconds per config.")
@click.option("--json", "as_json", is_flag=True)
@click.option("--markdown", is_flag=True)
def bench_prune(configs, sparsities, epochs, lr, batch_size, seed, scaled_init, no_numpy, timeout, as_json,
                markdown):
    """Accuracy, time per epoch and weight bytes: float C vs int8, dense and pruned (issue 7's table)."""
    from ecufl.kernels import available
    from ecufl.kernels.prune import check_sparsity

    try:
        cfgs = [c.strip() for c in configs.split(",") if c.strip()]
        for c in cfgs:
            s = [int(v) for v in c.split("-")]
            if len(s) < 3 or s[0] != 784 or s[-1] != 10 or min(s) < 1:
                raise ValueError(f"--configs: expected configs like 784-32-10 with a hidden layer, got {c!r}")
        sps = [check_sparsity(v, "--sparsities") for v in sparsities.split(",") if v.strip()]
    except ValueError as e:
        raise click.UsageError(str(e).replace("invalid literal for int() with base 10", "--configs: not a number"))
    if epochs < 1 or batch_size < 1 or not lr > 0:
        raise click.UsageError("--epochs and --batch-size must be >= 1 and --lr positive")
    have = set(available())
    for k in ("int8", "c-sparse"):
        if k not in have:
            raise click.UsageError(f"kernel {k!r} is not built here; reinstall ecufl with `pip install .`")
    rows = plan(cfgs, [s for s in sps if s > 0], "c" in have, not no_numpy)
    out_rows: list[dict[str, Any]] = []
    with console.status("") as status:
        for i, c in enumerate(cfgs):
            status.update(f"config {c} ({i + 1}/{len(cfgs)}): {len(rows)} kernels x {epochs} epochs, interleaved")
            spec = dict(config=c, rows=rows, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
                        scaled_init=scaled_init)
            out_rows += run_worker(spec, timeout)
    for c in cfgs:
        base = next((r for r in out_rows if r["config"] == c and r["kernel"] == ("c" if "c" in have else "c-sparse")
                     and not r["prune"] and "error" not in r), None)
        for r in out_rows:
            if r["config"] == c and "error" not in r and base:
                r["speedup_vs_float_c"] = base["seconds_per_epoch"] / r["seconds_per_epoch"]
                r["accuracy_vs_float_c"] = r["accuracy"] - base["accuracy"]
                r["memory_vs_float_c"] = base["weight_bytes"] / r["weight_bytes"]
                r["float_c_baseline"] = base["kernel"]
    if as_json:
        click.echo(json.dumps({"rows": out_rows, "how": __doc__.split("How it measures:")[1].strip()}, indent=1))
        return
    headers = ["config", "kernel", "bits", "sparsity", f"acc. {epochs} ep.", "vs float C", "s/epoch", "x float C",
               "weights", "x smaller", "L1 work"]
    table = []
    for r in out_rows:
        name = r["kernel"] + (f" --prune {r['prune']:g}" if r["prune"] else "")
        if "error" in r:
            table.append([r["config"], name, "error: " + r["error"]] + [""] * 8)
            continue
        table.append([r["config"], name, str(r["bits"]), f"{100 * r['sparsity']:.0f}%", f"{100 * r['accuracy']:.2f}%",
                      f"{100 * r.get('accuracy_vs_float_c', 0):+.2f}", f"{r['seconds_per_epoch']:.3f}",
                      f"{r.get('speedup_vs_float_c', 0):.2f}", fmt_bytes(r["weight_bytes"]),
                      f"{r.get('memory_vs_float_c', 0):.2f}", f"{r.get('first_layer_work', 1.0):.2f}"])
    base_name = "c" if "c" in have else "c-sparse (unpruned)"
    note = (f"float C baseline: {base_name}; lr {lr}, batch {batch_size}, seed {seed}"
            f"{', scaled init' if scaled_init else ''}; pruning one-shot after "
            f"1 dense epoch; s/epoch = fastest epoch (pruned rows: after pruning), kernels interleaved epoch by epoch; "
            f"L1 work = first-layer multiply-adds per sample at nonzero pixels and kept weights / unpruned")
    print_table("ecufl bench prune: float C vs int8, dense and pruned", headers, table, note, markdown=markdown)

if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        print(json.dumps(worker(json.loads(sys.argv[2]))))
    else:
        bench_prune()
