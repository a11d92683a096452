"""The C libraries of this package, bound with cffi: the int8 kernels (``int8`` = SIMD path,
``int8-plain`` = plain C path, ``int8_net.h``) and the float32 pruned path (``c-sparse``,
``sparse_f32.h``, in ``pruned_c.py``).

Both libraries export the same shape of API under a prefix (``i8_`` / ``sf_``): create, destroy,
last_error, set/get_params, train, evaluate, set_mask, weight_bytes. ``CNetKernel`` binds that
shape once: cffi's ABI mode (no compiler at import), numpy arrays handed over without copies
(``ffi.from_buffer``), the GIL released around every C call.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from cffi import FFI

from ..base import EvalResult
from ..params import Params
from ..prune import PrunableKernel
from .kernel import Int8Base

_CDEF = """
typedef struct i8_net i8_net;
i8_net *i8_create(int n_sizes, const int *sizes, const float *const *params);
void i8_destroy(i8_net *net);
const char *i8_last_error(void);
const char *i8_path(void);
int i8_set_params(i8_net *net, const float *const *params);
int i8_get_params(const i8_net *net, float *const *params);
int i8_train(i8_net *net, const uint8_t *images, const uint8_t *labels, int n_images,
             const int32_t *order, int n, double lr, int batch_size);
int i8_evaluate(i8_net *net, const uint8_t *images, const uint8_t *labels, int n, double *loss, int *correct);
int i8_set_mask(i8_net *net, int layer, const uint8_t *mask, int block);
int i8_get_quantised(const i8_net *net, int layer, int8_t *wq, float *maxabs);
int i8_forward_trace(i8_net *net, const uint8_t *images, int n, uint8_t *const *acts, int32_t *z);
long i8_weight_bytes(const i8_net *net);
long i8_master_bytes(const i8_net *net);
long i8_nonzero(const i8_net *net, int layer);

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
"""

ffi = FFI()
ffi.cdef(_CDEF)
_LIBS: dict[str, Any] = {}


def library_dirs() -> list[Path]:
    """Where the built libraries may be: $ECUFL_INT8_LIB_DIR, next to this file, the installed package."""
    dirs = []
    if os.environ.get("ECUFL_INT8_LIB_DIR"):
        dirs.append(Path(os.environ["ECUFL_INT8_LIB_DIR"]))
    dirs.append(Path(__file__).parent)
    import sysconfig

    for key in ("platlib", "purelib"):
        dirs.append(Path(sysconfig.get_paths()[key]) / "ecufl" / "kernels" / "int8")
    return dirs


def load(name: str) -> Any:
    """Load ``lib<name>.so`` (ecufl_int8, ecufl_int8_plain, ecufl_sparse_f32); OSError naming where it looked."""
    if name not in _LIBS:
        tried = [d / f"lib{name}.so" for d in library_dirs()]
        path = next((p for p in tried if p.is_file()), None)
        if path is None:
            raise OSError(f"lib{name}.so not found (looked in {', '.join(str(p.parent) for p in tried)})")
        _LIBS[name] = ffi.dlopen(str(path))
    return _LIBS[name]


def _param_ptrs(arrays: list[np.ndarray]) -> tuple[list, Any]:
    """A ``float *[]`` over float32 copies of ``arrays``; the first item keeps them alive."""
    arrays = [np.ascontiguousarray(a, dtype=np.float32) for a in arrays]
    bufs = [ffi.from_buffer("float[]", a) for a in arrays]
    return [arrays, bufs], ffi.new("float *[]", bufs)


class CNetKernel(PrunableKernel):
    """A prunable kernel backed by one of this package's C networks (API prefix ``prefix``)."""

    library: ClassVar[str]
    prefix: ClassVar[str]

    def __init__(self, params: Params, *, dtype: str | None = None, **options: Any) -> None:
        super().__init__(params, dtype=dtype, **options)
        self._lib = load(self.library)
        keep, ptrs = _param_ptrs(params.astype(np.float32).flat())
        self._net = self._c("create")(len(self.sizes), ffi.new("int[]", self.sizes), ptrs)
        if self._net == ffi.NULL:
            raise ValueError(self._error())

    def _c(self, name: str) -> Any:
        return getattr(self._lib, self.prefix + name)

    def _error(self) -> str:
        return f"kernel {self.name!r}: " + ffi.string(self._c("last_error")()).decode()

    def _check(self, rc: int) -> None:
        if rc != 0:
            raise ValueError(self._error())

    def _train(self, images, labels, order, lr, bs) -> None:
        images = np.ascontiguousarray(images, dtype=np.uint8)
        labels = np.ascontiguousarray(labels, dtype=np.uint8)
        order = np.ascontiguousarray(order, dtype=np.int32)
        self._check(self._c("train")(
            self._net, ffi.from_buffer("uint8_t[]", images), ffi.from_buffer("uint8_t[]", labels),
            len(images), ffi.from_buffer("int32_t[]", order), len(order), float(lr), int(bs)))

    def _apply_masks(self) -> None:
        for l, mask in enumerate(self.masks):
            if mask is not None:
                m = np.ascontiguousarray(mask, dtype=np.uint8)
                self._check(self._c("set_mask")(self._net, l, ffi.from_buffer("uint8_t[]", m), self.mask_block(l)))

    def evaluate(self, images, labels) -> EvalResult:
        images = np.ascontiguousarray(images, dtype=np.uint8)
        labels = np.ascontiguousarray(labels, dtype=np.uint8)
        loss, correct = ffi.new("double *"), ffi.new("int *")
        self._check(self._c("evaluate")(self._net, ffi.from_buffer("uint8_t[]", images),
                                        ffi.from_buffer("uint8_t[]", labels), len(labels), loss, correct))
        n = len(labels)
        return EvalResult(loss[0], correct[0] / max(n, 1), correct[0], n)

    def get_params(self) -> Params:
        out = Params([np.zeros((o, i), np.float32) for i, o in zip(self.sizes[:-1], self.sizes[1:])],
                     [np.zeros(o, np.float32) for o in self.sizes[1:]])
        keep, ptrs = _param_ptrs(out.flat())
        self._check(self._c("get_params")(self._net, ptrs))
        return Params(keep[0][0::2], keep[0][1::2])

    def set_params(self, params: Params) -> None:
        params.check(self.sizes)
        keep, ptrs = _param_ptrs(params.flat())
        self._check(self._c("set_params")(self._net, ptrs))

    def weight_bytes(self) -> int:
        return int(self._c("weight_bytes")(self._net))

    def close(self) -> None:
        if getattr(self, "_net", None) not in (None, ffi.NULL):
            self._c("destroy")(self._net)
        self._net = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


