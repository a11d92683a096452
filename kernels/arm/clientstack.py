"""The whole client on the A9: what a board pays besides training, counted as the kernels are.

A ``supernode`` board runs Flower's SuperNode and a Python ClientApp: each round's fresh ClientApp
process (Flower's plain path; a warm node forks it instead and pays nothing here) starts an
interpreter and imports numpy, Flower and ecufl, loads MNIST and cuts its shard (once per process),
and decodes / encodes the weights as npy (every round). Those steps run on Debian's armhf python3.11
and numpy 1.24 (``make build/armhf-python/PACKAGES``, a private sysroot) under ``qemu-arm -cpu
cortex-a9`` with the counting plugin (whole program, no gates); ``clientstack_probe.py`` does one
set of steps per run and a step's instructions are the difference of two runs. The cost model
prices them like a kernel's (``CostModel.trm()``, the TRM table). Flower 1.42 cannot be imported
there (it needs grpcio >= 1.66 and protobuf >= 6.31; Debian 12 has 1.51 and 3.21), so the imports
of flwr and ecufl's ClientApp are EXTRAPOLATED: the counted A9 cost of ``import numpy`` times the
host's ratio (CPU seconds of those imports / of ``import numpy``, this machine), and labelled so.

The figures are a committed table (``measured/client-stack-a9.json``, ``ecufl calibrate
--client-stack`` regenerates it), so a client never runs qemu for them: ``board_overhead`` turns
the table into projected seconds for one round of one board.

Not counted: the kernel's time in system calls (file reads, sockets: qemu-user runs them on the
host), storage and network waits, and the page faults of a cold start.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from . import count
from .costmodel import CostModel
from .profiles import Profile

HERE = Path(__file__).resolve().parent
PROBE = HERE / "clientstack_probe.py"
TABLE_PATH = HERE / "measured" / "client-stack-a9.json"
_REPO_ROOT = HERE.parents[1]
PYTHON = "usr/bin/python3.11"
# Two weight sets for the serialisation line (fixed + per byte): 784-30-10 and 784-128-10
WEIGHT_SIZES = ((784, 30, 10), (784, 128, 10))
DATA_SAMPLES, DATA_SHARDS = 60000, 4
TOLERANCE = 0.02  # relative: counts regenerate within this (tests/test_arm_clientstack.py)


class ClientStackError(RuntimeError):
    """One line: why the armhf Python stack could not be counted (or the table read)."""


def sysroot() -> Path:
    env = os.environ.get("ECUFL_ARMHF_PYTHON")
    return Path(env) if env else _REPO_ROOT / "build" / "armhf-python"


def _python() -> Path:
    exe = sysroot() / PYTHON
    if not exe.is_file():
        raise ClientStackError(f"Debian's armhf python3.11 not found at {exe}: unpack it with "
                               "`make build/armhf-python/PACKAGES` (or set ECUFL_ARMHF_PYTHON)")
    return exe


def packages() -> dict[str, str]:
    f = sysroot() / "PACKAGES"
    names = f.read_text().split() if f.is_file() else []
    want = ("python3.11-minimal_", "python3-numpy_", "python3-protobuf_", "libc6_")
    return {w.rstrip("_"): n.removesuffix("_armhf.deb") for w in want for n in names if n.startswith(w)}


def _guest_env() -> dict[str, str]:
    # the same environment block every run (counts depend on it); no bytecode written while counting
    return {"PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1", "LC_ALL": "C", "HOME": "/nonexistent",
            "OPENBLAS_NUM_THREADS": "1"}


@dataclass
class Counted:
    classes: dict[str, int]
    peak_rss_bytes: int

    @property
    def total(self) -> int:
        return sum(self.classes.values())


def run_probe(steps: str, *, counted: bool = True, timeout: float = 900) -> Counted:
    """The probe with ``steps`` on the armhf Python under qemu-arm -cpu cortex-a9."""
    exe = _python()
    qemu = count.qemu_path()
    with tempfile.TemporaryDirectory(prefix="ecufl-clientstack-") as tmp:
        out = Path(tmp) / "counts.json"
        # the whole program counts (program_classes); the plugin wants a gate, so one that never runs
        plugin = ["-plugin", f"{count.plugin_path()},on=0x10,out={out}"] if counted else []
        cmd = [qemu, "-cpu", count.CPU, "-L", str(sysroot()), *plugin, str(exe), str(PROBE), steps]
        env = _guest_env() if counted else {k: v for k, v in _guest_env().items() if k != "PYTHONDONTWRITEBYTECODE"}
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    env=env, cwd=tmp)
        except OSError as e:
            raise ClientStackError(f"cannot start {qemu}: {e.strerror}") from None
        _, stderr, rc, peak, timed_out, _ = count._wait(proc, None, timeout, None)
        if timed_out:
            raise ClientStackError(f"the armhf Python probe ({steps}) did not finish within {timeout:.0f} s")
        if rc != 0:
            last = [ln for ln in stderr.decode(errors="replace").splitlines() if ln.strip()]
            raise ClientStackError(f"the armhf Python probe ({steps}) failed under qemu-arm -cpu {count.CPU}: "
                                   f"{last[-1].strip() if last else f'exit status {rc}'}")
        if not counted:
            return Counted({}, peak)
        data = json.loads(out.read_text())
    return Counted({k: int(v) for k, v in data["program_classes"].items()}, peak)


def _diff(a: Counted, b: Counted) -> dict[str, int]:
    """b - a per class (b's steps include a's); negatives (noise in untouched classes) kept."""
    return {k: b.classes.get(k, 0) - a.classes.get(k, 0) for k in sorted(set(a.classes) | set(b.classes))
            if b.classes.get(k, 0) != a.classes.get(k, 0)}


def _npy_bytes(sizes: tuple[int, ...]) -> int:
    """The npy bytes of a float32 weight set (128-byte headers, as np.save writes them here)."""
    return sum(128 + 4 * (i * o + o) for i, o in zip(sizes, sizes[1:]))


def host_import_seconds(imports: str, repeats: int = 7) -> dict[str, float]:
    """CPU seconds (user + system) on this host of a bare interpreter, ``import numpy`` and
    ``imports`` (the ClientApp's own), each the least of ``repeats`` fresh processes (warm file
    cache). CPU, not wall time: the ratio must not move with the other work on the machine."""
    def best(code: str) -> float:
        times = []
        for _ in range(repeats):
            proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                    env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
            _, status, ru = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            if proc.returncode != 0:
                last = (proc.stderr.read().decode(errors="replace").strip().splitlines() or ["?"])[-1]
                raise ClientStackError(f"host python -c {code!r} failed: {last}")
            times.append(ru.ru_utime + ru.ru_stime)
        return min(times)

    return {"start": best("pass"), "numpy": best("import numpy"), "client": best(f"import numpy; {imports}")}


def measure(data_module: Path, mnist_dir: Path, client_imports: str, *, model: CostModel | None = None,
            progress=None) -> dict:
    """Count every phase and return the table (``write`` stores it)."""
    model = model or CostModel.trm()
    data_step = f"data:{data_module}:{mnist_dir}:{DATA_SAMPLES}:{DATA_SHARDS}"
    small, large = ("-".join(map(str, s)) for s in WEIGHT_SIZES)
    runs = {
        "start": "start", "numpy": "numpy", "protobuf": "numpy,protobuf", "data": f"numpy,{data_step}",
        "prepare-small": f"numpy,prepare:{small}", "weights-small": f"numpy,weights:{small}",
        "prepare-large": f"numpy,prepare:{large}", "weights-large": f"numpy,weights:{large}",
    }
    # one uncounted pass first: the interpreter compiles the .pyc files Debian's postinst would
    # have made (dpkg -x runs no scripts), so every counted run reads bytecode, as a board does
    run_probe(",".join(["numpy", "protobuf", data_step, f"weights:{small}"]), counted=False)
    got: dict[str, Counted] = {}
    for i, (name, steps) in enumerate(runs.items()):
        got[name] = run_probe(steps)
        if progress:
            progress(i + 1, len(runs), name)

    def phase(classes: dict[str, int], what: str) -> dict:
        return {"instructions": sum(classes.values()), "cycles": round(model.project(classes).cycles),
                "classes": classes, "what": what, "counted": True}

    phases = {
        "interpreter_start": phase(got["start"].classes, "python3.11 start and exit (site, no imports)"),
        "import_numpy": phase(_diff(got["start"], got["numpy"]), "import numpy (1.24, Debian armhf)"),
        "import_protobuf": phase(_diff(got["numpy"], got["protobuf"]),
                                 "import google.protobuf + one message round trip (Debian's 3.21)"),
        "data": phase(_diff(got["numpy"], got["data"]),
                      f"MNIST training set (gzip) through ecufl.data.load + IID split of {DATA_SAMPLES} "
                      f"samples into {DATA_SHARDS}"),
    }
    ser = []
    for tag, sizes in (("small", WEIGHT_SIZES[0]), ("large", WEIGHT_SIZES[1])):
        d = _diff(got[f"prepare-{tag}"], got[f"weights-{tag}"])
        ser.append((_npy_bytes(sizes), sum(d.values()), model.project(d).cycles, sizes))
    (b1, n1, c1, s1), (b2, n2, c2, s2) = ser
    per_byte_c, per_byte_n = (c2 - c1) / (b2 - b1), (n2 - n1) / (b2 - b1)
    phases["serialise"] = {
        "what": "global weights decoded from npy and trained weights encoded to npy (np.load / np.save, "
                "as Flower's ArrayRecord), per round",
        "counted": True, "points": [{"layers": list(s), "npy_bytes": b, "instructions": n, "cycles": round(c)}
                                    for b, n, c, s in ser],
        "fixed_cycles": round(c1 - per_byte_c * b1), "cycles_per_byte": round(per_byte_c, 4),
        "fixed_instructions": round(n1 - per_byte_n * b1), "instructions_per_byte": round(per_byte_n, 4),
    }
    host = host_import_seconds(client_imports)
    ratio = (host["client"] - host["numpy"]) / max(host["numpy"] - host["start"], 1e-6)
    phases["import_client"] = {
        "what": f"the ClientApp's own imports ({client_imports}) beyond numpy",
        "counted": False,
        "extrapolated": "A9 cycles of `import numpy` x this host's CPU-time ratio of these imports to "
                        "`import numpy` (flwr 1.42 cannot run on Debian 12's armhf Python: grpcio, protobuf too old)",
        "host_seconds": {k: round(v, 4) for k, v in host.items()}, "host_ratio": round(ratio, 3),
        "cycles": round(phases["import_numpy"]["cycles"] * ratio),
    }
    base = got["start"].peak_rss_bytes
    return {
        "tool": "ecufl calibrate --client-stack", "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu": f"qemu-arm -cpu {count.CPU}", "model": model.name, "packages": packages(),
        "phases": phases,
        "guest_peak_rss_bytes": {"start": base, "numpy": got["numpy"].peak_rss_bytes,
                                 "data": got["data"].peak_rss_bytes,
                                 "note": "qemu-arm's resident memory (guest plus qemu's own), for scale only"},
    }


# ---- agent mode: the native agent's per-round work, counted inside its own functions --------------
# Each set is one agent run under qemu-arm with the plugin's gates on these functions (entry ->
# return of each direct call); every connection is a forked child, whose counts the plugin writes
# when it exits (the parent's count never includes them).
AGENT_GATES = {
    "tls_handshake": ("SSL_accept",),
    "io": ("agent_read_frame", "agent_write_frame"),
    "serialise": ("ecufl__train_request__unpack", "ecufl__train_reply__get_packed_size", "ecufl__train_reply__pack",
                  "ecufl__train_request__free_unpacked"),
}


def run_gated_server(binary: Path, args: list[str], functions: tuple[str, ...], ready: str,
                     drives: list, *, timeout: float = 300) -> list[dict[str, int]]:
    """``binary args`` under qemu-arm -cpu cortex-a9, counting inside ``functions``; once its log
    shows ``ready``, each of ``drives`` (callables) is run in turn and the counts of the forked child
    that served it are collected (one dict of class -> instructions per drive)."""
    from .symbols import SymbolError, gates

    try:
        g = gates(binary, list(functions))
    except SymbolError as e:
        raise ClientStackError(str(e)) from None
    results = []
    with tempfile.TemporaryDirectory(prefix="ecufl-agentcount-") as tmp:
        out, log = Path(tmp) / "counts.json", Path(tmp) / "agent.log"
        plugin = ",".join([str(count.plugin_path()), *g.plugin_args(), f"out={out}"])
        with open(log, "w") as logf:
            proc = subprocess.Popen([count.qemu_path(), "-cpu", count.CPU, "-plugin", plugin, str(binary), *args],
                                    stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, env={})
        try:
            deadline = time.monotonic() + timeout
            while ready not in log.read_text():
                if proc.poll() is not None or time.monotonic() > deadline:
                    last = (log.read_text().strip().splitlines() or ["(no output)"])[-1]
                    raise ClientStackError(f"{binary.name} under qemu-arm did not start serving: {last}")
                time.sleep(0.2)
            for drive in drives:
                out.unlink(missing_ok=True)
                drive()
                while True:  # the serving child writes its counts when it exits
                    try:
                        data = json.loads(out.read_text())
                        break
                    except (OSError, ValueError):
                        if time.monotonic() > deadline:
                            raise ClientStackError(f"{binary.name}: the serving child wrote no counts") from None
                        time.sleep(0.2)
                results.append({k: int(v) for k, v in data["region_classes"].items()})
        finally:
            proc.kill()  # no exit handler: the parent's own (empty) counts are not wanted
            proc.wait()
    return results


def agent_section(counted: dict[str, list[dict[str, int]]], weight_bytes: tuple[int, int],
                  model: CostModel | None = None, binary: str = "") -> dict:
    """The table's ``agent`` section from the gated counts at two weight sizes."""
    model = model or CostModel.trm()

    def cyc(c: dict[str, int]) -> float:
        return model.project(c).cycles

    out: dict = {"what": "per round on the board agent (ecufl-agent, static, OpenSSL 3 mutual TLS, protobuf-c; TLS handshake per connection, one connection per round)",
                 "binary": binary, "weight_bytes": list(weight_bytes), "counted": True}
    tls = [cyc(c) for c in counted["tls_handshake"]]
    out["tls_handshake_cycles"] = round(sum(tls) / len(tls))
    out["tls_handshake_instructions"] = round(sum(sum(c.values()) for c in counted["tls_handshake"]) / len(tls))
    b1, b2 = weight_bytes
    for part in ("io", "serialise"):
        (c1, c2) = (cyc(c) for c in counted[part])
        (n1, n2) = (sum(c.values()) for c in counted[part])
        per = (c2 - c1) / (b2 - b1)
        out[f"{part}_cycles_per_byte"] = round(per, 4)
        out[f"{part}_fixed_cycles"] = round(c1 - per * b1)
        out[f"{part}_instructions"] = [n1, n2]
    return out


