"""Run a static 32-bit ARM binary under ``qemu-arm -cpu cortex-a9`` with the counting plugin.

``-cpu cortex-a9`` is strict: an instruction the A9 lacks (vfma, udiv) raises SIGILL, as on the
board; qemu's default CPU would run it and hide the bug. Counts are exact and repeatable; the
emulated wall time says nothing about the board (use costmodel.py for that).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .symbols import Gates, SymbolError, gates

QEMU = os.environ.get("ECUFL_QEMU_ARM", "qemu-arm")
CPU = "cortex-a9"
PLUGIN_NAME = "libinsncount.so"
_REPO_ROOT = Path(__file__).resolve().parents[2]


class EmulationError(RuntimeError):
    """One line saying what went wrong under emulation (missing qemu/plugin, crash, limit)."""


class MemoryLimitExceeded(EmulationError):
    def __init__(self, message: str, limit_bytes: int):
        super().__init__(message)
        self.limit_bytes = limit_bytes


def plugin_path() -> Path:
    """The built plugin: $ECUFL_QEMU_PLUGIN, else the project's build/qemu-plugin/."""
    env = os.environ.get("ECUFL_QEMU_PLUGIN")
    path = Path(env) if env else _REPO_ROOT / "build" / "qemu-plugin" / PLUGIN_NAME
    if not path.is_file():
        raise EmulationError(f"qemu instruction-counting plugin not found at {path}: "
                             "build it with `make qemu-plugin` (or set ECUFL_QEMU_PLUGIN)")
    return path


def qemu_path() -> str:
    found = shutil.which(QEMU)
    if found is None:
        raise EmulationError(f"{QEMU} not found: install Debian's qemu-user (`make setup` does); "
                             "the static qemu-arm-static cannot load plugins")
    return found


@dataclass
class Counts:
    """Executed instructions inside the counting region (and in the whole run, for reference)."""

    classes: dict[str, int]
    mnemonics: dict[str, int]
    program_classes: dict[str, int]
    regions: int
    open_at_exit: bool = False
    cache: dict | None = None  # the cache model's counts when it ran (run(..., cache=...))

    @property
    def total(self) -> int:
        return sum(self.classes.values())

    @property
    def program_total(self) -> int:
        return sum(self.program_classes.values())

    def to_dict(self) -> dict:
        d = {"total": self.total, "classes": dict(sorted(self.classes.items())),
             "mnemonics": dict(sorted(self.mnemonics.items())), "regions": self.regions,
             "program_total": self.program_total}
        if self.cache is not None:
            d["cache"] = self.cache
        return d


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    counts: Counts
    peak_rss_bytes: int  # of the qemu process (guest memory plus qemu's own ~16 MB), 10 ms samples
    extra: dict = field(default_factory=dict)


def _describe_exit(rc: int, stderr: str) -> str:
    if rc < 0:
        sig = signal.Signals(-rc)
        why = {signal.SIGILL: "illegal instruction: the binary uses an instruction the Cortex-A9 lacks "
                              "(built with the wrong -mcpu/-mfpu?)",
               signal.SIGSEGV: "segmentation fault", signal.SIGKILL: "killed (out of memory?)",
               signal.SIGABRT: "aborted"}.get(sig, "killed by a signal")
        return f"{sig.name}: {why}"
    last = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    return f"exit status {rc}" + (f": {last[-1].strip()}" if last else "")


def _memory(pid: int) -> tuple[int, int]:
    """(resident, peak resident) bytes of a live process; (0, 0) once it is gone."""
    found = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    found[line[:5]] = int(line.split()[1]) * 1024
    except OSError:
        pass
    return found.get("VmRSS", 0), found.get("VmHWM", 0)


