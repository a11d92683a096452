"""HDRNN kernels: one interface (``base.Kernel``), many implementations, one registry.

``reference`` (numpy) is the truth; every other kernel is tested against it.
"""

from .base import EvalResult, Kernel
from .params import Params
from .prng import EpochOrder, init_params
from .registry import KERNELS, KernelUnavailable, available, create, kernel_class, split_spec, usable

__all__ = [
    "EvalResult", "Kernel", "Params", "EpochOrder", "init_params",
    "KERNELS", "KernelUnavailable", "available", "create", "kernel_class", "split_spec", "usable",
]