class _NativeInt8(CNetKernel, Int8Base):
    library = "ecufl_int8"
    prefix = "i8_"

    def __init__(self, params: Params, *, dtype: str | None = None, **options: Any) -> None:
        super().__init__(params, dtype=dtype, **options)
        self.path = ffi.string(self._lib.i8_path()).decode()

    # -- inspection (bit-exactness tests) -------------------------------------------------------
    def quantised(self, layer: int) -> tuple[np.ndarray, np.float32]:
        wq = np.zeros((self.sizes[layer + 1], self.sizes[layer]), np.int8)
        mx = ffi.new("float *")
        self._check(self._lib.i8_get_quantised(self._net, layer, ffi.from_buffer("int8_t[]", wq), mx))
        return wq, np.float32(mx[0])

    def forward_trace(self, images: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        images = np.ascontiguousarray(images, dtype=np.uint8)
        acts = [np.zeros((len(images), n), np.uint8) for n in self.sizes]
        z = np.zeros((len(images), self.sizes[-1]), np.int32)
        bufs = [ffi.from_buffer("uint8_t[]", a) for a in acts]
        self._check(self._lib.i8_forward_trace(self._net, ffi.from_buffer("uint8_t[]", images), len(images),
                                               ffi.new("uint8_t *[]", bufs), ffi.from_buffer("int32_t[]", z)))
        return acts, z

    def master_bytes(self) -> int:
        return int(self._lib.i8_master_bytes(self._net))


class Int8Kernel(_NativeInt8):
    """int8 training in C, SIMD path (AVX2 on x86-64, NEON on ARMv7)."""

    name = "int8"
    library = "ecufl_int8"


class Int8PlainKernel(_NativeInt8):
    """int8 training in C, plain portable path."""

    name = "int8-plain"
    library = "ecufl_int8_plain"
