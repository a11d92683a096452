"""MNIST: a strict IDX parser, the places the files may be, a verified download, and shards.

Where the files are looked for, in order:
  1. ``data_dir`` given by the caller (``--data-dir``),
  2. the environment variable ``ECUFL_DATA``,
  3. the user cache ``~/.cache/ecufl/mnist`` (``$XDG_CACHE_HOME`` respected),
  4. a download from public mirrors, tried in turn, into the user cache; every file is checked
     against the sha256 sums below before it is kept.

Each name may be present gzip-compressed (``NAME.gz``) or raw (``NAME``). Decompressed contents
are checked against ``IDX_SHA256`` by ``ecufl data check``.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import shutil
import struct
import tempfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FILES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}
# sha256 of the decompressed IDX files
IDX_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
# sha256 of the .gz files as the public mirrors serve them
GZ_SHA256 = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
MIRRORS = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
]
EXPECTED = {"train": 60000, "test": 10000}
IMAGE_MAGIC = 0x00000803
LABEL_MAGIC = 0x00000801


class DataError(Exception):
    """A data file is missing, unreadable or malformed; the message names the file."""


@dataclass
class Dataset:
    images: np.ndarray  # uint8 (N, 784)
    labels: np.ndarray  # uint8 (N,)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx: np.ndarray) -> "Dataset":
        return Dataset(self.images[idx], self.labels[idx])


# --- the IDX format ------------------------------------------------------------------------------
def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError; a bad deflate stream is zlib.error
            raise DataError(f"{path}: not a valid gzip file ({' '.join(str(e).split())})") from None
    return raw


def parse_idx(data: bytes, name: str, magic: int) -> np.ndarray:
    """Parse an IDX file of unsigned bytes; every deviation is an error naming ``name``."""
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < 4:
        raise DataError(f"{name}: file is {len(data)} bytes, too short for an IDX header")
    (got,) = struct.unpack(">I", data[:4])
    if got != magic:
        raise DataError(f"{name}: wrong magic number 0x{got:08x}, expected 0x{magic:08x}")
    if len(data) < header:
        raise DataError(f"{name}: truncated header ({len(data)} bytes, need {header})")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    count = math.prod(dims)  # exact: numpy's int64 product wraps for three large dimensions
    body = len(data) - header
    if body < count:
        raise DataError(f"{name}: truncated: header announces {dims} = {count} bytes, file has {body}")
    if body > count:
        raise DataError(f"{name}: {body - count} trailing bytes after the {dims} array")
    try:  # a zero dimension lets huge others through the size check; numpy still refuses them
        return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)
    except ValueError:
        raise DataError(f"{name}: header dimensions {dims} do not make an array") from None


def read_images(path: Path) -> np.ndarray:
    arr = parse_idx(_read_bytes(path), str(path), IMAGE_MAGIC)
    if arr.shape[1:] != (28, 28):
        raise DataError(f"{path}: images are {arr.shape[1]}x{arr.shape[2]}, expected 28x28")
    return arr.reshape(len(arr), 784)


def read_labels(path: Path) -> np.ndarray:
    arr = parse_idx(_read_bytes(path), str(path), LABEL_MAGIC)
    if arr.size and arr.max() > 9:
        raise DataError(f"{path}: label {int(arr.max())} out of range 0..9")
    return arr


# --- where the files are --------------------------------------------------------------------------
def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ecufl" / "mnist"


def _find(directory: Path, name: str) -> Path | None:
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _has_all(directory: Path) -> bool:
    return all(_find(directory, n) for n in FILES.values())


def locate(data_dir: str | os.PathLike | None = None, *, download: bool = True) -> Path:
    """The directory holding the four MNIST files (see the module doc for the search order)."""
    if data_dir is not None:
        d = Path(data_dir)
        if not _has_all(d):
            missing = [n for n in FILES.values() if not _find(d, n)]
            raise DataError(f"--data-dir {d}: missing {', '.join(missing)} (raw or .gz)")
        return d
    env = os.environ.get("ECUFL_DATA")
    if env:
        d = Path(env)
        if not _has_all(d):
            missing = [n for n in FILES.values() if not _find(d, n)]
            raise DataError(f"ECUFL_DATA={d}: missing {', '.join(missing)} (raw or .gz)")
        return d
    d = cache_dir()
    if _has_all(d):
        return d
    if not download:
        raise DataError(f"MNIST not found in {d}; run `ecufl data fetch` or set ECUFL_DATA")
    return fetch(d)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch(dest: Path | None = None, mirrors: list[str] | None = None, timeout: float = 30.0) -> Path:
    """Download the four files into ``dest`` (default: the user cache), checking each sha256."""
    dest = Path(dest or cache_dir())
    dest.mkdir(parents=True, exist_ok=True)
    for name in FILES.values():
        if _find(dest, name):
            continue
        gz = f"{name}.gz"
        errors = []
        for mirror in mirrors or MIRRORS:
            url = mirror + gz
            try:
                with urllib.request.urlopen(url, timeout=timeout) as r:
                    payload = r.read()
            except (urllib.error.URLError, OSError) as e:
                errors.append(f"{url}: {getattr(e, 'reason', e)}")
                continue
            if _sha256(payload) != GZ_SHA256[gz]:
                errors.append(f"{url}: sha256 mismatch")
                continue
            with tempfile.NamedTemporaryFile(dir=dest, delete=False) as tmp:
                tmp.write(payload)
            shutil.move(tmp.name, dest / gz)  # atomic within one directory
            break
        else:
            raise DataError(f"could not download {gz}: " + "; ".join(errors))
    return dest


def check(data_dir: str | os.PathLike | None = None) -> dict[str, str]:
    """Parse every file and compare its decompressed sha256; returns name -> 'ok'."""
    d = locate(data_dir, download=False)
    out = {}
    for name in FILES.values():
        path = _find(d, name)
        raw = _read_bytes(path)
        if _sha256(raw) != IDX_SHA256[name]:
            raise DataError(f"{path}: sha256 of the decompressed file does not match MNIST's")
        magic = IMAGE_MAGIC if "images" in name else LABEL_MAGIC
        parse_idx(raw, str(path), magic)
        out[str(path)] = "ok"
    return out


def load(split: str = "train", data_dir: str | os.PathLike | None = None) -> Dataset:
    """MNIST ``split`` ('train' or 'test') as uint8 images (N, 784) and labels (N,)."""
    if split not in EXPECTED:
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    d = locate(data_dir)
    images = read_images(_find(d, FILES[(split, "images")]))
    labels = read_labels(_find(d, FILES[(split, "labels")]))
    if len(images) != len(labels):
        raise DataError(
            f"{d}: {split} has {len(images)} images but {len(labels)} labels"
        )
    return Dataset(images, labels)


# --- shards for a fleet ---------------------------------------------------------------------------
def partition(
    labels: np.ndarray, num_partitions: int, seed: int, *, alpha: float | None = None,
    min_size: int = 1,
) -> list[np.ndarray]:
    """Split sample indices into ``num_partitions`` shards, deterministically from ``seed``.

    ``alpha=None``: IID (a seeded permutation cut into near-equal parts).
    ``alpha>0``: label skew: for each class, the share of each shard is drawn from Dirichlet(alpha)
    (small alpha, few classes per shard). Draws are repeated (same seed stream) until every shard
    holds at least ``min_size`` samples. Indices inside a shard are sorted.
    """
    if num_partitions < 1:
        raise ValueError(f"number of partitions must be >= 1, got {num_partitions}")
    if num_partitions * min_size > len(labels):
        raise ValueError(f"{len(labels)} samples cannot fill {num_partitions} shards of >= {min_size}")
    rng = np.random.default_rng(seed)
    if alpha is None:
        perm = rng.permutation(len(labels))
        return [np.sort(p) for p in np.array_split(perm, num_partitions)]
    if not alpha > 0:
        raise ValueError(f"Dirichlet alpha must be > 0, got {alpha}")
    classes = np.unique(labels)
    for _ in range(1000):
        shards: list[list[np.ndarray]] = [[] for _ in range(num_partitions)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(labels == c))
            shares = rng.dirichlet(np.full(num_partitions, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(int)
            for k, part in enumerate(np.split(idx, cuts)):
                shards[k].append(part)
        out = [np.sort(np.concatenate(s)) for s in shards]
        if min(len(s) for s in out) >= min_size:
            return out
    raise ValueError(
        f"Dirichlet alpha={alpha} with {num_partitions} shards left a shard below {min_size} samples "
        "after 1000 draws; raise alpha or lower the number of shards"
    )
