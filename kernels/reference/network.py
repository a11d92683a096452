"""HDRNN in numpy, vectorised over the mini-batch: the truth every other kernel is checked against.

Same mathematics as network.py (sigmoid everywhere, quadratic cost, backpropagation,
``w -= lr/m * sum(grad)`` with m the size of *this* mini-batch), written in matrix form:
a mini-batch is a (m, n) matrix with one sample per row, so one layer is ``sigmoid(A @ W.T + b)``.
"""

from __future__ import annotations

import numpy as np

from ..base import EvalResult, Kernel, inputs_as, targets_as
from ..params import Params


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


class NumpyKernel(Kernel):
    name = "numpy"
    dtypes = ("float64", "float32")

    def __init__(self, params: Params, *, dtype: str | None = None, **options) -> None:
        super().__init__(params, dtype=dtype, **options)
        self._dt = np.dtype(self.dtype)
        self.set_params(params)

    # -- the two halves of one SGD step -------------------------------------------------------
    def _inputs(self, images: np.ndarray) -> np.ndarray:
        return inputs_as(images, self._dt)  # uint8: p / 255 as before; floats in [0, 1] as they are

    @staticmethod
    def _sigmoid_(z: np.ndarray) -> np.ndarray:
        """sigmoid(z) = 1 / (1 + exp(-z)), computed in place (same roundings, no temporaries)."""
        np.negative(z, out=z)
        np.exp(z, out=z)
        z += 1
        return np.reciprocal(z, out=z)

    def forward(self, x: np.ndarray) -> list[np.ndarray]:
        """Activations of every layer for the rows of ``x``; ``acts[0]`` is ``x``."""
        acts = [x]
        for w, b in zip(self.w, self.b):
            z = acts[-1] @ w.T
            z += b
            acts.append(self._sigmoid_(z))
        return acts

    def gradients(self, x: np.ndarray, y: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Sums over the mini-batch of dC/dw and dC/db (backpropagation, BP1-BP4 of chapter 2)."""
        acts = self.forward(x)
        a = acts[-1]
        delta = (a - y) * a * (1 - a)  # BP1: quadratic cost, sigmoid'(z) = a (1 - a)
        grad_w = [None] * len(self.w)
        grad_b = [None] * len(self.b)
        for l in range(len(self.w) - 1, -1, -1):
            grad_w[l] = delta.T @ acts[l]  # BP4, summed over the rows
            grad_b[l] = delta.sum(axis=0)  # BP3
            if l:
                a_prev = acts[l]
                delta = (delta @ self.w[l]) * a_prev * (1 - a_prev)  # BP2
        return grad_w, grad_b

    def train(self, images, labels, order, lr, batch_size) -> None:
        order = np.asarray(order)
        eye = np.eye(self.sizes[-1], dtype=self._dt)
        real = np.ndim(labels) == 2  # real-valued targets (N, n_out) in [0, 1], e.g. target = input
        # Inputs are converted a few hundred mini-batches at a time: less per-batch overhead,
        # and never a float copy of the whole data set.
        chunk = batch_size * max(1, 4096 // batch_size)
        for c0 in range(0, len(order), chunk):
            idx = order[c0 : c0 + chunk]
            xs = self._inputs(images[idx])
            ys = labels[idx].astype(self._dt) if real else eye[labels[idx]]
            for k in range(0, len(idx), batch_size):
                grad_w, grad_b = self.gradients(xs[k : k + batch_size], ys[k : k + batch_size])
                step = self._dt.type(lr / min(batch_size, len(idx) - k))  # m of *this* mini-batch
                for l in range(len(self.w)):
                    grad_w[l] *= step
                    self.w[l] -= grad_w[l]
                    grad_b[l] *= step
                    self.b[l] -= grad_b[l]

    def evaluate(self, images, labels, chunk: int = 2000) -> EvalResult:
        loss = 0.0
        correct = 0
        for k in range(0, len(labels), chunk):
            a = self.forward(self._inputs(images[k : k + chunk]))[-1]
            y = targets_as(labels[k : k + chunk], self.sizes[-1], self._dt)
            loss += 0.5 * float(np.sum((a - y) ** 2, dtype=np.float64))
            if np.ndim(labels) == 2:  # real-valued targets: every output within 0.5 of its target
                correct += int(np.sum(np.max(np.abs(a - y), axis=1) < 0.5))
            else:
                correct += int(np.sum(np.argmax(a, axis=1) == labels[k : k + chunk]))
        n = len(labels)
        return EvalResult(loss / max(n, 1), correct / max(n, 1), correct, n)

    def get_params(self) -> Params:
        return Params([w.copy() for w in self.w], [b.copy() for b in self.b])

    def set_params(self, params: Params) -> None:
        params.check(self.sizes)
        self.w = [np.array(w, dtype=self._dt) for w in params.weights]
        self.b = [np.array(b, dtype=self._dt) for b in params.biases]
