"""Where a function of a static ARM binary starts and where each direct call to it returns.

The counting plugin opens its region at the function's entry and closes it at the return sites
(the instruction after each ``bl``/``blx`` to it), so everything the function executes counts,
callees included, and nothing else does. Addresses come from the cross binutils' disassembly
(``arm-linux-gnueabihf-objdump``, installed with Debian's cross gcc): it knows Thumb from ARM.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

OBJDUMP = os.environ.get("ECUFL_ARM_OBJDUMP", "arm-linux-gnueabihf-objdump")

_FUNC = re.compile(r"^([0-9a-f]+) <([^>]+)>:$")
_INSN = re.compile(r"^\s*([0-9a-f]+):\s+(\S+)(?:\s+([0-9a-f]+) <([^>+]+)>)?")


class SymbolError(RuntimeError):
    pass


@dataclass(frozen=True)
class Gates:
    """Plugin gates of one or more functions: region opens at ``on``, closes at ``off``."""

    functions: tuple[str, ...]
    on: tuple[int, ...]
    off: tuple[int, ...]

    def plugin_args(self) -> list[str]:
        return [f"on={a:#x}" for a in self.on] + [f"off={a:#x}" for a in self.off]


_SYM = re.compile(r"^([0-9a-f]+)\s.*\sF\s+\S+\s+[0-9a-f]+\s+(\S+)$")


def _objdump(args: list[str], path: str) -> str:
    if shutil.which(OBJDUMP) is None:
        raise SymbolError(f"{OBJDUMP} not found: install Debian's binutils-arm-linux-gnueabihf "
                          "(comes with gcc-arm-linux-gnueabihf; `make setup` installs it)")
    proc = subprocess.run([OBJDUMP, *args, path], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SymbolError(f"{path}: cannot read it as an ARM ELF file ({proc.stderr.strip()})")
    return proc.stdout


@lru_cache(maxsize=16)
def _analyse(path: str, mtime_ns: int) -> tuple[dict[str, int], dict[int, list[int]]]:
    """(function name -> entry, entry -> return sites of direct calls) of one binary version."""
    entries: dict[str, int] = {}
    for line in _objdump(["-t"], path).splitlines():
        m = _SYM.match(line)
        if m:
            entries.setdefault(m.group(2), int(m.group(1), 16) & ~1)  # Thumb bit off
    returns: dict[int, list[int]] = {}
    pending: int | None = None  # target of the previous instruction if it was a call
    for line in _objdump(["-d", "--no-show-raw-insn"], path).splitlines():
        if _FUNC.match(line):
            continue
        m = _INSN.match(line)
        if not m:
            continue
        addr = int(m.group(1), 16)
        if pending is not None:
            returns.setdefault(pending, []).append(addr)
            pending = None
        if m.group(2).split(".")[0] in ("bl", "blx") and m.group(3):
            pending = int(m.group(3), 16) & ~1
    return entries, returns


def gates(binary: str | Path, functions: list[str] | tuple[str, ...]) -> Gates:
    """Gates that count exactly the executions of ``functions`` (called directly by name)."""
    path = str(binary)
    try:
        st = os.stat(path)
    except OSError as e:
        raise SymbolError(f"{path}: {e.strerror}") from None
    entries, returns = _analyse(path, st.st_mtime_ns)
    on: list[int] = []
    off: list[int] = []
    for name in functions:
        if name not in entries:
            raise SymbolError(f"{path}: no function {name!r} in the symbol table (is the binary stripped?)")
        if not returns.get(entries[name]):
            raise SymbolError(f"{path}: {name!r} is never called directly (bl/blx), so its region "
                              "could not be closed; count a function that is")
        on.append(entries[name])
        off.extend(returns[entries[name]])
    return Gates(tuple(functions), tuple(on), tuple(sorted(set(off))))
