"""A node of a CAN run (run config ``workload = "can"``): a vehicle that trains the CAN autoencoder
on its own normal traffic (``ecufl.can.fleetrun``: vehicle = run seed + partition id, its windows
are inputs and targets, no labels).

Kernels: a kernel trains the autoencoder only if it takes float inputs and real-valued targets
(kernels/README.md, "Any data"). Before its first CAN round a node checks that (``check_kernel``):
its kernel trains a tiny autoencoder for one mini-batch from the reference's initial weights, and
the weights must agree with the numpy reference (float64) to ``PROBE_TOLERANCE`` (a quantised
kernel: to its own documented ``QUANTISED_TOLERANCE``); a kernel that takes MNIST only is one line
in the client's report, not a traceback or a model trained on misread data.

Emulated i.MX6 profiles: a kernel with an ARM trainer (kernels/arm/emulate.py: c, c-plain, eigen,
int8, which take float windows since efc3e32) trains under qemu as for MNIST, with counted
instructions and projected A9 seconds. A kernel without one (numpy, textbook, tflite), or one
whose emulation fails (qemu missing: the reason goes into the trainer column), trains in this
process and its board time is *estimated*: the nominal FLOP of the round
(``kernels.arm.bench.train_flops_per_sample`` x windows x epochs) at the rate the ARM build of the
c kernel executed FLOP on the emulated A9 in the committed measurement
(``kernels/arm/measured/bench-imx6-memory-2026-12-06.json``, c at 784-32-10: executed GFLOP per
epoch / projected seconds per epoch), scaled to the profile's clock. It is an estimate from a
measured rate, not an instruction count of this round; the trainer column says so (for 20
windows at 339-32-339 it came within 4% of c's counted projection).
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from ecufl.can import fleetrun
from ecufl.client import emulated, runner, task  # noqa: F401 - emulated registers the i.MX6 profiles' trainer
from ecufl.kernels import KernelUnavailable, create, init_params, kernel_class
from ecufl.kernels.arm import profiles
from ecufl.runconfig import RunConfig

PROBE_TOLERANCE = 1e-4  # float32 kernels agree with the float64 reference to ~1e-7 after one step
# Quantised kernels are held to their own documented tolerance against float (kernels/README.md,
# "Any data": int8-numpy within 0.05 of numpy's weights; after the probe's one step about 1.3e-3).
QUANTISED_TOLERANCE = 0.05
QUANTISED = ("int8", "int8-plain", "int8-numpy")
MEASURED = Path(profiles.__file__).resolve().parent / "measured" / "bench-imx6-memory-2026-12-06.json"
RATE_ROW = ("c", "784-32-10")
_CACHE: dict = {}


class CanUnsupported(ValueError):
    """One line: this kernel (or board) cannot train the CAN autoencoder."""


def windows(run: RunConfig, partition: int) -> tuple[np.ndarray, float]:
    """(this vehicle's training windows, seconds spent making them here; 0 when kept).

    Kept in this process for the next round (simulation actors); a ClientApp forked by a warm
    parent tells the parent (``task.note``), which makes them once so the next ClientApps inherit them."""
    fleetrun.check_layers(run.layers, run.can_window)
    key = ("can", run.seed, partition, run.can_train_seconds, run.can_window)
    if key in _CACHE:
        return _CACHE[key], 0.0
    t0 = time.perf_counter()
    prepare_windows(run.seed, partition, run.can_train_seconds, run.can_window)
    task.note("can-windows", seed=run.seed, partition=partition, seconds=run.can_train_seconds, window=run.can_window)
    return _CACHE[key], time.perf_counter() - t0


def prepare_windows(seed: int, partition: int, seconds: float, window: float) -> bool:
    """Make and keep vehicle ``seed + partition``'s training windows (the latest ones only); True
    when they were not kept already."""
    key = ("can", seed, partition, seconds, window)
    if key in _CACHE:
        return False
    x = fleetrun.training_windows(seed, partition, seconds, window)
    for k in [k for k in _CACHE if k[0] == "can"]:
        del _CACHE[k]
    _CACHE[key] = x
    return True


def check_kernel(kernel: str, dtype: str | None, sizes: list[int]) -> None:
    """CanUnsupported (one line) unless ``kernel`` trains the autoencoder ``sizes`` on float windows
    as the reference does (one mini-batch of 10 on 20 random windows, compared)."""
    key = ("probe", kernel, dtype, tuple(sizes))
    if key not in _CACHE:
        _CACHE[key] = _probe(kernel, dtype, list(sizes))
    if _CACHE[key]:
        raise CanUnsupported(_CACHE[key])


def _probe(kernel: str, dtype: str | None, sizes: list[int]) -> str:
    if kernel == "remote":
        return ("kernel remote: the board agent trains the CAN autoencoder only from windows stored on the board "
                "(train-inputs.idx / train-targets.idx in its data directory), and ecufl does not put them there yet")
    x = np.random.default_rng(17).random((20, sizes[0])).astype(np.float32)
    init = init_params(sizes, 1, scaled=True, dtype="float64")
    ref = create("numpy", init, dtype="float64")
    ref.train(x, x, np.arange(20), 1.0, 10)
    try:
        dt = dtype or kernel_class(kernel).dtypes[0]
        k = create(kernel, init.astype(dt), dtype=dt)
    except KernelUnavailable as e:  # no model of this shape (tflite), library not built: its own line
        return f"kernel {kernel} cannot train the CAN autoencoder here: {' '.join(str(e).split())}"
    try:
        k.train(x, x, np.arange(20), 1.0, 10)
        got = k.get_params().flat()
    except (ValueError, TypeError, IndexError, RuntimeError) as e:
        return f"kernel {kernel} does not take CAN windows (float inputs, real-valued targets): {' '.join(str(e).split())}"
    finally:
        k.close()
    diff = max(float(np.max(np.abs(a.astype(np.float64) - b))) for a, b in zip(got, ref.get_params().flat()))
    tolerance = QUANTISED_TOLERANCE if kernel in QUANTISED else PROBE_TOLERANCE
    if not diff <= tolerance:
        return (f"kernel {kernel} is not used for the CAN autoencoder: on float inputs with real-valued targets "
                f"its weights differ from the numpy reference by {diff:.2g} after one mini-batch, more than the "
                f"{tolerance:g} a CAN node accepts for it (kernels/README.md, 'Any data')")
    return ""


def a9_rate(profile: profiles.Profile) -> float:
    """FLOP per second the ARM c kernel executed on the emulated A9 (measured row), at ``profile``'s clock."""
    if "rate" not in _CACHE:
        try:
            rows = json.loads(MEASURED.read_text())["rows"]
            row = next(r for r in rows if (r["kernel"], r["config"]) == RATE_ROW and not r.get("error"))
            _CACHE["rate"] = (row["executed_gflop_per_epoch"] * 1e9 / row["projected_seconds_per_epoch"],
                              float(row["clock_hz"]))
        except (OSError, ValueError, KeyError, StopIteration) as e:
            raise CanUnsupported(f"{MEASURED}: no measured A9 rate of {RATE_ROW[0]} at {RATE_ROW[1]} to estimate "
                                 f"board time with ({type(e).__name__})") from None
    rate, clock = _CACHE["rate"]
    return rate * profile.clock_hz / clock


def train(job: runner.TrainJob, x: np.ndarray) -> runner.TrainOutcome:
    """One round of a vehicle: its kernel in this process, inputs and targets its windows; on an
    emulated profile the board seconds are estimated (module doc)."""
    check_kernel(job.kernel, job.dtype, list(job.params.sizes))
    prof = profiles.get(job.profile)
    if not prof.emulated:
        return runner.run(job, x, x)
    from ecufl.kernels.arm import emulate
    from ecufl.kernels.arm.bench import train_flops_per_sample

    why = f"{job.kernel} has no ARM trainer"
    if job.kernel in emulate.TRAINERS:  # the board's own build, counted, once it takes CAN windows
        try:
            return runner.run(job, x, x)
        except ValueError as e:  # EmulationFailed, or a trainer that cannot write these windows
            why = f"ARM trainer: {' '.join(str(e).split())[:160]}"
    outcome = runner.train_in_process(replace(job, profile="host"), x, x)
    sizes = list(job.params.sizes)
    flop = train_flops_per_sample(sizes, job.batch_size) * len(job.shard) * job.epochs
    outcome.board_seconds_projected = flop / a9_rate(prof)
    outcome.trainer = (f"in-process {job.kernel} ({why}); {prof.name} seconds estimated: {flop / 1e6:.0f} MFLOP at "
                       f"the A9 rate of the ARM {RATE_ROW[0]} build ({RATE_ROW[1]}, kernels/arm/measured)")
    return outcome
