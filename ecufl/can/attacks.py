"""Attacks on a trace, labelled per frame (``Frames.label``) and per interval (``Attack``).

Easy (HCRL Car-Hacking style; 3-5 s each):
- ``dos``: ID 0x000, eight zero bytes, every 0.3 ms (wins every arbitration);
- ``fuzzing``: random 11-bit ID and random payload every 0.5 ms;
- ``spoofing``: one drive message (RPM 0x204, speed 0x202 or gear 0x176) every 1 ms with one
  constant payload (the legitimate frame at the start, its drive signal set to an attacker value).

Stealthy (ROAD / SynCAN style; 10-20 s each): the legitimate frames of one ID are *replaced* at
their legitimate times, with legitimate counters and valid checksums (recomputed), so timing,
IDs and frame counts are those of normal traffic:
- ``masquerade``: one non-drive signal of a message with a period <= 100 ms set to another valid
  value (the field's maximum, or its minimum if it is at the maximum);
- ``plateau``: a drive signal (speed, RPM or pedal) frozen at its value at the start;
- ``drift``: a drive signal plus a ramp from 0 to +25% of its range over the attack;
- ``replay``: every field but counters and checksums copied from the same message 30-120 s earlier
  (half the attack's start time to 1 s before it, for an attack within the first 2 minutes);
- ``suspension``: the frames of one ID (period <= 100 ms) are not sent (no frame to label: the
  interval is the label);
- ``inconsistency``: the engine's speed (Veh_V_ActlEng) scaled by 0.6-0.8: smooth and plausible
  alone, inconsistent with RPM, gear and the ABS's and camera's speeds.

A frame's label is the index of its family in ``codec.FAMILIES`` (0 = normal); a window's label
is the family of the attack interval it overlaps (features.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from . import codec
from .bus import Bus
from .codec import EASY, FAMILIES, STEALTHY, Frames
from .generate import Vehicle, arbitrate

DOS_GAP, FUZZ_GAP, SPOOF_GAP = 0.3e-3, 0.5e-3, 1e-3


@dataclass
class Attack:
    family: str
    t0: float
    t1: float
    target: int = -1  # CAN ID attacked (-1: none)
    signal: str = ""

    def to_json(self) -> dict:
        return asdict(self)


def parse_families(spec: str) -> tuple[str, ...]:
    """``all``, ``none``, ``easy``, ``stealthy`` or a comma-separated list of families."""
    spec = spec.strip().lower()
    if spec in ("", "none"):
        return ()
    if spec == "all":
        return EASY + STEALTHY
    if spec == "easy":
        return EASY
    if spec == "stealthy":
        return STEALTHY
    out = tuple(f.strip() for f in spec.split(",") if f.strip())
    bad = [f for f in out if f not in FAMILIES[1:]]
    if bad:
        raise ValueError(f"unknown attack family {bad[0]!r}: choose from all, none, easy, stealthy, "
                         + ", ".join(FAMILIES[1:]))
    return out


def plan(bus: Bus, seconds: float, families: tuple[str, ...], rng: np.random.Generator) -> list[Attack]:
    """Attack intervals in random family order, repeated until the trace ends, with normal gaps:
    the first after 20 s, then 15-40 s between two (for traces shorter than 200 s: a tenth of the
    trace first, gaps of a twentieth to an eighth)."""
    if not families:
        return []
    warmup, gap = min(20.0, seconds / 10), (min(15.0, seconds / 20), min(40.0, seconds / 8))
    fast = [m for m in bus.messages if m.cycle_ms <= 100]
    drive = [(m, s) for m, s in bus.drive_signals() if s.role in ("speed", "rpm", "pedal") and m.cycle_ms <= 20]
    spoof_ids = [i for i in (0x204, 0x202, 0x176) if any(m.id == i for m in bus.messages)] or [fast[0].id]
    out: list[Attack] = []
    t = warmup
    while True:
        for fam in rng.permutation(families):
            fam = str(fam)
            dur = rng.uniform(3, 5) if fam in EASY else rng.uniform(10, 20)
            dur = min(dur, max(1.0, seconds / 10))
            if t + dur > seconds - 2:
                return out
            a = Attack(fam, round(float(t), 6), round(float(t + dur), 6))
            if fam == "spoofing":
                a.target = int(rng.choice(spoof_ids))
            elif fam == "masquerade":
                cands = [(m, s) for m in fast for s in m.signals if not s.role and s.length >= 4]
                m, s = cands[int(rng.integers(len(cands)))]
                a.target, a.signal = m.id, s.name
            elif fam in ("plateau", "drift"):
                m, s = drive[int(rng.integers(len(drive)))]
                a.target, a.signal = m.id, s.name
            elif fam in ("replay", "suspension"):
                m = fast[int(rng.integers(len(fast)))]
                a.target = m.id
            elif fam == "inconsistency":
                m, s = next(((m, s) for m, s in bus.drive_signals() if s.name == "Veh_V_ActlEng"), drive[0])
                a.target, a.signal = m.id, s.name
            out.append(a)
            t += dur + rng.uniform(*gap)


def apply(frames: Frames, bus: Bus, attacks: list[Attack], rng: np.random.Generator) -> Frames:
    """The trace with every attack applied and labelled (frames.meta["attacks"] lists them)."""
    injected: list[Frames] = []
    keep = np.ones(len(frames), dtype=bool)
    word, label = frames.word.copy(), frames.label.copy()
    code = {f: np.uint8(i) for i, f in enumerate(FAMILIES)}
    for a in attacks:
        lab = code[a.family]
        if a.family == "dos":
            injected.append(_inject(np.arange(a.t0, a.t1, DOS_GAP), np.zeros(1, np.uint32), np.zeros(1, np.uint64), lab))
        elif a.family == "fuzzing":
            t = np.arange(a.t0, a.t1, FUZZ_GAP)
            ids = rng.integers(0, 0x800, len(t)).astype(np.uint32)
            words = rng.integers(0, 2**63, len(t), dtype=np.int64).astype(np.uint64) * np.uint64(2) \
                + rng.integers(0, 2, len(t)).astype(np.uint64)
            injected.append(_inject(t, ids, words, lab))
        elif a.family == "spoofing":
            m = bus.by_id(a.target)
            sel = np.flatnonzero(frames.id == a.target)
            i = sel[np.searchsorted(frames.t[sel], a.t0).clip(0, len(sel) - 1)]
            w = frames.word[i:i + 1]
            for s in m.signals:
                if s.role in ("rpm", "speed", "gear"):
                    w = codec.put(w, s, s.raw_range()[1] if s.role != "speed" else 0)
            w = codec.fix_checksums(w, m)
            injected.append(_inject(np.arange(a.t0, a.t1, SPOOF_GAP), np.array([a.target], np.uint32), w, lab))
        else:
            m = bus.by_id(a.target)
            sel = np.flatnonzero((frames.id == a.target) & (frames.t >= a.t0) & (frames.t < a.t1))
            if a.family == "suspension":
                keep[sel] = False
                continue
            w = word[sel]
            if a.family == "replay":
                all_m = np.flatnonzero(frames.id == a.target)
                lag_s = rng.uniform(min(30.0, a.t0 / 2), max(min(120.0, a.t0 - 1), min(30.0, a.t0 / 2)))
                lag = max(1, int(round(lag_s / (m.cycle_ms / 1000.0))))
                pos = np.searchsorted(all_m, sel) - lag
                src = word[all_m[np.maximum(pos, 0)]]
                for s in m.signals:
                    if s.role not in ("counter", "checksum"):
                        w = codec.put(w, s, codec.get(src, s))
            else:
                s = m.signal(a.signal)
                lo, hi = s.raw_range()
                v = codec.get_raw(w, s)
                if a.family == "masquerade":
                    new = np.full(len(w), hi if v[0] != hi else lo)
                elif a.family == "plateau":
                    new = np.full(len(w), v[0] if len(v) else lo)
                elif a.family == "drift":
                    ramp = (frames.t[sel] - a.t0) / (a.t1 - a.t0)
                    new = np.clip(v + np.rint(ramp * 0.25 * (hi - lo)), lo, hi)
                else:  # inconsistency
                    new = np.rint(v * rng.uniform(0.6, 0.8)).astype(np.int64)
                w = codec.put(w, s, new)
            word[sel] = codec.fix_checksums(w, m)
            label[sel] = lab
    base = Frames(frames.t, frames.id, frames.dlc, word, label, dict(frames.meta))
    base = base.take(np.flatnonzero(keep)) if not keep.all() else base
    out = Frames.concat([base, *injected]) if injected else base
    out.meta["attacks"] = [a.to_json() for a in attacks]
    return out


def _inject(t: np.ndarray, ids: np.ndarray, words: np.ndarray, lab: np.uint8) -> Frames:
    n = len(t)
    ids = np.broadcast_to(ids, (n,)).astype(np.uint32) if len(ids) == 1 else ids
    words = np.broadcast_to(words, (n,)).astype(np.uint64) if len(words) == 1 else words
    return Frames(t.astype(np.float64), ids, np.full(n, 8, np.uint8), words, np.full(n, lab, np.uint8))


def trace(bus: Bus, seed: int, trace_no: int, seconds: float, families: tuple[str, ...],
          arbitration: bool = False) -> Frames:
    """Drive ``trace_no`` of vehicle ``seed`` (``seconds`` long) with ``families`` planned on it;
    with ``arbitration`` the result is sent through one bus (generate.arbitrate)."""
    frames = Vehicle(bus, seed).traffic(seconds, trace_no)
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), int(trace_no), 0xA77AC])))
    out = apply(frames, bus, plan(bus, seconds, families, rng), rng)
    return arbitrate(out, bus.bitrate) if arbitration else out
