"""The ``ecufl`` command line.

Every error the user can cause is one line on stderr, ``ecufl: error: ...``, naming the flag or
file at fault; wrong flags and impossible values exit with 2, failures of a run with 1.
Sub-command groups of other packages (fleet, report, bench, ...) are attached in ``_extend``.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

import click
from rich.table import Table

from ecufl import __version__, record
from ecufl.data import DataError
from ecufl.kernels import KernelUnavailable
from ecufl.kernels.weights import WeightFileError
from ecufl.ui import Failure, console, err_console, fmt_bytes, parse_layers  # noqa: F401 - re-exported


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="ecufl")
@click.option("--record", "record_path", type=click.Path(dir_okay=False), metavar="FILE",
              help="Also write the command's output to FILE with when, where and on which commit it ran "
                   "(a measurement log; nothing is written if the command fails). Goes first: "
                   "`ecufl --record results/kernels.md kernels`.")
def cli(record_path) -> None:
    """ecufl: federated learning of HDRNN on embedded ECUs, kernel against kernel."""
    if record_path:  # main() takes a leading --record off before click sees the command
        raise click.UsageError("--record FILE must come first, right after `ecufl`")


# --- init / train / eval / compare ------------------------------------------------------------------
@cli.command()
@click.option("--layers", default="784,30,10", show_default=True, help="Layer sizes, comma-separated.")
@click.option("--seed", default=1, show_default=True, type=int)
@click.option("--scaled-init", is_flag=True, help="Divide weights by sqrt(n_in) (network2.py).")
@click.option("--dtype", default="float64", show_default=True, type=click.Choice(["float32", "float64"]))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Weight file (.npz) to write.")
def init(layers, seed, scaled_init, dtype, out):
    """Write the initial weights that the portable PRNG draws from SEED."""
    from ecufl.kernels import weights as weightfile
    from ecufl.kernels import init_params

    sizes = parse_layers(layers)
    if not 0 <= seed < 2**32:
        raise click.UsageError(f"--seed must be in 0..2^32-1, got {seed}")
    params = init_params(sizes, seed, scaled=scaled_init, dtype=dtype)
    weightfile.save(out, params, seed=seed, kernel="init", scaled_init=scaled_init)
    console.print(f"wrote {out}: layers {sizes}, {dtype}, seed {seed}")


def _kernel_options(prune: float | None) -> dict:
    return {} if prune is None else {"prune": prune}


@cli.command()
@click.option("--kernel", default="numpy", show_default=True, help="Kernel name (see `ecufl kernels`).")
@click.option("--layers", default="784,30,10", show_default=True)
@click.option("--epochs", default=1, show_default=True, type=int)
@click.option("--batch-size", default=10, show_default=True, type=int)
@click.option("--lr", default=3.0, show_default=True, type=float)
@click.option("--seed", default=1, show_default=True, type=int)
@click.option("--init", "init_path", type=click.Path(dir_okay=False), help="Start from this weight file.")
@click.option("--scaled-init", is_flag=True, help="Divide initial weights by sqrt(n_in).")
@click.option("--train-limit", type=int, help="Train on the first N samples only.")
@click.option("--no-shuffle", is_flag=True, help="Keep the data set order (no epoch shuffle).")
@click.option("--dtype", type=click.Choice(["float32", "float64"]), help="Arithmetic (default: the kernel's).")
@click.option("--prune", type=float, help="Target sparsity of the hidden weights (kernels that prune).")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Directory with the MNIST files.")
@click.option("--out", type=click.Path(dir_okay=False), help="Write the final weights here (.npz).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
def train(kernel, layers, epochs, batch_size, lr, seed, init_path, scaled_init, train_limit, no_shuffle,
          dtype, prune, data_dir, out, as_json):
    """Train HDRNN on MNIST with one kernel; print test accuracy, time and peak RSS."""
    from ecufl import train as training
    from ecufl.kernels import weights as weightfile
    from ecufl.kernels import KernelUnavailable, kernel_class

    cfg = training.TrainConfig(
        kernel=kernel, sizes=parse_layers(layers), epochs=epochs, batch_size=batch_size, lr=lr,
        seed=seed, dtype=dtype, scaled_init=scaled_init, init=init_path, train_limit=train_limit,
        shuffle=not no_shuffle, data_dir=data_dir, kernel_options=_kernel_options(prune),
    )
    try:
        cfg.validate()
        kernel_class(kernel).check_options(dtype, **cfg.kernel_options)
    except (ValueError, KernelUnavailable) as e:
        raise click.UsageError(str(e))
    progress = None
    bar = None
    if not as_json and sys.stderr.isatty():
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        bar = Progress(TextColumn(f"[bold]{kernel}[/]"), BarColumn(), TextColumn("{task.completed:,}/{task.total:,} samples"),
                       TimeRemainingColumn(), console=err_console, transient=True)
        task = bar.add_task("train", total=1)
        bar.start()
        progress = lambda done, total: bar.update(task, completed=done, total=total)  # noqa: E731
    try:
        result, params = training.run(cfg, progress=progress)
    except ValueError as e:  # a kernel refusing these layers / batch size / options before it trains
        raise click.UsageError(str(e))
    finally:
        if bar:
            bar.stop()
    if out:
        weightfile.save(out, params, seed=seed, kernel=kernel, epochs=epochs, lr=lr, batch_size=batch_size)
    if as_json:
        click.echo(json.dumps(result.to_dict() | {"out": out}))
        return
    t = Table(title=f"HDRNN {'-'.join(map(str, cfg.sizes))} with kernel {kernel} ({result.dtype})")
    for col in ("epochs", "samples/s", "train time", "test accuracy", "test loss", "peak RSS"):
        t.add_column(col, justify="right")
    t.add_row(str(epochs), f"{result.samples_per_second:,.0f}", f"{result.train_seconds:.2f} s",
              f"{result.test_accuracy:.4f}", f"{result.test_loss:.4f}", fmt_bytes(result.peak_rss_bytes))
    console.print(t)
    if out:
        console.print(f"weights written to {out}")


@cli.command("eval")
@click.option("--weights", "path", required=True, type=click.Path(dir_okay=False))
@click.option("--kernel", default="numpy", show_default=True)
@click.option("--data-dir", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True)
def eval_cmd(path, kernel, data_dir, as_json):
    """Test accuracy and loss of a weight file on the MNIST test set."""
    from ecufl import data as mnist
    from ecufl.kernels import weights as weightfile
    from ecufl.kernels import create

    params, meta = weightfile.load(path)
    test = mnist.load("test", data_dir)
    k = create(kernel, params, dtype=str(params.dtype) if kernel == "numpy" else None)
    ev = k.evaluate(test.images, test.labels)
    k.close()
    if as_json:
        click.echo(json.dumps({"weights": path, "accuracy": ev.accuracy, "loss": ev.loss, "sizes": params.sizes}))
    else:
        console.print(f"{path}: layers {params.sizes}, test accuracy {ev.accuracy:.4f}, loss {ev.loss:.4f}")


@cli.command()
@click.argument("a", type=click.Path(dir_okay=False))
@click.argument("b", type=click.Path(dir_okay=False))
@click.option("--atol", default=1e-4, show_default=True, type=float, help="Allowed max absolute difference.")
@click.option("--rtol", default=0.0, show_default=True, type=float, help="Allowed difference relative to |B|.")
@click.option("--json", "as_json", is_flag=True)
def compare(a, b, atol, rtol, as_json):
    """Compare two weight files array by array; exit 1 if any element differs by more than atol + rtol*|B|."""
    import numpy as np

    from ecufl.kernels import weights as weightfile

    pa, _ = weightfile.load(a)
    pb, _ = weightfile.load(b)
    rows = weightfile.compare(pa, pb)
    ok = True
    for row, x, y in zip(rows, pa.flat(), pb.flat()):
        x64, y64 = x.astype(np.float64), y.astype(np.float64)
        row["within"] = bool(np.all(np.abs(x64 - y64) <= atol + rtol * np.abs(y64)))
        ok &= row["within"]
    if as_json:
        click.echo(json.dumps({"a": a, "b": b, "atol": atol, "rtol": rtol, "ok": ok, "arrays": rows}))
    else:
        t = Table(title=f"{a} vs {b}  (atol {atol:g}, rtol {rtol:g})")
        for col in ("array", "shape", "max abs", "max rel", "mean abs", "within"):
            t.add_column(col, justify="right")
        for r in rows:
            t.add_row(r["array"], "x".join(map(str, r["shape"])), f"{r['max_abs']:.3e}", f"{r['max_rel']:.3e}",
                      f"{r['mean_abs']:.3e}", "[green]yes[/]" if r["within"] else "[red]NO[/]")
        console.print(t)
    if not ok:
        raise Failure("weights differ beyond the tolerance")


@cli.command()
def kernels():
    """List the kernels and whether each is available here."""
    from ecufl.kernels import KERNELS, available

    have = set(available())
    t = Table(title="kernels")
    for col in ("name", "available", "what", "how to get it"):
        t.add_column(col)
    for name, spec in KERNELS.items():
        t.add_row(name, "[green]yes[/]" if name in have else "[red]no[/]", spec.summary,
                  "" if name in have else spec.how_to_get)
    console.print(t)


# --- data -----------------------------------------------------------------------------------------
@cli.group()
def data():
    """The MNIST files: fetch and check."""


@data.command("fetch")
@click.option("--dest", type=click.Path(file_okay=False), help="Directory (default: the user cache).")
def data_fetch(dest):
    """Download MNIST from public mirrors into the cache and verify the sha256 sums (nothing to do
    when ECUFL_DATA already names a folder holding it)."""
    from ecufl import data as mnist

    if dest is None and os.environ.get("ECUFL_DATA"):
        d = mnist.locate()  # DataError (one line) if ECUFL_DATA lacks a file
        console.print(f"MNIST is in {d} (ECUFL_DATA); nothing fetched. Unset ECUFL_DATA to download "
                      "into the user cache, or give --dest.")
        return
    d = mnist.fetch(Path(dest) if dest else None)
    console.print(f"MNIST is in {d}")


@data.command("check")
@click.option("--data-dir", type=click.Path(file_okay=False))
def data_check(data_dir):
    """Parse the four MNIST files and check their sha256 sums."""
    from ecufl import data as mnist

    for path, state in mnist.check(data_dir).items():
        console.print(f"{state}  {path}")


# --- sub-command groups owned by other packages ----------------------------------------------------
_EXTENSIONS = [
    "ecufl.bench:bench",
    "ecufl.bench_int8:bench",  # adds `ecufl bench prune` to the same group
    "ecufl.tflite_cli:tflite",
    "ecufl.fleet.deploy.cli:deploy",
    "ecufl.calibrate_cli:calibrate",
    "ecufl.fleet.cli:fleet",
    "ecufl.fleet.cli:sim",
    "ecufl.fleet.cli:scenario_group",
    "ecufl.report:report",
    "ecufl.thesis:thesis",
    "ecufl.can.cli:can",
]


def _extend() -> None:
    for entry in _EXTENSIONS:
        module, attr = entry.split(":")
        try:
            cli.add_command(getattr(importlib.import_module(module), attr))
        except ImportError as e:  # a broken optional part must not take the whole CLI down
            name = attr.replace("_", "-")

            @cli.command(name, help=f"(unavailable: {e})", context_settings={"ignore_unknown_options": True})
            @click.argument("args", nargs=-1, type=click.UNPROCESSED)
            def _missing(args, _e=e, _name=name):
                raise Failure(f"`ecufl {_name}` is unavailable: {_e}")


def _split_record(argv: list[str]) -> tuple[str | None, list[str]]:
    """``--record FILE`` (or ``--record=FILE``) at the front of the arguments, and the rest."""
    if argv and argv[0].startswith("--record="):
        return argv[0].split("=", 1)[1], argv[1:]
    if len(argv) >= 2 and argv[0] == "--record" and not argv[1].startswith("-"):
        return argv[1], argv[2:]
    return None, argv


def main(argv: list[str] | None = None) -> None:
    record_path, rest = _split_record(sys.argv[1:] if argv is None else list(argv))
    if record_path and rest and rest[0] not in ("-h", "--help", "--version"):
        sys.exit(record.run(record_path, rest, Path(__file__).resolve().parent.parent))
    _extend()
    try:
        rc = cli.main(args=argv, prog_name="ecufl", standalone_mode=False)
    except click.UsageError as e:
        click.echo(f"ecufl: error: {e.format_message()}", err=True)
        sys.exit(2)
    except click.ClickException as e:
        click.echo(f"ecufl: error: {e.format_message()}", err=True)
        sys.exit(e.exit_code)
    except KernelUnavailable as e:
        click.echo(f"ecufl: error: {e}", err=True)
        sys.exit(2)
    except (DataError, WeightFileError) as e:
        click.echo(f"ecufl: error: {e}", err=True)
        sys.exit(1)
    except click.exceptions.Abort:
        click.echo("ecufl: aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("ecufl: interrupted", err=True)
        sys.exit(130)
    except Exception as e:  # noqa: BLE001 - a bug: one line for the user, the traceback in a log
        click.echo(f"ecufl: error: {type(e).__name__}: {e} (a bug in ecufl; traceback in {_crash_log()})", err=True)
        sys.exit(1)
    sys.exit(rc if isinstance(rc, int) else 0)


def _crash_log() -> Path:
    """Write the current exception's traceback to a log file and return its path
    ($ECUFL_LOG_DIR, else ~/.cache/ecufl/logs; the system's temp folder if neither is writable)."""
    text = f"ecufl {__version__}: {' '.join(sys.argv)}\n\n{traceback.format_exc()}"
    name = f"ecufl-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    for folder in (os.environ.get("ECUFL_LOG_DIR"), Path.home() / ".cache" / "ecufl" / "logs", tempfile.gettempdir()):
        if not folder:
            continue
        try:
            Path(folder).mkdir(parents=True, exist_ok=True)
            path = Path(folder) / name
            path.write_text(text)
            return path
        except OSError:
            continue
    return Path("(unwritable)")


if __name__ == "__main__":
    main()
