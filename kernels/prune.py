"""Magnitude pruning of the hidden weights: which weights to drop, and when.

What is pruned: the weight matrices that feed a hidden layer (every layer but the output one).
The output layer (10 x n_hidden) and all biases stay dense: they are a small share of the
weights and the output layer carries the class decision, so pruning it costs accuracy for no
measurable speed.

Which weights: in each pruned matrix, the ``round(s * size)`` weights of smallest magnitude,
already-pruned weights first (a mask only ever loses entries), ties broken by position
(row-major index), so numpy and every native kernel agree on the mask given the same weights.
By default weights are pruned in small dense blocks (``prune_block=8``): 8 consecutive output
rows of one input column, scored by the sum of their magnitudes, kept or removed together. The
sparse kernels then store one index per block and run one 8-wide vector operation per kept
block instead of a gather per weight; ``prune_block=1`` prunes single weights (plain CSC).
A layer whose output count is not a multiple of the block is pruned weight by weight.

When (``PruneSchedule``, counted in mini-batch steps, so a caller that splits an epoch into
several ``train`` calls gets the same result):
- ``oneshot`` (default): dense training for ``warmup`` epochs (default 1), then one pruning to the
  target sparsity; the mask is kept for the rest of training (pruned weights stay exactly 0 and
  take no update).
- ``gradual``: Zhu & Gupta (2017, "To prune, or not to prune") cubic schedule
  ``s_t = S * (1 - (1 - t/T)^3)``: after the warm-up, ten pruning events per epoch for ``ramp``
  epochs (default 2), the last one reaching S; the mask grows monotonically.
With ``warmup=0`` oneshot prunes the initial weights before the first step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .base import Kernel
from .params import Params

SCHEDULES = ("oneshot", "gradual")
EVENTS_PER_EPOCH = 10  # gradual schedule: pruning events per epoch during the ramp


def check_sparsity(value: Any, flag: str = "--prune") -> float:
    """The target sparsity as a float in [0, 1); ValueError naming ``flag`` otherwise."""
    try:
        s = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{flag}: expected a sparsity in [0, 1) like 0.9, got {value!r}") from None
    if not (np.isfinite(s) and 0.0 <= s < 1.0):
        raise ValueError(f"{flag}: sparsity must be in [0, 1) (the fraction of hidden weights removed), got {value}")
    return s


def pruned_layers(sizes: Sequence[int]) -> list[int]:
    """Indices of the weight matrices that are pruned: all that feed a hidden layer."""
    return list(range(len(sizes) - 2))


def block_rows(n_out: int, block: int) -> int:
    """The block height used for a layer with ``n_out`` outputs: ``block`` if it divides n_out, else 1."""
    return block if block > 1 and n_out % block == 0 else 1


def magnitude_mask(w: np.ndarray, sparsity: float, alive: np.ndarray | None = None, block: int = 1) -> np.ndarray:
    """Boolean mask (True = kept) that removes ``round(sparsity * blocks)`` blocks of smallest magnitude.

    A block is ``block`` consecutive rows of one column (``block_rows`` picks 1 where it does not
    divide the rows); its magnitude is the sum of |w| (float64). Blocks already removed
    (``alive == False``) go first, so masks only shrink.
    """
    w = np.asarray(w)
    b = block_rows(w.shape[0], block)
    n_out, n_in = w.shape
    score = np.abs(w.astype(np.float64)).reshape(n_out // b, b, n_in).sum(axis=1).ravel()
    alive_b = (np.ones(score.size, bool) if alive is None
               else np.asarray(alive, bool).reshape(n_out // b, b, n_in).any(axis=1).ravel())
    k = int(round(sparsity * score.size))
    k = max(k, int(np.count_nonzero(~alive_b)))  # never revive a pruned block
    # lexsort: primary key = alive (dead first), then magnitude, ties by index (lexsort is stable).
    drop = np.lexsort((score, alive_b))[:k]
    keep = np.ones(score.size, bool)
    keep[drop] = False
    return np.repeat(keep.reshape(n_out // b, 1, n_in), b, axis=1).reshape(n_out, n_in)


@dataclass
class PruneOptions:
    sparsity: float
    schedule: str = "oneshot"
    warmup: int = 1  # epochs of dense training before the first pruning
    ramp: int = 2  # gradual: epochs over which sparsity rises to its target
    block: int = 8  # rows per pruned block (1 = single weights)

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> "PruneOptions | None":
        """Pop ``prune``, ``prune_schedule``, ``prune_warmup``, ``prune_ramp`` from kernel options."""
        if "prune" not in options or options["prune"] is None:
            for key in ("prune_schedule", "prune_warmup", "prune_ramp", "prune_block"):
                if key in options:
                    raise ValueError(f"{key.replace('_', '-')} needs --prune")
            options.pop("prune", None)
            return None
        s = check_sparsity(options.pop("prune"))
        schedule = options.pop("prune_schedule", "oneshot")
        if schedule not in SCHEDULES:
            raise ValueError(f"--prune-schedule: expected one of {', '.join(SCHEDULES)}, got {schedule!r}")
        out = cls(s, schedule)
        block = options.pop("prune_block", out.block)
        if block not in (1, 8) or isinstance(block, bool):
            raise ValueError(f"--prune-block: expected 1 (single weights) or 8 (blocks of 8 rows), got {block!r}")
        out.block = int(block)
        for key in ("warmup", "ramp"):
            v = options.pop(f"prune_{key}", getattr(out, key))
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < (0 if key == "warmup" else 1):
                raise ValueError(f"--prune-{key}: expected an integer number of epochs "
                                 f"(>= {0 if key == 'warmup' else 1}), got {v!r}")
            setattr(out, key, int(v))
        return out


class PruneSchedule:
    """Pruning events (step -> sparsity) for one run; steps are mini-batches since creation."""

    def __init__(self, opts: PruneOptions) -> None:
        self.opts = opts
        self.step = 0  # mini-batches trained so far
        self.events: list[tuple[int, float]] | None = None  # fixed at the first train call

    def _plan(self, steps_per_epoch: int) -> list[tuple[int, float]]:
        o = self.opts
        start = o.warmup * steps_per_epoch
        if o.schedule == "oneshot":
            return [(start, o.sparsity)]
        every = max(1, steps_per_epoch // EVENTS_PER_EPOCH)
        n = o.ramp * EVENTS_PER_EPOCH
        return [(start + e * every, o.sparsity * (1.0 - (1.0 - e / n) ** 3)) for e in range(1, n + 1)]

    def segments(self, n_order: int, n_train: int, batch_size: int) -> list[tuple[int, int, float | None]]:
        """Split ``n_order`` samples into (start, stop, sparsity-to-prune-to-before-this-segment|None).

        The epoch length is the size of the training set the kernel is handed (``n_train``).
        """
        if self.events is None:
            self.events = self._plan(-(-n_train // batch_size))
        out = []
        pos = 0
        step = self.step
        n_steps = -(-n_order // batch_size)
        end_step = step + n_steps
        while True:
            due = [s for (t, s) in self.events if t == step]
            nxt = min((t for (t, _) in self.events if step < t < end_step), default=end_step)
            stop = min(n_order, pos + (nxt - step) * batch_size)
            if stop > pos or due:
                out.append((pos, stop, due[-1] if due else None))
            pos, step = stop, nxt
            if step >= end_step:
                break
        self.step = end_step
        return out

    def describe(self) -> dict[str, Any]:
        o = self.opts
        return {"prune_target": o.sparsity, "prune_schedule": o.schedule, "prune_warmup_epochs": o.warmup,
                "prune_block": o.block,
                **({"prune_ramp_epochs": o.ramp} if o.schedule == "gradual" else {})}


def sparse_bytes(mask: np.ndarray, value_bytes: int, block: int = 1) -> int:
    """Footprint of a block-CSC matrix (n_out x n_in, stored by input column): values, one uint16
    row index per kept block of ``block`` rows, int32 column pointers."""
    nnz = int(np.count_nonzero(mask))
    return nnz * value_bytes + 2 * (nnz // block) + (mask.shape[1] + 1) * 4


class PrunableKernel(Kernel):
    """A kernel that takes ``prune=S`` (and ``prune_schedule``, ``prune_warmup``, ``prune_ramp``).

    It cuts every ``train`` call at the schedule's events, computes the masks from the float32
    masters here (one implementation for every kernel, so they agree on the mask) and hands them
    to ``_apply_masks``. Subclasses implement ``_train`` (plain SGD over an order) and
    ``_apply_masks`` (switch the masked layers to sparse storage, zero the pruned weights).
    """

    @classmethod
    def check_options(cls, dtype: str | None = None, **options: Any) -> str:
        rest = dict(options)
        PruneOptions.from_options(rest)  # raises ValueError naming --prune...
        return super().check_options(dtype, **rest)

    def __init__(self, params: Params, *, dtype: str | None = None, **options: Any) -> None:
        super().__init__(params, dtype=dtype, **options)
        prune = PruneOptions.from_options(dict(options))
        if prune is not None and not pruned_layers(self.sizes):
            raise ValueError(f"--prune: layers {self.sizes} have no hidden layer to prune")
        self.schedule = PruneSchedule(prune) if prune else None
        self.masks: list[np.ndarray | None] = [None] * (len(self.sizes) - 1)

    def _train(self, images: np.ndarray, labels: np.ndarray, order: np.ndarray, lr: float, bs: int) -> None:
        raise NotImplementedError

    def _apply_masks(self) -> None:
        raise NotImplementedError

    def train(self, images, labels, order, lr, batch_size) -> None:
        order = np.ascontiguousarray(order, dtype=np.int32)
        segments = (self.schedule.segments(len(order), len(images), batch_size) if self.schedule
                    else [(0, len(order), None)])
        for start, stop, sparsity in segments:
            if sparsity is not None:
                self.prune_to(sparsity)
            if stop > start:
                self._train(images, labels, order[start:stop], lr, batch_size)

    def prune_to(self, sparsity: float) -> None:
        """Magnitude-prune every hidden weight matrix to ``sparsity`` (masks only grow)."""
        master = self.get_params().weights
        for l in pruned_layers(self.sizes):
            self.masks[l] = magnitude_mask(master[l], sparsity, self.masks[l], self.schedule.opts.block)
        self._apply_masks()

    def mask_block(self, layer: int) -> int:
        """Rows per block of layer ``layer``'s mask (what the native kernels store)."""
        return block_rows(self.sizes[layer + 1], self.schedule.opts.block if self.schedule else 1)

    def sparsity(self) -> float:
        """Fraction of the prunable (hidden) weights that are pruned."""
        layers = pruned_layers(self.sizes)
        total = sum(self.sizes[l] * self.sizes[l + 1] for l in layers)
        dead = sum(int(np.count_nonzero(~self.masks[l])) for l in layers if self.masks[l] is not None)
        return dead / total if total else 0.0

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"sparsity": round(self.sparsity(), 6)}
        if self.schedule:
            info.update(self.schedule.describe())
        return info
