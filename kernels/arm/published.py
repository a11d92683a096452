"""The cost model checked against Cortex-A9 figures nobody here produced.

OpenSSL's ARMv4/NEON assembly modules state, in their comments, the cycles per byte their author
measured on a Cortex-A9 (``published_a9.json`` beside this file: figure, file, line, commit).
Debian's armhf libcrypto (the sysroot ``make build/armhf-sysroot/PACKAGES`` unpacks, the one the
board agent links) holds the same routines; ``published/opensslbench.c`` calls them directly,
statically linked, inside ``pb_run``. Counted under ``qemu-arm -cpu cortex-a9`` at two lengths,
the difference divided by the difference of lengths is the steady state per byte; the cost model
prices it into projected cycles per byte, which is set beside the published figure.

Error measures: ratio = projected / published; the median absolute relative error
``median(|ratio - 1|)`` and the worst ratio (the one farthest from 1 in either direction, as a
factor). A refitted table (``fit_published``) is judged leave-one-out only: each figure is
projected by a table fitted to the others.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from . import count
from .costmodel import TABLE, CostModel
from .microbench import BOARD_FLAGS, BuildError, cache_dir, compiler

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "published" / "opensslbench.c"
DATA = HERE / "published_a9.json"
_REPO_ROOT = HERE.parents[1]
# Two lengths, both multiples of 4352 = lcm(136, 256): whole Keccak blocks (rate 136), whole
# ChaCha20 NEON iterations (256), whole Poly1305/GHASH blocks (16). Large buffers, as published.
LENGTHS = (4352, 17408)

# Cost-model classes grouped for the refit (few unknowns: seven figures cannot fit forty classes)
GROUPS = {
    "integer": ("int.alu", "int.it", "int.mul", "int.branch", "int.sys", "int.div"),
    "load/store": ("int.load", "int.store", "int.ldm", "int.stm", "vfp.load", "vfp.store",
                   "neon.load.1", "neon.load.2", "neon.load.3", "neon.load.4",
                   "neon.store.1", "neon.store.2", "neon.store.3", "neon.store.4"),
    "neon": tuple(k for k in TABLE if k.startswith("neon.") and ".load." not in k and ".store." not in k),
}


def group_of(cls: str) -> str:
    for g, members in GROUPS.items():
        if cls in members:
            return g
    return "vfp" if cls.startswith("vfp.") else ("neon" if cls.startswith("neon.") else "integer")


def sysroot() -> Path:
    env = os.environ.get("ECUFL_ARMHF_SYSROOT")
    return Path(env) if env else _REPO_ROOT / "build" / "armhf-sysroot"


def libcrypto() -> Path:
    lib = sysroot() / "usr" / "lib" / "arm-linux-gnueabihf" / "libcrypto.a"
    if not lib.is_file():
        raise BuildError(f"Debian's armhf libcrypto.a not found at {lib}: unpack the armhf sysroot with "
                         "`make build/armhf-sysroot/PACKAGES` (or set ECUFL_ARMHF_SYSROOT)")
    return lib


def build(out_dir: str | Path | None = None) -> Path:
    """The static harness, linked against Debian's armhf libcrypto.a (cached per source+library)."""
    lib = libcrypto()
    flags = ["-O2", "-static", *BOARD_FLAGS, f"-I{sysroot() / 'usr' / 'include'}"]
    digest = hashlib.sha256(SOURCE.read_bytes())
    digest.update(hashlib.sha256(lib.read_bytes()).digest())
    digest.update(" ".join(flags).encode())
    out = Path(out_dir) if out_dir else cache_dir()
    out.mkdir(parents=True, exist_ok=True)
    binary = out / f"ecufl-a9-opensslbench-{digest.hexdigest()[:12]}"
    if binary.is_file():
        return binary
    tmp = binary.with_suffix(".tmp")
    proc = subprocess.run([compiler(), *flags, "-o", str(tmp), str(SOURCE), str(lib)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise BuildError(f"building the OpenSSL harness failed: {last}")
    tmp.replace(binary)
    return binary


def library_version() -> str:
    """Debian package names of the sysroot (the libcrypto that was counted)."""
    f = sysroot() / "PACKAGES"
    names = f.read_text().split() if f.is_file() else []
    return next((n for n in names if n.startswith("libssl-dev_")), "unknown")


@dataclass
class Figure:
    primitive: str
    path: str
    published: float
    source: str
    line: int
    commit: str
    note: str = ""


def figures(path: str | Path = DATA) -> list[Figure]:
    data = json.loads(Path(path).read_text())
    return [Figure(f["primitive"], f["path"], float(f["published_cycles_per_byte"]), f["source"],
                   int(f["line"]), f["commit"], f.get("note", "")) for f in data["figures"]]


def counts_per_byte(binary: Path, primitive: str, path: str,
                    lengths: tuple[int, int] = LENGTHS) -> dict[str, float]:
    """Executed instructions per byte, per class, in the routine's steady state."""
    a, b = (count.run(binary, [primitive, path, str(n)], ["pb_run"]).counts.classes for n in lengths)
    d = lengths[1] - lengths[0]
    return {k: (b.get(k, 0) - a.get(k, 0)) / d for k in sorted(set(a) | set(b))
            if b.get(k, 0) != a.get(k, 0)}


@dataclass
class Row:
    figure: Figure
    per_byte: dict[str, float]
    projected: float = math.nan          # with the table under test
    projected_loo: float | None = None   # with a table fitted to the other figures

    @property
    def ratio(self) -> float:
        return self.projected / self.figure.published

    def to_dict(self) -> dict:
        f = self.figure
        d = {"primitive": f.primitive, "path": f.path, "published_cycles_per_byte": f.published,
             "projected_cycles_per_byte": round(self.projected, 3), "ratio": round(self.ratio, 3),
             "source": f.source, "line": f.line, "commit": f.commit,
             "instructions_per_byte": round(sum(self.per_byte.values()), 3),
             "instructions_per_byte_by_group": {g: round(v, 3) for g, v in sorted(by_group(self.per_byte).items())}}
        if self.projected_loo is not None:
            d["projected_cycles_per_byte_leave_one_out"] = round(self.projected_loo, 3)
            d["ratio_leave_one_out"] = round(self.projected_loo / f.published, 3)
        if f.note:
            d["note"] = f.note
        return d


def by_group(per_byte: dict[str, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in per_byte.items():
        out[group_of(k)] = out.get(group_of(k), 0.0) + v
    return out


def measure(binary: Path | None = None, figs: list[Figure] | None = None, progress=None) -> list[Row]:
    binary = binary or build()
    figs = figs or figures()
    rows = []
    for i, f in enumerate(figs):
        rows.append(Row(f, counts_per_byte(binary, f.primitive, f.path)))
        if progress:
            progress(i + 1, len(figs), f"{f.primitive} {f.path}")
    return rows


def project(rows: list[Row], model: CostModel) -> list[Row]:
    for r in rows:
        r.projected = model.project({k: v for k, v in r.per_byte.items()}).cycles
    return rows


def summary(ratios: list[float]) -> dict:
    """Median absolute relative error and the worst ratio (farthest from 1, as a factor)."""
    errs = sorted(abs(x - 1) for x in ratios)
    n = len(errs)
    median = (errs[n // 2] if n % 2 else (errs[n // 2 - 1] + errs[n // 2]) / 2) if n else math.nan
    worst = max(ratios, key=lambda x: max(x, 1 / x)) if ratios else math.nan
    return {"n": n, "median_abs_error": median, "worst_ratio": worst,
            "worst_factor": max(worst, 1 / worst) if ratios else math.nan}


# ---- refit from the published figures (the least-squares path of calibrate.py) ----------------

def _group_design(rows: list[Row], base: CostModel) -> tuple[list[str], list[list[float]]]:
    """Columns: cycles each group contributes per byte under ``base``; one row per figure."""
    groups = sorted({group_of(k) for r in rows for k in r.per_byte})
    design = []
    for r in rows:
        priced = {g: 0.0 for g in groups}
        for k, v in r.per_byte.items():
            priced[group_of(k)] += v * base.cycles.get(k, 1.0)
        design.append([priced[g] for g in groups])
    return groups, design


def fit_published(rows: list[Row], base: CostModel | None = None) -> tuple[dict[str, float], CostModel]:
    """One non-negative factor per class group (integer, load/store, NEON, VFP) by relative least
    squares over ``rows``' figures: the base table's cycles of a group times its factor.
    Returns (factor per group, the refitted model)."""
    from .calibrate import nnls_relative

    base = base or CostModel.trm()
    groups, design = _group_design(rows, base)
    y = [r.figure.published for r in rows]
    factors = dict(zip(groups, nnls_relative(design, y)))
    model = CostModel({k: v * factors.get(group_of(k), 1.0) for k, v in base.cycles.items()},
                      name="published-fit")
    return factors, model


def leave_one_out(rows: list[Row], base: CostModel | None = None) -> list[Row]:
    """Each figure projected by a table fitted to all the others (its own figure never seen)."""
    for i, r in enumerate(rows):
        _, model = fit_published(rows[:i] + rows[i + 1:], base)
        r.projected_loo = model.project(r.per_byte).cycles
    return rows


@dataclass
class Report:
    rows: list[Row]
    model: str
    stats: dict
    stats_loo: dict | None = None
    factors: dict = field(default_factory=dict)
    library: str = ""

    def to_dict(self) -> dict:
        return {"model": self.model, "library": self.library, "lengths_bytes": list(LENGTHS),
                "summary": self.stats, "summary_leave_one_out": self.stats_loo,
                "refit_factors_all_figures": self.factors, "rows": [r.to_dict() for r in self.rows]}


def report(model: CostModel | None = None, *, binary: Path | None = None, refit: bool = True,
           progress=None) -> Report:
    model = model or CostModel.trm()
    rows = project(measure(binary, progress=progress), model)
    rep = Report(rows, model.name, summary([r.ratio for r in rows]), library=library_version())
    if refit and len(rows) >= 3:
        leave_one_out(rows, model)
        rep.stats_loo = summary([r.projected_loo / r.figure.published for r in rows])
        rep.factors, _ = fit_published(rows, model)
    return rep


def markdown(rep: Report) -> str:
    head = ("| primitive | path | published c/B | projected c/B | ratio | LOO-refit c/B | LOO ratio | "
            "instr./B | source |")
    lines = [head, "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rep.rows:
        f = r.figure
        loo = (f"{r.projected_loo:.2f} | {r.projected_loo / f.published:.2f}"
               if r.projected_loo is not None else "- | -")
        lines.append(f"| {f.primitive} | {f.path} | {f.published:g} | {r.projected:.2f} | {r.ratio:.2f} | {loo} | "
                     f"{sum(r.per_byte.values()):.2f} | {f.source}:{f.line} |")
    return "\n".join(lines)


def write_fit(rep: Report, path: str | Path) -> Path:
    """The table refitted to all the figures, as a calibration file CostModel.load() reads."""
    import datetime as dt

    factors, model = fit_published(rep.rows, CostModel.trm())
    data = {"tool": "ecufl calibrate --published", "board": "published Cortex-A9 figures (OpenSSL)",
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "group_factors": factors, "cycles": model.cycles,
            "trm_cycles": {k: v[0] for k, v in TABLE.items()},
            "leave_one_out": rep.stats_loo, "trm_in_sample": rep.stats, "library": rep.library,
            "figures": [r.to_dict() for r in rep.rows]}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(path)
    return path


def have_tools() -> bool:
    return shutil.which(count.QEMU) is not None and shutil.which(os.environ.get("ECUFL_ARM_CC", "arm-linux-gnueabihf-gcc")) is not None
