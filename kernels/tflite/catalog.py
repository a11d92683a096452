"""Where the training models are: file names, the shipped set, and the search path.

A model is made for one layer configuration and one mini-batch size (the train signature has a
fixed batch dimension; smaller last mini-batches are padded and masked). Its file name says both:
``hdrnn-784-30-10-b10.tflite``. The kernel looks in, in order:

1. every directory in ``$ECUFL_TFLITE_MODELS`` (``:``-separated),
2. the user cache ``$XDG_CACHE_HOME/ecufl/tflite`` (default ``~/.cache/ecufl/tflite``), where
   ``ecufl tflite export`` writes by default,
3. the models shipped inside the package (``kernels/tflite/models``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

PACKAGE_MODELS = Path(__file__).resolve().parent / "models"

# The configurations ecufl ships (issue 6): the benchmark configs at batch 10 and 32, the book's
# 784-30-10 at batch 10, and the CAN autoencoder 339-32-339 (0.5 s windows of the Ford bus) at 10.
STANDARD: list[tuple[tuple[int, ...], int]] = [
    (sizes, batch)
    for sizes in [(784, 2, 10), (784, 8, 10), (784, 32, 10), (784, 128, 10), (784, 32, 16, 10)]
    for batch in (10, 32)
] + [((784, 30, 10), 10), ((339, 32, 339), 10)]  # the book's; the CAN autoencoder (ecufl/can, issue 17)


def layers_text(sizes: Sequence[int], sep: str = "-") -> str:
    return sep.join(str(int(s)) for s in sizes)


def model_filename(sizes: Sequence[int], batch_size: int) -> str:
    return f"hdrnn-{layers_text(sizes)}-b{int(batch_size)}.tflite"


def user_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ecufl" / "tflite"


def search_dirs() -> list[Path]:
    extra = [Path(d) for d in os.environ.get("ECUFL_TFLITE_MODELS", "").split(os.pathsep) if d]
    return extra + [user_cache(), PACKAGE_MODELS]


def find_model(sizes: Sequence[int], batch_size: int) -> Path | None:
    name = model_filename(sizes, batch_size)
    for d in search_dirs():
        if (d / name).is_file():
            return d / name
    return None


def batch_sizes_for(sizes: Sequence[int]) -> list[int]:
    """Batch sizes with a model for ``sizes`` anywhere on the search path, smallest first."""
    prefix = f"hdrnn-{layers_text(sizes)}-b"
    found = set()
    for d in search_dirs():
        if d.is_dir():
            for f in d.glob(prefix + "*.tflite"):
                tail = f.name[len(prefix) : -len(".tflite")]
                if tail.isdigit():
                    found.add(int(tail))
    return sorted(found)


def export_hint(sizes: Sequence[int], batch_size: int) -> str:
    return (
        f"export one with: ecufl tflite export --layers {layers_text(sizes, ',')} --batch-size {batch_size}"
        " (needs pip install 'ecufl[export]')"
    )
