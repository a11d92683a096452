"""Kernel ``c-sparse``: the float32 C kernel's pruning path (``sparse_f32.c``), ``--kernel c --prune S``.

Float arithmetic as the numpy reference (held to the float tolerance, not bit-exactness);
hidden layers switch to block-CSC storage when the schedule prunes them, and every product skips
pruned weights and zero inputs. A library of the native kernels' one C ABI with its optional
``ecufl_net_set_mask``, bound by ``..native`` like the others.
"""

from __future__ import annotations

from ..native import PrunableNativeKernel, load
from ..prune import sparse_bytes


class PrunedCKernel(PrunableNativeKernel):
    """HDRNN in float32 C with magnitude-pruned, block-CSC-stored hidden layers. ``weight_bytes``:
    float32 values (block-CSC where pruned, see prune.py) and float32 biases."""

    name = "c-sparse"
    dtypes = ("float32",)
    library = "ecufl_sparse_f32"


load(PrunedCKernel.library)  # OSError where it is not built: the registry reports "not available"

__all__ = ["PrunedCKernel", "sparse_bytes"]
