"""Train with the real ARM build of a kernel under ``qemu-arm -cpu cortex-a9``: an emulated i.MX6.

    result = run_emulated("int8", params, images, labels, orders, lr=3.0, batch_size=10,
                          profile="imx6")
    result.params                 # the trained weights (float32), read back from the trainer
    result.report["projected_seconds"], result.report["arm_instructions"], ...

Inputs: the kernel name, the round's weights, the MNIST images/labels (uint8, the full arrays;
or any data, issue 17: float inputs in [0, 1] and class labels or real-valued targets (N, n_out)),
one int32 sample order per local epoch (indices into images: the client's shard in the epoch's
shuffled order), learning rate, mini-batch size, device profile. Each epoch is one run of the
static ARM trainer (the last partial mini-batch of every epoch is trained, as in every kernel);
weights travel as raw float32 files, bit for bit. Counted: the trainer's training function and
everything it calls, nothing else (see plugin/insncount.c). Projected: cost model x clock.

Memory: the profile's memory (plus qemu's own resident memory, measured once) bounds the
resident memory of the qemu process; past it the run is killed and ``MemoryLimitExceeded``
names the profile and the figure. (RLIMIT_AS cannot do this under qemu-user, see count.run.)

Trainers (one class per protocol, registered in TRAINERS by kernel name): the static binaries
of the board build, `make arm` (build/arm; built on first use):
  c, c-plain, eigen, int8   the standalone trainers ecufl-train-<kernel> (common/trainer.c):
                            --init, a data directory holding the epoch's samples in order,
                            --no-shuffle, --out; counted function ``ecufl_net_train``.
  int8-plain                int8_check_plain, the int8 kernel's job runner with the plain ops
                            (there is no plain int8 trainer); counted function ``i8_train``.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import struct
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..base import check_data
from ..params import Params
from . import count, microbench
from .costmodel import CostModel, memory_cycles, seconds_range
from .profiles import Profile
from .profiles import get as get_profile

KERNELS_DIR = Path(__file__).resolve().parents[1]


class UnknownTrainer(ValueError):
    pass


class Trainer(Protocol):
    kernel: str
    functions: tuple[str, ...]

    def build(self) -> Path: ...
    def write_job(self, workdir: Path, params: Params, images: np.ndarray, labels: np.ndarray,
                  order: np.ndarray, lr: float, batch_size: int) -> list[str]: ...
    def read_params(self, workdir: Path, sizes: list[int]) -> Params: ...


REPO_ROOT = KERNELS_DIR.parent


def arm_build_dir() -> Path:
    return Path(os.environ.get("ECUFL_ARM_BUILD") or REPO_ROOT / "build" / "arm")


def board_binary(name: str) -> Path:
    """A static board binary of `make arm` (build/arm, or $ECUFL_ARM_BUILD); built on first use.

    The board build is the project's one (kernels/CMakeLists.txt with the armv7-cortex-a9
    toolchain file), so the emulated trainer is the binary a board would run, with its flags.
    Rebuild with `make arm` after changing a kernel."""
    d = arm_build_dir()
    found = next((p for p in (d / name, d / "int8" / name) if p.is_file()), None)
    if found:
        return found
    makefile = REPO_ROOT / "Makefile"
    if "ECUFL_ARM_BUILD" in os.environ or not makefile.is_file():
        raise count.EmulationError(f"board binary {name} not found in {d}: build it with `make arm`")
    d.parent.mkdir(parents=True, exist_ok=True)
    with open(d.parent / ".arm-build.lock", "w") as lock:  # several emulated clients may start at once
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = next((p for p in (d / name, d / "int8" / name) if p.is_file()), None)
        if found:
            return found
        proc = subprocess.run(["make", "-C", str(REPO_ROOT), "arm"], capture_output=True, text=True)
    found = next((p for p in (d / name, d / "int8" / name) if p.is_file()), None)
    if proc.returncode != 0 or not found:
        tail = [ln for ln in (proc.stderr or proc.stdout).strip().splitlines() if ln.strip()][-1:]
        raise count.EmulationError(f"`make arm` did not produce {name}" + (f": {tail[0]}" if tail else ""))
    return found


@dataclass(frozen=True)
class Int8Trainer:
    """int8_check JOB OUT (job format in kernels/int8/int8_check.c): the int8 kernel's job runner
    from the board build; dense training (no masks). Counted: ``i8_train``."""

    kernel: str
    binary: str  # int8_check (NEON ops) or int8_check_plain
    functions: tuple[str, ...] = ("i8_train",)

    def build(self) -> Path:
        return board_binary(self.binary)

    def write_job(self, workdir, params, images, labels, order, lr, batch_size):
        if not _mnist(images, labels):
            raise ValueError(f"kernel {self.kernel}: its board runner {self.binary} takes uint8 pixels and class labels "
                             "only; float inputs and real-valued targets train on the board with kernel int8")
        sizes = params.sizes
        with open(workdir / "job", "wb") as f:
            f.write(struct.pack(f"<{1 + len(sizes)}i", len(sizes), *sizes))
            f.write(struct.pack("<iiid", len(images), len(order), batch_size, lr))
            for a in params.flat():
                f.write(np.ascontiguousarray(a, np.float32).tobytes())
            f.write(np.ascontiguousarray(images, np.uint8).tobytes())
            f.write(np.ascontiguousarray(labels, np.uint8).tobytes())
            f.write(np.ascontiguousarray(order, np.int32).tobytes())
            f.write(struct.pack("<i", 0))  # no pruning masks
        return [str(workdir / "job"), str(workdir / "out")]

    def read_params(self, workdir, sizes):
        data = np.fromfile(workdir / "out", dtype=np.uint8)
        arrays, off = [], 0
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            for shape in ((n_out, n_in), (n_out,)):
                n = int(np.prod(shape)) * 4
                arrays.append(data[off:off + n].view(np.float32).reshape(shape).copy())
                off += n
        return Params.from_flat(arrays)


def _write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file: magic (0, 0, type, ndim), big-endian dims, the data; type 0x08 for uint8 (as
    MNIST ships them), 0x0D for anything else, written as big-endian float32 (any data, issue 17)."""
    kind = 0x08 if array.dtype == np.uint8 else 0x0D
    with open(path, "wb") as f:
        f.write(struct.pack(">BBBB", 0, 0, kind, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape))
        f.write(np.ascontiguousarray(array, np.uint8 if kind == 0x08 else ">f4").tobytes())


