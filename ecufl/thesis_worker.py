"""The processes of ``ecufl thesis`` (ecufl/thesis.py): one per timing cell, one for the accuracy
experiment, one per missing TFLite model. Apart from thesis.py so that a worker process holds
only what its measurement needs (no matplotlib, no emulation code): the whole-process peak it
reports is the data, Python, numpy and the kernel.

    python -m ecufl.thesis_worker --worker JSON | --accuracy-worker JSON | --export-tflite JSON
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import json
import sys
import time
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from ecufl import data as mnist
from ecufl.bench import sizes_of
from ecufl.kernels import EpochOrder, create, init_params, kernel_class
from ecufl.kernels.tflite import catalog
from ecufl.kernels.tflite import export as tflite_export

HIDDEN = (2, 8, 32, 128)
CONFIGS = [f"784-{h}-10" for h in HIDDEN] + [f"784-{h}-16-10" for h in HIDDEN]
# label -> (registry kernel, dtype, kernel options, what it is)
KERNEL_SPECS: dict[str, tuple[str, str, dict[str, Any], str]] = {
    "numpy": ("numpy", "float32", {}, "numpy, vectorised over the mini-batch (float32)"),
    "textbook": ("textbook", "float64", {}, "network.py's per-sample loop, float64 as the book runs it"),
    "tflite": ("tflite", "float32", {}, "TensorFlow Lite interpreter (XNNPACK), training signatures"),
    "c-plain": ("c-plain", "float32", {}, "C, plain portable loops"),
    "c": ("c", "float32", {}, "C, optimised (SIMD, skips zero pixels)"),
    "eigen": ("eigen", "float32", {}, "C++17 / Eigen"),
    "int8": ("int8", "float32", {}, "CMSIS-NN-style int8 training, SIMD path"),
    "int8-plain": ("int8-plain", "float32", {}, "CMSIS-NN-style int8 training, plain C"),
    "c-pruned": ("c", "float32", {"prune": 0.9}, "C, 90% block-pruned hidden weights after one dense epoch"),
}
EPOCH = 60_000
_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


def n_params(sizes: list[int]) -> int:
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


def _base_row(experiment: str, kernel: str, config: str) -> dict[str, Any]:
    sizes = sizes_of(config)
    return {"experiment": experiment, "kernel": kernel, "config": config, "params": n_params(sizes),
            "hidden": sizes[1], "depth": len(sizes) - 2}

# --- memory of this process (Linux /proc) ----------------------------------------------------------
def _status_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {key}")


def _reset_peak() -> int:
    """Give freed heap pages back (so the kernel's allocations fault in new pages instead of reusing
    resident free ones), then reset VmHWM to the current VmRSS (Linux >= 4.0); returns that RSS."""
    gc.collect()
    _LIBC.malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status_kib("VmRSS") * 1024


def _peak() -> int:
    return _status_kib("VmHWM") * 1024


# --- experiment workers (each in its own process) ------------------------------------------------
def timing_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One (kernel, config) cell: ``epochs`` epochs timed on the training thread's CPU clock,
    the kernel's own memory (training, evaluation), test accuracy after the last epoch."""
    name, dtype, options, _ = KERNEL_SPECS[spec["kernel"]]
    sizes = sizes_of(spec["config"])
    train = mnist.load("train")
    test = mnist.load("test")
    if spec["train_size"] < len(train):  # --quick: a smaller training set (an epoch is this many samples)
        train = mnist.Dataset(train.images[: spec["train_size"]].copy(), train.labels[: spec["train_size"]].copy())
    params = init_params(sizes, spec["seed"], dtype=dtype)
    orders = EpochOrder(len(train), spec["seed"])
    epoch_orders = [orders.next()[: spec["limit"]] for _ in range(spec["epochs"])]
    row = _base_row("timing", spec["kernel"], spec["config"])
    with threadpool_limits(1):
        startup_peak = _peak()  # since exec: Python, numpy, the data (ru_maxrss would include the parent's)
        baseline = _reset_peak()
        kernel_class(name)  # the kernel's module and runtime (TFLite, the native library, cffi)
        imported = _reset_peak()
        kernel = create(name, params, dtype=dtype, **options)
        cpu, wall = [], []
        for order in epoch_orders:
            t0, c0 = time.perf_counter(), time.thread_time()
            kernel.train(train.images, train.labels, order, spec["lr"], spec["batch_size"])
            wall.append(time.perf_counter() - t0)
            cpu.append(time.thread_time() - c0)
        train_peak = _peak()
        eval_base = _reset_peak()
        ev = kernel.evaluate(test.images, test.labels)
        eval_peak = _peak()
        weight_bytes = kernel.weight_bytes()
        update_bytes = kernel.get_params().astype("float32").nbytes()
        kernel.close()
    n = len(epoch_orders[-1])
    row.update({
        "seed": spec["seed"], "epoch": spec["epochs"], "samples": n, "test_accuracy": ev.accuracy,
        "test_loss": ev.loss, "host_cpu_seconds": sum(cpu),
        "host_cpu_seconds_per_epoch": cpu[-1] * EPOCH / n,
        "host_cpu_seconds_per_epoch_first": cpu[0] * EPOCH / len(epoch_orders[0]),
        "host_wall_seconds_per_epoch": wall[-1] * EPOCH / n,
        "baseline_rss_bytes": baseline, "kernel_import_bytes": max(imported - baseline, 0),
        "kernel_train_footprint_bytes": max(train_peak - imported, 0),
        "kernel_eval_footprint_bytes": max(eval_peak - eval_base, 0),
        "process_peak_rss_bytes": max(startup_peak, train_peak, eval_peak),
        "weight_bytes": weight_bytes, "update_bytes": update_bytes, "partial": int(n < EPOCH),
    })
    return row


