"""The float32 C kernel's pruning path (``sparse_f32.c``): ``--kernel c --prune S``.

Float arithmetic as the numpy reference (held to the float tolerance, not bit-exactness);
hidden layers switch to block-CSC storage when the schedule prunes them, and every product skips
pruned weights and zero inputs. Bound by ``native.CNetKernel`` like the int8 library.
"""

from __future__ import annotations

from typing import Any

from ..prune import sparse_bytes
from .native import CNetKernel


class PrunedCKernel(CNetKernel):
    """HDRNN in float32 C with magnitude-pruned, block-CSC-stored hidden layers. ``weight_bytes``:
    float32 values (block-CSC where pruned, see prune.py) and float32 biases."""

    name = "c-sparse"
    dtypes = ("float32",)
    library = "ecufl_sparse_f32"
    prefix = "sf_"

    def describe(self) -> dict[str, Any]:
        return {"bits": 32, "path": "block-csc-float32", "weight_bytes": self.weight_bytes(), **super().describe()}


__all__ = ["PrunedCKernel", "sparse_bytes"]
