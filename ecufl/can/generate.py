"""Normal CAN traffic of one vehicle, from a bus description and a seed, vectorised with numpy.

A vehicle (``Vehicle(bus, seed)``) fixes what stays the same on every drive: each ECU's clock
drift (ppm, normal with sd 40) and jitter (sd 20-200 us), each message's phase, the gear ratios
(+-10%), idle speed, its sensors' speed bias, and one constant signal in ten set to its own value
(variant coding). What every non-drive signal does is the model's, the same in all vehicles:
constant, a flag following speed, RPM or pedal, or a level following one of them. A drive (``trace``) draws a drive cycle
at 100 Hz: stops, accelerations (0.8-2.5 m/s^2) to seeded target speeds, cruising with slow
fluctuations, decelerations; pedal follows speed and acceleration, the gear follows speed, RPM is
speed times the gear ratio (idle when stopped). Frame k of a message sent by ECU e leaves at
``phase + k * period * (1 + drift_e) + jitter``; its counters are ``c0 + k``, its drive signals the
drive cycle at that instant (plus sensor noise), its checksums Ford's rule (bus.py). No
arbitration: frames that would overlap on the wire are not delayed (bus load is 2/3 of 500 kbit/s).

Everything is drawn from numpy's PCG64 seeded with ``SeedSequence([seed, ...])``: the same
(bus, seed, trace, seconds) gives the same frames bit for bit, on any machine with numpy >= 1.17.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import numpy as np

from . import codec
from .bus import Bus, Message, Signal
from .codec import Frames

HZ = 100  # drive-cycle resolution
DRIFT_PPM_SD = 40.0


def _rng(*key: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(k) for k in key])))


@dataclass
class Drive:
    speed: np.ndarray  # km/h at HZ
    rpm: np.ndarray
    pedal: np.ndarray  # %
    gear: np.ndarray  # 1..6

    def at(self, t: np.ndarray) -> np.ndarray:
        return np.minimum((t * HZ).astype(np.int64), len(self.speed) - 1)

    def var(self, name: str) -> np.ndarray:
        return {"speed": self.speed, "rpm": self.rpm, "pedal": self.pedal, "gear": self.gear.astype(np.float64)}[name]


_NORM = {"speed": 200.0, "rpm": 7000.0, "pedal": 100.0}


class Vehicle:
    """What stays the same across the drives of one vehicle (see the module doc)."""

    def __init__(self, bus: Bus, seed: int) -> None:
        self.bus, self.seed = bus, int(seed)
        rng = _rng(self.seed, 0xEC0)
        senders = sorted({m.sender for m in bus.messages})
        self.drift = {e: rng.normal(0.0, DRIFT_PPM_SD) * 1e-6 for e in senders}
        self.jitter = {e: rng.uniform(20e-6, 200e-6) for e in senders}
        self.phase = {m.id: rng.uniform(0.0, m.cycle_ms / 1000.0) for m in bus.messages}
        self.counter0 = {m.id: int(rng.integers(0, 256)) for m in bus.messages}
        self.upshift = np.array([0.0, 18, 32, 48, 66, 88]) * rng.uniform(0.9, 1.1)
        self.kmh_per_krpm = np.array([8.0, 14, 21, 29, 37, 46]) * rng.uniform(0.95, 1.05)
        self.idle = rng.uniform(680, 820)
        self.speed_bias = {s.name: rng.normal(1.0, 0.004) for _, s in bus.drive_signals() if s.role == "speed"}
        # every other signal: ("const", raw) | ("flag", var, threshold) | ("level", var, gain, base).
        # What a signal does is the ECU software's, the same in every vehicle of the model (drawn
        # from a fixed seed); one constant in ten is this vehicle's own (variant coding).
        model = _rng(0x40DE1)
        self.behaviour: dict[tuple[int, str], tuple] = {}
        for m in bus.messages:
            for s in m.signals:
                if s.role:
                    continue
                lo, hi = s.raw_range()
                u = model.random()
                var = ("speed", "rpm", "pedal")[int(model.integers(0, 3))]
                if s.length <= 2 and u < 0.3:
                    self.behaviour[(m.id, s.name)] = ("flag", var, model.uniform(0.1, 0.6), lo, min(hi, lo + 1))
                elif s.length >= 6 and u < 0.2:
                    self.behaviour[(m.id, s.name)] = ("level", var, model.uniform(0.3, 1.0), model.uniform(0.0, 0.3), lo, hi)
                else:
                    value = int(model.integers(lo, hi + 1))
                    own = int(rng.integers(lo, hi + 1))
                    self.behaviour[(m.id, s.name)] = ("const", own if rng.random() < 0.1 else value)

    # -- the drive ------------------------------------------------------------------------------
    def drive(self, seconds: float, trace: int = 0) -> Drive:
        rng = _rng(self.seed, trace, 0xD71E)
        times, speeds = [0.0], [0.0]
        t, v = 0.0, 0.0
        while t < seconds + 10:
            t += rng.uniform(3, 25) if v == 0 else rng.uniform(10, 90)
            times.append(t), speeds.append(v)
            target = 0.0 if (v > 0 and rng.random() < 0.25) else float(rng.choice([rng.uniform(20, 60), rng.uniform(60, 130)]))
            accel = rng.uniform(0.8, 2.5) if target > v else rng.uniform(1.0, 3.0)
            t += max(abs(target - v) / 3.6 / accel, 0.5)
            times.append(t), speeds.append(target)
            v = target
        n = int(math.ceil(seconds * HZ)) + 1
        grid = np.arange(n) / HZ
        base = _smooth(np.interp(grid, times, speeds), HZ)  # 1 s moving average: continuous acceleration
        accel = np.gradient(base) * HZ / 3.6  # m/s^2 of the driver's intent
        wobble = _smooth(_smooth(rng.normal(0.0, 1.0, n), 5 * HZ), 5 * HZ) * 60.0  # slow, about +-1 km/h
        speed = np.maximum(base + wobble * np.clip(base / 20.0, 0, 1), 0.0)
        pedal = 4.0 + 0.18 * speed + 9.0 * np.maximum(accel, 0) + rng.normal(0, 0.3, n)
        pedal = np.where((accel < -0.3) | (speed < 0.5), 0.0, np.clip(pedal, 0, 100))
        gear = np.searchsorted(self.upshift, speed, side="right").clip(1, 6)
        ratio = self.kmh_per_krpm[gear - 1]
        rpm = np.maximum(self.idle, speed / ratio * 1000.0) * (1 + 0.04 * pedal / 100) + rng.normal(0, 8, n)
        return Drive(speed, rpm, pedal, gear)

    # -- frames -----------------------------------------------------------------------------------
    def frame_times(self, msg: Message, seconds: float, rng: np.random.Generator) -> np.ndarray:
        period = msg.cycle_ms / 1000.0 * (1.0 + self.drift[msg.sender])
        phase = self.phase[msg.id]
        k = int(max(0, math.ceil((seconds - phase) / period)))
        t = phase + np.arange(k) * period
        sd = self.jitter[msg.sender]
        t += np.clip(rng.normal(0.0, sd, k), -3 * sd, 3 * sd)
        return t

    def signal_values(self, msg: Message, sig: Signal, drive: Drive, idx: np.ndarray, k: np.ndarray,
                      rng: np.random.Generator) -> np.ndarray | int:
        """Raw values of ``sig`` for frames number ``k`` at drive-cycle samples ``idx``."""
        if sig.role == "counter":
            return (self.counter0[msg.id] + k) & sig.mask
        if sig.role in ("speed", "rpm", "pedal"):
            x = drive.var(sig.role)[idx]
            if sig.role == "speed":
                x = x * self.speed_bias[sig.name] + rng.normal(0, 0.03, len(idx))
            return codec.raw_of(x, sig)
        if sig.role == "gear":
            return np.clip(drive.gear[idx], *sig.raw_range())
        b = self.behaviour[(msg.id, sig.name)]
        if b[0] == "const":
            return b[1]
        x = drive.var(b[1])[idx] / _NORM[b[1]]
        if b[0] == "flag":
            return np.where(x > b[2], b[4], b[3])
        _, _, gain, base, lo, hi = b
        return (lo + np.rint((hi - lo) * np.clip(gain * x + base, 0, 1))).astype(np.int64)

    def message_frames(self, msg: Message, drive: Drive, seconds: float, rng: np.random.Generator) -> Frames:
        t = self.frame_times(msg, seconds, rng)
        keep = (t >= 0) & (t < seconds)
        k = np.flatnonzero(keep)
        t = t[keep]
        idx = drive.at(t)
        word = np.zeros(len(t), dtype=np.uint64)
        const = np.uint64(0)
        for s in msg.signals:
            if s.role == "checksum":
                continue
            v = self.signal_values(msg, s, drive, idx, k, rng)
            if np.ndim(v) == 0:
                const |= field_scalar(v, s)
            else:
                word |= codec.field_bits(v, s)
        word |= const
        word = codec.fix_checksums(word, msg)
        n = len(t)
        return Frames(t, np.full(n, msg.id, np.uint32), np.full(n, msg.dlc, np.uint8), word, np.zeros(n, np.uint8))

    def traffic(self, seconds: float, trace: int = 0, drive: Drive | None = None) -> Frames:
        """Normal traffic of ``seconds`` of drive ``trace``, sorted by time."""
        drive = drive or self.drive(seconds, trace)
        rng = _rng(self.seed, trace, 0xF4A3E5)
        parts = [self.message_frames(m, drive, seconds, rng) for m in self.bus.messages]
        # one argsort of the times and three gathers (the cost of an hour is mostly these)
        t = np.concatenate([p.t for p in parts])
        order = np.argsort(t, kind="stable")
        t = t[order]
        ids = np.concatenate([p.id for p in parts])[order]
        word = np.concatenate([p.word for p in parts])[order]
        dlc_of = np.zeros(2048, np.uint8)
        for m in self.bus.messages:
            dlc_of[m.id] = m.dlc
        out = Frames(t, ids, dlc_of[ids], word, np.zeros(len(t), np.uint8))
        out.meta.update(seed=self.seed, trace=trace, seconds=seconds, bus=self.bus.source)
        return out


def field_scalar(value: int, sig: Signal) -> np.uint64:
    return np.uint64(codec.field_bits(np.array([value]), sig)[0])


def _smooth(x: np.ndarray, width: int) -> np.ndarray:
    """Centred moving average of ``width`` samples (edges: the shorter window)."""
    if width <= 1:
        return x
    c = np.concatenate([[0.0], np.cumsum(x)])
    n = len(x)
    i = np.arange(n)
    lo = np.maximum(i - width // 2, 0)
    hi = np.minimum(i + (width - width // 2), n)
    return (c[hi] - c[lo]) / (hi - lo)


def frame_bits(dlc: np.ndarray, extended: np.ndarray | None = None) -> np.ndarray:
    """Bits on the wire of a data frame without stuff bits: 47 + 8 x DLC (11-bit ID: SOF, ID, RTR,
    IDE, r0, DLC, data, CRC 15 + delimiter, ACK slot + delimiter, EOF 7, intermission 3); 29-bit IDs
    add 20 (SRR, IDE, 18 ID bits)."""
    bits = 47 + 8 * dlc.astype(np.int64)
    return bits + 20 * extended.astype(np.int64) if extended is not None else bits


def arbitrate(frames: Frames, bitrate: int = 500_000) -> Frames:
    """The frames as one CAN bus sends them: a frame waits while the bus is busy; when it frees,
    the pending frame with the lowest ID wins (non-preemptive); a frame still pending when its ECU
    queues the next frame of the same ID is overwritten (one mailbox per ID; the newer payload
    goes out, counted in ``meta["overwritten"]``). Stuff bits are not counted. Times become the
    start of transmission. A Python loop over the frames (0.2-0.5 s per
    minute of the Ford bus here)."""
    n = len(frames)
    dur = frame_bits(frames.dlc, frames.id >= 0x800) / float(bitrate)
    ready, ids = frames.t, frames.id.astype(np.int64)
    start = np.empty(n)
    keep = np.ones(n, bool)
    pending: list[tuple[int, int]] = []  # (id, index) heap
    mailbox: dict[int, int] = {}  # id -> index of its pending frame
    free = -np.inf
    i = 0
    overwritten = 0
    while i < n or pending:
        if not pending and ready[i] >= free:  # bus idle
            if i + 1 < n and ready[i + 1] <= ready[i]:
                free = ready[i]  # several frames ready at once contend: arbitration below
            else:
                start[i] = ready[i]
                free = ready[i] + dur[i]
                i += 1
                continue
        while i < n and ready[i] <= free:  # everything queued while the bus was busy
            j = mailbox.get(ids[i])
            if j is not None:  # same ID still pending: the newer frame overwrites it
                keep[j] = False
                overwritten += 1
            mailbox[ids[i]] = i
            heapq.heappush(pending, (int(ids[i]), i))
            i += 1
        while pending:
            can_id, j = heapq.heappop(pending)
            if keep[j] and mailbox.get(can_id) == j:
                break
        else:
            continue
        del mailbox[can_id]
        start[j] = max(free, ready[j])
        free = start[j] + dur[j]
    out = frames.take(np.flatnonzero(keep))
    out.t = start[keep]
    delay = out.t - ready[keep]
    out = out.take(np.argsort(out.t, kind="stable"))
    out.meta.update(arbitration=bitrate, overwritten=overwritten, delayed=int(np.sum(delay > 0)),
                    max_delay=float(delay.max()) if len(delay) else 0.0)
    return out
