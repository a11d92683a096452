"""Scenario files: the shipped ones validate; bad ones stop with one line naming file, key and expectation."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT, ecufl_cmd
from ecufl.runconfig import RunConfig
from ecufl.scenarios.schema import ScenarioError, load

GOOD = """\
nodes = 4
rounds = 3
kernels = ["numpy", "c|numpy:float32", "eigen|numpy:float32", "tflite|numpy"]
[split]
kind = "dirichlet"
alpha = 0.5
"""


def write(tmp_path: Path, text: str, name: str = "s.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize("name", ["quickstart", "kernel-shootout", "noniid", "sim-100"])
def test_shipped_scenarios_validate(name):
    sc = load(ROOT / "scenarios" / f"{name}.toml")
    assert sc.name == name
    flat = sc.run_config()
    assert flat["nodes"] == sc.nodes and flat["layers"].startswith("784,")
    assert RunConfig.from_flat(flat) == sc.config()  # the flat keys carry the whole run


def test_quickstart_is_four_mixed_ecus_three_rounds():
    sc = load(ROOT / "scenarios" / "quickstart.toml")
    assert (sc.nodes, sc.rounds, sc.engine) == (4, 3, "deployment")
    assert len(set(sc.node_kernels())) >= 2  # mixed, whatever is built here


def test_kernel_alternatives_reach_the_run_config_as_written(tmp_path):
    """"a|b" is chosen on each node (client/task.choose), not by the machine that validates."""
    sc = load(write(tmp_path, GOOD))
    flat = sc.run_config()
    assert flat["kernel"] == ",".join(sc.kernels) and "|" in flat["kernel"]
    assert flat["split-alpha"] == 0.5 and flat["profile"] == "host"


@pytest.mark.parametrize("text,key,expect", [
    ("nodes = 4\nrounds = 3\nlearning_rate = 0.1\n", "learning_rate", "unknown key"),
    ('nodes = "4"\nrounds = 3\n', "nodes", "valid integer"),
    ("nodes = 4\nrounds = 3\nlr = -1.0\n", "lr", "greater than 0"),
    ("nodes = 4\nrounds = 0\n", "rounds", "greater than or equal to 1"),
    ("nodes = 4\nrounds = 3\nfraction = 1.5\n", "fraction", "less than or equal to 1"),
    ("nodes = 4\nrounds = 3\nlayers = [100, 10]\n", "layers", "start with 784"),
    ("nodes = 4\nrounds = 3\nengine = \"cloud\"\n", "engine", "'deployment' or 'simulation'"),
    ("nodes = 4\nrounds = 3\nkernel = \"cuda\"\n", "kernel", "unknown kernel 'cuda'"),
    ("nodes = 4\nrounds = 3\nkernels = [\"numpy\"]\n", "scenario", "kernels has 1 entries for nodes = 4"),
    ("nodes = 4\nrounds = 3\n[split]\nkind = \"dirichlet\"\n", "split", "needs alpha > 0"),
    ("nodes = 4\nrounds = 3\n[split]\nkind = \"iid\"\nalpha = 0.1\n", "split", "only for kind = 'dirichlet'"),
    ("nodes = 4\nrounds = 3\n[split]\nkind = \"dirichlet\"\nalpha = -2.0\n", "split.alpha", "greater than 0"),
    ("nodes = 100\nrounds = 3\n", "scenario", "use engine = 'simulation'"),
    ("nodes = 4\nrounds = 3\nprofile = \"imx6-792\"\n", "scenario", "profile 'imx6-792' has 512 MB, but a supernode board"),
    ("nodes = 4\nrounds = 3\n[test_hooks]\ncorrupt = {\"1\" = \"nan\"}\n", "test_hooks", "unknown key"),
    ("rounds = 3\n", "nodes", "required key is missing"),
])
def test_bad_scenario_names_file_key_and_expectation(tmp_path, text, key, expect):
    path = write(tmp_path, text)
    with pytest.raises(ScenarioError) as e:
        load(path)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"{path}: {key}:"), msg
    assert expect in msg, msg


def test_not_toml_and_missing_file(tmp_path):
    with pytest.raises(ScenarioError, match=r"s\.toml: not valid TOML"):
        load(write(tmp_path, "nodes = = 4"))
    with pytest.raises(ScenarioError, match="no such scenario file"):
        load(tmp_path / "missing.toml")


def test_cli_bad_scenario_exits_2_and_starts_nothing(tmp_path):
    path = write(tmp_path, "nodes = 4\nrounds = 3\nbatch_size = 0\n")
    state = tmp_path / "fleet-state"
    proc = subprocess.run([*ecufl_cmd(), "fleet", "run", str(path), "--state", str(state), "--results",
                           str(tmp_path / "results")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{path}: batch_size:" in lines[0] and "greater than or equal to 1" in lines[0]
    assert not state.exists() and not (tmp_path / "results").exists()  # nothing started


def test_cli_scenario_check_prints_one_line_per_file_however_long_its_path(tmp_path):
    """Piped output is not wrapped at 80 columns: the verdict stays on its file's line even when
    the path alone is longer than a terminal (a deep clone)."""
    deep = tmp_path / ("a-rather-long-folder-name-" * 6) / ("and-another-one-" * 6)
    deep.mkdir(parents=True)
    path = deep / "quickstart.toml"
    shutil.copy(ROOT / "scenarios" / "quickstart.toml", path)
    proc = subprocess.run([*ecufl_cmd(), "scenario", "check", str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(str(path)) > 200 and len(lines) == 1
    assert lines[0].startswith(f"{path}: ok: deployment, 4 nodes, 3 rounds, kernels ")


@pytest.mark.parametrize("args,expect", [
    (["fleet", "up", "--nodes", "0"], "--nodes must be in 1..64"),
    (["fleet", "up", "--kernels", "numpy,cuda"], "--kernels: unknown kernel 'cuda'"),
    (["fleet", "run"], "give a SCENARIO file"),
    (["fleet", "run", "--resume", "no-such-results"], "--resume no-such-results: no checkpoint.npz to continue from"),
])
def test_cli_fleet_bad_flags_exit_2_and_start_nothing(tmp_path, args, expect):
    state = tmp_path / "state"
    proc = subprocess.run([*ecufl_cmd(), *args, "--state", str(state)], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and expect in lines[0], lines
    assert not state.exists()


def test_cli_fleet_down_and_status_without_a_fleet(tmp_path):
    for cmd, expect in ((["fleet", "down"], "no fleet running"), (["fleet", "status"], "no fleet in")):
        proc = subprocess.run([*ecufl_cmd(), *cmd, "--state", str(tmp_path / "s")], capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 0 and expect in proc.stdout
