"""The warm client runtime on real fleets (flower-superlink + flower-supernode processes).

A cold fleet (Flower's plain path, a flwr-clientapp process per message) gives the reference
weights; a warm fleet (ecufl.fleet.warm: ClientApps forked from a parent holding imports, data
and kernel) must end every run with exactly those weights, also after its parent was killed and
after a run with other settings, and must say in one line when a node's data vanished. Short runs
(2 nodes, 2 rounds, a few hundred samples); nothing here is timed.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import ecufl_cmd

pytestmark = pytest.mark.slow

SCENARIO = """\
nodes = 2
rounds = {rounds}
seed = {seed}
train_limit = {limit}
layers = {layers}
kernels = ["numpy:float32", "c"]
round_timeout = 90.0
"""
FIRST = {"rounds": 2, "seed": 11, "limit": 400, "layers": "[784, 16, 10]"}
OTHER = {"rounds": 2, "seed": 5, "limit": 300, "layers": "[784, 12, 10]"}  # a changed run config


def ecufl(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run([*ecufl_cmd(), *args], capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"ecufl {' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def run(state: Path, tmp: Path, name: str, settings: dict, **over) -> tuple[Path, subprocess.CompletedProcess]:
    path = tmp / f"{name}.toml"
    path.write_text(f'name = "{name}"\n' + SCENARIO.format(**(settings | over)))
    proc = ecufl("fleet", "run", str(path), "--state", str(state), "--results", str(tmp / "results"), timeout=600)
    line = next(l for l in proc.stdout.splitlines() if l.startswith("results: "))
    return Path(line.removeprefix("results: ").strip()), proc


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def weights(results: Path) -> dict[str, np.ndarray]:
    with np.load(results / "final.npz") as f:
        return {k: f[k] for k in f.files if k.startswith(("w", "b"))}


def assert_identical(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys() and wa
    for k in wa:
        assert wa[k].dtype == wb[k].dtype and np.array_equal(wa[k], wb[k]), f"{k} differs: {a} vs {b}"


def all_accepted(results: Path, nodes: int = 2) -> None:
    for r in rows(results / "rounds.csv")[1:]:
        assert (r["clients_replied"], r["clients_accepted"]) == (str(nodes), str(nodes)), r


def status(state: Path) -> dict:
    return json.loads(ecufl("fleet", "status", "--state", str(state), "--json").stdout)


def log_lines(state: Path, partition: int, needle: str) -> list[str]:
    text = (state / "logs" / f"node-{partition}.warm.log").read_text(errors="replace")
    return [l for l in text.splitlines() if needle in l]


@pytest.fixture(scope="module")
def fleets(tmp_path_factory, mnist_dir):
    """A cold and a warm fleet of 2 nodes; each warm node reads MNIST from a folder of its own
    (symlinks to the shared files), so one node's data can vanish."""
    tmp = tmp_path_factory.mktemp("warm")
    dirs = []
    for i in range(2):
        d = tmp / f"data-{i}"
        d.mkdir()
        for f in Path(mnist_dir).iterdir():
            if f.is_file() and "ubyte" in f.name:
                (d / f.name).symlink_to(f.resolve())
        dirs.append(d)
    cold, warm = tmp / "cold", tmp / "warm"
    ecufl("fleet", "up", "--nodes", "2", "--cold", "--state", str(cold), timeout=180)
    try:
        ecufl("fleet", "up", "--nodes", "2", "--state", str(warm), "--data-dirs", ",".join(map(str, dirs)), timeout=180)
        yield {"cold": cold, "warm": warm, "dirs": dirs, "tmp": tmp}
    finally:
        for state in (cold, warm):
            subprocess.run([*ecufl_cmd(), "fleet", "down", "--state", str(state)], capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def reference(fleets):
    """The same scenarios on Flower's plain path: a new flwr-clientapp process per message."""
    first, _ = run(fleets["cold"], fleets["tmp"], "cold-first", FIRST)
    other, _ = run(fleets["cold"], fleets["tmp"], "cold-other", OTHER)
    st = status(fleets["cold"])
    assert not any(n["warm"] for n in st["nodes"])
    return {"first": first, "other": other}


def test_warm_and_cold_end_with_identical_weights(fleets, reference):
    st = status(fleets["warm"])
    assert all(n["warm"] and n["launcher_alive"] and len(n["parent_pids"]) == 1 for n in st["nodes"])
    warm, _ = run(fleets["warm"], fleets["tmp"], "warm-first", FIRST)
    all_accepted(reference["first"])
    all_accepted(warm)
    assert_identical(warm, reference["first"])
    clients = rows(warm / "clients.csv")
    parents = {n["partition"]: n["parent_pids"][0] for n in st["nodes"]}
    # each message ran in its own process, forked from the node's parent (pids differ, parent holds data)
    assert len({c["pid"] for c in clients}) == len(clients)
    assert all(float(c["data_seconds"]) < 0.5 for c in clients)  # MNIST came with the fork, not from disk
    for p in (0, 1):
        assert len(log_lines(fleets["warm"], p, "built the shard of a new split: 2 partitions, seed 11")) == 1
        assert int(parents[p]) not in {int(c["pid"]) for c in clients}
    # a warm node's SuperNode is Flower's with short waits (ecufl.fleet.warm_supernode): one timing
    # line per message in its log; a cold node's is Flower's plain flower-supernode
    for p in (0, 1):
        node_log = (fleets["warm"] / "logs" / f"node-{p}.log").read_text(errors="replace")
        assert node_log.count("warm SuperNode timing ") == 2
        assert "warm SuperNode timing " not in (fleets["cold"] / "logs" / f"node-{p}.log").read_text(errors="replace")


def test_killed_warm_parent_gives_one_line_and_a_correct_next_run(fleets, reference):
    before = status(fleets["warm"])["nodes"][0]["parent_pids"]
    assert len(before) == 1
    os.kill(before[0], signal.SIGKILL)
    warm, _ = run(fleets["warm"], fleets["tmp"], "warm-killed", FIRST)
    all_accepted(warm)
    assert_identical(warm, reference["first"])
    died = log_lines(fleets["warm"], 0, f"warm parent pid {before[0]} died")
    assert len(died) == 1 and "killed by SIGKILL" in died[0], died
    node = status(fleets["warm"])["nodes"][0]
    assert node["parent_pids"] and node["parent_pids"] != before and node["parent_deaths"] == died
    shown = ecufl("fleet", "status", "--state", str(fleets["warm"])).stdout
    assert f"warm parent pid {before[0]} died (killed by SIGKILL)" in shown
    assert not log_lines(fleets["warm"], 1, "died (")  # the other node was not touched


def test_changed_run_config_is_rebuilt_and_trains_as_cold(fleets, reference):
    warm, _ = run(fleets["warm"], fleets["tmp"], "warm-other", OTHER)
    all_accepted(warm)
    assert_identical(warm, reference["other"])
    for p, kernel in ((0, "numpy:float32"), (1, "c:float32")):
        assert len(log_lines(fleets["warm"], p, "built the shard of a new split: 2 partitions, seed 5, "
                                                "alpha 0.0, train limit 300")) == 1
        assert len(log_lines(fleets["warm"], p, f"built a new kernel: {kernel} 784-12-10")) == 1
    assert {int(c["samples"]) for c in rows(warm / "clients.csv")} == {150}


def test_node_whose_data_vanished_is_one_line_and_the_round_goes_on(fleets, reference):
    vanished = fleets["dirs"][1]
    moved = vanished.parent / "data-1-away"
    vanished.rename(moved)
    try:
        warm, proc = run(fleets["warm"], fleets["tmp"], "warm-vanished", FIRST, rounds=1)
    finally:
        moved.rename(vanished)
    (r1,) = rows(warm / "rounds.csv")[1:]
    assert (r1["clients_replied"], r1["clients_accepted"]) == ("2", "1")
    clients = {int(c["partition_id"]): c for c in rows(warm / "clients.csv")}
    assert clients[0]["accepted"] == "1"
    reason = clients[1]["reject_reason"]
    assert f"ECUFL_DATA={vanished}: missing train-images-idx3-ubyte" in reason and "\n" not in reason
    assert sum(f"rejected partition 1" in l for l in proc.stdout.splitlines()) == 1
    assert np.isfinite(float(r1["test_accuracy"]))
    # the data is back: the node trains again, and the warm parent gave the same weights as cold
    again, _ = run(fleets["warm"], fleets["tmp"], "warm-back", FIRST)
    all_accepted(again)
    assert_identical(again, reference["first"])
