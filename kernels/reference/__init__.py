"""The numpy reference HDRNN (``--kernel numpy``) and the textbook per-sample loop."""

from .network import NumpyKernel
from .textbook import TextbookKernel

__all__ = ["NumpyKernel", "TextbookKernel"]
