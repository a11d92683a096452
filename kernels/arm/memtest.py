"""A synthetic memory access pattern for the cache model (loops/memwalk.c).

``mw_walk`` reads one word every STRIDE bytes of a BYTES-long array, PASSES times; with STRIDE
equal to the line size every read touches a new line, so the misses of each level are known in
advance (tests check the plugin's set-associative model against them). Read as a streaming test
(an array far larger than the L2), it gives the bandwidth the model projects for sequential
reads: ``stream(profile)``.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

from . import count
from .costmodel import CostModel, memory_cycles
from .microbench import BOARD_FLAGS, BuildError, cache_dir, compiler
from .profiles import Profile
from .profiles import get as get_profile

SOURCE = Path(__file__).resolve().parent / "loops" / "memwalk.c"


def build(out_dir: str | Path | None = None) -> Path:
    flags = ["-O2", "-static", *BOARD_FLAGS]
    digest = hashlib.sha256(SOURCE.read_bytes())
    digest.update(" ".join(flags).encode())
    out = Path(out_dir) if out_dir else cache_dir()
    out.mkdir(parents=True, exist_ok=True)
    binary = out / f"ecufl-a9-memwalk-{digest.hexdigest()[:12]}"
    if binary.is_file():
        return binary
    tmp = binary.with_suffix(".tmp")
    proc = subprocess.run([compiler(), *flags, "-o", str(tmp), str(SOURCE)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise BuildError(f"building memwalk failed: {proc.stderr.strip().splitlines()[-1]}")
    tmp.replace(binary)
    return binary


def walk(nbytes: int, stride: int, passes: int, caches: dict[str, str] | None = None) -> count.Counts:
    """Counts (instructions and the cache model's) of one mw_walk call."""
    return count.run(build(), [str(nbytes), str(stride), str(passes)], ["mw_walk"],
                     cache=caches if caches is not None else {}).counts


def stream(profile: str | Profile = "imx6", nbytes: int = 8 << 20, model: CostModel | None = None) -> dict:
    """Projected sequential read bandwidth (bytes/s) of an array 8x the L2: low/nominal/high."""
    prof = get_profile(profile) if isinstance(profile, str) else profile
    model = model or CostModel.trm()
    line = int(prof.memory.l1d.split(":")[2])
    counts = walk(nbytes, line, 1, prof.memory.plugin_caches())
    core = model.project(counts.classes).cycles
    mem = memory_cycles(counts.cache, prof.memory, prof.clock_hz)
    out = {k: nbytes / ((core + mem[k]) / prof.clock_hz) for k in ("low", "nominal", "high")}
    return {"bytes": nbytes, "core_cycles": core, "memory_cycles": mem,
            # low memory cycles = the fastest board: bandwidth high
            "bandwidth_bytes_per_second": {"fast": out["low"], "nominal": out["nominal"], "slow": out["high"]},
            "cache": counts.cache}