def _wait(proc: subprocess.Popen, stdin: bytes | None, timeout: float | None, rss_limit: int | None):
    """Collect output, exit status and peak resident memory of the child.

    Peak memory is the kernel's VmHWM of the qemu process, sampled every 10 ms (rusage's
    ru_maxrss would include the forked Python image before exec). With ``rss_limit``, a watchdog polls the process's resident memory every 10 ms and kills it
    when it exceeds the limit: the profile's memory, enforced on the guest.
    """
    chunks: dict[str, bytes] = {}

    def read(name: str, pipe) -> None:
        chunks[name] = pipe.read()

    readers = [threading.Thread(target=read, args=("out", proc.stdout)),
               threading.Thread(target=read, args=("err", proc.stderr))]
    for t in readers:
        t.start()
    if proc.stdin is not None:
        try:
            proc.stdin.write(stdin or b"")
            proc.stdin.close()
        except BrokenPipeError:
            pass
    timed_out, over_limit, done = threading.Event(), threading.Event(), threading.Event()
    deadline = time.monotonic() + timeout if timeout else None
    highest = [0]

    def watch() -> None:
        while not done.wait(0.01):
            rss, hwm = _memory(proc.pid)
            highest[0] = max(highest[0], hwm)
            if rss_limit is not None and rss > rss_limit:
                over_limit.set()
                proc.kill()
                return
            if deadline is not None and time.monotonic() > deadline:
                timed_out.set()
                proc.kill()
                return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    _, status, _ = os.wait4(proc.pid, 0)
    done.set()
    watcher.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    for t in readers:
        t.join()
    return (chunks["out"], chunks["err"], proc.returncode, highest[0],
            timed_out.is_set(), over_limit.is_set())


def run(binary: str | Path, args: list[str], functions: list[str] | tuple[str, ...], *,
        env: dict[str, str] | None = None, cwd: str | Path | None = None,
        rss_limit_bytes: int | None = None, timeout: float | None = None,
        stdin: bytes | None = None, check: bool = True,
        cache: dict[str, str] | None = None) -> Run:
    """Run ``binary args`` under qemu-arm -cpu cortex-a9, counting inside ``functions``.

    ``env`` is the guest's whole environment (default: empty, so the environment block is
    the same for every run). ``rss_limit_bytes`` kills the run when the qemu process's resident
    memory exceeds it (raising MemoryLimitExceeded). Not RLIMIT_AS: qemu-arm 7.2 reserves the
    whole 4 GiB guest address space at start (``-R`` below that asserts, ARM's commpage sits
    at 0xffff0000), so guest allocations never grow qemu's address space, and qemu ignores a
    guest's own setrlimit(RLIMIT_AS).

    ``cache`` switches the plugin's cache model on: ``{"l1d": "32768:4:32", "l2": ...}``
    (SIZE:WAYS:LINE; an empty dict takes the A9/i.MX6Q defaults); ``Counts.cache`` has the misses.
    """
    binary = Path(binary)
    if not binary.is_file():
        raise EmulationError(f"ARM binary not found: {binary}")
    try:
        g: Gates = gates(binary, functions)
    except SymbolError as e:
        raise EmulationError(str(e)) from None
    qemu, plugin = qemu_path(), plugin_path()
    with tempfile.TemporaryDirectory(prefix="ecufl-count-") as tmp:
        out = Path(tmp) / "counts.json"
        cache_args = []
        if cache is not None:
            cache_args = [f"{k}={v}" for k, v in cache.items()] or ["l1d=32768:4:32"]
        plugin_arg = ",".join([str(plugin), *g.plugin_args(), *cache_args, f"out={out}"])
        cmd = [qemu, "-cpu", CPU, "-plugin", plugin_arg, str(binary), *args]

        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env or {},
                                    cwd=cwd)
        except OSError as e:
            raise EmulationError(f"cannot start {qemu}: {e.strerror}") from None
        stdout, stderr, rc, peak, timed_out, over = _wait(proc, stdin, timeout, rss_limit_bytes)
        if timed_out:
            raise EmulationError(f"{binary.name} did not finish within {timeout:.0f} s under emulation")
        if over:
            raise MemoryLimitExceeded(f"{binary.name} exceeded its memory limit: resident memory above "
                                      f"{rss_limit_bytes / 2**20:.1f} MiB (qemu's own included)", rss_limit_bytes)
        text_out, text_err = stdout.decode(errors="replace"), stderr.decode(errors="replace")
        if check and rc != 0:
            raise EmulationError(f"{binary.name} failed under qemu-arm -cpu {CPU}: {_describe_exit(rc, text_err)}")
        if not out.is_file():
            raise EmulationError(f"{binary.name}: the counting plugin wrote no result "
                                 f"({_describe_exit(rc, text_err)})")
        data = json.loads(out.read_text())
    counts = Counts(classes=data["region_classes"], mnemonics=data["region_mnemonics"],
                    program_classes=data["program_classes"], regions=data["regions"],
                    open_at_exit=data["open_at_exit"], cache=data.get("cache"))
    if counts.regions == 0 and not counts.open_at_exit and check:
        raise EmulationError(f"{binary.name}: {', '.join(functions)} never ran (no counting region closed)")
    return Run(rc, text_out, text_err, counts, peak)
