"""candump ``-l`` logs and HCRL Car-Hacking CSV: written by ``ecufl can generate``, read back by
``inspect`` and ``detect``, so recorded traffic can take the generator's place.

- candump ``-l``: ``(1478198376.389427) can0 316#0521680921210069``, one frame a line (11-bit IDs as
  3 hex digits, 29-bit as 8; payload 0-8 bytes as hex). No labels in the format: ``generate``
  writes the attack intervals beside it (``attacks.json``), and a reader takes labels from there.
- HCRL CSV: ``1478198376.389427,0316,8,05,21,68,09,21,21,00,6f,R``: time, ID (hex), DLC, DLC
  payload bytes (hex), flag ``T`` (injected or modified) or ``R`` (regular); a header line
  starting with ``Timestamp`` is allowed. Flags become labels (family unknown: ``injected``,
  unless ``attacks.json`` names the interval).

A malformed line stops the reader with one line: ``FILE:LINE: what is wrong`` (``LogError``).
Times are written as ``EPOCH + t`` in whole microseconds (EPOCH = 1700000000, an arbitrary start);
readers return seconds since EPOCH when ``attacks.json`` is beside the file (``t`` of the trace),
else since the first frame.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np

from .codec import FAMILIES, INJECTED, LABELS, Frames

EPOCH_US = 1_700_000_000 * 1_000_000
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_CANDUMP = re.compile(r"^\((\d+)\.(\d{1,9})\)\s+(\S+)\s+([0-9A-Fa-f]{3}|[0-9A-Fa-f]{8})#([0-9A-Fa-f]*)\s*$")


class LogError(ValueError):
    """A log file that cannot be read; the message is one line, ``FILE:LINE: ...``."""


def label_names() -> tuple[str, ...]:
    return LABELS


# -- writing (vectorised: every line of a file has the same width when every DLC is 8) ------------
def _hex_cols(values: np.ndarray, digits: int) -> np.ndarray:
    v = values.astype(np.uint64)
    cols = [(v >> np.uint64(4 * (digits - 1 - i))) & np.uint64(15) for i in range(digits)]
    return _HEX[np.stack(cols, axis=1).astype(np.intp)]


def _dec_cols(values: np.ndarray, digits: int) -> np.ndarray:
    v = values.astype(np.int64)
    cols = [(v // 10 ** (digits - 1 - i)) % 10 for i in range(digits)]
    return (np.stack(cols, axis=1) + ord("0")).astype(np.uint8)


def _time_cols(t: np.ndarray) -> np.ndarray:
    us = EPOCH_US + np.rint(t * 1e6).astype(np.int64)
    return np.concatenate([_dec_cols(us // 1_000_000, 10), np.full((len(t), 1), ord("."), np.uint8),
                           _dec_cols(us % 1_000_000, 6)], axis=1)


def _lit(s: str, n: int) -> np.ndarray:
    return np.broadcast_to(np.frombuffer(s.encode(), dtype=np.uint8), (n, len(s)))


def write_candump(frames: Frames, path: str | os.PathLike, iface: str = "can0", chunk: int = 1_000_000) -> None:
    with open(path, "wb") as f:
        for k in range(0, len(frames), chunk):
            part = frames.take(slice(k, k + chunk))
            if (part.dlc == 8).all() and (part.id < 0x800).all():
                n = len(part)
                rows = np.concatenate([_lit("(", n), _time_cols(part.t), _lit(f") {iface} ", n), _hex_cols(part.id, 3),
                                       _lit("#", n), _hex_cols(part.word, 16), _lit("\n", n)], axis=1)
                f.write(np.ascontiguousarray(rows).tobytes())
            else:
                for t, i, d, data in zip(part.t, part.id, part.dlc, part.data):
                    us = EPOCH_US + int(round(float(t) * 1e6))
                    ident = f"{int(i):03x}" if i < 0x800 else f"{int(i):08x}"
                    f.write(f"({us // 1_000_000}.{us % 1_000_000:06d}) {iface} {ident}#{bytes(data[:d]).hex()}\n".encode())


def write_hcrl(frames: Frames, path: str | os.PathLike, chunk: int = 1_000_000) -> None:
    with open(path, "wb") as f:
        for k in range(0, len(frames), chunk):
            part = frames.take(slice(k, k + chunk))
            n = len(part)
            flag = np.where(part.label > 0, ord("T"), ord("R")).astype(np.uint8)[:, None]
            if (part.dlc == 8).all():
                data = _hex_cols(part.word, 16).reshape(n, 8, 2)
                data = np.concatenate([np.full((n, 8, 1), ord(","), np.uint8), data], axis=2).reshape(n, 24)
                rows = np.concatenate([_time_cols(part.t), _lit(",", n), _hex_cols(part.id, 4), _lit(",8", n), data,
                                       _lit(",", n), flag, _lit("\n", n)], axis=1)
                f.write(np.ascontiguousarray(rows).tobytes())
            else:
                for t, i, d, data, fl in zip(part.t, part.id, part.dlc, part.data, flag[:, 0]):
                    us = EPOCH_US + int(round(float(t) * 1e6))
                    cells = ",".join(f"{b:02x}" for b in data[:d])
                    f.write(f"{us // 1_000_000}.{us % 1_000_000:06d},{int(i):04x},{d},{cells}{',' if d else ''}{chr(fl)}\n"
                            .encode())


def write_attacks(frames: Frames, path: str | os.PathLike) -> None:
    meta = {k: v for k, v in frames.meta.items() if k != "attacks"}
    Path(path).write_text(json.dumps({"epoch": EPOCH_US / 1e6, **meta, "attacks": frames.meta.get("attacks", [])},
                                     indent=1) + "\n")


# -- reading ---------------------------------------------------------------------------------------
def sniff(path: str | os.PathLike) -> str:
    """``candump`` or ``hcrl`` from the first non-empty line."""
    try:
        with open(path, "rb") as f:
            for raw in f:
                line = raw.decode("utf-8", "replace").strip()
                if line:
                    return "candump" if line.startswith("(") else "hcrl"
    except OSError as e:
        raise LogError(f"{path}: cannot read ({e.strerror or e})") from None
    raise LogError(f"{path}: empty file, no frames")


def read_log(path: str | os.PathLike, known_ids: np.ndarray | None = None) -> Frames:
    """Frames of a candump log or an HCRL CSV; labels from flags and, if present, attacks.json
    (``known_ids``: the bus's IDs, to guess fuzzed frames in a candump log)."""
    path = Path(path)
    frames = read_candump(path) if sniff(path) == "candump" else read_hcrl(path)
    side = path.with_name("attacks.json")
    if side.is_file():
        try:
            info = json.loads(side.read_text())
            frames.meta["attacks"] = [dict(a) for a in info.get("attacks", [])]
            frames.meta.update({k: info[k] for k in ("seed", "trace", "seconds", "bus") if k in info})
            epoch = float(info.get("epoch", EPOCH_US / 1e6))
        except (OSError, ValueError, TypeError, AttributeError) as e:
            raise LogError(f"{side}: not an attacks file written by ecufl can generate ({e})") from None
        frames.t = (frames.meta.pop("log_us") - int(round(epoch * 1e6))) / 1e6
        _label_from_intervals(frames, known_ids)
    else:
        us = frames.meta.pop("log_us")
        frames.t = (us - us[0]) / 1e6
    return frames


def _label_from_intervals(frames: Frames, known_ids: np.ndarray | None = None) -> None:
    """Frame labels from the intervals. With flags (HCRL) only the flagged frames get the family of
    their interval: exact. Without (candump) the frames are guessed: ID 0x000 for dos, the target
    ID for spoofing and the stealthy families (exact for those: every frame of the target in the
    interval is replaced), IDs not on the bus for fuzzing (a fuzzed frame that hits a bus ID is
    missed). Windows take their labels from the intervals, never from these guesses."""
    code = {f: i for i, f in enumerate(FAMILIES)}
    for a in frames.meta.get("attacks", []):
        inside = (frames.t >= a["t0"] - 1e-6) & (frames.t < a["t1"] + 1e-6)  # times are whole microseconds
        fam = code.get(a["family"], INJECTED)
        if frames.meta.get("flags"):
            frames.label[inside & (frames.label > 0)] = fam
        elif a["family"] == "dos":
            frames.label[inside & (frames.id == 0)] = fam
        elif a["family"] == "fuzzing" and known_ids is not None:
            frames.label[inside & ~np.isin(frames.id, known_ids)] = fam
        elif a["family"] != "suspension" and a.get("target", -1) >= 0:
            frames.label[inside & (frames.id == a["target"])] = fam


def _fail(path, lineno, what: str):
    raise LogError(f"{path}:{lineno}: {what}")


def _fixed_width(path, kind: str) -> Frames | None:
    """The vectorised reader of files whose lines all have one layout (what ``generate`` writes:
    every DLC 8, one interface): every column is checked (digits, hex digits, separators); any
    other file, or any deviation, returns None and the line-by-line reader names the bad line."""
    buf = np.fromfile(path, dtype=np.uint8)
    if len(buf) < 2 or buf[-1] != ord("\n"):
        return None
    width = int(np.argmax(buf == ord("\n"))) + 1
    if len(buf) % width:
        return None
    rows = buf.reshape(-1, width)
    first = rows[0, :-1].tobytes().decode("ascii", "replace")
    if kind == "candump":
        m = re.fullmatch(r"\((\d{10})\.(\d{6})\) (\S+) ([0-9a-f]{3})#([0-9a-f]{16})", first)
        if not m:
            return None
        digits, hexes = [(1, 11), (12, 18)], [m.span(4), m.span(5)]
        id_span, data_span, flag_col = m.span(4), m.span(5), None
    else:
        m = re.fullmatch(r"(\d{10})\.(\d{6}),([0-9a-f]{4}),8" + ",([0-9a-f]{2})" * 8 + ",([TR])", first)
        if not m:
            return None
        digits, id_span = [m.span(1), m.span(2)], m.span(3)
        hexes = [id_span] + [m.span(i) for i in range(4, 12)]
        data_span, flag_col = None, m.span(12)[0]
    const = np.ones(width, bool)
    const[-1] = False
    for a, b in digits + hexes:
        const[a:b] = False
    if flag_col is not None:
        const[flag_col] = False
    if not (rows[:, const] == rows[0, const]).all() or not (rows[:, -1] == ord("\n")).all():
        return None
    lut = np.full(256, 255, np.uint8)
    lut[np.frombuffer(b"0123456789", np.uint8)] = np.arange(10)
    lut[np.frombuffer(b"abcdef", np.uint8)] = np.arange(10, 16)
    lut[np.frombuffer(b"ABCDEF", np.uint8)] = np.arange(10, 16)
    for a, b in digits:
        if (lut[rows[:, a:b]] > 9).any():
            return None
    for a, b in hexes:
        if (lut[rows[:, a:b]] > 15).any():
            return None

    def number(a, b, base):
        v = np.zeros(len(rows), np.uint64)
        for c in range(a, b):
            v = v * np.uint64(base) + lut[rows[:, c]].astype(np.uint64)
        return v

    t = number(*digits[0], 10).astype(np.int64) * 1_000_000 + number(*digits[1], 10).astype(np.int64)
    ids = number(*id_span, 16).astype(np.uint32)
    if data_span is not None:
        word = number(*data_span, 16)
    else:
        word = np.zeros(len(rows), np.uint64)
        for a, b in hexes[1:]:
            word = (word << np.uint64(8)) | number(a, b, 16)
    flags = None if flag_col is None else rows[:, flag_col] == ord("T")
    if flags is not None and not np.isin(rows[:, flag_col], np.frombuffer(b"TR", np.uint8)).all():
        return None
    return _frames(path, t, ids, np.full(len(rows), 8, np.uint8), word, flags)


def read_candump(path: str | os.PathLike) -> Frames:
    fast = _fixed_width(path, "candump")
    if fast is not None:
        return fast
    t, ids, dlc, words = [], [], [], []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("ascii").rstrip("\r\n")
            except UnicodeDecodeError:
                _fail(path, lineno, "not ASCII text (a candump -l log line is '(SECONDS) IFACE ID#HEXDATA')")
            if not line.strip():
                continue
            m = _CANDUMP.match(line)
            if not m:
                hint = "CAN FD frames (##) are not supported" if "##" in line else \
                    "remote frames (#R) are not supported" if re.search(r"#R", line) else \
                    "expected '(SECONDS) IFACE ID#HEXDATA' with a 3- or 8-digit hex ID"
                _fail(path, lineno, f"{hint}: {line[:60]!r}")
            data = m.group(5)
            if len(data) % 2 or len(data) > 16:
                _fail(path, lineno, f"payload {data!r} is not 0-8 whole bytes of hex")
            t.append(int(m.group(1)) * 1_000_000 + int(round(int(m.group(2)) * 10 ** (6 - len(m.group(2))))))
            ids.append(int(m.group(4), 16))
            dlc.append(len(data) // 2)
            words.append(int(data.ljust(16, "0"), 16))
    return _frames(path, t, ids, dlc, words, None)


def read_hcrl(path: str | os.PathLike) -> Frames:
    fast = _fixed_width(path, "hcrl")
    if fast is not None:
        return fast
    t, ids, dlc, words, flags = [], [], [], [], []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("ascii").strip()
            except UnicodeDecodeError:
                _fail(path, lineno, "not ASCII text (an HCRL line is 'TIME,ID,DLC,BYTE...,FLAG')")
            if not line or (lineno == 1 and line.lower().startswith("timestamp")):
                continue
            cells = [c.strip() for c in line.split(",")]
            if len(cells) < 4:
                _fail(path, lineno, f"expected TIME,ID,DLC,DATA...,FLAG, got {len(cells)} fields: {line[:60]!r}")
            tm = re.fullmatch(r"(\d+)(?:\.(\d{1,9}))?", cells[0])
            if not tm:
                _fail(path, lineno, f"time {cells[0][:20]!r} is not a number of seconds like 1478198376.389427")
            frac = tm.group(2) or "0"
            ts = int(tm.group(1)) * 1_000_000 + int(round(int(frac) * 10.0 ** (6 - len(frac))))
            try:
                ident = int(cells[1], 16)
                n = int(cells[2])
            except ValueError:
                _fail(path, lineno, f"ID {cells[1][:12]!r} (hex) or DLC {cells[2][:6]!r} (0-8) is not a number")
            if not 0 <= n <= 8:
                _fail(path, lineno, f"DLC {n} is not 0-8")
            if ident >= 1 << 29:
                _fail(path, lineno, f"ID {cells[1]!r} is wider than 29 bits")
            if len(cells) != 4 + n:
                _fail(path, lineno, f"DLC {n} needs {n} data bytes and a flag ({4 + n} fields), got {len(cells)}")
            flag = cells[-1]
            if flag not in ("T", "R"):
                _fail(path, lineno, f"flag {flag[:8]!r} is not T (injected) or R (regular)")
            try:
                payload = [int(c, 16) for c in cells[3:3 + n]]
            except ValueError:
                _fail(path, lineno, "a data byte is not hex")
            if any(b > 255 or len(c) > 2 for b, c in zip(payload, cells[3:3 + n])):
                _fail(path, lineno, "a data byte is larger than ff")
            t.append(ts), ids.append(ident), dlc.append(n), flags.append(flag == "T")
            words.append(int.from_bytes(bytes(payload).ljust(8, b"\0"), "big"))
    return _frames(path, t, ids, dlc, words, flags)


def _frames(path, t, ids, dlc, words, flags) -> Frames:
    if not len(t):
        raise LogError(f"{path}: no frames")
    label = np.zeros(len(t), np.uint8) if flags is None else np.where(np.asarray(flags, bool), INJECTED, 0).astype(np.uint8)
    f = Frames(np.zeros(len(t)), np.array(ids, dtype=np.uint32), np.array(dlc, dtype=np.uint8),
               np.array(words, dtype=np.uint64), label, {"source": str(path), "flags": flags is not None})
    f.meta["log_us"] = np.asarray(t, dtype=np.int64)  # whole microseconds of the log's clock
    return f
