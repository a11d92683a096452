"""The int8 kernels: their common Python side, the numpy int8 kernel and the two C paths.

Every int8 kernel (numpy, C plain, C SIMD) runs the scheme of ``reference.py``; pruning (options,
schedule, masks) comes from ``prune.PrunableKernel``; this module adds the int8 bounds and the
bits / weight bytes / master bytes that the reports show. The C kernels are libraries of the
native kernels' one C ABI (``int8_abi.c``), bound by ``..native`` like every native kernel, with
the ABI's optional pruning and quantisation calls.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..base import EvalResult, check_data
from ..native import NativeKernel, PrunableNativeKernel
from ..params import Params
from ..prune import PrunableKernel, sparse_bytes
from . import reference as ref


class Int8Base(PrunableKernel):
    """The int8 kernels' shared Python side; subclasses implement ``_train`` and ``_apply_masks``."""

    dtypes = ("float32",)  # the master weights (and get/set_params) are float32; arithmetic is int8
    path = "numpy"

    def train(self, images, labels, order, lr, batch_size) -> None:
        check_data(self.sizes, images, labels)
        ref.check_bounds(self.sizes, batch_size)
        super().train(images, labels, order, lr, batch_size)

    def weight_bytes(self) -> int:
        """The int8 model: int8 weights (block-CSC where pruned, see prune.py), int16 biases,
        one float32 scale per matrix. The float32 master is reported separately (master_bytes)."""
        n = 0
        for l, (n_in, n_out) in enumerate(zip(self.sizes[:-1], self.sizes[1:])):
            mask = self.masks[l]
            n += sparse_bytes(mask, 1, self.mask_block(l)) if mask is not None else n_in * n_out
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
        return {"bits": 8, "path": self.path, "weight_bytes": self.weight_bytes(),
                "master_bytes": self.master_bytes(), **super().describe()}


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
        check_data(self.sizes, images, labels)
        loss = 0.0
        correct = 0
        for k in range(0, len(labels), chunk):
            acts, z = self.net.forward(ref.input_q(images[k : k + chunk]))
            a = acts[-1] / ref.A_ONE
            lab = labels[k : k + chunk]
            if np.ndim(lab) == 2:  # real-valued targets: every output within 0.5 of its target
                y = np.asarray(lab, np.float32).astype(np.float64)
                loss += 0.5 * float(np.sum((a - y) ** 2))
                correct += int(np.sum(np.max(np.abs(a - y), axis=1) < 0.5))
                continue
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


class NativeInt8Kernel(Int8Base, PrunableNativeKernel):
    """int8 training in C (``int8_net.c``), through the native ABI; bit for bit the numpy kernel."""

    def __init__(self, params: Params, *, dtype: str | None = None, **options: Any) -> None:
        super().__init__(params, dtype=dtype, **options)
        self.path = self._live().describe()["path"]

    def weight_bytes(self) -> int:  # the library's own count (== Int8Base's, tests/test_int8.py)
        return NativeKernel.weight_bytes(self)

    def master_bytes(self) -> int:
        return self._live().master_bytes()

    # -- inspection (bit-exactness tests) -------------------------------------------------------
    def quantised(self, layer: int) -> tuple[np.ndarray, np.float32]:
        return self._live().quantised(layer)

    def forward_trace(self, images: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        return self._live().forward_trace(images)


class Int8Kernel(NativeInt8Kernel):
    """int8 training in C, SIMD path (AVX2 on x86-64, NEON on ARMv7)."""

    name = "int8"
    library = "ecufl_int8"


class Int8PlainKernel(NativeInt8Kernel):
    """int8 training in C, plain portable path."""

    name = "int8-plain"
    library = "ecufl_int8_plain"
