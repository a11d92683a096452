"""Boards as network namespaces on this machine, each with Debian's real sshd (tests marked `root`).

Layout (all names carry a per-run prefix, so parallel runs do not meet):

    <prefix>-gw   the "vehicle gateway": bridge br0 at 10.213.7.1/24. ecufl deploy and the SuperLink
                  run here (`Lab.gw(...)`), so nothing is addressed in this machine's own namespace.
    <prefix>-bN   board N: eth0 at 10.213.7.(10+N)/24, veth to the gateway's bridge, lo; its own sshd
                  (own host key, own config, root login by key only, an authorized key made here).

The addresses exist only inside namespaces made here; the test processes talk to nothing else but
loopback. `ip netns exec` gives each sshd a private mount namespace, so a board's "small disk" (a
tmpfs) is mounted only for that board's processes and disappears with them.

Teardown kills every process left in the namespaces (services the tests started over SSH included),
deletes the namespaces and checks that none is left; it runs from a fixture finalizer, so it also
runs when a test fails.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

SUBNET = "10.213.7"
SSHD = "/usr/sbin/sshd"


def sh(*cmd: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(list(cmd), capture_output=True, text=True, **kw)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip() or r.returncode}")
    return r


def keygen(path: Path, kind: str = "ed25519") -> Path:
    sh("ssh-keygen", "-q", "-t", kind, "-N", "", "-C", path.name, "-f", str(path))
    return path


@dataclass
class Board:
    name: str
    ns: str
    addr: str
    dir: Path
    disk_mb: int | None = None  # a tmpfs of this size at dir/disk (install root goes there)
    sshd: subprocess.Popen | None = None
    host_key: Path | None = None

    @property
    def disk(self) -> Path:
        return self.dir / "disk"


@dataclass
class Lab:
    prefix: str
    root: Path
    n: int
    disk_mb: dict[int, int] = field(default_factory=dict)
    boards: list[Board] = field(default_factory=list)
    client_key: Path | None = None

    @property
    def gw_ns(self) -> str:
        return f"{self.prefix}-gw"

    @property
    def gw_addr(self) -> str:
        return f"{SUBNET}.1"

    # --- lifecycle ------------------------------------------------------------------------------
    def up(self) -> "Lab":
        if not shutil.which("ip") or not Path(SSHD).exists():
            raise RuntimeError("needs iproute2 and openssh-server (make setup installs them)")
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation dir
        self.root.mkdir(parents=True, exist_ok=True)
        self.client_key = keygen(self.root / "id_deploy")
        gw = self.gw_ns
        sh("ip", "netns", "add", gw)
        sh("ip", "-n", gw, "link", "set", "lo", "up")
        sh("ip", "-n", gw, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", gw, "addr", "add", f"{self.gw_addr}/24", "dev", "br0")
        sh("ip", "-n", gw, "link", "set", "br0", "up")
        for i in range(1, self.n + 1):
            b = Board(f"b{i}", f"{self.prefix}-b{i}", f"{SUBNET}.{10 + i}", self.root / f"b{i}", self.disk_mb.get(i))
            b.dir.mkdir()
            sh("ip", "netns", "add", b.ns)
            self.boards.append(b)
            sh("ip", "-n", gw, "link", "add", f"vb{i}", "type", "veth", "peer", "name", "eth0", "netns", b.ns)
            sh("ip", "-n", gw, "link", "set", f"vb{i}", "master", "br0", "up")
            sh("ip", "-n", b.ns, "link", "set", "lo", "up")
            sh("ip", "-n", b.ns, "addr", "add", f"{b.addr}/24", "dev", "eth0")
            sh("ip", "-n", b.ns, "link", "set", "eth0", "up")
            self.start_sshd(b)
        for b in self.boards:
            self.wait_ssh(b)
        return self

    def start_sshd(self, b: Board) -> None:
        if b.host_key is None:
            b.host_key = keygen(b.dir / "ssh_host_ed25519_key")
            (b.dir / "authorized_keys").write_text(Path(str(self.client_key) + ".pub").read_text())
            (b.dir / "sshd_config").write_text("\n".join([
                f"ListenAddress {b.addr}", "Port 22", f"HostKey {b.host_key}",
                f"AuthorizedKeysFile {b.dir}/authorized_keys", f"PidFile {b.dir}/sshd.pid",
                "PermitRootLogin prohibit-password", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
                "UsePAM no", "StrictModes no", "Subsystem sftp internal-sftp", "MaxStartups 50:30:100",
                "LogLevel ERROR", ""]))
            b.disk.mkdir(exist_ok=True)
        mount = f"mount -t tmpfs -o size={b.disk_mb}m ecufl-test-disk {b.disk} && " if b.disk_mb else ""
        mount += cgroup_mounts()
        b.sshd = subprocess.Popen(
            ["ip", "netns", "exec", b.ns, "sh", "-c", f"{mount}exec {SSHD} -D -e -f {b.dir}/sshd_config"],
            stdout=open(b.dir / "sshd.log", "ab"), stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ssh(self, b: Board, timeout: float = 15) -> None:
        t0 = time.time()
        while time.time() - t0 < timeout:
            r = sh("ip", "netns", "exec", self.gw_ns, "timeout", "1", "bash", "-c", f"exec 3<>/dev/tcp/{b.addr}/22",
                   check=False)
            if r.returncode == 0:
                return
            if b.sshd and b.sshd.poll() is not None:
                raise RuntimeError(f"sshd of {b.name} exited: {(b.dir / 'sshd.log').read_text()[-500:]}")
            time.sleep(0.2)
        raise RuntimeError(f"sshd of {b.name} not reachable at {b.addr}:22")

    def pids(self, ns: str) -> list[int]:
        r = sh("ip", "netns", "pids", ns, check=False)
        return [int(p) for p in r.stdout.split()]

    def cmdlines(self, b: Board) -> list[str]:
        """Command lines of the processes in a board's namespace (ps would list the whole machine)."""
        out = []
        for p in self.pids(b.ns):
            try:
                out.append(Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip())
            except OSError:
                pass
        return out

    def kill_ns(self, ns: str) -> None:
        for _ in range(20):
            pids = self.pids(ns)
            if not pids:
                return
            for p in pids:
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)

    def reboot(self, b: Board) -> None:
        """Power-cycle a board: every process in it dies at once; then sshd comes back (disk kept,
        except a tmpfs disk, which a reboot empties like RAM)."""
        self.kill_ns(b.ns)
        if b.sshd:
            b.sshd.wait(timeout=5)
        self.start_sshd(b)
        self.wait_ssh(b)

    def down(self) -> list[str]:
        """Kill everything in our namespaces, delete them; return names still present (should be [])."""
        for b in self.boards:
            self.kill_ns(b.ns)
            if b.sshd:
                try:
                    b.sshd.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
        self.kill_ns(self.gw_ns)
        # cgroups ecufl-supervise made for services killed above (it removes them itself when stopped)
        for f in self.root.rglob("*.cgroup"):
            for d in f.read_text().split():
                try:
                    Path(d).rmdir()
                except OSError:
                    pass
        for ns in [b.ns for b in self.boards] + [self.gw_ns]:
            sh("ip", "netns", "del", ns, check=False)
        left = sh("ip", "netns", "list", check=False).stdout
        return [ln.split()[0] for ln in left.splitlines() if ln.startswith(self.prefix)]

    # --- running things in the gateway namespace --------------------------------------------------
    def gw(self, *cmd: str, env: dict | None = None, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", self.gw_ns, *cmd], capture_output=True, text=True,
                              env=env, timeout=timeout, **kw)

    def gw_popen(self, *cmd: str, env: dict | None = None, **kw) -> subprocess.Popen:
        return subprocess.Popen(["ip", "netns", "exec", self.gw_ns, *cmd], env=env, start_new_session=True, **kw)

    def on_board(self, b: Board, cmd: str) -> subprocess.CompletedProcess:
        """Run a shell command directly in a board's namespace (to inspect or tamper, not via SSH)."""
        return sh("ip", "netns", "exec", b.ns, "sh", "-c", cmd, check=False)


