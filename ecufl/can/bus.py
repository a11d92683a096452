"""The bus description: what the generator needs of a DBC, as compact JSON, without cantools.

A DBC is converted once (``ecufl can bus --dbc FILE --out FILE``: ``ecufl.can.dbc``, the only module
that needs cantools, so a board that generates or scores traffic never imports it) into
``{"format": "ecufl-canbus/1", "source", "sha256", "bitrate", "messages": [...]}``. Only messages
with a cycle time (``GenMsgCycleTime``) are kept: the periodic traffic of the bus. A message is
``{"name", "id", "dlc", "cycle_ms", "sender", "signals": [[name, start, length, order, signed,
scale, offset, minimum, maximum, role], ...]}`` with ``start`` and ``order`` as the DBC writes them
(``order`` "be" = Motorola, start = the most significant bit in DBC's sawtooth numbering; "le" =
Intel, start = the least significant bit) and ``role`` one of:

- ``counter``: a rolling counter (name ending in ``_No_Cnt``), incremented by one per frame;
- ``checksum``: an 8-bit checksum (name ending in ``_No_Cs``); opendbc's Ford code shows one
  formula (LateralMotionControl2: ``0xFF - ((counter + sum(v + (v >> 8))) & 0xFF)`` over the
  message's other raw values); the generator applies it to every checksum signal of the bus (the
  other Ford formulas are not public). A detector cannot tell: what matters is that frames carry
  a checksum that an attacker who knows the rule can forge;
- ``speed`` (km/h), ``rpm``, ``pedal`` (%), ``gear``: the drive signals, by exact name
  (``DRIVE_SIGNALS``) or, for other DBCs, by name pattern;
- ``""``: every other signal (the generator holds it constant or lets it follow the drive).

The shipped description of opendbc's ``ford_lincoln_base_pt.dbc`` is
``ecufl/can/ford_lincoln_base_pt.json`` (``default_bus()``).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np


FORMAT = "ecufl-canbus/1"
DEFAULT_BUS = Path(__file__).with_name("ford_lincoln_base_pt.json")
FORD_DBC = "ford_lincoln_base_pt.dbc"

# The drive signals of the Ford powertrain bus, by name (units as in the DBC).
DRIVE_SIGNALS = {
    "Veh_V_ActlEng": "speed",  # EngVehicleSpThrottle2 0x202, 20 ms, km/h (engine's view)
    "Veh_V_ActlBrk": "speed",  # BrakeSysFeatures 0x415, 20 ms (ABS's view)
    "Veh_V_ActlAdas": "speed",  # IPMA_Data4 0x3AF, 20 ms (camera's view)
    "EngAout_N_Actl": "rpm",  # EngVehicleSpThrottle 0x204, 10 ms
    "EngAout_N_Dsply": "rpm",  # Engine_Clutch_Data 0x42F, 100 ms
    "ApedPos_Pc_ActlArb": "pedal",  # EngVehicleSpThrottle 0x204, 10 ms, %
    "ApedPos_Pc_ActlDiag": "pedal",  # PowertrainData_2 0x42D, 100 ms
    "GearPos_D_Actl": "gear",  # PowertrainData_10 0x176, 100 ms
}
_PATTERNS = [(r"_No_Cnt$|(^|_)(Counter|CNT|COUNTER)$", "counter"), (r"_No_Cs$|(^|_)(Checksum|CHECKSUM|CHKSUM)$", "checksum"),
             (r"(^|_)(Veh_V_Actl|VEHICLE_SPEED|VehSpd)", "speed"), (r"EngAout_N_Actl|ENGINE_RPM|EngRpm", "rpm"),
             (r"ApedPos_Pc_Actl|ACCEL_PEDAL|AccPedal", "pedal")]
ROLES = ("counter", "checksum", "speed", "rpm", "pedal", "gear", "")


class BusError(ValueError):
    """A bus description or DBC that cannot be used; the message is one line naming the file."""


@dataclass(frozen=True)
class Signal:
    name: str
    start: int
    length: int
    order: str  # "be" (Motorola) or "le" (Intel)
    signed: bool
    scale: float
    offset: float
    minimum: float
    maximum: float
    role: str
    shift: int  # LSB's position in the frame's 64-bit word: big-endian word (byte 0 on top) for "be",
    # little-endian word (byte 0 at the bottom) for "le"; the frame is padded to 8 bytes with zeros

    @property
    def mask(self) -> int:
        return (1 << self.length) - 1

    def raw_range(self) -> tuple[int, int]:
        """The raw values allowed by the DBC's minimum/maximum, within the field's width."""
        lo_f, hi_f = sorted(((self.minimum - self.offset) / self.scale, (self.maximum - self.offset) / self.scale))
        top = (1 << (self.length - 1)) - 1 if self.signed else self.mask
        bottom = -(1 << (self.length - 1)) if self.signed else 0
        lo, hi = int(np.ceil(lo_f - 1e-9)), int(np.floor(hi_f + 1e-9))
        lo, hi = max(lo, bottom, -(2**62)), min(hi, top, 2**62)  # int64 arithmetic (a 64-bit field: half its range)
        if lo > hi:  # minimum = maximum = 0 in many DBCs: the whole field
            lo, hi = bottom, top
        return lo, hi


@dataclass(frozen=True)
class Message:
    name: str
    id: int
    dlc: int
    cycle_ms: float
    sender: str
    signals: tuple[Signal, ...]

    def signal(self, name: str) -> Signal:
        for s in self.signals:
            if s.name == name:
                return s
        raise KeyError(name)


@dataclass(frozen=True)
class Bus:
    source: str
    sha256: str
    bitrate: int
    messages: tuple[Message, ...]

    @property
    def ids(self) -> np.ndarray:
        return np.array([m.id for m in self.messages], dtype=np.uint32)

    def by_id(self, can_id: int) -> Message:
        for m in self.messages:
            if m.id == can_id:
                return m
        raise KeyError(can_id)

    def drive_signals(self) -> list[tuple[Message, Signal]]:
        return [(m, s) for m in self.messages for s in m.signals if s.role in ("speed", "rpm", "pedal", "gear")]

    def frames_per_second(self) -> float:
        return sum(1000.0 / m.cycle_ms for m in self.messages)


def _shift(start: int, length: int, order: str) -> int:
    """Position of the field's least significant bit in the 64-bit word of its byte order."""
    if order == "be":  # Motorola: start is the MSB (sawtooth numbering); the field is contiguous
        msb_from_top = (start // 8) * 8 + (7 - start % 8)  # in the big-endian word
        return 64 - (msb_from_top + length)
    return start  # Intel: start is the LSB, contiguous in the little-endian word


def role_of(name: str) -> str:
    if name in DRIVE_SIGNALS:
        return DRIVE_SIGNALS[name]
    for pattern, role in _PATTERNS:
        if re.search(pattern, name):
            return role
    return ""


def from_json(obj: dict, source: str = "bus description") -> Bus:
    try:
        if obj.get("format") != FORMAT:
            raise BusError(f"{source}: not an ecufl bus description (format {obj.get('format')!r}, expected {FORMAT})")
        messages = []
        for m in obj["messages"]:
            sigs = tuple(Signal(n, int(st), int(ln), o, bool(sg), float(sc), float(of), float(mn), float(mx), r,
                                _shift(int(st), int(ln), o)) for n, st, ln, o, sg, sc, of, mn, mx, r in m["signals"])
            messages.append(Message(m["name"], int(m["id"]), int(m["dlc"]), float(m["cycle_ms"]), m["sender"], sigs))
        return Bus(obj["source"], obj["sha256"], int(obj["bitrate"]), tuple(messages))
    except BusError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise BusError(f"{source}: malformed bus description ({type(e).__name__}: {e})") from None


def load_bus(path: str | os.PathLike | None = None) -> Bus:
    path = Path(path) if path else DEFAULT_BUS
    try:
        obj = json.loads(path.read_text())
    except OSError as e:
        raise BusError(f"{path}: cannot read ({e.strerror or e})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BusError(f"{path}: not JSON ({e})") from None
    if not isinstance(obj, dict):
        raise BusError(f"{path}: not an ecufl bus description")
    return from_json(obj, str(path))


def default_bus() -> Bus:
    return load_bus(DEFAULT_BUS)


def write_bus(obj: dict, out: str | os.PathLike) -> None:
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    text = "{" + ",\n".join(f"{json.dumps(k)}: {json.dumps(v, separators=(',', ':'))}" for k, v in obj.items()
                             if k != "messages")
    text += ',\n"messages": [\n' + ",\n".join(json.dumps(m, separators=(",", ":")) for m in obj["messages"]) + "\n]}\n"
    tmp.write_text(text)
    os.replace(tmp, out)
