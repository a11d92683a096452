"""The TFLite kernel (``--kernel tflite``): HDRNN trained inside a stock TensorFlow Lite interpreter.

``TFLiteKernel`` is imported on first use, so that ``ecufl tflite export`` (TensorFlow) and the
model catalog work on a host without a TFLite runtime, while the registry still gets an
ImportError with the install line when the kernel is asked for and no runtime is there.
"""

from __future__ import annotations


def __getattr__(name: str):
    if name == "TFLiteKernel":
        from .kernel import TFLiteKernel

        return TFLiteKernel
    raise AttributeError(name)
