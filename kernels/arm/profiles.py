"""Device profiles: the boards a node can pretend to be (clock for projected time, memory limit).

``host`` means no projection: the node trains natively and reports x86 time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MiB = 1024 * 1024


@dataclass(frozen=True)
class MemorySystem:
    """The i.MX6 memory hierarchy the cache model simulates and prices (see COSTMODEL.md).

    Caches are SIZE:WAYS:LINE for the plugin. Costs are (low, nominal, high): the range is the
    error bar of the memory term. Sources: A9-TRM (ARM DDI 0388) ch. 7: L1 I/D 4-way, 32-byte
    lines, 32 KB on the i.MX6; L2C-310 TRM (ARM DDI 0246): 8 or 16 ways, 32-byte lines; NXP
    i.MX6 data sheets: 1 MB L2 on the i.MX6Dual/Quad, 512 KB on the i.MX6Solo/DualLite; DRAM
    bandwidth: NXP community thread 329671 (CPU memcpy on i.MX53 0.9-1.4 GB/s, i.MX6S 32-bit
    DDR3-800 10-20% above it; 64-bit DDR3-1066 on the i.MX6Q reported no faster). L2 hit and DRAM
    latencies are ranges assumed from the L2C-310's programmable RAM latencies and DDR3 timing,
    not measured on an i.MX6 here: `ecufl calibrate --board` is the way to pin them.
    """

    l1d: str = "32768:4:32"
    l1i: str = "32768:4:32"
    l2: str = "1048576:16:32"
    l2_hit_cycles: tuple[float, float, float] = (10.0, 20.0, 30.0)
    dram_latency_ns: tuple[float, float, float] = (70.0, 100.0, 140.0)
    dram_bandwidth: tuple[float, float, float] = (1.7e9, 1.2e9, 0.8e9)  # bytes/s: fast, nominal, slow

    def plugin_caches(self) -> dict[str, str]:
        return {"l1d": self.l1d, "l1i": self.l1i, "l2": self.l2}

    @property
    def l2_bytes(self) -> int:
        return int(self.l2.split(":")[0])


IMX6Q_MEMORY = MemorySystem()
IMX6DL_MEMORY = MemorySystem(l2="524288:8:32")


@dataclass(frozen=True)
class Profile:
    name: str
    clock_hz: float | None     # None: no projection (host)
    memory_bytes: int | None   # None: no limit
    summary: str
    memory: MemorySystem | None = None  # caches and DRAM of the board (None: host)

    @property
    def emulated(self) -> bool:
        return self.clock_hz is not None


PROFILES: dict[str, Profile] = {p.name: p for p in [
    Profile("imx6", 1.0e9, 1024 * MiB, "NXP i.MX6, one Cortex-A9 core at 1 GHz, 1 GB, 1 MB L2", IMX6Q_MEMORY),
    Profile("imx6-792", 792e6, 512 * MiB, "NXP i.MX6, one Cortex-A9 core at 792 MHz, 512 MB, 512 KB L2",
            IMX6DL_MEMORY),
    Profile("imx6-1200", 1.2e9, 1024 * MiB, "NXP i.MX6, one Cortex-A9 core at 1.2 GHz, 1 GB, 1 MB L2",
            IMX6Q_MEMORY),
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
