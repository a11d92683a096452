"""Find a TensorFlow Lite interpreter: the one small place that knows which runtimes exist.

Tried in order:
1. ``ai-edge-litert`` (module ``ai_edge_litert``): Google's successor of tflite-runtime, with wheels
   for x86_64 and aarch64 and numpy 2 support. What hosts and CI use.
2. ``tflite-runtime`` (module ``tflite_runtime``): the older stand-alone runtime. Its last armv7l
   wheels are what a 32-bit ARM board can pip-install (see kernels/README.md, "TFLite kernel").

Both have the same ``Interpreter`` class and signature runners. ``RUNTIME`` names the one found;
importing this module without either raises ImportError with the install line.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

INSTALL_HINT = (
    "no TFLite runtime found: pip install ai-edge-litert (x86_64/aarch64 hosts) "
    "or tflite-runtime (what armv7 boards can get)"
)

# (pip distribution, module holding the Interpreter class)
CANDIDATES = [
    ("ai-edge-litert", "ai_edge_litert.interpreter"),
    ("tflite-runtime", "tflite_runtime.interpreter"),
]


@dataclass(frozen=True)
class Runtime:
    distribution: str
    module: str
    version: str
    interpreter_class: Any

    def describe(self) -> str:
        return f"{self.distribution} {self.version}"


def _version(distribution: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "unknown"


def find_runtime(candidates=CANDIDATES) -> Runtime:
    reasons = []
    for distribution, module in candidates:
        try:
            mod = importlib.import_module(module)
        except ImportError as e:  # not installed, or a wheel built for another numpy / CPU
            reasons.append(f"{distribution}: {e}")
            continue
        return Runtime(distribution, module, _version(distribution), mod.Interpreter)
    raise ImportError(f"{INSTALL_HINT} ({'; '.join(reasons)})")


RUNTIME = find_runtime()


def load_interpreter(model_path: str, num_threads: int = 1, default_delegates: bool = True):
    """An Interpreter for one model file. One thread: the board has one core, and the benchmarks
    compare single-threaded kernels.

    ``default_delegates=True`` is what a stock runtime does out of the box (XNNPACK for float
    models on x86 and ARM builds); False runs TFLite's own builtin kernels only (for comparison).
    """
    kwargs = {}
    if not default_delegates:
        resolver = importlib.import_module(RUNTIME.module).OpResolverType
        kwargs["experimental_op_resolver_type"] = resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    return RUNTIME.interpreter_class(model_path=str(model_path), num_threads=num_threads, **kwargs)
