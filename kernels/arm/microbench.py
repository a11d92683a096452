"""The known-count loops (loops/loops.S), built for the board.

One static binary, ``ecufl-a9-microbench``, holds one loop per instruction class; counted under
qemu they prove the plugin exact, timed on a board they calibrate the cost model.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCES = [HERE / "loops" / "main.c", HERE / "loops" / "loops.S"]
CC = os.environ.get("ECUFL_ARM_CC", "arm-linux-gnueabihf-gcc")
# The i.MX6's Cortex-A9: ARMv7-A, VFPv3 + NEON (no VFPv4: no fused multiply-add), hard float.
BOARD_FLAGS = ["-mcpu=cortex-a9", "-mfpu=neon", "-mfloat-abi=hard"]
# Each loop runs ITERATIONS times: 8 instructions of its class, subs, bne; then one bx lr.
BODY = 8


class BuildError(RuntimeError):
    pass


def compiler() -> str:
    found = shutil.which(CC)
    if found is None:
        raise BuildError(f"{CC} not found: install Debian's gcc-arm-linux-gnueabihf (`make setup` does)")
    return found


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ecufl" / "arm"


def build(out_dir: str | Path | None = None, extra_flags: list[str] | None = None) -> Path:
    """Compile the micro-benchmark binary (static) once per source version; return its path."""
    flags = ["-O2", "-static", *BOARD_FLAGS, *(extra_flags or [])]
    digest = hashlib.sha256()
    for src in SOURCES:
        digest.update(src.read_bytes())
    digest.update(" ".join(flags).encode())
    out = Path(out_dir) if out_dir else cache_dir()
    out.mkdir(parents=True, exist_ok=True)
    binary = out / f"ecufl-a9-microbench-{digest.hexdigest()[:12]}"
    if binary.is_file():
        return binary
    tmp = binary.with_suffix(".tmp")
    proc = subprocess.run([compiler(), *flags, "-o", str(tmp), *map(str, SOURCES)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise BuildError(f"building the micro-benchmarks failed: {proc.stderr.strip().splitlines()[-1]}")
    tmp.replace(binary)
    return binary


def names() -> list[str]:
    """Loop names in source order (``mb_<name>`` in loops.S)."""
    text = (HERE / "loops" / "main.c").read_text()
    start = text.index("#define LOOPS(X)")
    block = text[start:text.index("\n\n", start)]
    import re

    return re.findall(r"X\((\w+)\)", block)
