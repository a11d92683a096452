"""The interface every HDRNN kernel implements. Kernels never import Flower.

A kernel holds one network (layer sizes, weights, biases) in its own memory layout and dtype.
Data is handed over as MNIST gives it: ``images`` uint8 (N, 784) and ``labels`` uint8 (N,);
a kernel turns a pixel p into the input p / 255 in its own arithmetic (float32 division,
or float64 for the float64 reference), so no kernel needs a float copy of the data set.

Any fully connected sigmoid network on any data (issue 17): ``images`` may have any number of
columns (the first layer's size) and may be floating point, already in [0, 1] (taken as they are,
rounded once to the kernel's dtype; no division); ``labels`` may be class indices (N,) (one-hot
targets, as MNIST) or real-valued targets (N, n_out) in [0, 1] (an autoencoder passes its inputs).
``inputs_as`` and ``targets_as`` are the conversion every kernel follows; ``check_data`` is the
one-line error for data that does not fit the network. Every kernel takes any data (the native
ones through the C ABI's ``ecufl_net_train_f32``); see kernels/README.md ("Any data").

``train`` runs mini-batch SGD over the samples ``order`` (indices into ``images``), taking
consecutive slices of ``batch_size`` as mini-batches; the last, smaller slice is a mini-batch
too, as in network.py. The caller may split one epoch's order into several ``train`` calls at
multiples of ``batch_size`` (the CLI does, to draw a progress bar): the result is the same.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .params import Params


@dataclass(frozen=True)
class EvalResult:
    loss: float  # mean quadratic cost 0.5 * ||a - y||^2 over the samples
    accuracy: float  # fraction of samples whose largest output is the label
    correct: int
    count: int


class Kernel(abc.ABC):
    """One HDRNN implementation. Subclasses set ``name`` and implement the abstract methods."""

    name: ClassVar[str]
    dtypes: ClassVar[tuple[str, ...]] = ("float32",)  # first one is the default

    def __init__(self, params: Params, *, dtype: str | None = None, **options: Any) -> None:
        self.dtype = self.check_options(dtype, **options)
        self.sizes = params.sizes
        params.check(self.sizes)

    @classmethod
    def check_options(cls, dtype: str | None = None, **options: Any) -> str:
        """Validate dtype and kernel options before any work starts; returns the dtype to use.

        Raises ValueError with a one-line message naming the flag. Kernels that take options
        (``prune``, ...) override this and call ``super().check_options(dtype)``.
        """
        dtype = dtype or cls.dtypes[0]
        if dtype not in cls.dtypes:
            raise ValueError(f"--dtype {dtype}: kernel {cls.name!r} supports {', '.join(cls.dtypes)}")
        if options:
            flags = ", ".join("--" + k.replace("_", "-") for k in options)
            raise ValueError(f"kernel {cls.name!r} takes no option {flags}")
        return dtype

    @abc.abstractmethod
    def train(
        self, images: np.ndarray, labels: np.ndarray, order: np.ndarray, lr: float, batch_size: int
    ) -> None:
        """Mini-batch SGD over ``order`` (see the module doc)."""

    @abc.abstractmethod
    def evaluate(self, images: np.ndarray, labels: np.ndarray) -> EvalResult: ...

    @abc.abstractmethod
    def get_params(self) -> Params: ...

    @abc.abstractmethod
    def set_params(self, params: Params) -> None: ...

    def weight_bytes(self) -> int:
        """Bytes the kernel holds for weights and biases (its real footprint, sparse or quantised)."""
        return self.get_params().astype(self.dtype).nbytes()

    def describe(self) -> dict[str, Any]:
        """Extra facts for reports (path, bits, sparsity, ...)."""
        return {}

    def close(self) -> None:
        """Free native resources; the kernel is unusable afterwards."""


def mini_batches(order: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """network.py's ``[data[k:k+m] for k in range(0, n, m)]``: the last slice may be shorter."""
    return [order[k : k + batch_size] for k in range(0, len(order), batch_size)]


def one_hot(labels: np.ndarray, n_out: int, dtype: np.dtype) -> np.ndarray:
    y = np.zeros((len(labels), n_out), dtype=dtype)
    y[np.arange(len(labels)), labels] = 1
    return y


def inputs_as(images: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """The network's inputs for ``images``: uint8 pixels p as p / 255 (one division in ``dtype``,
    MNIST's arithmetic, unchanged), floating-point inputs in [0, 1] rounded once to ``dtype``."""
    dt = np.dtype(dtype)
    if images.dtype == np.uint8:
        return images.astype(dt) / dt.type(255)
    return np.asarray(images, dtype=dt)


def targets_as(labels: np.ndarray, n_out: int, dtype: np.dtype) -> np.ndarray:
    """Targets: one-hot rows for class indices (N,), the values themselves for (N, n_out) targets."""
    labels = np.asarray(labels)
    if labels.ndim == 1:
        return one_hot(labels, n_out, np.dtype(dtype))
    return labels.astype(np.dtype(dtype))


def check_data(sizes: Sequence[int], images: np.ndarray, labels: np.ndarray) -> None:
    """One-line ValueError when ``images``/``labels`` do not fit a network of ``sizes``."""
    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim != 2 or images.shape[1] != sizes[0]:
        raise ValueError(f"inputs have shape {images.shape}: the network {'-'.join(map(str, sizes))} "
                         f"takes {sizes[0]} values per sample")
    if images.dtype != np.uint8 and images.dtype.kind != "f":
        raise ValueError(f"inputs must be uint8 pixels or floating point in [0, 1], got {images.dtype}")
    if len(labels) != len(images):
        raise ValueError(f"{len(images)} inputs but {len(labels)} labels/targets")
    if labels.ndim == 2:
        if labels.shape[1] != sizes[-1]:
            raise ValueError(f"targets have {labels.shape[1]} columns: the network "
                             f"{'-'.join(map(str, sizes))} has {sizes[-1]} outputs")
    elif labels.ndim != 1:
        raise ValueError(f"labels must be class indices (N,) or targets (N, {sizes[-1]}), got shape {labels.shape}")


def check_sizes(sizes: Sequence[int]) -> list[int]:
    sizes = [int(s) for s in sizes]
    if len(sizes) < 2:
        raise ValueError(f"need at least an input and an output layer, got {sizes}")
    if any(s < 1 for s in sizes):
        raise ValueError(f"layer sizes must be positive, got {sizes}")
    return sizes
