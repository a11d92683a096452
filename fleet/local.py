"""A local fleet: one ``flower-superlink`` and N ``flower-supernode`` processes on loopback.

Everything about a fleet lives in one state folder (default ``.fleet/``, or ``--state`` /
``ECUFL_FLEET_DIR``):

    state.json          what runs: pids (process-group leaders), ports, each node's config
    flwr-home/          FLWR_HOME of every process and of the ``flwr`` CLI (config.toml)
    app/                the Flower App folder ``flwr run`` submits
    logs/               superlink.log, node-0.log, ...

Each SuperNode gets its own port and node config: ``partition-id``, ``num-partitions``,
``kernel`` (``name`` or ``name:dtype``) and ``profile``. The SuperLink runs with
``--disable-runtime-dependency-installation`` (no ``uv sync`` per run: ecufl is installed here)
and keeps its state in memory (no ``--database``): with SQLite, 16 nodes on 2 cores made it answer
requests with HTTP 500 ``database is locked``; a local fleet's SuperLink does not outlive its run
anyway (a restarted SuperLink does not resume a run).
The Fleet API of flwr 1.42 is HTTP (FastAPI/uvicorn) on the SuperLink's one port; it is insecure
(plain text) because it never leaves 127.0.0.1.

A node is warm (the default) or cold. Cold is Flower's plain path: the SuperNode starts its own
``flower-superexec``, which starts a ``flwr-clientapp`` process per message. Warm: the SuperNode
is Flower's SuperNode with its fixed waits made short (``ecufl.fleet.warm_supernode``), run
with ``--isolation process``, and ecufl's launcher (``ecufl.fleet.warm``, its own process
group, ``Node.exec_pid``, log ``logs/node-N.warm.log``) takes the SuperExec's place and forks
each ClientApp from a parent that holds the imports, the data and the kernel.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from ecufl.client.runner import TRAIN_LOCK_ENV
from ecufl.fleet import flwr_app, procs

CONNECTION = "ecufl-fleet"
WARM_POLL_ENV = "ECUFL_WARM_POLL"  # seconds between a warm launcher's AcquireTask polls
NODE_POLL_ENV = "ECUFL_NODE_POLL"  # seconds between a warm SuperNode's polls of the SuperLink while busy
WARM_TIMING = "warm ClientApp timing "  # prefix of a warm ClientApp's one line of times in its node's log


class FleetError(RuntimeError):
    pass


def state_dir(path: str | os.PathLike | None = None) -> Path:
    return Path(path or os.environ.get("ECUFL_FLEET_DIR") or ".fleet").resolve()


@dataclass
class Node:
    partition: int
    kernel: str
    profile: str
    port: int
    pid: int
    log: str
    warm: bool = False
    exec_pid: int = 0  # warm: the launcher (ecufl.fleet.warm) standing in for flower-superexec
    data_dir: str = ""  # ECUFL_DATA of this node's processes ("" = the fleet's own environment)

    @property
    def warm_log(self) -> str:
        return self.log.removesuffix(".log") + ".warm.log"


@dataclass
class FleetState:
    folder: str
    port: int
    superlink_pid: int
    nodes: list[Node] = field(default_factory=list)
    started_at: float = 0.0
    train_lock: str = ""  # one trainer at a time on this host (ECUFL_TRAIN_LOCK); "" = all at once

    @property
    def path(self) -> Path:
        return Path(self.folder)

    @property
    def flwr_home(self) -> Path:
        return self.path / "flwr-home"

    @property
    def app(self) -> Path:
        return self.path / "app"

    def env(self) -> dict[str, str]:
        env = procs.flower_env(self.flwr_home)
        if self.train_lock:
            env[TRAIN_LOCK_ENV] = self.train_lock
        return env

    def save(self) -> None:
        (self.path / "state.json").write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, folder: Path) -> "FleetState | None":
        try:
            d = json.loads((folder / "state.json").read_text())
        except (OSError, json.JSONDecodeError):
            return None
        d["nodes"] = [Node(**n) for n in d.get("nodes", [])]
        return cls(**d)


def healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1.0).is_success
    except httpx.HTTPError:
        return False


def node_config(partition: int, nodes: int, kernel: str, profile: str) -> str:
    return f'partition-id={partition} num-partitions={nodes} kernel="{kernel}" profile="{profile}"'


def start_node(state: FleetState, partition: int, nodes: int, kernel: str, profile: str, *,
               warm: bool = False, data_dir: str = "") -> Node:
    port = procs.free_port()
    log = state.path / "logs" / f"node-{partition}.log"
    env = state.env()
    if data_dir:
        env["ECUFL_DATA"] = str(Path(data_dir).resolve())
    args = ["--insecure", "--superlink", f"127.0.0.1:{state.port}", "--port", str(port),
            "--node-config", node_config(partition, nodes, kernel, profile)]
    if warm:
        # the fleet's launchers together poll their SuperNodes about 40 times a second (each poll
        # costs the SuperNode an HTTP request): 0.05 s apart at 2 nodes, 0.4 s at 16; the SuperNodes,
        # while busy, poll the one SuperLink about 20 times a second together: 0.2 s apart at 4
        # nodes, 0.8 s at 16 (ecufl.fleet.warm_supernode; at 16 nodes on 2 cores the SuperLink is
        # the bottleneck of a round, and every request to it waits behind the others)
        env.setdefault(WARM_POLL_ENV, f"{min(0.5, max(0.05, nodes / 40)):.3f}")
        env.setdefault(NODE_POLL_ENV, f"{min(1.0, max(0.05, nodes / 20)):.3f}")
        cmd = [sys.executable, "-m", "ecufl.fleet.warm_supernode", *args, "--isolation", "process"]
    else:
        cmd = [procs.tool("flower-supernode"), *args]
    pid = procs.start(cmd, env, log, state.path)
    node = Node(partition, kernel, profile, port, pid, str(log), warm=warm, data_dir=data_dir)
    if warm:
        node.exec_pid = procs.start(
            [sys.executable, "-m", "ecufl.fleet.warm", "--runtime-api-address", f"127.0.0.1:{port}",
             "--supernode-pid", str(pid), "--kernel", kernel], env, Path(node.warm_log), state.path)
    return node


def up(folder: Path, nodes: int, kernels: list[str], profiles: list[str] | None = None,
       timeout: float = 120.0, one_trainer: bool = False, warm: bool = True,
       cold_nodes: set[int] | frozenset[int] = frozenset(), data_dirs: list[str] | None = None) -> FleetState:
    """Start a SuperLink and ``nodes`` SuperNodes; kernels/profiles/data dirs are cycled over the nodes.
    ``one_trainer``: the clients take turns to train (a lock file in the fleet folder), so each
    timing is that of a core of its own, as on separate ECUs, not of cores shared by the fleet.
    ``warm``: nodes keep a warm ClientApp runtime (``ecufl.fleet.warm``) except the partitions in
    ``cold_nodes``, which take Flower's plain path (a new ``flwr-clientapp`` process per message)."""
    current = FleetState.load(folder)
    if current and procs.alive(current.superlink_pid):
        raise FleetError(f"a fleet is already up in {folder} ({len(current.nodes)} nodes); `ecufl fleet down` first")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "superlink.db").unlink(missing_ok=True)  # left by an older ecufl (the state is in memory now)
    port = procs.free_port()
    state = FleetState(str(folder), port, 0, started_at=time.time(),
                       train_lock=str(folder / "train.lock") if one_trainer else "")
    flwr_app.write_connection(state.flwr_home, CONNECTION, port)
    state.superlink_pid = procs.start(
        [procs.tool("flower-superlink"), "--insecure", "--host", "127.0.0.1", "--port", str(port),
         "--disable-runtime-dependency-installation"],
        state.env(), folder / "logs" / "superlink.log", folder)
    state.save()
    end = time.monotonic() + timeout
    while not healthy(port):
        if not procs.alive(state.superlink_pid):
            raise FleetError(f"flower-superlink exited at start; see {folder / 'logs' / 'superlink.log'}")
        if time.monotonic() > end:
            down(folder)
            raise FleetError(f"flower-superlink did not answer on 127.0.0.1:{port} within {timeout:.0f} s")
        time.sleep(0.3)
    profiles = profiles or ["host"]
    for i in range(nodes):
        state.nodes.append(start_node(state, i, nodes, kernels[i % len(kernels)], profiles[i % len(profiles)],
                                      warm=warm and i not in cold_nodes,
                                      data_dir=data_dirs[i % len(data_dirs)] if data_dirs else ""))
        state.save()
    return state


