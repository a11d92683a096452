"""ecufl-supervise (fleet/deploy/supervise.sh) applies a unit's MemoryMax and CPUQuota (root: cgroups).

The supervisor runs here directly (no namespace needed): a service that goes over MemoryMax is
killed by the kernel inside its own cgroup and the log says so in one line; a service's cgroups
carry the unit's limits while it runs and are gone once it stops.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_deploy_netns import cgroup_limits

pytestmark = pytest.mark.root
SUPERVISE = Path(__file__).resolve().parent.parent / "fleet" / "deploy" / "supervise.sh"


def unit(path: Path, exec_start: str, memory_max: str = "64M", cpu_quota: str = "50%") -> Path:
    path.write_text(f"[Service]\nExecStart={exec_start}\nRestart=no\nMemoryMax={memory_max}\nCPUQuota={cpu_quota}\n")
    return path


@pytest.fixture(autouse=True)
def needs_root():
    if os.geteuid() != 0:
        pytest.fail("cgroups need root; CI runs as root")


def test_service_over_memory_max_is_killed_with_one_line(tmp_path):
    hog = f"{sys.executable} -c \"import time; b = b'x' * (160 << 20); time.sleep(60)\""
    u = unit(tmp_path / "hog.service", hog)
    r = subprocess.run(["sh", str(SUPERVISE), str(u), str(tmp_path / "run")], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    log = (tmp_path / "run" / "hog.log").read_text()
    assert "limits MemoryMax=64M CPUQuota=50%: " in log, log
    assert "hog exited with status 137: killed by the kernel for going over MemoryMax=64M" in log, log
    assert not (tmp_path / "run" / "hog.cgroup").exists()


def test_limits_hold_while_running_and_cgroups_go_with_the_service(tmp_path):
    u = unit(tmp_path / "idle.service", "/bin/sleep 60", memory_max="48M", cpu_quota="25%")
    run = tmp_path / "run"
    sup = subprocess.Popen(["sh", str(SUPERVISE), str(u), str(run)], start_new_session=True)
    try:
        for _ in range(100):
            if (run / "idle.child").exists() and (run / "idle.cgroup").exists():
                break
            time.sleep(0.05)
        time.sleep(0.2)  # the child joins its cgroups before it execs sleep
        child = int((run / "idle.child").read_text())
        assert cgroup_limits(child) == {"memory": 48 * 2**20, "cpu": 25000}
        dirs = (run / "idle.cgroup").read_text().split()
        assert dirs and all(Path(d).is_dir() for d in dirs)
    finally:
        os.killpg(sup.pid, signal.SIGTERM)
        sup.wait(timeout=10)
    assert not any(Path(d).exists() for d in dirs)
    assert "idle stopped" in (run / "idle.log").read_text()


def test_bad_limit_values_are_one_line(tmp_path):
    for key, value in (("memory_max", "lots"), ("cpu_quota", "half")):
        u = unit(tmp_path / "x.service", "/bin/true", **{key: value})
        r = subprocess.run(["sh", str(SUPERVISE), str(u), str(tmp_path / "run")], capture_output=True, text=True)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and value in r.stderr, r.stderr
