"""HDRNN trained inside the TensorFlow Lite interpreter (kernel ``tflite``).

The weights live in the model's resource variables; ``train`` feeds one mini-batch per invoke of
the ``train`` signature (see ``export.py`` for the model). Inputs are made on the host exactly as
the numpy reference makes them (``uint8 -> float32 / 255``), a few thousand samples at a time, and
``lr / m`` is computed in float64 and rounded once to float32, as the reference does.

A model has a fixed batch dimension B. The last, smaller mini-batch of m < B samples is fed as
m real rows plus B - m zero rows with all-zero labels, which the model masks out, and
``lr_over_m`` = lr / m: the same update as the reference's (adding exact zeros changes no sum).

One model per (layers, batch size); the kernel opens the model for the batch size ``train`` is
called with and carries the weights over when the batch size changes.

Any data (issue 17, base.py): float inputs in [0, 1] are fed as they are (rounded once to
float32), ``labels`` of shape (N, n_out) are real-valued targets fed as they are (an autoencoder's
target = input). The model marks padding rows by an all-zero target row, so a real-valued target
row of all zeros is refused (one line) rather than silently skipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..base import EvalResult, Kernel, check_data, inputs_as, targets_as
from ..params import Params
from ..registry import KernelUnavailable
from . import catalog
from .export import real_targets
from .runtime import RUNTIME, load_interpreter

F32 = np.float32


class _Signature:
    """One signature of one interpreter, invoked with as little Python per call as the runtime allows.

    The public ``SignatureRunner.__call__`` resizes every input, re-plans the arena and copies
    every output on each call. After the first call has sized and allocated the tensors, the
    same wrapper calls it makes (SetTensor / Invoke / GetTensor on the signature's subgraph) are
    made directly, skipping the resize and re-plan, which change nothing for fixed shapes.
    """

    def __init__(self, interpreter, key: str) -> None:
        self.runner = interpreter.get_signature_runner(key)
        self.inputs: dict[str, int] = dict(self.runner._inputs)
        self.outputs: dict[str, int] = dict(self.runner._outputs)
        self.subgraph: int = self.runner._subgraph_index
        self.wrapper = self.runner._interpreter_wrapper
        self._shapes: dict[str, tuple[int, ...]] | None = None  # input shapes of the last full call
        self.fast = all(hasattr(self.wrapper, m) for m in ("SetTensor", "Invoke", "GetTensor"))

    def __call__(self, outputs: tuple[str, ...] | None = None, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        shapes = {k: v.shape for k, v in inputs.items()}
        if not self.fast or shapes != self._shapes:
            result = self.runner(**inputs)  # resizes and allocates as needed
            self._shapes = shapes
            return result
        for name, value in inputs.items():
            self.wrapper.SetTensor(self.inputs[name], value, self.subgraph)
        self.wrapper.Invoke(self.subgraph)
        wanted = self.outputs if outputs is None else {k: self.outputs[k] for k in outputs}
        return {k: self.wrapper.GetTensor(i, self.subgraph) for k, i in wanted.items()}

    def bind(self, *names: str):
        """A function ``run(*arrays)`` for the hot loop: sets the inputs ``names`` (in that order,
        always the same shapes) and invokes, reading no output. The first call goes through the
        public runner, which sizes and allocates; later calls are SetTensor + Invoke only (the
        wrapper still checks each array's shape and dtype against the tensor)."""
        runner, wrapper, sub = self.runner, self.wrapper, self.subgraph
        indices = [self.inputs[n] for n in names]
        primed = False

        def run(*arrays: np.ndarray) -> None:
            nonlocal primed
            if not primed:
                runner(**dict(zip(names, arrays)))
                primed = self.fast
                return
            for i, a in zip(indices, arrays):
                wrapper.SetTensor(i, a, sub)
            wrapper.Invoke(sub)

        return run


class _Model:
    """One opened .tflite training model: an interpreter and its four signatures."""

    def __init__(self, path: Path, sizes: list[int], default_delegates: bool = True) -> None:
        self.path = path
        self.default_delegates = default_delegates
        self.interpreter = load_interpreter(path, default_delegates=default_delegates)
        keys = set(self.interpreter.get_signature_list())
        missing = {"train", "infer", "get_weights", "set_weights"} - keys
        if missing:
            raise ValueError(f"{path}: not an ecufl training model (no signature {', '.join(sorted(missing))})")
        self.train = _Signature(self.interpreter, "train")
        self.infer = _Signature(self.interpreter, "infer")
        self.get = _Signature(self.interpreter, "get_weights")
        self.set = _Signature(self.interpreter, "set_weights")
        x_shape = tuple(self.train.runner.get_input_details()["x"]["shape"])
        if x_shape[1] != sizes[0]:
            raise ValueError(f"{path}: input width {x_shape[1]}, expected {sizes[0]}")
        self.batch_size = int(x_shape[0])
        self.n_layers = len(sizes) - 1
        self.sizes = sizes

    def set_params(self, params: Params) -> None:
        arrays = {k: np.ascontiguousarray(v, dtype=F32) for k, v in params.arrays().items()}
        self.set(**arrays)

    def get_params(self) -> Params:
        out = self.get()
        n = self.n_layers
        params = Params([np.array(out[f"w{k}"]) for k in range(1, n + 1)], [np.array(out[f"b{k}"]) for k in range(1, n + 1)])
        params.check(self.sizes)
        return params


class TFLiteKernel(Kernel):
    name = "tflite"
    dtypes = ("float32",)

    def __init__(self, params: Params, *, dtype: str | None = None, xnnpack: bool = True, **options: Any) -> None:
        super().__init__(params, dtype=dtype, **options)
        self.xnnpack = xnnpack  # False: TFLite's builtin kernels without the default XNNPACK delegate
        if not catalog.batch_sizes_for(self.sizes):
            raise KernelUnavailable(
                f"kernel 'tflite' has no model for layers {catalog.layers_text(self.sizes)}; "
                + catalog.export_hint(self.sizes, 10)
            )
        self._params = params.astype(F32).copy()  # the weights while no model holds them
        self._models: dict[int, _Model] = {}
        self._model: _Model | None = None  # the model whose variables hold the current weights
        self._eye = np.eye(self.sizes[-1], dtype=F32)

    # -- models --------------------------------------------------------------------------------
    def _open(self, batch_size: int) -> _Model:
        """The model for ``batch_size``, holding the current weights."""
        if self._model is not None and self._model.batch_size == batch_size:
            return self._model
        model = self._models.get(batch_size)
        if model is None:
            path = catalog.find_model(self.sizes, batch_size)
            if path is None:
                have = ", ".join(map(str, catalog.batch_sizes_for(self.sizes)))
                raise KernelUnavailable(
                    f"kernel 'tflite' has no model for layers {catalog.layers_text(self.sizes)} at batch size "
                    f"{batch_size} (have: {have}); " + catalog.export_hint(self.sizes, batch_size)
                )
            model = self._models[batch_size] = _Model(path, self.sizes, default_delegates=self.xnnpack)
        params = self._model.get_params() if self._model is not None else self._params
        model.set_params(params)
        self._model = model
        return model

    def _any_model(self) -> _Model:
        if self._model is None:
            self._open(catalog.batch_sizes_for(self.sizes)[0])
        return self._model

    # -- Kernel interface ----------------------------------------------------------------------
    def train(self, images, labels, order, lr, batch_size) -> None:
        check_data(self.sizes, images, labels)
        real = np.ndim(labels) == 2  # real-valued targets (an autoencoder's): as they are, no one-hot
        model = self._open(int(batch_size))
        step = model.train.bind("x", "y", "lr_over_m")
        order = np.asarray(order)
        b = model.batch_size
        lr_full = np.asarray(lr / b, dtype=F32)  # lr / m in float64, rounded once, as the reference
        pad_x = np.zeros((b, self.sizes[0]), F32)
        pad_y = np.zeros((b, self.sizes[-1]), F32)
        chunk = b * max(1, 4096 // b)  # host-side conversion a few thousand samples at a time
        x_buf = np.empty((min(chunk, len(order)), self.sizes[0]), F32)  # reused by every chunk
        for c0 in range(0, len(order), chunk):
            idx = order[c0 : c0 + chunk]
            if images.dtype == np.uint8:
                xs = np.divide(images[idx], F32(255), out=x_buf[: len(idx)], dtype=F32)  # = float32(p) / 255
            else:  # inputs already in [0, 1], rounded once to float32 (base.inputs_as)
                xs = np.asarray(images[idx], dtype=F32)
            if real:
                if not real_targets(self.sizes):
                    raise ValueError(f"kernel 'tflite': the model for {catalog.layers_text(self.sizes)} takes one-hot "
                                     "labels only (real-valued targets need an autoencoder's model, input size = "
                                     "output size)")
                ys = np.asarray(labels[idx], dtype=F32)
                if not np.all(ys.sum(axis=1) > 0):  # the model takes an all-zero target row for padding
                    bad = int(idx[np.flatnonzero(~(ys.sum(axis=1) > 0))[0]])
                    raise ValueError(f"kernel 'tflite': target row {bad} is all zeros, which the model's "
                                     "padding mask would skip (real-valued targets need a nonzero row)")
            else:
                ys = self._eye[labels[idx]]
            n_full = len(idx) // b * b
            for k in range(0, n_full, b):
                step(xs[k : k + b], ys[k : k + b], lr_full)
            m = len(idx) - n_full
            if m:  # the last, smaller mini-batch: padded with masked zero rows
                pad_x[:m] = xs[n_full:]
                pad_x[m:] = 0
                pad_y[:m] = ys[n_full:]
                pad_y[m:] = 0
                step(pad_x, pad_y, np.asarray(lr / m, dtype=F32))

    def evaluate(self, images, labels, chunk: int = 1000) -> EvalResult:
        infer = self._any_model().infer
        loss = 0.0
        correct = 0
        for k in range(0, len(labels), chunk):
            x = inputs_as(images[k : k + chunk], F32)  # uint8: float32(p) / 255, as before
            a = infer(x=x)["a"]
            y = targets_as(labels[k : k + chunk], self.sizes[-1], F32)
            loss += 0.5 * float(np.sum((a - y) ** 2, dtype=np.float64))
            if np.ndim(labels) == 2:  # real-valued targets: every output within 0.5 of its target
                correct += int(np.sum(np.max(np.abs(a - y), axis=1) < 0.5))
            else:
                correct += int(np.sum(np.argmax(a, axis=1) == labels[k : k + chunk]))
        n = len(labels)
        return EvalResult(loss / max(n, 1), correct / max(n, 1), correct, n)

    def get_params(self) -> Params:
        return self._model.get_params() if self._model is not None else self._params.copy()

    def set_params(self, params: Params) -> None:
        params.check(self.sizes)
        self._params = params.astype(F32).copy()
        if self._model is not None:
            self._model.set_params(self._params)

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"runtime": RUNTIME.describe(), "delegate": "xnnpack (runtime default)" if self.xnnpack else "none"}
        if self._model is not None:
            info["model"] = str(self._model.path)
            info["batch_size"] = self._model.batch_size
            info["fast_invoke"] = self._model.train.fast
        return info

    def close(self) -> None:
        self._models.clear()
        self._model = None
