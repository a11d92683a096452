"""Measurement logs: a command's output kept with when, where and on what it ran.

``ecufl --record FILE COMMAND ...`` runs COMMAND (any ecufl command) as usual and, when it
succeeds, writes FILE: the command line, the start and end time (UTC), the git commit of the
checkout (and whether it had uncommitted changes), the machine (CPU model, cores, memory), the load
average before and after, and the command's standard output. Benchmarks on a shared machine are
only as good as that context; keeping it in a file the command regenerates (docs/results/) keeps
dated logs out of the README, which quotes the figures and names the file.

A failed command writes nothing, so an earlier record is never replaced by a broken one.
"""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ecufl import __version__


@dataclass
class Context:
    """Where and when a command ran."""

    command: str
    started: float = field(default_factory=time.time)
    load_before: tuple[float, float, float] = field(default_factory=os.getloadavg)
    ended: float = 0.0
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def finish(self) -> None:
        self.ended, self.load_after = time.time(), os.getloadavg()


def _utc(t: float, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    return time.strftime(fmt, time.gmtime(t))


def commit(root: Path) -> str:
    """``abc1234`` (``abc1234 + uncommitted changes``), or ``not a git checkout``."""
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10)
        if head.returncode != 0:
            return "not a git checkout"
        dirty = subprocess.run(["git", "-C", str(root), "diff", "--quiet", "HEAD", "--"], timeout=10).returncode
    except (OSError, subprocess.TimeoutExpired):
        return "unknown (git not available)"
    return head.stdout.strip() + (" + uncommitted changes" if dirty else "")


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    mem = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), cpu)
        with open("/proc/meminfo") as f:
            kib = next((int(l.split()[1]) for l in f if l.startswith("MemTotal:")), 0)
        mem = f", {kib / 2**20:.0f} GiB" if kib else ""
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores{mem}, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def render(ctx: Context, output: str, root: Path) -> str:
    """The record's text: a provenance header, then the output (as is when it is already markdown)."""
    load = lambda l: f"{l[0]:.1f}"  # noqa: E731 - the 1-minute load average
    lines = [
        f"# `{ctx.command}`",
        "",
        "Written by `ecufl --record`; run the same command with `--record` again to regenerate this file.",
        "",
        f"- ran: {_utc(ctx.started)} to {_utc(ctx.ended, '%H:%M:%S')} UTC ({ctx.ended - ctx.started:.0f} s)",
        f"- ecufl {__version__}, commit {commit(root)}",
        f"- machine: {machine()}",
        f"- load average (1 min): {load(ctx.load_before)} before, {load(ctx.load_after)} after",
        "",
    ]
    text = output.rstrip("\n")
    first = next((l for l in text.splitlines() if l.strip()), "")
    body = text if first.lstrip().startswith(("|", "#")) else f"```\n{text}\n```"
    return "\n".join(lines) + body + "\n"


def run(path: str | Path, args: list[str], root: Path) -> int:
    """Run ``ecufl ARGS`` in a child process, its output passed through as it comes and kept; on
    success write the record to ``path`` (atomically). Returns the child's exit code."""
    path = Path(path)
    ctx = Context(command=shlex.join(["ecufl", *args]))
    kept: list[str] = []
    with subprocess.Popen([sys.executable, "-m", "ecufl", *args], stdout=subprocess.PIPE, text=True,
                          bufsize=1) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            kept.append(line)
    ctx.finish()
    if proc.returncode != 0:
        print(f"ecufl: --record {path}: not written, the command failed (exit {proc.returncode})", file=sys.stderr)
        return proc.returncode
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(render(ctx, "".join(kept), root))
        os.replace(tmp, path)
    except OSError as e:
        print(f"ecufl: error: --record {path}: cannot write ({e.strerror or e})", file=sys.stderr)
        return 1
    print(f"record: {path}", file=sys.stderr)
    return 0
