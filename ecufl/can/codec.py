"""Frames as arrays, and signals packed into / read from them, vectorised over frames.

A trace is a ``Frames``: per frame its time (s from the start of the trace), 11-bit ID, DLC,
payload as one 64-bit big-endian word (byte 0 in the top byte, padded with zeros to 8 bytes) and
a label (0 = normal, else the index of the attack family in ``FAMILIES``). A signal is a
contiguous field of the big-endian word (Motorola) or of the byte-swapped, little-endian word
(Intel): ``get``/``put`` are a shift and a mask over all frames at once, the same bits cantools
packs (tests/test_can.py holds them equal to cantools' encoder).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .bus import Message, Signal

FAMILIES = ("normal", "dos", "fuzzing", "spoofing", "masquerade", "plateau", "drift", "replay", "suspension",
            "inconsistency")
LABELS = (*FAMILIES, "injected")  # "injected": a flagged frame (HCRL T) whose family the file does not say
INJECTED = len(FAMILIES)
EASY = ("dos", "fuzzing", "spoofing")
STEALTHY = ("masquerade", "plateau", "drift", "replay", "suspension", "inconsistency")


@dataclass
class Frames:
    t: np.ndarray  # float64 seconds
    id: np.ndarray  # uint32
    dlc: np.ndarray  # uint8
    word: np.ndarray  # uint64, big-endian payload word
    label: np.ndarray  # uint8, index into FAMILIES
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.t)

    @property
    def data(self) -> np.ndarray:
        """Payload bytes (N, 8); bytes past the DLC are zero."""
        return self.word.astype(">u8").view(np.uint8).reshape(-1, 8)

    @classmethod
    def from_bytes(cls, t, can_id, dlc, data, label=None) -> "Frames":
        data = np.ascontiguousarray(np.asarray(data, dtype=np.uint8).reshape(-1, 8))
        word = data.view(">u8").reshape(-1).astype(np.uint64)
        n = len(word)
        return cls(np.asarray(t, dtype=np.float64), np.asarray(can_id, dtype=np.uint32), np.asarray(dlc, dtype=np.uint8),
                   word, np.zeros(n, np.uint8) if label is None else np.asarray(label, dtype=np.uint8))

    @classmethod
    def concat(cls, parts: list["Frames"], sort: bool = True) -> "Frames":
        t = np.concatenate([p.t for p in parts])
        out = cls(t, np.concatenate([p.id for p in parts]), np.concatenate([p.dlc for p in parts]),
                  np.concatenate([p.word for p in parts]), np.concatenate([p.label for p in parts]),
                  dict(parts[0].meta) if parts else {})
        return out.sorted() if sort else out

    def sorted(self) -> "Frames":
        order = np.argsort(self.t, kind="stable")
        return self.take(order)

    def take(self, idx) -> "Frames":
        return Frames(self.t[idx], self.id[idx], self.dlc[idx], self.word[idx], self.label[idx], dict(self.meta))


def _bswap(word: np.ndarray) -> np.ndarray:
    return word.byteswap()


def get(word: np.ndarray, sig: Signal) -> np.ndarray:
    """The field's unsigned value (int64) in every word."""
    w = word if sig.order == "be" else _bswap(word)
    return ((w >> np.uint64(sig.shift)) & np.uint64(sig.mask)).view(np.int64)  # a 64-bit field wraps


def get_raw(word: np.ndarray, sig: Signal) -> np.ndarray:
    """The signal's raw value (two's complement for signed signals)."""
    v = get(word, sig)
    if sig.signed:
        top = 1 << (sig.length - 1)
        v = np.where(v >= top, v - (1 << sig.length), v)
    return v


def physical(word: np.ndarray, sig: Signal) -> np.ndarray:
    return get_raw(word, sig) * sig.scale + sig.offset


def field_bits(value, sig: Signal) -> np.ndarray:
    """``value`` (raw, possibly negative) as the field's bits, in the big-endian word."""
    f = (np.asarray(value, dtype=np.int64).view(np.uint64) & np.uint64(sig.mask)) << np.uint64(sig.shift)
    return f if sig.order == "be" else _bswap(f)


def put(word: np.ndarray, sig: Signal, value) -> np.ndarray:
    """``word`` with the field replaced by ``value`` (raw); a new array."""
    clear = ~field_bits(np.int64(-1), sig)
    return (word & clear) | field_bits(value, sig)


def raw_of(phys, sig: Signal) -> np.ndarray:
    """Physical values to raw ones: rounded, and clipped to the DBC's range."""
    lo, hi = sig.raw_range()
    return np.clip(np.rint((np.asarray(phys, dtype=np.float64) - sig.offset) / sig.scale), lo, hi).astype(np.int64)


def checksum_of(word: np.ndarray, msg: Message, cs: Signal) -> np.ndarray:
    """Ford's rule (bus.py): 0xFF - ((sum over the other fields f of f + (f >> 8)) & 0xFF)."""
    total = np.zeros(len(word), dtype=np.int64)
    for s in msg.signals:
        if s.role != "checksum":
            f = get(word, s)
            total += f + (f >> 8)
    return 0xFF - (total & 0xFF)


def fix_checksums(word: np.ndarray, msg: Message) -> np.ndarray:
    for s in msg.signals:
        if s.role == "checksum":
            word = put(word, s, checksum_of(word, msg, s))
    return word
