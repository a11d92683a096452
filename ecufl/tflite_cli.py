"""``ecufl tflite ...``: export training models, list the ones the kernel can find, show their ops."""

from __future__ import annotations

from pathlib import Path

import click
from ecufl.ui import Failure, console, parse_layers

from ecufl.kernels.tflite import catalog


def _layers(value: str) -> list[int]:

    return parse_layers(value)


def _batch(value: int) -> int:
    if value < 1:
        raise click.UsageError(f"--batch-size must be >= 1, got {value}")
    return value


def _export(sizes, batch_size, out: Path) -> tuple[Path, int]:

    try:
        from ecufl.kernels.tflite import export
        from ecufl.kernels.tflite.ops import non_builtin

        path = export.export(sizes, batch_size, out)
    except ImportError as e:
        raise Failure(str(e))
    bad = non_builtin(path)
    if bad:  # the board's stock runtime could not load it
        path.unlink()
        raise Failure(f"the converter emitted non-builtin ops {bad} for {catalog.layers_text(sizes)}; model not written")
    return path, path.stat().st_size


@click.group()
def tflite():
    """TensorFlow Lite training models: export, list."""


@tflite.command("export")
@click.option("--layers", help="Layer sizes, comma-separated (e.g. 784,32,10; 339,32,339 is the CAN autoencoder).")
@click.option("--batch-size", type=int, help="Mini-batch size the train signature takes.")
@click.option("--out", type=click.Path(dir_okay=False), help="Model file (default: the user cache, where the kernel looks).")
@click.option("--standard", is_flag=True, help="Export every configuration ecufl ships, into --out-dir.")
@click.option("--out-dir", type=click.Path(file_okay=False), help="Directory for --standard (default: the user cache).")
def export_cmd(layers, batch_size, out, standard, out_dir):
    """Convert HDRNN's training model to .tflite (needs TensorFlow: pip install 'ecufl[export]')."""

    if standard:
        if layers or batch_size or out:
            raise click.UsageError("--standard exports the shipped set; it takes --out-dir, not --layers/--batch-size/--out")
        d = Path(out_dir) if out_dir else catalog.user_cache()
        total = 0
        for sizes, b in catalog.STANDARD:
            path, n = _export(sizes, b, d / catalog.model_filename(sizes, b))
            total += n
            console.print(f"wrote {path} ({n:,} bytes)")
        console.print(f"{len(catalog.STANDARD)} models, {total:,} bytes")
        return
    if not layers or not batch_size:
        raise click.UsageError("give --layers and --batch-size (or --standard)")
    if out_dir:
        raise click.UsageError("--out-dir goes with --standard; use --out for one model")
    sizes = parse_layers(layers, mnist=False)  # any network: MNIST's, the CAN autoencoder's (339,32,339)
    b = _batch(batch_size)
    path, n = _export(sizes, b, Path(out) if out else catalog.user_cache() / catalog.model_filename(sizes, b))
    console.print(f"wrote {path} ({n:,} bytes): layers {catalog.layers_text(sizes)}, batch {b}")
    if out and Path(out).name != catalog.model_filename(sizes, b):
        console.print(f"note: the kernel finds models named {catalog.model_filename(sizes, b)} in $ECUFL_TFLITE_MODELS")


@tflite.command("models")
def models_cmd():
    """List the training models the kernel finds, in search order."""
    from rich.table import Table


    t = Table(title="TFLite training models (first match wins)")
    for col in ("file", "bytes", "directory"):
        t.add_column(col)
    for d in catalog.search_dirs():
        for f in sorted(d.glob("hdrnn-*.tflite")) if d.is_dir() else []:
            t.add_row(f.name, f"{f.stat().st_size:,}", str(d))
    console.print(t)


@tflite.command("ops")
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
def ops_cmd(model):
    """Show the operators of MODEL per signature subgraph; exit 1 if any is not builtin."""

    from ecufl.kernels.tflite.ops import non_builtin, subgraph_ops

    for name, ops in subgraph_ops(model).items():
        console.print(f"[bold]{name}[/] ({len(ops)} ops): {' '.join(ops)}")
    bad = non_builtin(model)
    if bad:
        raise Failure(f"{model}: non-builtin ops {bad}: a stock TFLite runtime cannot run it")
    console.print("all operators are TFLite builtins")


@tflite.command("bench")
@click.option("--configs", default="784-2-10,784-8-10,784-32-10,784-128-10", show_default=True,
              help="Layer configs, comma-separated, layers joined by '-'.")
@click.option("--batch-size", default=10, show_default=True, type=int)
@click.option("--samples", default=10000, show_default=True, type=int, help="Training samples per epoch.")
@click.option("--repeats", default=5, show_default=True, type=int)
@click.option("--data-dir", type=click.Path(file_okay=False))
@click.option("--wall", is_flag=True, help="Time wall clock instead of this process's CPU time.")
@click.option("--json", "as_json", is_flag=True)
def bench_cmd(configs, batch_size, samples, repeats, data_dir, wall, as_json):
    """Per-step cost of the TFLite interpreter beside float32 numpy, measured in the same run."""
    import json

    from rich.table import Table

    from ecufl import data as mnist

    from ecufl.kernels.tflite.bench import as_dicts, empty_invoke_us, intercept_us, measure, use_wall_clock

    sizes_list = [_layers(c.replace("-", ",")) for c in configs.split(",") if c.strip()]
    _batch(batch_size)
    if samples < 1 or repeats < 1:
        raise click.UsageError("--samples and --repeats must be >= 1")
    train = mnist.load("train", data_dir)
    use_wall_clock(wall)
    rows = measure(sizes_list, batch_size, train.images, train.labels, samples=samples, repeats=repeats)
    fit = intercept_us(rows) if len(rows) >= 2 else (float("nan"), float("nan"))
    empty = empty_invoke_us(repeats)
    if as_json:
        click.echo(json.dumps({"clock": "wall" if wall else "process_cpu", "rows": as_dicts(rows), "empty_invoke_us": empty, "invoke_intercept_us": fit[0],
                               "invoke_ns_per_flop": fit[1]}))
        return
    t = Table(title=f"TFLite vs numpy float32, batch {batch_size}, {samples:,} samples, {repeats} repeats")
    for col in ("config", "numpy s", "tflite s", "ratio", "no-xnn s", "step", "Invoke", "call", "np step", "kFLOP"):
        t.add_column(col, justify="right", no_wrap=True)
    for r in rows:
        t.add_row(r.config, f"{r.numpy_epoch_s:.3f}", f"{r.tflite_epoch_s:.3f}", f"{r.ratio:.2f}",
                  f"{r.tflite_plain_epoch_s:.3f}", f"{r.step_us:.1f}", f"{r.invoke_us:.1f}",
                  f"{r.public_call_us:.1f}", f"{r.numpy_step_us:.1f}", f"{r.flops_per_step / 1e3:,.0f}")
    console.print(t)
    console.print(f"{'wall' if wall else 'process CPU'} time; epoch times (s): medians; times per step (us): minima. step = the kernel's direct path, "
                  "Invoke = the interpreter alone, call = SignatureRunner.__call__, np step = numpy float32 per "
                  "mini-batch; no-xnn = TFLite without the XNNPACK delegate; ratio = tflite / numpy epoch time")
    console.print(f"Invoke of a subgraph without arithmetic (get_weights, 784-2-10, 9 ops): {empty:.2f} us; "
                  f"least-squares fit over the configs: Invoke = {fit[0]:.1f} us + {fit[1]:.3f} ns/FLOP")
