"""network.py's SGD as the book writes it: one sample at a time, column vectors, Python loops.

This is the baseline most readers start from (``--kernel textbook``) and the check that the
vectorised reference computes the same thing. The code follows ``update_mini_batch`` and
``backprop`` of network.py line by line; only the data layout (uint8 rows) is ecufl's.
"""

from __future__ import annotations

import numpy as np

from ..base import EvalResult, Kernel, inputs_as, mini_batches
from ..params import Params


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def sigmoid_prime(z):
    return sigmoid(z) * (1 - sigmoid(z))


class TextbookKernel(Kernel):
    name = "textbook"
    dtypes = ("float64", "float32")

    def __init__(self, params: Params, *, dtype: str | None = None, **options) -> None:
        super().__init__(params, dtype=dtype, **options)
        self._dt = np.dtype(self.dtype)
        self.set_params(params)

    def _sample(self, images, labels, i):
        x = inputs_as(images[i], self._dt).reshape(-1, 1)  # uint8: p / 255; floats in [0, 1] as they are
        if np.ndim(labels) == 2:  # real-valued targets (an autoencoder: target = input)
            return x, labels[i].astype(self._dt).reshape(-1, 1)
        y = np.zeros((self.sizes[-1], 1), dtype=self._dt)
        y[labels[i]] = 1
        return x, y

    def feedforward(self, a):
        for b, w in zip(self.biases, self.weights):
            a = sigmoid(np.dot(w, a) + b)
        return a

    def train(self, images, labels, order, lr, batch_size) -> None:
        for batch in mini_batches(np.asarray(order), batch_size):
            self.update_mini_batch([self._sample(images, labels, i) for i in batch], lr)

    def update_mini_batch(self, mini_batch, eta):
        nabla_b = [np.zeros(b.shape, dtype=self._dt) for b in self.biases]
        nabla_w = [np.zeros(w.shape, dtype=self._dt) for w in self.weights]
        for x, y in mini_batch:
            delta_nabla_b, delta_nabla_w = self.backprop(x, y)
            nabla_b = [nb + dnb for nb, dnb in zip(nabla_b, delta_nabla_b)]
            nabla_w = [nw + dnw for nw, dnw in zip(nabla_w, delta_nabla_w)]
        step = self._dt.type(eta / len(mini_batch))
        self.weights = [w - step * nw for w, nw in zip(self.weights, nabla_w)]
        self.biases = [b - step * nb for b, nb in zip(self.biases, nabla_b)]

    def backprop(self, x, y):
        nabla_b = [np.zeros(b.shape, dtype=self._dt) for b in self.biases]
        nabla_w = [np.zeros(w.shape, dtype=self._dt) for w in self.weights]
        activation = x
        activations = [x]
        zs = []
        for b, w in zip(self.biases, self.weights):
            z = np.dot(w, activation) + b
            zs.append(z)
            activation = sigmoid(z)
            activations.append(activation)
        delta = (activations[-1] - y) * sigmoid_prime(zs[-1])
        nabla_b[-1] = delta
        nabla_w[-1] = np.dot(delta, activations[-2].transpose())
        for l in range(2, len(self.sizes)):
            z = zs[-l]
            sp = sigmoid_prime(z)
            delta = np.dot(self.weights[-l + 1].transpose(), delta) * sp
            nabla_b[-l] = delta
            nabla_w[-l] = np.dot(delta, activations[-l - 1].transpose())
        return nabla_b, nabla_w

    def evaluate(self, images, labels) -> EvalResult:
        loss = 0.0
        correct = 0
        for i in range(len(labels)):
            x, y = self._sample(images, labels, i)
            a = self.feedforward(x)
            loss += 0.5 * float(np.sum((a - y) ** 2))
            if np.ndim(labels) == 2:
                correct += int(np.max(np.abs(a - y)) < 0.5)
            else:
                correct += int(np.argmax(a) == labels[i])
        n = len(labels)
        return EvalResult(loss / max(n, 1), correct / max(n, 1), correct, n)

    def get_params(self) -> Params:
        return Params([w.copy() for w in self.weights], [b.reshape(-1).copy() for b in self.biases])

    def set_params(self, params: Params) -> None:
        params.check(self.sizes)
        self.weights = [np.array(w, dtype=self._dt) for w in params.weights]
        self.biases = [np.array(b, dtype=self._dt).reshape(-1, 1) for b in params.biases]
