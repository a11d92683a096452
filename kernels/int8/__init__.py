"""CMSIS-NN-style int8 training (``--kernel int8``, ``int8-plain``, ``int8-numpy``) with pruning.

The scheme is specified and implemented in numpy in ``reference.py`` (the int8 truth); the C
library (``int8_net.c`` with the inner loops of ``int8_ops_plain.c`` or ``int8_ops_simd.c``,
chosen at build time) matches it bit for bit. ``kernel.py`` holds the options and the pruning
schedule shared by all three; ``native.py`` binds the C libraries with cffi.
"""

from .kernel import Int8NumpyKernel

__all__ = ["Int8NumpyKernel", "Int8Kernel", "Int8PlainKernel"]

_NATIVE = {"Int8Kernel": "ecufl_int8", "Int8PlainKernel": "ecufl_int8_plain"}


def __getattr__(name: str):
    """The C kernels exist only where their library was built: OSError otherwise (the registry
    turns it into "kernel 'int8' is not available here ..., to get it: ...")."""
    if name in _NATIVE:
        from . import native

        native.load(_NATIVE[name])
        return getattr(native, name)
    raise AttributeError(name)
