"""Build the HDRNN training model in TensorFlow and convert it to a .tflite file.

Only this module needs TensorFlow (``pip install 'ecufl[export]'``); training runs on a bare TFLite
runtime. The model holds the weights in resource variables and has four signatures:

- ``train(x, y, lr_over_m) -> cost``: one SGD step on a mini-batch of fixed size B. ``x`` is
  (B, 784) float32 pixels already divided by 255, ``y`` (B, 10) one-hot labels. A row whose label
  row is all zero is padding: its error is masked out, so a last, smaller mini-batch of m < B
  samples is fed as m real rows plus B - m zero rows, with ``lr_over_m`` = lr / m. The host
  computes lr / m in float64 and rounds once to float32, as the numpy reference does. An
  autoencoder's model (input size = output size, ``real_targets``; the CAN workload) takes
  real-valued targets ``y`` in [0, 1] and masks by ``sum(y) > 0`` (GREATER, CAST) instead.
- ``infer(x) -> a``: output activations for any number of rows (dynamic batch).
- ``get_weights() -> w1, b1, ...`` and ``set_weights(w1, b1, ...)``: the book's shapes,
  w_l (n_out, n_in), b_l (n_out,).

The backward pass is written out by hand (BP1-BP4 of the book's chapter 2, quadratic cost,
sigmoid) in the same operation order as ``kernels/reference/network.py``, so the converter
emits builtin TFLite ops only (FULLY_CONNECTED, BATCH_MATMUL, LOGISTIC, MUL, SUB, SUM,
VAR_HANDLE, READ_VARIABLE, ASSIGN_VARIABLE, ...): no Flex / Select-TF ops, which a stock board
runtime lacks. ``tf.GradientTape`` would pull in gradient ops that need Flex.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

N_IN, N_OUT = 784, 10


def _tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # the converter's info lines are noise here
    try:
        import tensorflow as tf
    except ImportError as e:
        raise ImportError(
            f"exporting a TFLite model needs TensorFlow ({e}); install it with: pip install 'ecufl[export]'"
        ) from None
    return tf


def real_targets(sizes: Sequence[int]) -> bool:
    """Whether a model of ``sizes`` masks padding rows by ``sum(y) > 0`` (real-valued targets, an
    autoencoder: input size = output size) rather than by ``sum(y)`` itself (one-hot labels, 1 for
    a real row; every MNIST model, whose bytes stay as they were)."""
    return int(sizes[0]) == int(sizes[-1])


def build_module(sizes: Sequence[int], batch_size: int):
    """The tf.Module whose four tf.functions become the model's signatures."""
    tf = _tf()
    sizes = [int(s) for s in sizes]
    f32 = tf.float32
    pairs = list(zip(sizes[:-1], sizes[1:]))

    class HDRNN(tf.Module):
        def __init__(self):
            super().__init__(name="hdrnn")
            # Zeros, not the PRNG's weights: the kernel always calls set_weights first, and a
            # model file must not depend on a seed.
            self.w = [tf.Variable(tf.zeros((o, i), f32), name=f"w{k}") for k, (i, o) in enumerate(pairs, 1)]
            self.b = [tf.Variable(tf.zeros((o,), f32), name=f"b{k}") for k, (i, o) in enumerate(pairs, 1)]

        def _forward(self, x):
            acts = [x]
            for w, b in zip(self.w, self.b):
                acts.append(tf.sigmoid(tf.matmul(acts[-1], w, transpose_b=True) + b))
            return acts

        @tf.function(input_signature=[
            tf.TensorSpec((batch_size, sizes[0]), f32, name="x"),
            tf.TensorSpec((batch_size, sizes[-1]), f32, name="y"),
            tf.TensorSpec((), f32, name="lr_over_m"),
        ])
        def train(self, x, y, lr_over_m):
            acts = self._forward(x)
            a = acts[-1]
            mask = tf.reduce_sum(y, axis=1, keepdims=True)  # 1 for a real row, 0 for padding
            if real_targets(sizes):  # a row's targets need not sum to 1: 1 where they sum to > 0
                mask = tf.cast(mask > 0, f32)
            delta = (a - y) * a * (1 - a) * mask  # BP1: quadratic cost, sigmoid' = a (1 - a)
            grads = []
            for l in range(len(self.w) - 1, -1, -1):
                grad_w = tf.matmul(delta, acts[l], transpose_a=True)  # BP4, summed over the rows
                grad_b = tf.reduce_sum(delta, axis=0)  # BP3
                grads.append((l, grad_w, grad_b))
                if l:
                    a_prev = acts[l]
                    delta = tf.matmul(delta, self.w[l]) * a_prev * (1 - a_prev)  # BP2, old weights
            for l, grad_w, grad_b in grads:  # update only after every delta used the old weights
                self.w[l].assign_sub(grad_w * lr_over_m)
                self.b[l].assign_sub(grad_b * lr_over_m)
            cost = 0.5 * tf.reduce_sum(tf.square(a - y) * mask)
            return {"cost": cost}

        @tf.function(input_signature=[tf.TensorSpec((None, sizes[0]), f32, name="x")])
        def infer(self, x):
            return {"a": self._forward(x)[-1]}

        @tf.function(input_signature=[])
        def get_weights(self):
            out = {}
            for k, (w, b) in enumerate(zip(self.w, self.b), 1):
                out[f"w{k}"] = w.read_value()
                out[f"b{k}"] = b.read_value()
            return out

        @tf.function(input_signature=[
            spec
            for k, (i, o) in enumerate(pairs, 1)
            for spec in (tf.TensorSpec((o, i), f32, name=f"w{k}"), tf.TensorSpec((o,), f32, name=f"b{k}"))
        ])
        def set_weights(self, *arrays):
            for var, value in zip([v for pair in zip(self.w, self.b) for v in pair], arrays):
                var.assign(value)
            return {"done": tf.constant(1, tf.int32)}

    return HDRNN()


def convert(sizes: Sequence[int], batch_size: int) -> bytes:
    """The .tflite flatbuffer for layer sizes ``sizes`` and mini-batch size ``batch_size``."""
    tf = _tf()
    module = build_module(sizes, batch_size)
    signatures = {
        "train": module.train.get_concrete_function(),
        "infer": module.infer.get_concrete_function(),
        "get_weights": module.get_weights.get_concrete_function(),
        "set_weights": module.set_weights.get_concrete_function(),
    }
    with tempfile.TemporaryDirectory(prefix="ecufl-tflite-") as d:
        tf.saved_model.save(module, d, signatures=signatures)
        converter = tf.lite.TFLiteConverter.from_saved_model(d, signature_keys=list(signatures))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]  # never Flex
        converter.experimental_enable_resource_variables = True
        return converter.convert()


def export(sizes: Sequence[int], batch_size: int, out: str | os.PathLike) -> Path:
    data = convert(sizes, batch_size)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(out)  # never leave a half-written model where the kernel looks
    return out
