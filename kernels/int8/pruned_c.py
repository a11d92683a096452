"""The float32 C kernel's pruning path (``sparse_f32.c``): ``--kernel c --prune S``.

Float arithmetic as the numpy reference (held to the float tolerance, not bit-exactness);
hidden layers switch to CSC storage when the schedule prunes them, and every product skips
pruned weights and zero inputs. Bound with cffi like the int8 library (GIL released per call).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from cffi import FFI

from ..base import EvalResult
from ..params import Params
from ..prune import PrunableKernel, sparse_bytes
from .native import library_dirs

ffi = FFI()
ffi.cdef("""
typedef struct sf_net sf_net;
sf_net *sf_create(int n_sizes, const int *sizes, const float *const *params);
void sf_destroy(sf_net *net);
const char *sf_last_error(void);
int sf_set_params(sf_net *net, const float *const *params);
int sf_get_params(const sf_net *net, float *const *params);
int sf_train(sf_net *net, const uint8_t *images, const uint8_t *labels, int n_images,
             const int32_t *order, int n, double lr, int batch_size);
int sf_evaluate(sf_net *net, const uint8_t *images, const uint8_t *labels, int n, double *loss, int *correct);
int sf_set_mask(sf_net *net, int layer, const uint8_t *mask, int block);
long sf_weight_bytes(const sf_net *net);
""")
_LIB: list[Any] = []


def load() -> Any:
    if not _LIB:
        tried = [d / "libecufl_sparse_f32.so" for d in library_dirs()]
        path = next((p for p in tried if p.is_file()), None)
        if path is None:
            raise OSError(f"libecufl_sparse_f32.so not found (looked in {', '.join(str(p.parent) for p in tried)})")
        _LIB.append(ffi.dlopen(str(path)))
    return _LIB[0]


class PrunedCKernel(PrunableKernel):
    """HDRNN in float32 C with magnitude-pruned, CSC-stored hidden layers."""

    name = "c-sparse"
    dtypes = ("float32",)

    def __init__(self, params: Params, *, dtype: str | None = None, **options: Any) -> None:
        super().__init__(params, dtype=dtype, **options)
        self._lib = load()
        keep, ptrs = self._ptrs(params.astype(np.float32).flat())
        self._net = self._lib.sf_create(len(self.sizes), ffi.new("int[]", self.sizes), ptrs)
        if self._net == ffi.NULL:
            raise ValueError(self._error())

    def _error(self) -> str:
        return f"kernel {self.name!r}: " + ffi.string(self._lib.sf_last_error()).decode()

    def _check(self, rc: int) -> None:
        if rc != 0:
            raise ValueError(self._error())

    @staticmethod
    def _ptrs(arrays):
        arrays = [np.ascontiguousarray(a, dtype=np.float32) for a in arrays]
        bufs = [ffi.from_buffer("float[]", a) for a in arrays]
        return [arrays, bufs], ffi.new("float *[]", bufs)

    def _train(self, images, labels, order, lr, bs) -> None:
        images = np.ascontiguousarray(images, dtype=np.uint8)
        labels = np.ascontiguousarray(labels, dtype=np.uint8)
        order = np.ascontiguousarray(order, dtype=np.int32)
        self._check(self._lib.sf_train(self._net, ffi.from_buffer("uint8_t[]", images),
                                       ffi.from_buffer("uint8_t[]", labels), len(images),
                                       ffi.from_buffer("int32_t[]", order), len(order), float(lr), int(bs)))

    def _apply_masks(self) -> None:
        for l, mask in enumerate(self.masks):
            if mask is not None:
                m = np.ascontiguousarray(mask, dtype=np.uint8)
                self._check(self._lib.sf_set_mask(self._net, l, ffi.from_buffer("uint8_t[]", m), self.mask_block(l)))

    def evaluate(self, images, labels) -> EvalResult:
        images = np.ascontiguousarray(images, dtype=np.uint8)
        labels = np.ascontiguousarray(labels, dtype=np.uint8)
        loss, correct = ffi.new("double *"), ffi.new("int *")
        self._check(self._lib.sf_evaluate(self._net, ffi.from_buffer("uint8_t[]", images),
                                          ffi.from_buffer("uint8_t[]", labels), len(labels), loss, correct))
        n = len(labels)
        return EvalResult(loss[0], correct[0] / max(n, 1), correct[0], n)

    def get_params(self) -> Params:
        out = Params([np.zeros((o, i), np.float32) for i, o in zip(self.sizes[:-1], self.sizes[1:])],
                     [np.zeros(o, np.float32) for o in self.sizes[1:]])
        keep, ptrs = self._ptrs(out.flat())
        self._check(self._lib.sf_get_params(self._net, ptrs))
        return Params(keep[0][0::2], keep[0][1::2])

    def set_params(self, params: Params) -> None:
        params.check(self.sizes)
        keep, ptrs = self._ptrs(params.flat())
        self._check(self._lib.sf_set_params(self._net, ptrs))

    def weight_bytes(self) -> int:
        """float32 values (block-CSC where pruned, see prune.py) and float32 biases."""
        return int(self._lib.sf_weight_bytes(self._net))

    def describe(self) -> dict[str, Any]:
        return {"bits": 32, "path": "block-csc-float32", "weight_bytes": self.weight_bytes(), **super().describe()}

    def close(self) -> None:
        if getattr(self, "_net", None) not in (None, ffi.NULL):
            self._lib.sf_destroy(self._net)
        self._net = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


__all__ = ["PrunedCKernel", "sparse_bytes"]
