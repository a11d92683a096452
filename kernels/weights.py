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


def load(path: str | os.PathLike) -> tuple[Params, dict[str, Any]]:
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            files = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise WeightFileError(f"{path}: no such weight file") from None
    except (OSError, ValueError, EOFError) as e:
        raise WeightFileError(f"{path}: not an ecufl weight file ({e})") from None
    meta: dict[str, Any] = {}
    if "meta" in files:
        try:
            meta = json.loads(str(files.pop("meta")))
        except json.JSONDecodeError as e:
            raise WeightFileError(f"{path}: metadata is not JSON ({e})") from None
    names = sorted((k for k in files if re.fullmatch(r"[wb]\d+", k)), key=lambda k: (int(k[1:]), k[0] == "w"))
    layers = sorted({int(k[1:]) for k in names})
    if not layers or layers != list(range(1, len(layers) + 1)):
        raise WeightFileError(f"{path}: expected arrays w1, b1, w2, b2, ...; found {sorted(files)}")
    for l in layers:
        for k in (f"w{l}", f"b{l}"):
            if k not in files:
                raise WeightFileError(f"{path}: array {k} is missing")
    params = Params([files[f"w{l}"] for l in layers], [files[f"b{l}"] for l in layers])
    try:
        params.check(params.sizes)
    except ValueError as e:
        raise WeightFileError(f"{path}: {e}") from None
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
