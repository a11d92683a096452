"""`ecufl calibrate`: the fit recovers a known cycle table; the whole procedure runs through
qemu-arm here and through a real Debian sshd on 127.0.0.1 (the "board" runs the ARM loops via
qemu-arm, as an x86 host cannot run them natively)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time

import pytest

from ecufl.kernels.arm import calibrate as cal
from ecufl.kernels.arm import microbench
from ecufl.kernels.arm.costmodel import TABLE, CostModel

from conftest import ecufl_cmd

pytestmark = pytest.mark.arm
SMALL = "2000,20000"
SSH_LOOPS = ["alu", "branch", "neon_fmla_q", "vfp_div"]


@pytest.fixture(scope="module")
def per_iteration():
    return cal.counts_per_iteration(microbench.build(), cal.CALIBRATION_LOOPS)


def test_fit_recovers_a_known_table_exactly(per_iteration):
    # a synthetic board whose cycles follow a table unlike the TRM's: the fit must find it
    truth = {k: TABLE[k][0] * (1.5 if k.startswith("neon") else 0.75) for k in TABLE}
    clock = 1e9
    timings = []
    for name, row in per_iteration.items():
        per_iter = sum(n * truth[c] for c, n in row.items())
        n1, n2 = 1000, 5000
        timings.append(cal.LoopTiming(name, (n1, n2), (0.01 + n1 * per_iter / clock, 0.01 + n2 * per_iter / clock), row))
    fitted, residual = cal.fit(timings, clock)
    assert residual < 1e-9
    assert set(fitted) == {c for row in per_iteration.values() for c in row}
    for c, v in fitted.items():
        assert v == pytest.approx(truth[c], rel=1e-6), c


def test_every_calibration_loop_exercises_its_own_class(per_iteration):
    # 8 of the 10 instructions per iteration belong to the class the loop is named after
    for name, row in per_iteration.items():
        assert max(row.values()) >= 8, (name, row)
        assert sum(row.values()) == 10


def test_calibrate_through_qemu_writes_a_file_the_model_uses(tmp_path):
    out = tmp_path / "cal.json"
    proc = subprocess.run([*ecufl_cmd(), "calibrate", "--qemu", "--out", str(out), "--repeats", "1",
                           "--iterations", SMALL, "--json"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert data["clock_source"] == "profile imx6" and data["clock_hz"] == 1e9
    assert {t["name"] for t in data["loops"]} == set(cal.CALIBRATION_LOOPS)
    assert all(v >= 0 for v in data["cycles"].values())
    model = CostModel.from_calibration(out)
    assert model.cycles["vfp.div"] == data["cycles"]["vfp.div"]


@pytest.mark.parametrize("args, message", [
    (["--board", "nohost"], "expected user@host"),
    (["--board", "u@h:x"], "port must be a number"),
    (["--qemu", "--out", "x.json", "--profile", "imx7"], "unknown device profile 'imx7'"),
    (["--qemu"], "give --out"),
    (["--qemu", "--board", "u@h"], "exactly one of"),
    (["--qemu", "--out", "x.json", "--iterations", "5,1"], "--iterations"),
    (["--qemu", "--out", "x.json", "--loops", "alu,nope"], "--loops: unknown loop nope"),
])
def test_bad_flags_are_one_line_exit_2(args, message, tmp_path):
    proc = subprocess.run([*ecufl_cmd(), "calibrate", *args], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2 and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_unreachable_board_is_one_line_exit_1(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.run([*ecufl_cmd(), "calibrate", "--board", f"root@127.0.0.1:{port}", "--out",
                           str(tmp_path / "c.json")], capture_output=True, text=True)
    assert proc.returncode == 1 and f"board root@127.0.0.1:{port}" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "c.json").exists()


# --- a real sshd on the loopback address ---------------------------------------------------------
@pytest.fixture
def sshd(tmp_path):
    if os.geteuid() != 0:
        pytest.fail("this test needs root (it runs Debian's sshd); CI runs as root")
    d = tmp_path / "sshd"
    d.mkdir()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "host")], check=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "client")], check=True)
    shutil.copy(d / "client.pub", d / "authorized_keys")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host'}\nPidFile {d / 'pid'}\n"
        f"AuthorizedKeysFile {d / 'authorized_keys'}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\nSubsystem sftp internal-sftp\n"
        f"SetEnv PATH={os.path.dirname(shutil.which('qemu-arm'))}:/usr/bin:/bin\n")
    os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege-separation directory
    proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(d / "sshd_config")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"sshd did not start: {proc.stderr.read().decode()[-500:]}")
            time.sleep(0.05)
    host_key = (d / "host.pub").read_text().split()
    (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
    yield {"port": port, "dir": d}
    proc.terminate()
    proc.wait(timeout=10)


@pytest.mark.root
def test_calibrate_over_ssh_against_a_real_sshd(sshd, tmp_path):
    out = tmp_path / "board.json"
    d = sshd["dir"]
    proc = subprocess.run([*ecufl_cmd(), "calibrate", "--board", f"root@127.0.0.1:{sshd['port']}",
                           "--known-hosts", str(d / "known_hosts"), "--identity", str(d / "client"),
                           "--remote-wrapper", "qemu-arm -cpu cortex-a9", "--out", str(out),
                           "--repeats", "1", "--iterations", SMALL, "--loops", ",".join(SSH_LOOPS)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert sorted(data["cycles"]) == ["int.alu", "int.branch", "neon.fmla.q", "vfp.div"]
    assert data["board"] == f"root@127.0.0.1:{sshd['port']}"
    assert [t["name"] for t in data["loops"]] == SSH_LOOPS
    assert data["clock_hz"] > 0  # this machine's cpufreq if it has one, else the profile's
    assert not os.path.exists(cal.SSHBoard.REMOTE)  # removed from the board (the same host here)


@pytest.mark.root
def test_unknown_host_key_is_refused(sshd, tmp_path):
    d = sshd["dir"]
    (tmp_path / "empty_known_hosts").write_text("")
    proc = subprocess.run([*ecufl_cmd(), "calibrate", "--board", f"root@127.0.0.1:{sshd['port']}",
                           "--known-hosts", str(tmp_path / "empty_known_hosts"), "--identity", str(d / "client"),
                           "--out", str(tmp_path / "c.json")], capture_output=True, text=True)
    assert proc.returncode == 1 and "board root@127.0.0.1" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
