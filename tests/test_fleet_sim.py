"""Flower's simulation engine (Ray) with the same ServerApp and ClientApp: 100 ECUs on small shards."""

from __future__ import annotations

import csv
import subprocess

import pytest

from conftest import ROOT, ecufl_cmd
from test_fleet import alive, results_of, rows

pytestmark = pytest.mark.slow


def test_hundred_ecus_in_simulation(tmp_path, mnist_dir):
    before = set(p for p in map(int, filter(str.isdigit, __import__("os").listdir("/proc"))))
    proc = subprocess.run([*ecufl_cmd(), "sim", str(ROOT / "scenarios" / "sim-100.toml"), "--results", str(tmp_path)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = results_of(proc)
    rounds = rows(res / "rounds.csv")
    assert [int(r["round"]) for r in rounds] == [0, 1, 2]
    assert all(r["clients_asked"] == r["clients_accepted"] == "100" for r in rounds[1:])
    clients = rows(res / "clients.csv")
    for rnd in ("1", "2"):
        got = [c for c in clients if c["round"] == rnd]
        assert sorted(int(c["partition_id"]) for c in got) == list(range(100))
        assert all(c["samples"] == "60" for c in got)  # 6,000 samples cut into 100 shards
    assert float(rounds[-1]["test_accuracy"]) > float(rounds[0]["test_accuracy"])
    # nothing of the simulation (SuperLink, Ray) is left running
    leftovers = []
    for p in set(p for p in map(int, filter(str.isdigit, __import__("os").listdir("/proc")))) - before:
        try:
            cmd = open(f"/proc/{p}/cmdline", "rb").read()
        except OSError:
            continue
        if alive(p) and str(res).encode() in cmd or (alive(p) and b"ray" in cmd and b"raylet" in cmd):
            leftovers.append(cmd[:100])
    assert not leftovers, leftovers
