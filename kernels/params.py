"""The parameters of an HDRNN: weights and biases per layer, in the book's shapes.

``weights[l]`` has shape (n_out, n_in) and ``biases[l]`` has shape (n_out,), for l = 0..L-2.
(network.py keeps biases as (n_out, 1) columns; the values and their order are the same.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class Params:
    weights: list[np.ndarray]
    biases: list[np.ndarray]

    @property
    def sizes(self) -> list[int]:
        return [self.weights[0].shape[1]] + [w.shape[0] for w in self.weights]

    @property
    def dtype(self) -> np.dtype:
        return self.weights[0].dtype

    def arrays(self) -> dict[str, np.ndarray]:
        """Named arrays ``w1, b1, w2, b2, ...`` (the weight file's names)."""
        out: dict[str, np.ndarray] = {}
        for i, (w, b) in enumerate(zip(self.weights, self.biases), start=1):
            out[f"w{i}"] = w
            out[f"b{i}"] = b
        return out

    def flat(self) -> list[np.ndarray]:
        """Arrays in transport order [w1, b1, w2, b2, ...] (Flower's ArrayRecord, C ABI)."""
        return list(self.arrays().values())

    @classmethod
    def from_flat(cls, arrays: Sequence[np.ndarray]) -> "Params":
        if len(arrays) % 2 or not arrays:
            raise ValueError(f"expected an even number of arrays [w1, b1, ...], got {len(arrays)}")
        return cls([np.asarray(a) for a in arrays[0::2]], [np.asarray(a) for a in arrays[1::2]])

    def astype(self, dtype: str | np.dtype) -> "Params":
        dt = np.dtype(dtype)
        return Params([w.astype(dt) for w in self.weights], [b.astype(dt) for b in self.biases])

    def copy(self) -> "Params":
        return Params([w.copy() for w in self.weights], [b.copy() for b in self.biases])

    def check(self, sizes: Sequence[int]) -> None:
        """Raise ValueError naming the first array whose shape does not fit ``sizes``."""
        if len(self.weights) != len(sizes) - 1 or len(self.biases) != len(sizes) - 1:
            raise ValueError(
                f"{len(self.weights)} weight arrays for {len(sizes) - 1} layers {list(sizes)}"
            )
        for i, (w, b, n_in, n_out) in enumerate(
            zip(self.weights, self.biases, sizes[:-1], sizes[1:]), start=1
        ):
            if w.shape != (n_out, n_in):
                raise ValueError(f"w{i} has shape {w.shape}, expected {(n_out, n_in)}")
            if b.shape != (n_out,):
                raise ValueError(f"b{i} has shape {b.shape}, expected {(n_out,)}")

    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.flat())
