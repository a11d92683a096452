"""CMSIS-NN-style int8 training (``--kernel int8``, ``int8-plain``, ``int8-numpy``) with pruning.

The scheme is specified and implemented in numpy in ``reference.py`` (the int8 truth); the C
library (``int8_net.c`` with the inner loops of ``int8_ops_plain.c`` or ``int8_ops_simd.c``,
chosen at build time, behind the native kernels' C ABI in ``int8_abi.c``) matches it bit for bit.
``kernel.py`` holds the three kernels; the float32 pruned C kernel ``c-sparse`` (``sparse_f32.c``)
lives here too (``pruned_c.py``): it shares the block lists (``block_list.h``) with int8.
"""

from .kernel import Int8NumpyKernel

__all__ = ["Int8NumpyKernel", "Int8Kernel", "Int8PlainKernel"]


def __getattr__(name: str):
    """The C kernels exist only where their library was built: OSError otherwise (the registry
    turns it into "kernel 'int8' is not available here ..., to get it: ...")."""
    from . import kernel

    cls = {"Int8Kernel": kernel.Int8Kernel, "Int8PlainKernel": kernel.Int8PlainKernel}.get(name)
    if cls is None:
        raise AttributeError(name)
    from .. import native

    native.load(cls.library)
    return cls