def cgroup_mounts() -> str:
    """Shell that mounts this machine's memory and cpu cgroup hierarchies in a board, as a board's
    init does: `ip netns exec` gives each board its own /sys, where /sys/fs/cgroup is empty, and
    ecufl-supervise applies MemoryMax/CPUQuota through cgroups."""
    cmds = []
    for line in Path("/proc/mounts").read_text().splitlines():
        _, mnt, fs, opts = line.split()[:4]
        if fs == "cgroup2" and mnt == "/sys/fs/cgroup":
            cmds.append(f"mount -t cgroup2 cgroup2 {mnt}")
        elif fs == "cgroup":
            ctrls = [o for o in opts.split(",") if o in ("memory", "cpu", "cpuacct")]
            if "memory" in ctrls or "cpu" in ctrls:
                cmds.append(f"mkdir -p {mnt} && mount -t cgroup -o {','.join(ctrls)} cgroup {mnt}")
    if cmds and not cmds[0].startswith("mount -t cgroup2"):  # v1: the hierarchies sit in a tmpfs
        cmds.insert(0, "mount -t tmpfs cgroup-root /sys/fs/cgroup")
    return "".join(c + " && " for c in cmds)


def new_prefix() -> str:
    return f"ecufl{os.getpid() % 100000}"


_WHEEL: dict[str, Path] = {}


def ecufl_wheel() -> Path:
    """ecufl's wheel built from this tree, once per pytest process (the deploy tests share it).
    ECUFL_DEPLOY_WHEEL=path reuses a wheel built earlier (local iteration only)."""
    given = os.environ.get("ECUFL_DEPLOY_WHEEL")
    if given:
        return Path(given)
    if "w" not in _WHEEL:
        import tempfile

        from ecufl.fleet.deploy.bundle import build_wheel

        _WHEEL["w"] = build_wheel(Path(tempfile.mkdtemp(prefix="ecufl-wheel-")))
    return _WHEEL["w"]
