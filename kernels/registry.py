"""Which kernels exist, and how to get the ones that are missing.

Every kernel is listed here by name with the module that implements it. A kernel whose module
cannot load (native library not built, runtime not installed) raises ``KernelUnavailable``,
whose message is one line naming what is available and how to get the missing one.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass

from .base import Kernel
from .params import Params
from .prng import init_params


class KernelUnavailable(RuntimeError):
    pass


@dataclass(frozen=True)
class KernelSpec:
    name: str
    module: str  # relative to ecufl.kernels
    cls: str
    summary: str
    how_to_get: str
    pruned: str | None = None  # the kernel that trains this one's --prune (another library)


_REINSTALL = "reinstall ecufl with `pip install .` (it compiles the native kernels with CMake)"

KERNELS: dict[str, KernelSpec] = {
    spec.name: spec
    for spec in [
        KernelSpec("numpy", "reference", "NumpyKernel", "numpy reference, vectorised", "pip install numpy"),
        KernelSpec("textbook", "reference", "TextbookKernel", "network.py's per-sample loop", "pip install numpy"),
        KernelSpec("c", "native", "CKernel", "C, float arrays in structs, optimised (SIMD) path", _REINSTALL,
                   pruned="c-sparse"),
        KernelSpec("c-plain", "native", "CPlainKernel", "C, float arrays in structs, plain portable path", _REINSTALL),
        KernelSpec("eigen", "native", "EigenKernel", "C++17 / Eigen matrix expressions", _REINSTALL),
        KernelSpec("tflite", "tflite", "TFLiteKernel", "TensorFlow Lite interpreter, training signatures",
                   "pip install ai-edge-litert (x86_64/aarch64) or tflite-runtime"),
        KernelSpec("int8", "int8", "Int8Kernel", "CMSIS-NN-style int8 training, optimised (SIMD) path", _REINSTALL),
        KernelSpec("int8-plain", "int8", "Int8PlainKernel", "CMSIS-NN-style int8 training, plain C path", _REINSTALL),
        KernelSpec("int8-numpy", "int8", "Int8NumpyKernel", "int8 integer arithmetic in numpy (the int8 truth)", "pip install numpy"),
        KernelSpec("c-sparse", "int8.pruned_c", "PrunedCKernel", "C float32 with CSC-pruned hidden layers (--prune)", _REINSTALL),
        KernelSpec("remote", "remote", "RemoteAgentKernel", "the native ecufl agent on a board, over mutual TLS",
                   "`ecufl deploy` an agent-mode board (its SuperNode gets ECUFL_REMOTE_AGENT)"),
    ]
}


def split_spec(spec: str) -> tuple[str, str | None, str | None]:
    """A kernel as scenarios and node configs write it: ``name[:dtype]``, or ``remote[:NODE]``, where
    the part after ':' names the board whose agent trains. Returns (name, dtype, board)."""
    name, _, tail = spec.partition(":")
    name, tail = name.strip(), tail.strip() or None
    if name == "remote":
        return name, None, tail
    return name, tail, None


def register(spec: KernelSpec) -> None:
    KERNELS[spec.name] = spec


def kernel_class(name: str) -> type[Kernel]:
    spec = KERNELS.get(name)
    if spec is None:
        raise KernelUnavailable(
            f"unknown kernel {name!r}; kernels: {', '.join(KERNELS)} (available: {', '.join(available())})"
        )
    try:
        module = importlib.import_module(f"{__package__}.{spec.module}")
        return getattr(module, spec.cls)
    except (ImportError, OSError) as e:
        raise KernelUnavailable(
            f"kernel {name!r} is not available here ({e}); to get it: {spec.how_to_get}; "
            f"available: {', '.join(available())}"
        ) from None


def available() -> list[str]:
    names = []
    for name, spec in KERNELS.items():
        try:
            getattr(importlib.import_module(f"{__package__}.{spec.module}"), spec.cls)
        except (ImportError, OSError, AttributeError):
            continue
        names.append(name)
    return names


def resolve(name: str, options: dict) -> str:
    """The kernel that trains ``name`` with these options: ``name`` itself, or, where the options
    ask for pruning that ``name``'s library does not do, the kernel its spec names for it
    (``c`` with ``prune`` -> ``c-sparse``). The choice is made here, in the open: no kernel class
    returns an instance of another, and the kernel built says its own name (``describe()``)."""
    spec = KERNELS.get(name)
    if spec is not None and spec.pruned and options.get("prune") is not None:
        return spec.pruned
    return name


def create(name: str, params: Params, **kwargs) -> Kernel:
    return kernel_class(resolve(name, kwargs))(params, **kwargs)


@functools.lru_cache(maxsize=None)
def usable(name: str) -> bool:
    """Whether kernel ``name`` can be created here: its module imports *and* its native library or
    runtime loads (a tiny 784-2-10 network is created and closed). Cached per process."""
    if name not in available():
        return False
    try:
        kernel = create(name, init_params([784, 2, 10], 1, dtype="float32"))
        kernel.close()
        return True
    except Exception:  # noqa: BLE001 - any failure means "not usable here"
        return False
