"""What every command prints with: the consoles, the one-line failure, small formatters.

No ecufl module imports the CLI (``ecufl.cli``); command modules of every package take their
console and their ``Failure`` from here instead. Output that goes to a pipe or a file is never
wrapped (rich would break a line at 80 columns, mid-sentence, whenever a path is long): a line
printed is a line read back, whatever the width of the terminal that is not there.
"""

from __future__ import annotations

import sys

import click
from rich.console import Console


def _console(stderr: bool) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    tty = stream.isatty()
    # on a terminal rich wraps to its width; elsewhere: soft wrap (no line breaks added) and a wide
    # canvas, so tables are not squeezed into 80 columns in CI logs and pipes
    return Console(stderr=stderr, soft_wrap=not tty, width=None if tty else 200)


console = _console(stderr=False)
err_console = _console(stderr=True)


class Failure(click.ClickException):
    """A run failed for a reason outside the user's flags (exit 1)."""

    exit_code = 1


def wide(c: Console) -> Console:
    """The console itself (tables are printed wide when piped, see ``_console``)."""
    return c


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return str(n)


def parse_layers(value: str | None, flag: str = "--layers", mnist: bool = True) -> list[int] | None:
    """``784,30,10`` (or ``784-30-10``) as a list of layer sizes; UsageError names the flag.
    ``mnist``: the network must take 784 pixels and give 10 digits (else any positive sizes)."""
    if value is None:
        return None
    try:
        sizes = [int(v) for v in value.replace("-", ",").split(",") if v.strip()]
    except ValueError:
        raise click.UsageError(f"{flag}: expected comma-separated integers like 784,30,10, got {value!r}")
    if len(sizes) < 2:
        raise click.UsageError(f"{flag}: need at least an input and an output layer, got {value!r}")
    if any(s < 1 for s in sizes):
        raise click.UsageError(f"{flag}: layer sizes must be positive, got {value!r}")
    if not mnist:
        return sizes
    if sizes[0] != 784:
        raise click.UsageError(f"{flag}: the first layer must be 784 (28x28 MNIST pixels), got {sizes[0]}")
    if sizes[-1] != 10:
        raise click.UsageError(f"{flag}: the last layer must be 10 (digits 0-9), got {sizes[-1]}")
    return sizes
