"""Magnitude pruning of the hidden weights: which weights to drop, and when.

What is pruned: the weight matrices that feed a hidden layer (every layer but the output one).
The output layer (10 x n_hidden) and all biases stay dense: they are a small share of the
weights and the output layer carries the class decision, so pruning it costs accuracy for no
measurable speed.

Which weights: in each pruned matrix, the ``round(s * size)`` weights of smallest magnitude,
already-pruned weights first (a mask only ever loses entries), ties broken by position
(row-major index), so numpy and every native kernel agree on the mask given the same weights.

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


def magnitude_mask(w: np.ndarray, sparsity: float, alive: np.ndarray | None = None) -> np.ndarray:
    """Boolean mask (True = kept) that removes ``round(sparsity * w.size)`` weights of smallest |w|.

    Weights already removed (``alive == False``) go first, so masks only shrink.
    """
    flat = np.abs(np.asarray(w, dtype=np.float64)).ravel()
    alive_flat = np.ones(flat.size, bool) if alive is None else np.asarray(alive, bool).ravel()
    k = int(round(sparsity * flat.size))
    k = max(k, int(np.count_nonzero(~alive_flat)))  # never revive a pruned weight
    # lexsort: primary key = alive (dead first), then |w|, ties by index (lexsort is stable).
    drop = np.lexsort((flat, alive_flat))[:k]
    keep = np.ones(flat.size, bool)
    keep[drop] = False
    return keep.reshape(w.shape)


@dataclass
class PruneOptions:
    sparsity: float
    schedule: str = "oneshot"
    warmup: int = 1  # epochs of dense training before the first pruning
    ramp: int = 2  # gradual: epochs over which sparsity rises to its target

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> "PruneOptions | None":
        """Pop ``prune``, ``prune_schedule``, ``prune_warmup``, ``prune_ramp`` from kernel options."""
        if "prune" not in options or options["prune"] is None:
            for key in ("prune_schedule", "prune_warmup", "prune_ramp"):
                if key in options:
                    raise ValueError(f"{key.replace('_', '-')} needs --prune")
            options.pop("prune", None)
            return None
        s = check_sparsity(options.pop("prune"))
        schedule = options.pop("prune_schedule", "oneshot")
        if schedule not in SCHEDULES:
            raise ValueError(f"--prune-schedule: expected one of {', '.join(SCHEDULES)}, got {schedule!r}")
        out = cls(s, schedule)
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
                **({"prune_ramp_epochs": o.ramp} if o.schedule == "gradual" else {})}


def sparse_bytes(mask: np.ndarray, value_bytes: int, index_bytes: int = 2) -> int:
    """Footprint of a CSC matrix (n_out x n_in, stored by input column): values + uint16 row indices
    + column pointers (int32)."""
    nnz = int(np.count_nonzero(mask))
    return nnz * (value_bytes + index_bytes) + (mask.shape[1] + 1) * 4
