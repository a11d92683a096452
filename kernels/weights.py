"""The weight file: one ``.npz`` with arrays ``w1, b1, w2, b2, ...`` in the book's shapes.

``w_l`` is (n_out, n_in), ``b_l`` is (n_out,), all in one dtype (float32 or float64).
Metadata sits in the array ``meta``: a 0-d unicode array holding a JSON object with at least
``format`` ("ecufl-weights/1"), ``sizes``, ``dtype``, and, where known, ``seed``, ``kernel``,
``epochs``, ``round``. The file loads without pickle (``np.load(..., allow_pickle=False)``).
Files are written atomically (temporary file + rename), so a crash never leaves half a file.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ecufl.kernels.params import Params

FORMAT = "ecufl-weights/1"


class WeightFileError(Exception):
    pass


def save(path: str | os.PathLike, params: Params, **meta: Any) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = {"format": FORMAT, "sizes": params.sizes, "dtype": str(params.dtype), **meta}
    arrays = dict(params.arrays())
    arrays["meta"] = np.array(json.dumps(info, sort_keys=True))
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _one_line(e: BaseException) -> str:
    text = " ".join(f"{type(e).__name__}: {e}".split())
    return text if len(text) <= 200 else text[:197] + "..."


def load(path: str | os.PathLike) -> tuple[Params, dict[str, Any]]:
    """Read a weight file; any problem with it is one ``WeightFileError`` line naming the file."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            z = np.load(f, allow_pickle=False)
            if not isinstance(z, np.lib.npyio.NpzFile):  # a plain .npy array
                raise WeightFileError(f"{path}: not an ecufl weight file (a single .npy array, not an .npz archive)")
            with z:
                files = {k: z[k] for k in z.files}
    except WeightFileError:
        raise
    except FileNotFoundError:
        raise WeightFileError(f"{path}: no such weight file") from None
    except IsADirectoryError:
        raise WeightFileError(f"{path}: is a directory, not a weight file") from None
    except MemoryError:  # a header announcing an array larger than memory
        raise WeightFileError(f"{path}: not an ecufl weight file (an array too large to load)") from None
    except Exception as e:  # noqa: BLE001 - zip, zlib, npy header, encryption, ...: the file is bad, say so
        raise WeightFileError(f"{path}: not an ecufl weight file ({_one_line(e)})") from None
    meta: dict[str, Any] = {}
    if "meta" in files:
        try:
            meta = json.loads(str(files.pop("meta")))
        except (json.JSONDecodeError, RecursionError) as e:
            raise WeightFileError(f"{path}: metadata is not JSON ({_one_line(e)})") from None
        if not isinstance(meta, dict):
            raise WeightFileError(f"{path}: metadata is not a JSON object")
    names = sorted((k for k in files if re.fullmatch(r"[wb]\d+", k)), key=lambda k: (int(k[1:]), k[0] == "w"))
    layers = sorted({int(k[1:]) for k in names})
    if not layers or layers != list(range(1, len(layers) + 1)):
        raise WeightFileError(f"{path}: expected arrays w1, b1, w2, b2, ...; found {sorted(files)}")
    for l in layers:
        for k in (f"w{l}", f"b{l}"):
            if k not in files:
                raise WeightFileError(f"{path}: array {k} is missing")
    for k in names:
        if not isinstance(files[k], np.ndarray):  # numpy hands back raw bytes for a member not named .npy
            raise WeightFileError(f"{path}: member {k} is not an .npy array")
        if files[k].ndim != (2 if k[0] == "w" else 1):
            raise WeightFileError(f"{path}: array {k} has shape {files[k].shape}, expected {2 if k[0] == 'w' else 1} dimensions")
    try:
        params = Params([files[f"w{l}"] for l in layers], [files[f"b{l}"] for l in layers])
        params.check(params.sizes)
    except Exception as e:  # noqa: BLE001 - shapes that do not chain
        raise WeightFileError(f"{path}: {e if isinstance(e, ValueError) else _one_line(e)}") from None
    for k, a in params.arrays().items():
        if a.dtype.kind != "f":
            raise WeightFileError(f"{path}: array {k} has dtype {a.dtype}, expected a float type")
        if not np.all(np.isfinite(a)):
            raise WeightFileError(f"{path}: array {k} holds NaN or Inf")
    return params, meta


def compare(a: Params, b: Params) -> list[dict[str, Any]]:
    """Per array: max absolute and max relative difference (relative to |b|, guarded by 1e-12)."""
    if a.sizes != b.sizes:
        raise WeightFileError(f"layer sizes differ: {a.sizes} vs {b.sizes}")
    rows = []
    for (name, x), y in zip(a.arrays().items(), b.arrays().values()):
        x64, y64 = x.astype(np.float64), y.astype(np.float64)
        diff = np.abs(x64 - y64)
        rel = diff / np.maximum(np.abs(y64), 1e-12)
        rows.append({"array": name, "shape": list(x.shape), "max_abs": float(diff.max()),
                     "max_rel": float(rel.max()), "mean_abs": float(diff.mean())})
    return rows
