"""Device profiles: the boards a node can pretend to be (clock for projected time, memory limit).

``host`` means no projection: the node trains natively and reports x86 time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MiB = 1024 * 1024


@dataclass(frozen=True)
class Profile:
    name: str
    clock_hz: float | None     # None: no projection (host)
    memory_bytes: int | None   # None: no limit
    summary: str

    @property
    def emulated(self) -> bool:
        return self.clock_hz is not None


PROFILES: dict[str, Profile] = {p.name: p for p in [
    Profile("imx6", 1.0e9, 1024 * MiB, "NXP i.MX6, one Cortex-A9 core at 1 GHz, 1 GB"),
    Profile("imx6-792", 792e6, 512 * MiB, "NXP i.MX6, one Cortex-A9 core at 792 MHz, 512 MB"),
    Profile("imx6-1200", 1.2e9, 1024 * MiB, "NXP i.MX6, one Cortex-A9 core at 1.2 GHz, 1 GB"),
    Profile("host", None, None, "this machine, native x86 kernels, no projection"),
]}


class UnknownProfile(ValueError):
    pass


def lookup(table: dict[str, Any], name: str, error: type[ValueError], what: str, plural: str) -> Any:
    """``table[name]``, or ``error`` with one line naming what was asked for and what exists."""
    try:
        return table[name]
    except KeyError:
        raise error(f"unknown {what} {name!r}; {plural}: {', '.join(table)}") from None


def get(name: str) -> Profile:
    return lookup(PROFILES, name, UnknownProfile, "device profile", "profiles")
