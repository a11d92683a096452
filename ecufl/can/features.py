"""Fixed windows of a trace as feature vectors in [0, 1]: what the detectors see.

A trace is cut into windows of ``window`` seconds (default 0.5 s, about 1,375 frames of the Ford
bus). Every feature is scaled to [0, 1] (clipped), so a sigmoid autoencoder can reproduce it.
"Monitored IDs" are the bus's messages with a period of at most 100 ms (77 of the Ford bus's 150:
at least 5 frames a window); "drive signals" are the bus's speed, RPM, pedal and gear signals
(bus.py). The features, in order (``Featurizer.names``):

Bus (3):
- ``load``: frames in the window / frames the bus description expects, / 2;
- ``unknown``: fraction of frames whose ID is not in the bus description;
- ``below``: fraction of frames with an ID below the bus's lowest (0x000 wins every arbitration).

Per monitored ID (4 each):
- ``count:ID``: its frames / its expected frames (window / period), / 2; 0 when suspended, > 0.5
  when someone else sends it too;
- ``gap:ID``: its smallest inter-arrival time / its period, / 1.5 (normal ~0.66, injected ~0;
  1 when the window has fewer than two of its frames);
- ``flip:ID``: mean number of payload bits that change from one of its frames to the next,
  counters and checksums left out, / 8 (a constant or frozen payload gives 0);
- ``ones:ID``: mean fraction of its payload bits (counters and checksums left out) that are 1:
  a field set to another value moves it.

Per drive signal (3 each):
- ``mean:SIGNAL``: its mean physical value in the window / a full scale (speed 200 km/h, RPM
  7,000, pedal 100%, gear 8);
- ``step:SIGNAL``: largest change between consecutive frames / a plausible step (5 km/h, 500 RPM,
  20%, 1 gear);
- ``still:SIGNAL``: fraction of consecutive frames with the same value (a frozen signal gives 1).

Consistency (4):
- ``dv:eng-brk``, ``dv:eng-adas``: |mean engine speed - mean ABS (camera) speed| / 10 km/h;
- ``drpm:actl-dsply``: |mean RPM - mean displayed RPM| / 500;
- ``kmh-per-krpm``: mean speed / mean RPM x 1000 / 50 (the gear ratio the two imply).

Labels: a window's label is the family of the attack interval it overlaps (``codec.LABELS``
index; 0 normal); ``instances`` keeps each attack with its windows, for detection latency. A
recording with per-frame labels but no attacks.json (an HCRL CSV from elsewhere) gets its
intervals from runs of flagged frames (family "injected").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import codec
from .bus import Bus
from .codec import INJECTED, LABELS, Frames

SCALE = {"speed": (200.0, 5.0), "rpm": (7000.0, 500.0), "pedal": (100.0, 20.0), "gear": (8.0, 1.0)}
PAIRS = (("dv:eng-brk", "Veh_V_ActlEng", "Veh_V_ActlBrk", 10.0), ("dv:eng-adas", "Veh_V_ActlEng", "Veh_V_ActlAdas", 10.0),
         ("drpm:actl-dsply", "EngAout_N_Actl", "EngAout_N_Dsply", 500.0))


@dataclass
class Windows:
    x: np.ndarray  # (W, F) float32 in [0, 1]
    label: np.ndarray  # (W,) uint8 family index
    start: np.ndarray  # (W,) window start times (s)
    window: float
    instances: list[dict]  # {"family", "t0", "t1", "windows": [indices]}


class Featurizer:
    def __init__(self, bus: Bus, window: float = 0.5) -> None:
        if not 0.05 <= window <= 60:
            raise ValueError(f"--window {window}: must be between 0.05 and 60 seconds")
        self.bus, self.window = bus, float(window)
        self.mon = [m for m in bus.messages if m.cycle_ms <= 100]
        self.slot = np.full(2048, -1, np.int64)
        for k, m in enumerate(self.mon):
            self.slot[m.id] = k
        self.known = np.zeros(2048, bool)
        self.known[bus.ids] = True
        self.lowest = int(bus.ids.min())
        self.period = np.array([m.cycle_ms / 1000.0 for m in self.mon])
        self.payload_mask = np.array([np.uint64(0xFFFFFFFFFFFFFFFF) & ~np.bitwise_or.reduce(
            [codec.field_bits(np.int64(-1), s) for s in m.signals if s.role in ("counter", "checksum")] or [np.uint64(0)])
            for m in self.mon], dtype=np.uint64)
        self.drive = [(m, s) for m, s in bus.drive_signals()]
        self.by_name = {s.name: (m, s) for m, s in self.drive}
        self.pairs = [(n, a, b, sc) for n, a, b, sc in PAIRS if a in self.by_name and b in self.by_name]
        names = ["load", "unknown", "below"]
        for kind in ("count", "gap", "flip", "ones"):
            names += [f"{kind}:{m.id:03X}" for m in self.mon]
        for kind in ("mean", "step", "still"):
            names += [f"{kind}:{s.name}" for _, s in self.drive]
        names += [p[0] for p in self.pairs]
        self.has_ratio = any(s.role == "speed" for _, s in self.drive) and any(s.role == "rpm" for _, s in self.drive)
        if self.has_ratio:
            names.append("kmh-per-krpm")
        self.names = names

    @property
    def size(self) -> int:
        return len(self.names)

    def __call__(self, frames: Frames, seconds: float | None = None) -> Windows:
        W = self.window
        seconds = float(seconds if seconds is not None else frames.meta.get("seconds", frames.t[-1] if len(frames) else W))
        nw = max(1, int(np.floor(seconds / W + 1e-9)))
        inside = frames.t < nw * W
        t, ids, word = frames.t[inside], frames.id[inside].astype(np.int64), frames.word[inside]
        w = np.clip((t / W).astype(np.int64), 0, nw - 1)
        cols = []
        total = np.bincount(w, minlength=nw).astype(np.float64)
        safe = np.maximum(total, 1)
        known = np.zeros(len(ids), bool)
        small = ids < 2048
        known[small] = self.known[ids[small]]
        cols.append(np.clip(total / (self.bus.frames_per_second() * W) / 2, 0, 1))
        cols.append(np.bincount(w, weights=~known, minlength=nw) / safe)
        cols.append(np.bincount(w, weights=ids < self.lowest, minlength=nw) / safe)
        # per monitored ID
        M = len(self.mon)
        k = np.full(len(ids), -1, np.int64)
        k[small] = self.slot[ids[small]]
        sel = np.flatnonzero(k >= 0)
        sel = sel[np.argsort(k[sel], kind="stable")]  # by ID, in time order within an ID
        ks, ts, ws, words = k[sel], t[sel], w[sel], word[sel]
        count = np.bincount(ws * M + ks, minlength=nw * M).reshape(nw, M)
        expected = W / self.period
        cols += list(np.clip(count / expected / 2, 0, 1).T)
        same = (ks[1:] == ks[:-1]) & (ws[1:] == ws[:-1])
        pk, pw = ks[1:][same], ws[1:][same]
        gap = np.full(nw * M, np.inf)
        np.minimum.at(gap, pw * M + pk, (ts[1:] - ts[:-1])[same])
        gap = gap.reshape(nw, M) / self.period
        cols += list(np.where(np.isfinite(gap), np.clip(gap / 1.5, 0, 1), 1.0).T)
        flips = np.bitwise_count((words[1:] ^ words[:-1])[same] & self.payload_mask[pk]).astype(np.float64)
        fsum = np.bincount(pw * M + pk, weights=flips, minlength=nw * M)
        fn = np.bincount(pw * M + pk, minlength=nw * M)
        cols += list(np.clip(fsum / np.maximum(fn, 1) / 8, 0, 1).reshape(nw, M).T)
        nbits = np.maximum(np.bitwise_count(self.payload_mask).astype(np.float64), 1)
        ones = np.bitwise_count(words & self.payload_mask[ks]) / nbits[ks]
        osum = np.bincount(ws * M + ks, weights=ones, minlength=nw * M)
        cols += list((osum / np.maximum(count.reshape(-1), 1)).reshape(nw, M).T)
        # drive signals
        means, steps, stills = {}, [], []
        for m, s in self.drive:
            full, step = SCALE[s.role]
            j = np.flatnonzero(ids == m.id)
            v, wj = codec.physical(word[j], s), w[j]
            n = np.bincount(wj, minlength=nw)
            mean = np.bincount(wj, weights=v, minlength=nw) / np.maximum(n, 1)
            means[s.name] = np.where(n > 0, mean, np.nan)
            d = np.abs(np.diff(v))
            sw = (wj[1:] == wj[:-1])
            mx = np.zeros(nw)
            np.maximum.at(mx, wj[1:][sw], d[sw])
            st = np.bincount(wj[1:][sw], weights=(d[sw] == 0), minlength=nw) / np.maximum(
                np.bincount(wj[1:][sw], minlength=nw), 1)
            steps.append(np.clip(mx / step, 0, 1))
            stills.append(st)
        cols += [np.clip(np.nan_to_num(means[s.name]) / SCALE[s.role][0], 0, 1) for _, s in self.drive]
        cols += steps + stills
        for _, a, b, sc in self.pairs:
            cols.append(np.clip(np.nan_to_num(np.abs(means[a] - means[b]), nan=0.0) / sc, 0, 1))
        if self.has_ratio:
            sp = next(means[s.name] for _, s in self.drive if s.role == "speed")
            rp = next(means[s.name] for _, s in self.drive if s.role == "rpm")
            cols.append(np.clip(np.nan_to_num(sp / np.maximum(rp, 1) * 1000 / 50, nan=0.0), 0, 1))
        x = np.stack(cols, axis=1).astype(np.float32)
        start = np.arange(nw) * W
        label = np.zeros(nw, np.uint8)
        instances = []
        code = {f: i for i, f in enumerate(LABELS)}
        attacks = frames.meta.get("attacks")
        if attacks is None and np.any(frames.label[inside] > 0):
            attacks = _intervals(t, frames.label[inside], W)
        for a in attacks or []:
            lo = int(np.floor(a["t0"] / W))
            hi = min(nw, int(np.ceil(a["t1"] / W)))
            if lo >= nw:
                continue
            label[lo:hi] = code.get(a["family"], INJECTED)
            instances.append({"family": a["family"], "t0": a["t0"], "t1": a["t1"], "windows": list(range(lo, hi))})
        return Windows(x, label, start, W, instances)


def _intervals(t: np.ndarray, label: np.ndarray, window: float) -> list[dict]:
    """Attack intervals of a recording that has per-frame labels only (an HCRL CSV without
    attacks.json): runs of labelled frames, a gap of more than two windows ending a run."""
    idx = np.flatnonzero(label > 0)
    cuts = np.flatnonzero(np.diff(t[idx]) > 2 * window) + 1
    out = []
    for run in np.split(idx, cuts):
        fam = LABELS[int(np.bincount(label[run]).argmax())]
        out.append({"family": fam, "t0": float(t[run[0]]), "t1": float(t[run[-1]] + 1e-6), "target": -1, "signal": ""})
    return out
