"""The native kernels (``c``, ``c-plain``, ``eigen``), bound to the C ABI of ``common/ecufl_kernel.h``.

Every native kernel library exports the same symbols, so one cffi cdef binds them all:
``NativeKernel`` takes the library's name (``ecufl_c``, ``ecufl_c_plain``, ``ecufl_eigen``, or
any other library built against the same header). cffi's ABI mode (``ffi.dlopen``) needs no
compiler at install time, hands numpy arrays over without copies (``ffi.from_buffer``) and
releases the GIL around every C call, so a training epoch runs while other Python threads work.

Where the libraries are: CMake installs them into the package directory ``ecufl/kernels``.
In a wheel that is next to this file; in an editable install (scikit-build-core's redirect mode,
what ``make setup`` does) the Python sources stay in the tree while CMake's files land in
``site-packages/ecufl/kernels``, so both places are searched (``library_dirs``), after
``$ECUFL_NATIVE_LIB_DIR`` (a build directory, for development and the sanitizer builds).
"""

from __future__ import annotations

import json
import os
import sysconfig
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from cffi import FFI

from .base import EvalResult, Kernel
from .params import Params

CDEF = """
typedef struct ecufl_net ecufl_net;
ecufl_net *ecufl_net_create(int n_sizes, const int *sizes, int max_batch, char *err, int errlen);
void ecufl_net_destroy(ecufl_net *net);
const char *ecufl_net_error(const ecufl_net *net);
int ecufl_net_set_params(ecufl_net *net, const float *const *arrays);
int ecufl_net_get_params(const ecufl_net *net, float *const *arrays);
int ecufl_net_init_params(ecufl_net *net, uint32_t seed, int scaled);
int ecufl_net_train(ecufl_net *net, const uint8_t *images, const uint8_t *labels, int n_images,
                    const int32_t *order, int n, double lr, int batch_size);
int ecufl_net_evaluate(ecufl_net *net, const uint8_t *images, const uint8_t *labels, int n,
                       double *loss, int *correct);
long ecufl_net_weight_bytes(const ecufl_net *net);
const char *ecufl_net_describe(void);
"""

ffi = FFI()
ffi.cdef(CDEF)
_LIBS: dict[str, Any] = {}


def library_dirs() -> list[Path]:
    """Directories searched for ``lib<name>.so``, in order."""
    dirs = []
    if os.environ.get("ECUFL_NATIVE_LIB_DIR"):
        dirs.append(Path(os.environ["ECUFL_NATIVE_LIB_DIR"]))
    dirs.append(Path(__file__).resolve().parent)  # wheel install: next to this file
    for key in ("platlib", "purelib"):  # editable install: CMake's files are in site-packages
        d = Path(sysconfig.get_paths()[key]) / "ecufl" / "kernels"
        if d not in dirs:
            dirs.append(d)
    return dirs


def library_path(name: str) -> Path:
    tried = [d / f"lib{name}.so" for d in library_dirs()]
    for p in tried:
        if p.is_file():
            return p
    raise OSError(f"lib{name}.so not found (looked in {', '.join(str(p.parent) for p in tried)})")


def load(name: str) -> Any:
    """The cffi library object of ``lib<name>.so``; OSError naming where it looked."""
    if name not in _LIBS:
        path = library_path(name)
        lib = ffi.dlopen(str(path))
        _LIBS[name] = (lib, path)
    return _LIBS[name][0]


def _float_ptrs(arrays: list[np.ndarray]) -> tuple[list, Any]:
    """A ``float *[]`` over float32 C-contiguous arrays; the first item keeps them alive."""
    bufs = [ffi.from_buffer("float[]", a) for a in arrays]
    return [arrays, bufs], ffi.new("float *[]", bufs)


