"""The int8 kernels' common Python side: options, the pruning schedule, and the numpy kernel.

Every int8 kernel (numpy, C plain, C SIMD) runs the scheme of ``reference.py``. This module owns
what is the same for all of them: option checking (``prune``, ``prune_schedule``, ...), cutting
each ``train`` call at the pruning events of ``prune.PruneSchedule``, computing masks from the
float32 masters (``prune.magnitude_mask``) and reporting bits / sparsity / weight bytes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..base import EvalResult, Kernel
from ..params import Params
from ..prune import PruneOptions, PruneSchedule, sparse_bytes, magnitude_mask, pruned_layers
from . import reference as ref


class Int8Base(Kernel):
    """Options and pruning for the int8 kernels; subclasses implement the ``_`` methods."""

    dtypes = ("float32",)  # the master weights (and get/set_params) are float32; arithmetic is int8
    path = "numpy"

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

    # -- subclass interface -------------------------------------------------------------------
    def _train(self, xq_images: np.ndarray, labels: np.ndarray, order: np.ndarray, lr: float, bs: int) -> None:
        raise NotImplementedError

    def _apply_masks(self) -> None:
        raise NotImplementedError

    # -- Kernel -------------------------------------------------------------------------------
    def train(self, images, labels, order, lr, batch_size) -> None:
        ref.check_bounds(self.sizes, batch_size)
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
            self.masks[l] = magnitude_mask(master[l], sparsity, self.masks[l])
        self._apply_masks()

    def sparsity(self) -> float:
        """Fraction of the prunable (hidden) weights that are pruned."""
        layers = pruned_layers(self.sizes)
        total = sum(self.sizes[l] * self.sizes[l + 1] for l in layers)
        dead = sum(int(np.count_nonzero(~self.masks[l])) for l in layers if self.masks[l] is not None)
        return dead / total if total else 0.0

    def weight_bytes(self) -> int:
        """The int8 model: int8 weights (CSC with uint16 row indices where pruned), int16 biases,
        one float32 scale per matrix. The float32 master is reported separately (master_bytes)."""
        n = 0
        for l, (n_in, n_out) in enumerate(zip(self.sizes[:-1], self.sizes[1:])):
            mask = self.masks[l]
            n += sparse_bytes(mask, 1) if mask is not None else n_in * n_out
            n += 2 * n_out + 8  # int16 biases, requantisation m0 and r
        return n

    def master_bytes(self) -> int:
        """The float32 master weights and biases the training keeps (sparse: CSR values only)."""
        n = 0
        for l, (n_in, n_out) in enumerate(zip(self.sizes[:-1], self.sizes[1:])):
            mask = self.masks[l]
            n += 4 * int(np.count_nonzero(mask)) if mask is not None else 4 * n_in * n_out
            n += 4 * n_out
        return n

    def describe(self) -> dict[str, Any]:
        info = {"bits": 8, "path": self.path, "sparsity": round(self.sparsity(), 6),
                "weight_bytes": self.weight_bytes(), "master_bytes": self.master_bytes()}
        if self.schedule:
            info.update(self.schedule.describe())
        return info


class Int8NumpyKernel(Int8Base):
    """The int8 scheme in numpy (``reference.Int8Net``): slow, and the truth for the C kernels."""

    name = "int8-numpy"
    path = "numpy"

    def __init__(self, params: Params, *, dtype: str | None = None, **options: Any) -> None:
        super().__init__(params, dtype=dtype, **options)
        self.net = ref.Int8Net(params.weights, params.biases)

    def _train(self, images, labels, order, lr, bs) -> None:
        for k in range(0, len(order), bs):
            idx = order[k : k + bs]
            self.net.step(ref.input_q(images[idx]), labels[idx], lr)

    def _apply_masks(self) -> None:
        for l, mask in enumerate(self.masks):
            if mask is not None:
                self.net.set_mask(l, mask)

    def evaluate(self, images, labels, chunk: int = 2000) -> EvalResult:
        loss = 0.0
        correct = 0
        for k in range(0, len(labels), chunk):
            acts, z = self.net.forward(ref.input_q(images[k : k + chunk]))
            a = acts[-1] / ref.A_ONE
            lab = labels[k : k + chunk]
            y = np.zeros_like(a)
            y[np.arange(len(lab)), lab] = 1.0
            loss += 0.5 * float(np.sum((a - y) ** 2))
            correct += int(np.sum(np.argmax(z, axis=1) == lab))
        n = len(labels)
        return EvalResult(loss / max(n, 1), correct / max(n, 1), correct, n)

    def get_params(self) -> Params:
        return Params([w.copy() for w in self.net.w], [b.copy() for b in self.net.b])

    def set_params(self, params: Params) -> None:
        params.check(self.sizes)
        self.net = ref.Int8Net(params.weights, params.biases)
        self._apply_masks()