SATURATED = 0.01  # sigma'(z) below this (|z| > 4.6): a quadratic-cost gradient through that output all but vanishes


def output_saturation(params: Any, images: np.ndarray) -> float:
    """Fraction of (image, output neuron) pairs whose sigmoid is saturated, sigma'(z) < SATURATED: with the
    quadratic cost the output delta is (a - y) sigma'(z), so there learning slows down (the book, ch. 3)."""
    a = images.astype(np.float32) / np.float32(255)
    for w, b in zip(params.weights, params.biases):
        a = 1.0 / (1.0 + np.exp(-(a @ np.asarray(w, np.float32).T + np.asarray(b, np.float32).reshape(-1))))
    return float((a * (1 - a) < SATURATED).mean())


def accuracy_worker(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Every config x seed with the C kernel, ``epochs`` epochs, train and test accuracy after each; and,
    per config and seed, the initial network (experiment ``init``): test accuracy and output saturation."""
    train = mnist.load("train")
    test = mnist.load("test")
    probe = test.images[:2000]
    rows = []
    with threadpool_limits(1):
        for config in spec["configs"]:
            for seed in spec["seeds"]:
                params = init_params(sizes_of(config), seed, dtype="float32")
                kernel = create("c", params, dtype="float32")
                te = kernel.evaluate(test.images, test.labels)
                row = _base_row("init", "c", config)
                row.update({"seed": seed, "epoch": 0, "samples": 0, "test_accuracy": te.accuracy,
                            "test_loss": te.loss, "output_saturation": output_saturation(params, probe), "partial": 0})
                rows.append(row)
                orders = EpochOrder(len(train), seed)
                for epoch in range(1, spec["epochs"] + 1):
                    order = orders.next()
                    c0 = time.thread_time()
                    kernel.train(train.images, train.labels, order, spec["lr"], spec["batch_size"])
                    cpu = time.thread_time() - c0
                    tr = kernel.evaluate(train.images, train.labels)
                    te = kernel.evaluate(test.images, test.labels)
                    row = _base_row("accuracy", "c", config)
                    row.update({"seed": seed, "epoch": epoch, "samples": len(order), "train_accuracy": tr.accuracy,
                                "test_accuracy": te.accuracy, "train_loss": tr.loss, "test_loss": te.loss,
                                "host_cpu_seconds": cpu, "partial": 0})
                    if epoch == spec["epochs"]:
                        row["output_saturation"] = output_saturation(kernel.get_params(), probe)
                    rows.append(row)
                kernel.close()
    return rows


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        print(json.dumps(timing_worker(json.loads(sys.argv[2]))))
    elif len(sys.argv) == 3 and sys.argv[1] == "--export-tflite":
        job = json.loads(sys.argv[2])
        path = tflite_export.export(job["sizes"], job["batch_size"],
                                    catalog.user_cache() / catalog.model_filename(job["sizes"], job["batch_size"]))
        print(json.dumps(str(path)))
    elif len(sys.argv) == 3 and sys.argv[1] == "--accuracy-worker":
        print(json.dumps(accuracy_worker(json.loads(sys.argv[2]))))
    else:
        sys.exit("usage: python -m ecufl.thesis_worker --worker JSON | --accuracy-worker JSON | --export-tflite JSON")