class NativeNet:
    """One ``ecufl_net`` of a native library: a thin, checked wrapper over the C ABI."""

    def __init__(self, library: str, sizes: list[int], max_batch: int) -> None:
        self.lib = load(library)
        self.library = library
        self.sizes = list(sizes)
        self.max_batch = int(max_batch)
        err = ffi.new("char[]", 256)
        c_sizes = ffi.new("int[]", self.sizes)
        net = self.lib.ecufl_net_create(len(self.sizes), c_sizes, self.max_batch, err, 256)
        if net == ffi.NULL:
            raise ValueError(f"{library}: {ffi.string(err).decode()}")
        self.net = ffi.gc(net, self.lib.ecufl_net_destroy)

    def _check(self, rc: int) -> None:
        if rc != 0:
            raise ValueError(f"{self.library}: {ffi.string(self.lib.ecufl_net_error(self.net)).decode()}")

    def shapes(self) -> list[tuple[int, ...]]:
        out: list[tuple[int, ...]] = []
        for n_in, n_out in zip(self.sizes[:-1], self.sizes[1:]):
            out += [(n_out, n_in), (n_out,)]
        return out

    def set_params(self, params: Params) -> None:
        params.check(self.sizes)
        arrays = [np.ascontiguousarray(a, dtype=np.float32) for a in params.flat()]
        keep, ptrs = _float_ptrs(arrays)
        self._check(self.lib.ecufl_net_set_params(self.net, ptrs))

    def get_params(self) -> Params:
        arrays = [np.empty(s, dtype=np.float32) for s in self.shapes()]
        keep, ptrs = _float_ptrs(arrays)
        self._check(self.lib.ecufl_net_get_params(self.net, ptrs))
        return Params.from_flat(arrays)

    def init_params(self, seed: int, scaled: bool = False) -> None:
        self._check(self.lib.ecufl_net_init_params(self.net, int(seed), int(bool(scaled))))

    def train(self, images, labels, order, lr: float, batch_size: int) -> None:
        images = np.ascontiguousarray(images, dtype=np.uint8)
        labels = np.ascontiguousarray(labels, dtype=np.uint8)
        order = np.ascontiguousarray(order, dtype=np.int32)
        if images.ndim != 2 or images.shape[1] != self.sizes[0] or len(labels) != len(images):
            raise ValueError(f"images must be (N, {self.sizes[0]}) uint8 with N labels, got {images.shape} and {labels.shape}")
        self._check(self.lib.ecufl_net_train(
            self.net, ffi.from_buffer("uint8_t[]", images), ffi.from_buffer("uint8_t[]", labels),
            len(images), ffi.from_buffer("int32_t[]", order), len(order), float(lr), int(batch_size)))

    def evaluate(self, images, labels) -> tuple[float, int]:
        images = np.ascontiguousarray(images, dtype=np.uint8)
        labels = np.ascontiguousarray(labels, dtype=np.uint8)
        if images.ndim != 2 or images.shape[1] != self.sizes[0] or len(labels) != len(images):
            raise ValueError(f"images must be (N, {self.sizes[0]}) uint8 with N labels, got {images.shape} and {labels.shape}")
        loss = ffi.new("double *")
        correct = ffi.new("int *")
        self._check(self.lib.ecufl_net_evaluate(
            self.net, ffi.from_buffer("uint8_t[]", images), ffi.from_buffer("uint8_t[]", labels),
            len(labels), loss, correct))
        return float(loss[0]), int(correct[0])

    def weight_bytes(self) -> int:
        return int(self.lib.ecufl_net_weight_bytes(self.net))

    def describe(self) -> dict[str, Any]:
        info = json.loads(ffi.string(self.lib.ecufl_net_describe()).decode())
        info["library"] = str(_LIBS[self.library][1])
        return info


def native_init_params(library: str, sizes: list[int], seed: int, *, scaled: bool = False) -> Params:
    """Initial parameters drawn by the library's C PRNG (ecufl_rand.h), as float32."""
    net = NativeNet(library, sizes, 1)
    net.init_params(seed, scaled)
    return net.get_params()


class NativeKernel(Kernel):
    """A kernel backed by a library exporting the ABI of ``common/ecufl_kernel.h``."""

    library: ClassVar[str]
    dtypes = ("float32",)
    default_max_batch: ClassVar[int] = 64

    def __init__(self, params: Params, *, dtype: str | None = None, **options: Any) -> None:
        super().__init__(params, dtype=dtype, **options)
        self._net: NativeNet | None = NativeNet(self.library, self.sizes, self.default_max_batch)
        self._net.set_params(params)

    def _live(self) -> NativeNet:
        if self._net is None:
            raise ValueError(f"kernel {self.name!r} is closed")
        return self._net

    def train(self, images, labels, order, lr, batch_size) -> None:
        net = self._live()
        if batch_size > net.max_batch:  # memory is sized at create: a larger batch gets a new net
            bigger = NativeNet(self.library, self.sizes, int(batch_size))
            bigger.set_params(net.get_params())
            self._net = net = bigger
        net.train(images, labels, order, lr, batch_size)

    def evaluate(self, images, labels) -> EvalResult:
        loss, correct = self._live().evaluate(images, labels)
        n = len(labels)
        return EvalResult(loss, correct / max(n, 1), correct, n)

    def get_params(self) -> Params:
        return self._live().get_params()

    def set_params(self, params: Params) -> None:
        self._live().set_params(params)

    def weight_bytes(self) -> int:
        return self._live().weight_bytes()

    def describe(self) -> dict[str, Any]:
        return self._live().describe()

    def close(self) -> None:
        self._net = None  # ffi.gc frees the C side


class CKernel(NativeKernel):
    name = "c"
    library = "ecufl_c"

    # --prune S: the float32 pruning path (block-CSC, kernels/int8/sparse_f32.c, kernel c-sparse) trains.
    @classmethod
    def check_options(cls, dtype: str | None = None, **options: Any) -> str:
        if options.get("prune") is not None:
            from .int8.pruned_c import PrunedCKernel

            return PrunedCKernel.check_options(dtype, **options)
        return super().check_options(dtype, **options)

    def __new__(cls, params: Params, **kwargs: Any):
        if kwargs.get("prune") is not None:
            from .int8.pruned_c import PrunedCKernel

            return PrunedCKernel(params, **kwargs)
        return super().__new__(cls)


class CPlainKernel(NativeKernel):
    name = "c-plain"
    library = "ecufl_c_plain"


class EigenKernel(NativeKernel):
    name = "eigen"
    library = "ecufl_eigen"