def _mnist(images: np.ndarray, labels: np.ndarray) -> bool:
    """uint8 pixels with class labels: the trainers' MNIST files and ``ecufl_net_train``."""
    return images.dtype == np.uint8 and np.ndim(labels) == 1


@dataclass(frozen=True)
class StandaloneTrainer:
    """The standalone trainer ``ecufl-train-<kernel>`` of the board build (kernels/common/trainer.c),
    as a board runs it: ``--init`` the round's weights, ``--no-shuffle`` over a data directory
    whose training files hold exactly the epoch's samples in the epoch's order, ``--out`` the new
    weights. Its test set is one sample (evaluation is not the client's job here). Counted:
    ``ecufl_net_train``, called once per run. Any data (issue 17: float inputs, real-valued targets)
    goes as float32 IDX files (train-inputs.idx, train-targets.idx, ...) and is trained by
    ``ecufl_net_train_f32``, counted instead (``functions_for``)."""

    kernel: str
    binary: str
    functions: tuple[str, ...] = ("ecufl_net_train",)

    def build(self) -> Path:
        return board_binary(self.binary)

    def functions_for(self, images: np.ndarray, labels: np.ndarray) -> tuple[str, ...]:
        return self.functions if _mnist(images, labels) else ("ecufl_net_train_f32",)

    def write_job(self, workdir, params, images, labels, order, lr, batch_size):
        from ecufl.kernels import weights as weightfile

        check_data(params.sizes, images, labels)
        data = workdir / "data"
        data.mkdir(exist_ok=True)
        rows = np.asarray(order, np.int64)
        if _mnist(images, labels) and images.shape[1] == 784:  # MNIST's files, as before
            pixels = images[rows].reshape(len(rows), 28, 28)
            _write_idx(data / "train-images-idx3-ubyte", pixels)
            _write_idx(data / "train-labels-idx1-ubyte", labels[rows])
            _write_idx(data / "t10k-images-idx3-ubyte", pixels[:1])
            _write_idx(data / "t10k-labels-idx1-ubyte", labels[rows[:1]])
        else:  # any data: uint8 or float32 inputs, uint8 labels or float32 targets
            inputs = images[rows] if images.dtype == np.uint8 else np.asarray(images[rows], np.float32)
            targets = labels[rows].astype(np.uint8 if np.ndim(labels) == 1 else np.float32)
            _write_idx(data / "train-inputs.idx", inputs)
            _write_idx(data / "train-targets.idx", targets)
            _write_idx(data / "test-inputs.idx", inputs[:1])
            _write_idx(data / "test-targets.idx", targets[:1])
        weightfile.save(workdir / "in.npz", params.astype("float32"), kernel=self.kernel)
        (workdir / "out.npz").unlink(missing_ok=True)
        return ["--layers", ",".join(map(str, params.sizes)), "--epochs", "1", "--batch-size", str(batch_size),
                "--lr", repr(float(lr)), "--no-shuffle", "--init", str(workdir / "in.npz"),
                "--out", str(workdir / "out.npz"), "--data-dir", str(data)]

    def read_params(self, workdir, sizes):
        from ecufl.kernels import weights as weightfile

        params, _ = weightfile.load(workdir / "out.npz")
        return params


