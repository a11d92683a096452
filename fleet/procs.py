"""Starting and stopping the Flower processes of a local fleet.

Every process ecufl starts gets its own process group (``start_new_session``), because Flower's
processes have children (a SuperLink or SuperNode starts a ``flower-superexec``, which starts a
``flwr-serverapp`` / ``flwr-clientapp`` per run or message) and those can outlive their parent.
Stopping a process therefore means: SIGTERM to the group and to every descendant found in /proc,
a grace period, then SIGKILL to whatever is left.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def flower_env(flwr_home: Path) -> dict[str, str]:
    """Environment for every Flower process ecufl starts: our FLWR_HOME, no telemetry, no update
    check, the venv's scripts first on PATH (SuperLink/SuperNode start ``flower-superexec`` by name)."""
    env = dict(os.environ)
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    env["FLWR_HOME"] = str(flwr_home)
    env.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    env["FLWR_DISABLE_UPDATE_CHECK"] = "1"
    env.setdefault("PYTHONUNBUFFERED", "1")
    # relative run-config paths (results-dir = "results") are taken from where the user typed the
    # command that started the fleet, not from the SuperLink's working directory (ecufl.runconfig)
    env.setdefault("ECUFL_WORKDIR", os.getcwd())
    # SuperExec polls for work (a ServerApp / ClientApp to start) every 1 s by default; the only
    # tunable one of Flower's polling sleeps, so shorten it.
    env.setdefault("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", "0.2")
    # One BLAS thread per client process: N ECUs share 2 cores, as N boards would not share one.
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(k, "1")
    return env


def tool(name: str) -> str:
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else name


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """In the child: receive SIGTERM when the process that started us dies (Linux prctl)."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def start(cmd: list[str], env: dict[str, str], log: Path, cwd: Path, *, tied: bool = False) -> int:
    """Start ``cmd`` in its own process group; ``tied``: it is stopped when this process dies, even
    by SIGKILL (a simulation SuperLink lives only as long as the ``ecufl sim`` that started it)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                preexec_fn=_die_with_parent if tied and sys.platform == "linux" else None)
    return proc.pid


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is not alive
    except (OSError, IndexError):
        return False


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _signal(pids: list[int], pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
    for p in pids:
        try:
            os.kill(p, sig)
        except (ProcessLookupError, PermissionError):
            pass


def stop(pid: int, grace: float = 10.0) -> None:
    """Stop ``pid`` (a group leader we started), its group and all its descendants."""
    stop_all([pid], grace)


def stop_all(leaders: list[int], grace: float = 10.0) -> None:
    """SIGTERM every group at once, one shared grace period, then SIGKILL what is left."""
    families = {pid: [pid] + descendants(pid) for pid in leaders}
    for pid, family in families.items():
        _signal(family, pid, signal.SIGTERM)
    end = time.monotonic() + grace
    while time.monotonic() < end and any(alive(p) for f in families.values() for p in f):
        time.sleep(0.2)
    for pid, family in families.items():
        family += [p for p in descendants(pid) if p not in family]
        if any(alive(p) for p in family):
            _signal(family, pid, signal.SIGKILL)
        for p in family:  # reap the ones that are our own children
            try:
                os.waitpid(p, os.WNOHANG)
            except (ChildProcessError, OSError):
                pass


def kill_now(pid: int) -> None:
    """SIGKILL a process group at once (fault tests: a SuperNode dying mid-round)."""
    _signal([pid] + descendants(pid), pid, signal.SIGKILL)
