"""ecufl's portable PRNG: the two generators that network.py uses, reproduced bit for bit.

network.py (neuralnetworksanddeeplearning.com, chapter 1) draws its initial weights with
``np.random.randn`` and shuffles the training data every epoch with ``random.shuffle``.
ecufl uses exactly these two streams, so that an ecufl run from seed S *is* network.py run
after ``np.random.seed(S); random.seed(S)``, and every kernel (C, C++, int8, ARM) reimplements
them in ``kernels/common/ecufl_rand.h``. The algorithm is specified in ``kernels/README.md``;
golden vectors live in ``kernels/golden/prng.json``.

- Initial weights: MT19937 seeded with ``init_genrand(S)`` (numpy's legacy seeding), Gaussians
  by numpy's legacy polar method over 53-bit doubles. Biases are drawn first (layer by layer),
  then weights, in row-major (n_out, n_in) order, exactly as network.py's ``__init__``.
  The Python side is numpy's own vectorised ``RandomState``: there is no loop per weight.
- Epoch order: MT19937 seeded with ``init_by_array`` (CPython's ``random.seed(int)``), and
  ``random.shuffle``'s Fisher-Yates with ``_randbelow`` by rejection on ``getrandbits``.
  The permutation is applied to the previous epoch's order, as network.py shuffles its list in place.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np

from .params import Params

MAX_SEED = 2**32 - 1


def check_seed(seed: int) -> int:
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    if not 0 <= int(seed) <= MAX_SEED:
        raise ValueError(f"seed must be between 0 and {MAX_SEED}, got {seed}")
    return int(seed)


def init_params(
    sizes: Sequence[int], seed: int, *, scaled: bool = False, dtype: str | np.dtype = "float64"
) -> Params:
    """Initial weights and biases for layer sizes ``sizes``, as network.py draws them.

    ``scaled=True`` divides each weight by sqrt(n_in) (network2.py's default initializer);
    the division happens in float64 before the cast to ``dtype``, in every kernel.
    """
    rs = np.random.RandomState(check_seed(seed))
    biases = [rs.randn(n_out) for n_out in sizes[1:]]
    weights = [rs.randn(n_out, n_in) for n_in, n_out in zip(sizes[:-1], sizes[1:])]
    if scaled:
        weights = [w / np.sqrt(w.shape[1]) for w in weights]
    dt = np.dtype(dtype)
    return Params([w.astype(dt) for w in weights], [b.astype(dt) for b in biases])


class EpochOrder:
    """The sample order of each epoch: network.py's ``random.shuffle`` of its list, in place.

    ``next()`` returns the order for the next epoch as int32 indices into the training set.
    With ``shuffle=False`` the order stays 0..n-1 (network.py without its shuffle line).
    """

    def __init__(self, n: int, seed: int, *, shuffle: bool = True) -> None:
        self._rng = random.Random(check_seed(seed))
        self._order = list(range(n))
        self._shuffle = shuffle

    def next(self) -> np.ndarray:
        if self._shuffle:
            self._rng.shuffle(self._order)
        return np.asarray(self._order, dtype=np.int32)


def mt19937_genrand(seed: int, count: int) -> np.ndarray:
    """The first ``count`` raw 32-bit outputs of MT19937 after ``init_genrand(seed)`` (golden vectors)."""
    rs = np.random.RandomState(check_seed(seed))
    return rs._bit_generator.random_raw(count).astype(np.uint32)


def gaussians(seed: int, count: int) -> np.ndarray:
    """The first ``count`` N(0,1) draws after ``np.random.seed(seed)`` (golden vectors)."""
    return np.random.RandomState(check_seed(seed)).randn(count)


def shuffle_uint32(seed: int, count: int) -> list[int]:
    """The first ``count`` raw outputs of CPython's ``random.Random(seed)`` (golden vectors)."""
    rng = random.Random(check_seed(seed))
    return [rng.getrandbits(32) for _ in range(count)]
