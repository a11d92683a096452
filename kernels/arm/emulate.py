"""Train with the real ARM build of a kernel under ``qemu-arm -cpu cortex-a9``: an emulated i.MX6.

    result = run_emulated("int8", params, images, labels, orders, lr=3.0, batch_size=10,
                          profile="imx6")
    result.params                 # the trained weights (float32), read back from the trainer
    result.report["projected_seconds"], result.report["arm_instructions"], ...

Inputs: the kernel name, the round's weights, the MNIST images/labels (uint8, the full arrays),
one int32 sample order per local epoch (indices into images: the client's shard in the epoch's
shuffled order), learning rate, mini-batch size, device profile. Each epoch is one run of the
static ARM trainer (the last partial mini-batch of every epoch is trained, as in every kernel);
weights travel as raw float32 files, bit for bit. Counted: the trainer's training function and
everything it calls, nothing else (see plugin/insncount.c). Projected: cost model x clock.

Memory: the profile's memory (plus qemu's own resident memory, measured once) bounds the
resident memory of the qemu process; past it the run is killed and ``MemoryLimitExceeded``
names the profile and the figure. (RLIMIT_AS cannot do this under qemu-user, see count.run.)

Trainers (one class per protocol, registered in TRAINERS by kernel name), built here for the
board on first use (static, cached in ~/.cache/ecufl/arm):
  int8, int8-plain    kernels/int8/int8_check.c, the int8 kernel's job runner (NEON / plain
                      ops); counted function ``i8_train``.
  c, c-plain, eigen   jobs/native_job.c linked with the kernel's sources through the C ABI of
                      common/ecufl_kernel.h; counted function ``ecufl_net_train``.
"""

from __future__ import annotations

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

from ..params import Params
from . import count, microbench
from .costmodel import CostModel
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


def _build_cached(name: str, sources: list[Path], flags: list[str]) -> Path:
    """Compile once per source/flag version into the user cache; the path of the static binary.
    C sources as ISO C11, C++ as C++17 (with Eigen), linked by g++ when there is C++."""
    import hashlib

    digest = hashlib.sha256(" ".join(flags).encode())
    for src in sources:
        digest.update(src.read_bytes() if src.is_file() else b"")
    out = microbench.cache_dir() / f"{name}-{digest.hexdigest()[:12]}"
    if out.is_file():
        return out
    missing = [str(src) for src in sources if not src.is_file()]
    if missing:
        raise microbench.BuildError(f"cannot build {name}: missing {', '.join(missing)}")
    cc = microbench.compiler()
    cxx = cc[: -len("gcc")] + "g++" if cc.endswith("gcc") else cc
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ecufl-build-") as tmp:
        objects = []
        for i, src in enumerate(sources):
            obj = Path(tmp) / f"{i}-{src.stem}.o"
            lang = (([cxx, "-std=c++17", "-I/usr/include/eigen3", "-DEIGEN_DONT_PARALLELIZE"])
                    if src.suffix == ".cpp" else [cc, "-std=c11"])
            proc = subprocess.run([*lang, *flags, "-c", "-o", str(obj), str(src)], capture_output=True, text=True)
            if proc.returncode != 0:
                raise microbench.BuildError(f"building {name} for the board failed: {src.name}: "
                                            f"{proc.stderr.strip().splitlines()[-1:]}")
            objects.append(str(obj))
        linker = cxx if any(src.suffix == ".cpp" for src in sources) else cc
        tmp_out = out.with_suffix(".tmp")
        proc = subprocess.run([linker, "-static", *flags, "-o", str(tmp_out), *objects, "-lm"],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise microbench.BuildError(f"linking {name} for the board failed: {proc.stderr.strip().splitlines()[-1:]}")
        tmp_out.replace(out)
    return out


@dataclass(frozen=True)
class Int8Trainer:
    """int8_check JOB OUT (format in kernels/int8/int8_check.c); dense training (no masks)."""

    kernel: str
    ops: str  # int8_ops_simd.c (NEON on ARM) or int8_ops_plain.c
    functions: tuple[str, ...] = ("i8_train",)

    def build(self) -> Path:
        d = KERNELS_DIR / "int8"
        # the int8 library's own flags (kernels/int8/CMakeLists.txt) with the board's
        flags = ["-O3", "-ffp-contract=off", *microbench.BOARD_FLAGS]
        return _build_cached(f"int8_check-{self.kernel}", [d / "int8_check.c", d / "int8_net.c", d / self.ops], flags)

    def write_job(self, workdir, params, images, labels, order, lr, batch_size):
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


@dataclass(frozen=True)
class NativeTrainer(Int8Trainer):
    """jobs/native_job.c linked with one kernel of the C ABI (common/ecufl_kernel.h), static,
    with the kernels' own flags (kernels/CMakeLists.txt: ISO C11/C++17, -O3 -ffp-contract=off,
    NEON on ARM) and the board's; same job format as int8_check. Counted: ``ecufl_net_train``."""

    sources: tuple[str, ...] = ()
    functions: tuple[str, ...] = ("ecufl_net_train",)

    def build(self) -> Path:
        k = KERNELS_DIR
        flags = ["-O3", "-ffp-contract=off", *microbench.BOARD_FLAGS, f"-I{k / 'common'}", f"-I{k / 'c'}",
                 '-DECUFL_COMPILER="arm-linux-gnueabihf-gcc"', '-DECUFL_FLAGS="-O3 -ffp-contract=off (ecufl emulate)"']
        job = Path(__file__).with_name("jobs") / "native_job.c"
        return _build_cached(f"native_job-{self.kernel}", [job, *(k / s for s in self.sources)], flags)


TRAINERS: dict[str, Trainer] = {
    "int8": Int8Trainer("int8", "int8_ops_simd.c"),
    "int8-plain": Int8Trainer("int8-plain", "int8_ops_plain.c"),
    "c": NativeTrainer("c", "", sources=("c/hdrnn_net.c", "c/hdrnn_opt.c")),
    "c-plain": NativeTrainer("c-plain", "", sources=("c/hdrnn_net.c", "c/hdrnn_plain.c")),
    "eigen": NativeTrainer("eigen", "", sources=("eigen/hdrnn_eigen.cpp",)),
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
    return count.run(binary, ["vfp_div", "300000"], ["mb_vfp_div"]).peak_rss_bytes


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
                 *, model: CostModel | None = None, timeout: float | None = None) -> EmulatedTraining:
    """Train ``len(orders)`` epochs with the ARM trainer of ``kernel`` under emulation.

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
    current = params.astype("float32")
    with tempfile.TemporaryDirectory(prefix="ecufl-emulate-") as tmp:
        work = Path(tmp)
        for epoch, order in enumerate(orders):
            local = np.searchsorted(used, np.asarray(order, np.int64)).astype(np.int32)
            args = trainer.write_job(work, current, sub_images, sub_labels, local, lr, batch_size)
            t0 = time.perf_counter()
            try:
                run = count.run(binary, args, trainer.functions, rss_limit_bytes=limit, timeout=timeout)
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
    return EmulatedTraining(current, report)


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
