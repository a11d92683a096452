"""A DBC into ecufl's bus description (``ecufl can bus``): the one module that needs cantools and
opendbc (the ``can`` extra). Everything else, the generator, features, detectors and the fleet's
vehicles, reads the compact JSON of ``ecufl.can.bus`` and never imports them, so an ECU (or a
Yocto image) needs neither."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

try:  # only the conversion needs them (`pip install 'ecufl[can]'`)
    import cantools
except ImportError:  # pragma: no cover - depends on the extra
    cantools = None
try:
    import opendbc
except ImportError:  # pragma: no cover - depends on the extra
    opendbc = None

from .bus import FORD_DBC, FORMAT, BusError, role_of


def opendbc_path(name: str = FORD_DBC) -> Path:
    """The DBC shipped by the opendbc package (the `can` extra)."""
    if opendbc is None:
        raise BusError(f"{name}: opendbc is not installed (pip install 'ecufl[can]'), or pass --dbc FILE")
    path = Path(opendbc.__file__).parent / "dbc" / name
    if not path.is_file():
        raise BusError(f"{name}: not found in opendbc {getattr(opendbc, '__version__', '')} at {path}")
    return path


def load_dbc(path: str | os.PathLike):
    """cantools' database of ``path`` (strict=False: opendbc's DBCs overlap signals), or BusError."""
    if not Path(path).is_file():
        raise BusError(f"{path}: cannot read (no such file)")
    if cantools is None:
        raise BusError("cantools is not installed: pip install 'ecufl[can]'")
    try:
        return cantools.database.load_file(str(path), strict=False)
    except OSError as e:
        raise BusError(f"{path}: cannot read ({e.strerror or e})") from None
    except Exception as e:  # cantools raises its own ParseError / UnsupportedDatabaseFormatError
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BusError(f"{path}: not a DBC cantools can parse ({first})") from None


def convert(dbc_path: str | os.PathLike, bitrate: int = 500_000, assume_period_ms: float | None = None) -> dict:
    """The bus description (JSON object) of a DBC: its periodic 11-bit messages (multiplexed and
    extended-ID messages are left out). Most DBCs carry no cycle times (of opendbc 0.3.1's, only
    ford_lincoln_base_pt and the FORD_CADS radar DBCs do): ``assume_period_ms`` gives every message
    without one that period (and ``"assumed": true``)."""
    dbc_path = Path(dbc_path)
    db = load_dbc(dbc_path)
    messages = []
    for m in sorted(db.messages, key=lambda m: m.frame_id):
        cycle = m.cycle_time or assume_period_ms
        if not cycle or m.is_extended_frame or m.is_multiplexed() or m.length > 8 or m.frame_id == 0:
            continue
        sigs = []
        for s in m.signals:
            if s.is_float:
                continue
            sigs.append([s.name, s.start, s.length, "be" if s.byte_order == "big_endian" else "le", bool(s.is_signed),
                         float(s.scale), float(s.offset),
                         float(s.minimum if s.minimum is not None else 0.0),
                         float(s.maximum if s.maximum is not None else 0.0), role_of(s.name)])
        msg = {"name": m.name, "id": m.frame_id, "dlc": m.length, "cycle_ms": float(cycle),
               "sender": m.senders[0] if m.senders else "", "signals": sigs}
        if not m.cycle_time:
            msg["assumed"] = True
        messages.append(msg)
    if not messages:
        raise BusError(f"{dbc_path}: no periodic messages (GenMsgCycleTime) to generate traffic from; "
                       "--assume-period MS gives the others one")
    return {"format": FORMAT, "source": dbc_path.name, "sha256": hashlib.sha256(dbc_path.read_bytes()).hexdigest(),
            "bitrate": bitrate, "messages": messages}