def down(folder: Path) -> list[str]:
    """Stop every process of the fleet (nodes first, then the SuperLink); returns what was stopped."""
    state = FleetState.load(folder)
    if state is None:
        return []
    stopped = []
    for node in state.nodes:
        if procs.alive(node.pid) or procs.descendants(node.pid):
            stopped.append(f"node {node.partition} (pid {node.pid})")
    # nodes first, all at once; a warm node's launcher with its parent and ClientApps too
    procs.stop_all([n.pid for n in state.nodes] + [n.exec_pid for n in state.nodes if n.exec_pid])
    if procs.alive(state.superlink_pid) or procs.descendants(state.superlink_pid):
        stopped.append(f"superlink (pid {state.superlink_pid})")
    procs.stop(state.superlink_pid)
    (folder / "state.json").unlink(missing_ok=True)
    return stopped


def status(folder: Path) -> dict:
    state = FleetState.load(folder)
    if state is None:
        return {"up": False, "folder": str(folder)}
    return {
        "up": procs.alive(state.superlink_pid), "folder": str(folder), "port": state.port,
        "superlink": {"pid": state.superlink_pid, "alive": procs.alive(state.superlink_pid), "healthy": healthy(state.port)},
        "nodes": [asdict(n) | {"alive": procs.alive(n.pid)} | (_warm_status(n) if n.warm else {}) for n in state.nodes],
    }


def _warm_status(node: Node) -> dict:
    """A warm node's launcher, its parent, and the log lines that say the parent died or rebuilt."""
    from_log = []
    try:
        from_log = Path(node.warm_log).read_text(errors="replace").splitlines()
    except OSError:
        pass
    parents = [p for p in procs.descendants(node.exec_pid)  # the parent, not the ClientApps forked from it
               if _ppid(p) == node.exec_pid and "ecufl.fleet.warm_zygote" in _cmdline(p)] if node.exec_pid else []
    return {"launcher_alive": bool(node.exec_pid) and procs.alive(node.exec_pid),
            "parent_pids": [p for p in parents if procs.alive(p)],
            "parent_deaths": [line for line in from_log if " warm parent pid " in line and " died (" in line],
            "rebuilt": [line for line in from_log if ": built " in line]}


def _ppid(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def require(folder: Path) -> FleetState:
    state = FleetState.load(folder)
    if state is None or not procs.alive(state.superlink_pid):
        raise FleetError(f"no fleet is up in {folder}; start one with `ecufl fleet up`")
    return state
