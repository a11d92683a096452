"""Calibrate the Cortex-A9 cost model on a real board: time the known-count loops, fit cycles.

For each loop of loops/loops.S the exact instructions per iteration, per class, come from the
counting plugin under qemu (no board needed for that). The board then runs each loop at two
iteration counts; the difference of the two times removes the call and clock overhead, and
``(t2 - t1) / (n2 - n1) * clock`` is the cycles one iteration really takes. With one row per
loop, ``cycles = counts @ cpi`` is solved for the cycles per class by non-negative least squares
(scipy.optimize.nnls, Lawson-Hanson: a cost is never negative). Classes no loop exercises keep
the TRM value. The board's clock is read from cpufreq where the kernel exposes it, else taken
from the device profile.

Boards: ``SSHBoard`` (asyncssh: one well-kept asyncio SSH/SFTP library, already the project's
choice for deployment, with known_hosts checking by default) and ``QemuBoard`` (the same loops
through qemu-arm on this machine: exercises every step, but its "cycles" are qemu's speed, not
an A9's; it exists for tests and never writes the user's default calibration).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from . import count, microbench
from .costmodel import TABLE
from .profiles import Profile

# The loops whose rows enter the fit ("call" has two unknowns that only ever appear together).
CALIBRATION_LOOPS = [n for n in microbench.names() if n != "call"]
ITERATIONS = (100_000, 1_000_000)
REPEATS = 3
# memwalk (loops/memwalk.c) sizes for the memory costs: (bytes, passes), one word read per line
MEMWALK = {"l1": (16384, 2000), "l2": (262144, 100), "dram": (8 << 20, 4)}


class CalibrationFailed(RuntimeError):
    """One line: what failed, on which board."""


@dataclass
class LoopTiming:
    name: str
    iterations: tuple[int, int]
    seconds: tuple[float, float]   # best of REPEATS at each iteration count
    counts_per_iteration: dict[str, float]

    def cycles_per_iteration(self, clock_hz: float) -> float:
        (n1, n2), (t1, t2) = self.iterations, self.seconds
        return (t2 - t1) / (n2 - n1) * clock_hz


class Board(Protocol):
    name: str

    def prepare(self, binary: Path) -> None: ...
    def run(self, loop: str, iterations: int) -> float: ...   # seconds, from the program itself
    def clock_hz(self) -> float | None: ...
    def close(self) -> None: ...
    def prepare_memwalk(self, binary: Path) -> None: ...                  # calibrate(memory=True)
    def run_memwalk(self, nbytes: int, stride: int, passes: int) -> float: ...  # seconds


def _parse(name: str, output: str, where: str) -> float:
    fields = output.split()
    if len(fields) != 3 or fields[0] != name:
        raise CalibrationFailed(f"{where}: unexpected output from the micro-benchmark: {output.strip()[:200]!r}")
    return float(fields[2]) * 1e-9


def _parse_memwalk(output: str, where: str) -> float:
    fields = output.split()
    if len(fields) != 6 or fields[0] != "memwalk":
        raise CalibrationFailed(f"{where}: unexpected output from memwalk: {output.strip()[:200]!r}")
    return float(fields[5]) * 1e-9


class QemuBoard:
    """The loops under qemu-arm -cpu cortex-a9 on this machine (for tests: not an A9's timing)."""

    name = "qemu-arm -cpu cortex-a9 (this machine)"

    def prepare(self, binary: Path) -> None:
        self.binary = binary

    def run(self, loop: str, iterations: int) -> float:
        proc = subprocess.run([count.qemu_path(), "-cpu", count.CPU, str(self.binary), loop, str(iterations)],
                              capture_output=True, text=True, env={})
        if proc.returncode != 0:
            raise CalibrationFailed(f"{self.name}: {loop} failed ({proc.stderr.strip()[:200]})")
        return _parse(loop, proc.stdout, self.name)

    def prepare_memwalk(self, binary: Path) -> None:
        self.memwalk = binary

    def run_memwalk(self, nbytes: int, stride: int, passes: int) -> float:
        proc = subprocess.run([count.qemu_path(), "-cpu", count.CPU, str(self.memwalk), str(nbytes), str(stride),
                               str(passes)], capture_output=True, text=True, env={})
        if proc.returncode != 0:
            raise CalibrationFailed(f"{self.name}: memwalk failed ({proc.stderr.strip()[:200]})")
        return _parse_memwalk(proc.stdout, self.name)

    def clock_hz(self) -> float | None:
        return None

    def close(self) -> None:
        pass


class SSHBoard:
    """A board reached over SSH (``user@host[:port]``); the binary goes to a temporary file there."""

    REMOTE = "/tmp/ecufl-a9-microbench"
    REMOTE_MEMWALK = "/tmp/ecufl-a9-memwalk"

    def __init__(self, target: str, *, known_hosts: str | None = None, identity: str | None = None,
                 wrapper: str = "", connect_timeout: float = 15.0):
        user, sep, hostport = target.rpartition("@")
        if not sep or not user or not hostport:
            raise ValueError(f"--board: expected user@host or user@host:port, got {target!r}")
        host, _, port = hostport.partition(":")
        if port and not port.isdigit():
            raise ValueError(f"--board: port must be a number, got {port!r}")
        self.name, self.user, self.host, self.port = target, user, host, int(port or 22)
        self.known_hosts, self.identity, self.wrapper = known_hosts, identity, wrapper
        self.connect_timeout = connect_timeout
        self._loop = asyncio.new_event_loop()
        self._conn = None

    def _await(self, coro):
        return self._loop.run_until_complete(coro)

    def prepare(self, binary: Path) -> None:
        import asyncssh

        opts: dict = {"username": self.user, "port": self.port, "connect_timeout": self.connect_timeout}
        if self.known_hosts is not None:
            opts["known_hosts"] = self.known_hosts
        if self.identity is not None:
            opts["client_keys"] = [self.identity]
        try:
            self._conn = self._await(asyncssh.connect(self.host, **opts))
            self._await(self._put(binary))
        except (OSError, asyncssh.Error) as e:
            reason = getattr(e, "reason", None) or str(e) or type(e).__name__
            raise CalibrationFailed(f"board {self.name}: {reason}") from None

    async def _put(self, binary: Path, remote: str | None = None) -> None:
        async with self._conn.start_sftp_client() as sftp:
            await sftp.put(str(binary), remote or self.REMOTE)
            await sftp.chmod(remote or self.REMOTE, 0o755)

    def prepare_memwalk(self, binary: Path) -> None:
        import asyncssh

        try:
            self._await(self._put(binary, self.REMOTE_MEMWALK))
        except (OSError, asyncssh.Error) as e:
            raise CalibrationFailed(f"board {self.name}: {getattr(e, 'reason', None) or e}") from None

    def run_memwalk(self, nbytes: int, stride: int, passes: int) -> float:
        prefix = f"{self.wrapper} " if self.wrapper else ""
        return _parse_memwalk(self._exec(f"{prefix}{self.REMOTE_MEMWALK} {nbytes} {stride} {passes}"),
                              f"board {self.name}")

    def _exec(self, command: str) -> str:
        import asyncssh

        try:
            result = self._await(self._conn.run(command, check=False))
        except (OSError, asyncssh.Error) as e:
            raise CalibrationFailed(f"board {self.name}: {e}") from None
        if result.exit_status != 0:
            err = (result.stderr or "").strip().splitlines()
            raise CalibrationFailed(f"board {self.name}: `{command}` failed"
                                    + (f": {err[-1]}" if err else f" (exit status {result.exit_status})"))
        return result.stdout or ""

    def run(self, loop: str, iterations: int) -> float:
        prefix = f"{self.wrapper} " if self.wrapper else ""
        return _parse(loop, self._exec(f"{prefix}{self.REMOTE} {shlex.quote(loop)} {iterations}"),
                      f"board {self.name}")

    def clock_hz(self) -> float | None:
        for f in ("cpuinfo_cur_freq", "scaling_cur_freq"):
            try:
                text = self._exec(f"cat /sys/devices/system/cpu/cpu0/cpufreq/{f}").strip()
            except CalibrationFailed:
                continue
            if text.isdigit():
                return int(text) * 1e3  # kHz
        return None

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._exec(f"rm -f {self.REMOTE} {self.REMOTE_MEMWALK}")
            except CalibrationFailed:
                pass
            self._conn.close()
            self._await(self._conn.wait_closed())
            self._conn = None
        self._loop.close()


def counts_per_iteration(binary: Path, loops: list[str]) -> dict[str, dict[str, float]]:
    """Exact instructions per iteration, per class, of each loop (plugin, two small runs)."""
    out = {}
    for name in loops:
        a = count.run(binary, [name, "10"], [f"mb_{name}"]).counts.classes
        b = count.run(binary, [name, "20"], [f"mb_{name}"]).counts.classes
        out[name] = {k: (b.get(k, 0) - a.get(k, 0)) / 10 for k in set(a) | set(b) if b.get(k, 0) != a.get(k, 0)}
    return out


def nnls_relative(design, y) -> list[float]:
    """Non-negative x minimising sum(((design @ x - y) / y)^2): every row's relative error counts
    the same, fast or slow (scipy.optimize.nnls, Lawson-Hanson, on rows weighted by 1/y)."""
    try:  # an optional dependency (the `calibrate` extra): `./bootstrap run` does not install it
        from scipy.optimize import nnls
    except ImportError:
        raise CalibrationFailed("ecufl calibrate needs scipy, which `./bootstrap run` does not install: "
                                ".venv/bin/pip install -e '.[calibrate]'") from None

    a, yv = np.asarray(design, dtype=float), np.asarray(y, dtype=float)
    w = 1.0 / np.maximum(yv, 1e-12)
    x, _ = nnls(a * w[:, None], yv * w)
    return [float(v) for v in x]


def fit(timings: list[LoopTiming], clock_hz: float) -> tuple[dict[str, float], float]:
    """Cycles per class by non-negative least squares; returns (cycles, rms relative residual)."""
    classes = sorted({k for t in timings for k in t.counts_per_iteration})
    a = np.array([[t.counts_per_iteration.get(c, 0.0) for c in classes] for t in timings])
    y = np.array([t.cycles_per_iteration(clock_hz) for t in timings])
    x = np.array(nnls_relative(a, y))
    rel = (a @ x - y) / np.maximum(y, 1e-12)
    return dict(zip(classes, map(float, x))), float(np.sqrt(np.mean(rel**2)))


@dataclass
class Calibration:
    board: str
    clock_hz: float
    clock_source: str
    cycles: dict[str, float]
    residual_rms: float
    timings: list[LoopTiming] = field(default_factory=list)
    binary_sha256: str = ""
    memory: dict | None = None  # measured memory costs (calibrate(..., memory=True))

    def to_dict(self) -> dict:
        return {
            "tool": "ecufl calibrate", "board": self.board,
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "clock_hz": self.clock_hz, "clock_source": self.clock_source,
            "cycles": self.cycles, "trm_cycles": {k: TABLE[k][0] for k in self.cycles if k in TABLE},
            "residual_rms_relative": self.residual_rms, "binary_sha256": self.binary_sha256,
            "loops": [{"name": t.name, "iterations": t.iterations, "seconds": t.seconds,
                       "cycles_per_iteration": t.cycles_per_iteration(self.clock_hz),
                       "counts_per_iteration": t.counts_per_iteration} for t in self.timings],
        } | ({"memory": self.memory} if self.memory is not None else {})

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        tmp.replace(path)  # never a half-written calibration
        return path


def calibrate(board: Board, profile: Profile, *, loops: list[str] | None = None,
              iterations: tuple[int, int] = ITERATIONS, repeats: int = REPEATS,
              progress=None, memory: bool = False) -> Calibration:
    """``memory``: also time memwalk at an L1-, an L2- and a DRAM-sized array and measure the L2
    hit cost and the streaming DRAM bandwidth (``measure_memory``)."""
    loops = loops or CALIBRATION_LOOPS
    binary = microbench.build()
    per_iter = counts_per_iteration(binary, loops)
    board.prepare(binary)
    mem = None
    try:
        clock = board.clock_hz()
        source = "cpufreq of the board"
        if clock is None:
            if not profile.clock_hz:
                raise CalibrationFailed(f"board {board.name}: no cpufreq clock and profile {profile.name} has none")
            clock, source = profile.clock_hz, f"profile {profile.name}"
        timings = []
        for i, name in enumerate(loops):
            secs = tuple(min(board.run(name, n) for _ in range(repeats)) for n in iterations)
            timings.append(LoopTiming(name, iterations, secs, per_iter[name]))
            if progress:
                progress(i + 1, len(loops))
        if memory:
            mem = measure_memory(board, clock, profile, repeats)
    finally:
        board.close()
    cycles, residual = fit(timings, clock)
    return Calibration(board.name, clock, source, cycles, residual, timings,
                       hashlib.sha256(binary.read_bytes()).hexdigest(), mem)


def measure_memory(board: Board, clock_hz: float, profile: Profile, repeats: int = REPEATS) -> dict:
    """L2 hit cycles and DRAM streaming bandwidth from memwalk's time per line (best of
    ``repeats``): every read touches a new 32-byte line; the L1-resident walk's time per line is
    the loop itself, the L2-sized walk's excess over it the L2 hit, the DRAM-sized walk's excess
    the DRAM line time (bandwidth = line / that). The L2-sized array (256 KB) fits either i.MX6
    L2 and passes the 32 KB L1; the DRAM one (8 MB) passes both."""
    from . import memtest

    line = int((profile.memory.l1d if profile.memory else "32768:4:32").split(":")[2])
    board.prepare_memwalk(memtest.build())
    per_line = {}
    for level, (nbytes, passes) in MEMWALK.items():
        secs = min(board.run_memwalk(nbytes, line, passes) for _ in range(repeats))
        per_line[level] = secs / (nbytes // line * passes)
    l2_cycles = (per_line["l2"] - per_line["l1"]) * clock_hz
    dram_line = per_line["dram"] - per_line["l1"]
    if l2_cycles <= 0 or dram_line <= 0:
        raise CalibrationFailed(f"board {board.name}: memwalk per line {per_line} does not grow L1 < L2 < DRAM; "
                                "no memory costs measured")
    return {"l2_hit_cycles": l2_cycles, "dram_bandwidth_bytes_per_second": line / dram_line,
            "seconds_per_line": per_line, "line_bytes": line,
            "walks": {k: {"bytes": b, "passes": p} for k, (b, p) in MEMWALK.items()}}