def write(table: dict, path: Path = TABLE_PATH) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(table, indent=1, sort_keys=False) + "\n")
    tmp.replace(path)
    return path


_TABLE: dict | None = None


def table(path: Path | None = None) -> dict:
    global _TABLE
    if path is not None:
        return json.loads(Path(path).read_text())
    if _TABLE is None:
        try:
            _TABLE = json.loads(TABLE_PATH.read_text())
        except (OSError, ValueError) as e:
            raise ClientStackError(f"{TABLE_PATH}: cannot read the client-stack table ({e}); "
                                   "regenerate it with `ecufl calibrate --client-stack`") from None
    return _TABLE


def supernode_cycles(t: dict) -> dict[str, float]:
    """Cycles of the supernode phases: client start (interpreter + imports), data, serialise line."""
    p = t["phases"]
    return {"start": p["interpreter_start"]["cycles"] + p["import_numpy"]["cycles"] + p["import_client"]["cycles"],
            "data": p["data"]["cycles"], "serialise_fixed": p["serialise"]["fixed_cycles"],
            "serialise_per_byte": p["serialise"]["cycles_per_byte"]}


def board_overhead(profile: Profile, mode: str, *, fresh_process: bool, loaded_data: bool,
                   weight_bytes: int, t: dict | None = None) -> dict[str, float]:
    """Projected board seconds of one round's client parts besides training, for ``mode``.

    supernode: start (a fresh ClientApp process: interpreter + numpy + flwr/ecufl imports), data
    (when this process loaded MNIST), serialise (npy decode + encode of ``weight_bytes``).
    agent: the native agent's per-round work from the table's ``agent`` section (TLS handshake
    and record I/O, protobuf-c), when present; start and data are paid once per boot, not per round.
    """
    t = t or table()
    hz = float(profile.clock_hz or 0)
    if not hz:
        return {}
    if mode == "supernode":
        c = supernode_cycles(t)
        return {"start": c["start"] / hz if fresh_process else 0.0,
                "data": c["data"] / hz if loaded_data else 0.0,
                "serialise": (c["serialise_fixed"] + c["serialise_per_byte"] * weight_bytes) / hz}
    if mode == "agent":
        a = t.get("agent")
        if not a:
            return {}
        return {"start": 0.0, "data": 0.0,
                "serialise": (a["serialise_fixed_cycles"] + a["serialise_cycles_per_byte"] * weight_bytes) / hz,
                "io": (a["tls_handshake_cycles"] + a["io_fixed_cycles"] + a["io_cycles_per_byte"] * weight_bytes) / hz}
    raise ValueError(f"unknown board mode {mode!r}; modes: supernode, agent")


def compare(new: dict, old: dict, tolerance: float = TOLERANCE) -> list[str]:
    """Counted phases whose instructions moved by more than ``tolerance`` (one line each)."""
    bad = []
    for name, p in old["phases"].items():
        if not p.get("counted") or name not in new["phases"] or "instructions" not in p:
            continue
        a, b = p["instructions"], new["phases"][name]["instructions"]
        if abs(b - a) > tolerance * a:
            bad.append(f"{name}: {b} instructions, table {a} ({(b - a) / a:+.1%})")
    return bad

