"""Every native kernel, bound to the one C ABI of ``common/ecufl_kernel.h``.

All native libraries export the same core symbols, so one cffi cdef binds them all: ``NativeNet``
takes the library's name (``ecufl_c``, ``ecufl_c_plain``, ``ecufl_eigen``, ``ecufl_sparse_f32``,
``ecufl_int8``, ``ecufl_int8_plain``, or any other library built against the header). A kernel
with extra calls exports the header's optional symbols (pruning masks, the int8 inspection
calls); ``NativeNet.has`` says which a library has, and calling one it lacks is a one-line error.
cffi's ABI mode (``ffi.dlopen``) needs no compiler at install time, hands numpy arrays over
without copies (``ffi.from_buffer``) and releases the GIL around every C call, so a training
epoch runs while other Python threads work.

The kernel classes: ``NativeKernel`` (dense float: ``c``, ``c-plain``, ``eigen``) and
``PrunableNativeKernel`` (a native kernel that takes ``--prune``: the pruning schedule and masks of
``prune.PrunableKernel``, applied through ``ecufl_net_set_mask``; ``c-sparse`` in
``int8/pruned_c.py``, ``int8`` and ``int8-plain`` in ``int8/kernel.py``). A class trains with its
own library only: ``--kernel c --prune S`` is kernel ``c-sparse``, chosen by ``registry.resolve``.

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

from .base import EvalResult, Kernel, check_data, inputs_as
from .params import Params
from .prune import PrunableKernel

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
const char *ecufl_net_describe(const ecufl_net *net);

/* optional: any data (issue 17) */
int ecufl_net_train_f32(ecufl_net *net, const float *inputs, const float *targets, const uint8_t *labels,
                        int n_samples, const int32_t *order, int n, double lr, int batch_size);
int ecufl_net_evaluate_f32(ecufl_net *net, const float *inputs, const float *targets, const uint8_t *labels,
                           int n, double *loss, int *correct);
/* optional: pruning */
int ecufl_net_set_mask(ecufl_net *net, int layer, const uint8_t *mask, int block);
/* optional: quantised training */
long ecufl_net_master_bytes(const ecufl_net *net);
int ecufl_net_get_quantised(ecufl_net *net, int layer, int8_t *wq, float *maxabs);
int ecufl_net_forward_trace(ecufl_net *net, const uint8_t *images, int n, uint8_t *const *acts, int32_t *z);
"""
OPTIONAL = ("ecufl_net_train_f32", "ecufl_net_evaluate_f32", "ecufl_net_set_mask", "ecufl_net_master_bytes", "ecufl_net_get_quantised", "ecufl_net_forward_trace")

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


def _mnist(images, labels, n_in: int) -> tuple[np.ndarray, np.ndarray]:
    images = np.ascontiguousarray(images, dtype=np.uint8)
    labels = np.ascontiguousarray(labels, dtype=np.uint8)
    if images.ndim != 2 or images.shape[1] != n_in or len(labels) != len(images):
        raise ValueError(f"images must be (N, {n_in}) uint8 with N labels, got {images.shape} and {labels.shape}")
    return images, labels


def is_mnist(images, labels) -> bool:
    """uint8 pixels with class labels: the ABI's core calls (``ecufl_net_train``), MNIST's path."""
    return np.asarray(images).dtype == np.uint8 and np.ndim(labels) == 1