TRAINERS: dict[str, Trainer] = {
    "c": StandaloneTrainer("c", "ecufl-train-c"),
    "c-plain": StandaloneTrainer("c-plain", "ecufl-train-c-plain"),
    "eigen": StandaloneTrainer("eigen", "ecufl-train-eigen"),
    "int8": StandaloneTrainer("int8", "ecufl-train-int8"),
    "int8-plain": Int8Trainer("int8-plain", "int8_check_plain"),
}


def register(trainer: Trainer) -> None:
    TRAINERS[trainer.kernel] = trainer


def trainer_for(kernel: str) -> Trainer:
    try:
        return TRAINERS[kernel]
    except KeyError:
        raise UnknownTrainer(f"kernel {kernel!r} has no ARM trainer for emulation; "
                             f"ARM trainers: {', '.join(TRAINERS)}") from None


@lru_cache(maxsize=1)
def qemu_baseline_rss() -> int:
    """Resident memory of qemu-arm + the plugin running a tiny guest: what the profile's
    memory limit adds for qemu itself."""
    binary = microbench.build()
    return count.run(binary, ["vfp_div", "2000000"], ["mb_vfp_div"]).peak_rss_bytes  # ~0.3 s: sampled


@dataclass
class EmulatedTraining:
    params: Params
    report: dict[str, Any] = field(default_factory=dict)


def _resolve(profile: str | Profile) -> Profile:
    p = get_profile(profile) if isinstance(profile, str) else profile
    if not p.emulated:
        raise ValueError(f"device profile {p.name!r} does not emulate a board (no clock to project with)")
    return p


def run_emulated(kernel: str, params: Params, images: np.ndarray, labels: np.ndarray,
                 orders: list[np.ndarray], lr: float, batch_size: int, profile: str | Profile = "imx6",
                 *, model: CostModel | None = None, timeout: float | None = None,
                 memory: bool = False) -> EmulatedTraining:
    """Train ``len(orders)`` epochs with the ARM trainer of ``kernel`` under emulation.

    ``memory``: run the plugin's cache model with the profile's hierarchy (slower emulation) and
    report the miss counts, the memory term and projected seconds with an error bar.

    Raises UnknownTrainer / profiles.UnknownProfile / ValueError (bad input), count.EmulationError
    (qemu or plugin missing, trainer crashed: one line), count.MemoryLimitExceeded.
    """
    prof = _resolve(profile)
    trainer = trainer_for(kernel)
    if not orders:
        raise ValueError("no epochs to train (orders is empty)")
    model = model or CostModel.load()
    binary = trainer.build()
    sizes = params.sizes
    # only the samples this client trains on go to the trainer; orders are remapped onto them
    used = np.unique(np.concatenate([np.asarray(o, np.int64) for o in orders]))
    if used.size and (used[0] < 0 or used[-1] >= len(images)):
        raise ValueError(f"sample index out of range 0..{len(images) - 1}")
    sub_images, sub_labels = images[used], labels[used]
    baseline = qemu_baseline_rss()
    limit = prof.memory_bytes + baseline if prof.memory_bytes else None
    classes: dict[str, int] = {}
    mnemonics: dict[str, int] = {}
    peak = 0
    wall = 0.0
    caches = prof.memory.plugin_caches() if memory and prof.memory is not None else None
    cache_counts: dict | None = None
    current = params.astype("float32")
    with tempfile.TemporaryDirectory(prefix="ecufl-emulate-") as tmp:
        work = Path(tmp)
        for epoch, order in enumerate(orders):
            local = np.searchsorted(used, np.asarray(order, np.int64)).astype(np.int32)
            args = trainer.write_job(work, current, sub_images, sub_labels, local, lr, batch_size)
            functions = (trainer.functions_for(sub_images, sub_labels) if hasattr(trainer, "functions_for")
                         else trainer.functions)
            t0 = time.perf_counter()
            try:
                run = count.run(binary, args, functions, rss_limit_bytes=limit, timeout=timeout,
                                cache=caches)
            except count.MemoryLimitExceeded:
                raise count.MemoryLimitExceeded(
                    f"trainer {kernel} exceeds the memory of profile {prof.name} "
                    f"({prof.memory_bytes / 2**20:.0f} MiB): its resident memory passed "
                    f"{(limit - baseline) / 2**20:.0f} MiB (qemu's own {baseline / 2**20:.1f} MiB not counted)",
                    limit) from None
            except count.EmulationError as e:
                raise count.EmulationError(f"trainer {kernel} (epoch {epoch + 1}): {e}") from None
            wall += time.perf_counter() - t0
            current = trainer.read_params(work, sizes)
            for k, v in run.counts.classes.items():
                classes[k] = classes.get(k, 0) + v
            for k, v in run.counts.mnemonics.items():
                mnemonics[k] = mnemonics.get(k, 0) + v
            if run.counts.cache is not None:
                cache_counts = add_cache_counts(cache_counts, run.counts.cache)
            peak = max(peak, run.peak_rss_bytes)
    proj = model.project(classes, prof)
    report = {
        "trainer": f"qemu-arm -cpu {count.CPU}: {binary.name}",
        "kernel": kernel,
        "profile": prof.name,
        "clock_hz": prof.clock_hz,
        "memory_limit_bytes": prof.memory_bytes,
        "arm_instructions": sum(classes.values()),
        "instruction_classes": dict(sorted(classes.items())),
        "projected_cycles": proj.cycles,
        "projected_seconds": proj.seconds,
        "cost_model": proj.model,
        "unpriced_classes": proj.unpriced,
        "peak_rss_bytes": max(peak - baseline, 0),  # the guest's, qemu's baseline taken off
        "qemu_peak_rss_bytes": peak,
        "emulated_wall_seconds": wall,
        "epochs": len(orders),
        "samples": int(sum(len(o) for o in orders)),
    }
    if cache_counts is not None and prof.clock_hz:
        mem = memory_cycles(cache_counts, model.memory_system(prof.memory), prof.clock_hz)
        report["cache"] = cache_counts
        report["memory_cycles"] = mem
        report["projected_seconds_range"] = seconds_range(proj.cycles, mem, prof.clock_hz)
    return EmulatedTraining(current, report)