def _any_data(sizes: list[int], images, labels) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(inputs, targets, labels) for the *_f32 calls: float32 inputs (uint8 pixels p as p / 255 in
    float32, base.inputs_as), float32 targets (N, n_out) or uint8 class labels (N,)."""
    check_data(sizes, images, labels)
    inputs = np.ascontiguousarray(inputs_as(np.asarray(images), np.float32))
    labels = np.asarray(labels)
    if labels.ndim == 2:
        return inputs, np.ascontiguousarray(labels, dtype=np.float32), None
    if len(labels) and (labels.min() < 0 or labels.max() >= sizes[-1]):
        bad = int(labels.min()) if labels.min() < 0 else int(labels.max())
        raise ValueError(f"label {bad} is not a class of the network's {sizes[-1]} outputs")
    return inputs, None, np.ascontiguousarray(labels, dtype=np.uint8)


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

    def has(self, symbol: str) -> bool:
        """Whether the library exports ``symbol`` (one of the header's optional calls)."""
        try:
            getattr(self.lib, symbol)
        except AttributeError:
            return False
        return True

    def _optional(self, symbol: str) -> Any:
        try:
            return getattr(self.lib, symbol)
        except AttributeError:
            raise ValueError(f"{self.library}: has no {symbol} (an optional call of ecufl_kernel.h)") from None

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

    def _f32(self, images, labels) -> tuple[Any, Any, Any, int]:
        """The *_f32 calls' data pointers (and the arrays, kept alive by the caller)."""
        inputs, targets, classes = _any_data(self.sizes, images, labels)
        keep = (inputs, targets, classes)
        ptrs = (ffi.from_buffer("float[]", inputs),
                ffi.NULL if targets is None else ffi.from_buffer("float[]", targets),
                ffi.NULL if classes is None else ffi.from_buffer("uint8_t[]", classes))
        return keep, ptrs, len(inputs)

    def train(self, images, labels, order, lr: float, batch_size: int) -> None:
        order = np.ascontiguousarray(order, dtype=np.int32)
        if not is_mnist(images, labels):  # any data: float inputs and/or real-valued targets
            keep, (x, y, c), n = self._f32(images, labels)
            self._check(self._optional("ecufl_net_train_f32")(
                self.net, x, y, c, n, ffi.from_buffer("int32_t[]", order), len(order), float(lr), int(batch_size)))
            return
        check_data(self.sizes, images, labels)
        images, labels = _mnist(images, labels, self.sizes[0])
        self._check(self.lib.ecufl_net_train(
            self.net, ffi.from_buffer("uint8_t[]", images), ffi.from_buffer("uint8_t[]", labels),
            len(images), ffi.from_buffer("int32_t[]", order), len(order), float(lr), int(batch_size)))

    def evaluate(self, images, labels) -> tuple[float, int]:
        loss = ffi.new("double *")
        correct = ffi.new("int *")
        if not is_mnist(images, labels):
            keep, (x, y, c), n = self._f32(images, labels)
            self._check(self._optional("ecufl_net_evaluate_f32")(self.net, x, y, c, n, loss, correct))
            return float(loss[0]), int(correct[0])
        check_data(self.sizes, images, labels)
        images, labels = _mnist(images, labels, self.sizes[0])
        self._check(self.lib.ecufl_net_evaluate(
            self.net, ffi.from_buffer("uint8_t[]", images), ffi.from_buffer("uint8_t[]", labels),
            len(labels), loss, correct))
        return float(loss[0]), int(correct[0])

    def weight_bytes(self) -> int:
        return int(self.lib.ecufl_net_weight_bytes(self.net))

    def describe(self) -> dict[str, Any]:
        info = json.loads(ffi.string(self.lib.ecufl_net_describe(self.net)).decode())
        info["library"] = str(_LIBS[self.library][1])
        return info

    # -- optional calls ---------------------------------------------------------------------------
    def set_mask(self, layer: int, mask: np.ndarray, block: int) -> None:
        m = np.ascontiguousarray(mask, dtype=np.uint8)
        self._check(self._optional("ecufl_net_set_mask")(self.net, int(layer), ffi.from_buffer("uint8_t[]", m), int(block)))

    def master_bytes(self) -> int:
        return int(self._optional("ecufl_net_master_bytes")(self.net))

    def quantised(self, layer: int) -> tuple[np.ndarray, np.float32]:
        wq = np.zeros((self.sizes[layer + 1], self.sizes[layer]), np.int8)
        mx = ffi.new("float *")
        self._check(self._optional("ecufl_net_get_quantised")(self.net, int(layer), ffi.from_buffer("int8_t[]", wq), mx))
        return wq, np.float32(mx[0])

    def forward_trace(self, images: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        images = np.ascontiguousarray(images, dtype=np.uint8)
        acts = [np.zeros((len(images), n), np.uint8) for n in self.sizes]
        z = np.zeros((len(images), self.sizes[-1]), np.int32)
        bufs = [ffi.from_buffer("uint8_t[]", a) for a in acts]
        self._check(self._optional("ecufl_net_forward_trace")(
            self.net, ffi.from_buffer("uint8_t[]", images), len(images), ffi.new("uint8_t *[]", bufs),
            ffi.from_buffer("int32_t[]", z)))
        return acts, z


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

    def _prepared(self, batch_size: int) -> NativeNet:
        """The net, prepared for ``batch_size``: memory is sized at create (the C side never
        allocates while training), so a larger batch gets a new net with the same state."""
        net = self._live()
        if batch_size > net.max_batch:
            bigger = NativeNet(self.library, self.sizes, int(batch_size))
            bigger.set_params(net.get_params())
            self._net = net = bigger
            self._restore(net)
        return net

    def _restore(self, net: NativeNet) -> None:
        """State beyond the parameters that a new net must take over (pruning masks)."""

    def train(self, images, labels, order, lr, batch_size) -> None:
        self._prepared(batch_size).train(images, labels, order, lr, batch_size)

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


class PrunableNativeKernel(PrunableKernel, NativeKernel):
    """A native kernel that prunes: ``PrunableKernel`` cuts training at the schedule's events and
    computes the masks; they reach the library through the optional ``ecufl_net_set_mask``."""

    def _train(self, images, labels, order, lr, bs) -> None:
        NativeKernel.train(self, images, labels, order, lr, bs)

    def _apply_masks(self) -> None:
        self._restore(self._live())

    def _restore(self, net: NativeNet) -> None:
        for l, mask in enumerate(self.masks):
            if mask is not None:
                net.set_mask(l, mask, self.mask_block(l))

    def describe(self) -> dict[str, Any]:
        return {**NativeKernel.describe(self), "weight_bytes": self.weight_bytes(), **PrunableKernel.describe(self)}


class CKernel(NativeKernel):
    name = "c"
    library = "ecufl_c"

    @classmethod
    def check_options(cls, dtype: str | None = None, **options: Any) -> str:
        # `--kernel c --prune S` trains with kernel c-sparse (another library): registry.resolve
        # names it, registry.create builds it and its describe() says "c-sparse". Validated here
        # as that kernel, for callers that check a kernel's options before creating it.
        if options.get("prune") is not None:
            from .registry import kernel_class

            return kernel_class("c-sparse").check_options(dtype, **options)
        return super().check_options(dtype, **options)

    def __init__(self, params: Params, *, dtype: str | None = None, **options: Any) -> None:
        if options.get("prune") is not None:
            raise ValueError("kernel 'c' trains dense: --prune is kernel 'c-sparse' (registry.create('c', ..., prune=S) picks it)")
        super().__init__(params, dtype=dtype, **options)


class CPlainKernel(NativeKernel):
    name = "c-plain"
    library = "ecufl_c_plain"


class EigenKernel(NativeKernel):
    name = "eigen"
    library = "ecufl_eigen"