def add_cache_counts(total: dict | None, more: dict) -> dict:
    """Sum of two plugin cache results (levels keep their geometry; counters add)."""
    if total is None:
        return json.loads(json.dumps(more))
    out = json.loads(json.dumps(total))
    for k, v in more.items():
        if isinstance(v, dict):
            for c in ("accesses", "misses", "writebacks"):
                out[k][c] += v[c]
        else:
            out[k] += v
    return out


def train_shard(kernel: str, params: Params, images: np.ndarray, labels: np.ndarray, shard: np.ndarray,
                order_seed: int, epochs: int, lr: float, batch_size: int, profile: str | Profile = "imx6",
                **options: Any) -> EmulatedTraining:
    """A client's round on an emulated board: ``epochs`` passes over ``shard`` (indices into
    images), each in the order ``shard[EpochOrder(len(shard), order_seed).next()]``: the same
    orders as the in-process trainer of client/runner.py, so both train the same experiment."""
    from ..prng import EpochOrder

    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    shard = np.asarray(shard, dtype=np.int64)
    order = EpochOrder(len(shard), order_seed)
    orders = [shard[order.next()].astype(np.int32) for _ in range(epochs)]
    return run_emulated(kernel, params, images, labels, orders, lr, batch_size, profile, **options)


def client_round(job: Any, images: np.ndarray, labels: np.ndarray, **options: Any) -> dict[str, Any]:
    """One client's round on the emulated board of ``job.profile``, as the fields of the
    client's ``TrainOutcome`` (client/runner.py), so the ClientApp's trainer for the board
    profiles is ``TrainOutcome(**client_round(job, images, labels))``.

    ``job`` needs: kernel, params, shard, order_seed, epochs, lr, batch_size, profile (a
    client/runner.TrainJob). Local loss and accuracy on the shard come from the float32 numpy
    reference on the returned weights (the board does not evaluate). Errors: see run_emulated."""
    from .. import create

    t0 = time.perf_counter()
    result = train_shard(job.kernel, job.params, images, labels, job.shard, job.order_seed, job.epochs,
                         job.lr, job.batch_size, job.profile, **options)
    train = time.perf_counter() - t0
    ref = create("numpy", result.params, dtype="float32")
    shard = np.asarray(job.shard, dtype=np.int64)
    ev = ref.evaluate(images[shard], labels[shard])
    ref.close()
    r = result.report
    return {"params": result.params, "dtype": "float32", "samples": int(len(shard)) * job.epochs,
            "setup_seconds": 0.0, "train_seconds": train, "train_cpu_seconds": r["emulated_wall_seconds"],
            "local_loss": ev.loss, "local_accuracy": ev.accuracy, "trainer": r["trainer"],
            "arm_instructions": r["arm_instructions"], "board_seconds_projected": r["projected_seconds"],
            "extra": {k: v for k, v in r.items() if k not in ("trainer", "arm_instructions")}}


def have_toolchain() -> str | None:
    """None if emulation can run here, else one line saying what is missing."""
    for tool in (microbench.CC, count.QEMU, "arm-linux-gnueabihf-objdump"):
        if shutil.which(tool) is None:
            return f"{tool} not found (`make setup` installs the cross toolchain and qemu-user)"
    try:
        count.plugin_path()
    except count.EmulationError as e:
        return str(e)
    return None
