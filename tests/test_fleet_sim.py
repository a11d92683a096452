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


def test_sim_parallel_one_trains_one_client_at_a_time(tmp_path, mnist_dir):
    """`ecufl sim --parallel 1`: no two clients' Kernel.train intervals overlap (each had a core of
    its own, so its timings compare with `ecufl bench kernels`). Shards of 5,000 samples at
    784-64-10: long enough that the default two actors do overlap (checked by hand: they did)."""
    from test_fleet import SMALL, scenario

    text = SMALL.format(rounds=1).replace("train_limit = 2000", "train_limit = 20000").replace("784, 16, 10", "784, 64, 10")
    sc = scenario(tmp_path, "one-at-a-time", text)
    proc = subprocess.run([*ecufl_cmd(), "sim", str(sc), "--parallel", "1", "--results", str(tmp_path / "r")],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    clients = rows(results_of(proc) / "clients.csv")
    spans = sorted((float(c["started_at"]), float(c["finished_at"])) for c in clients)
    assert len(spans) == 4
    assert all(end <= nxt for (_, end), (nxt, _) in zip(spans, spans[1:])), spans


def test_sim_parallel_must_be_positive(tmp_path):
    proc = subprocess.run([*ecufl_cmd(), "sim", str(ROOT / "scenarios" / "quickstart.toml"), "--parallel", "0"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--parallel" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_shootout_against_the_bench_in_one_command(tmp_path, mnist_dir):
    """`ecufl fleet shootout`: the scenario's kernels run between two bench runs; each float32 row
    divides the fleet's median samples per CPU-second by the bench's before and after it. The
    figures move with the host, so only their consistency and a broad band (a unit or clock
    mistake is a factor of 1,000 or of the epochs) are checked; the README gives measured values."""
    import json

    sc = tmp_path / "tiny.toml"
    sc.write_text('name = "tiny"\nengine = "deployment"\nnodes = 2\nrounds = 1\ntrain_limit = 6000\n'
                  'layers = [784, 16, 10]\n[shootout]\nkernels = ["numpy:float32", "numpy", "c"]\n')
    proc = subprocess.run([*ecufl_cmd(), "fleet", "shootout", str(sc), "--repeats", "1", "--json",
                           "--results", str(tmp_path / "results"), "--state", str(tmp_path / "fleet")],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(proc.stdout)  # progress went to stderr
    assert doc["engine"] == "simulation" and doc["config"] == "784-16-10"  # the default engine, whatever the file says
    assert json.loads((tmp_path / "results" / doc["results"].split("/")[-1] / "shootout.json").read_text()) == doc
    by = {r["kernel"]: r for r in doc["rows"]}
    assert set(by) == {"numpy:float32", "numpy:float64", "c:float32"}, by
    assert all(r["replies"] == 2 for r in by.values())
    for k in ("numpy:float32", "c:float32"):
        r = by[k]
        assert r["bench_before"] > 0 and r["bench_after"] > 0
        assert r["fleet_over_bench_before"] == pytest.approx(r["fleet_samples_per_cpu_second"] / r["bench_before"])
        # a ratio, not a speed requirement (benchmarks measure; tests do not time): positive and finite
        assert all(0 < r[k] < float("inf") for k in ("fleet_over_bench_before", "fleet_over_bench_after")), r
    # the float64 reference has no bench row (the bench trains float32): no ratio is made up
    assert by["numpy:float64"]["fleet_over_bench_before"] is None
    assert by["numpy:float64"]["bench_before"] == by["numpy:float32"]["bench_before"]


def test_shootout_needs_a_shootout_table(tmp_path, mnist_dir):
    sc = tmp_path / "plain.toml"
    sc.write_text('name = "plain"\nengine = "simulation"\nnodes = 2\nrounds = 1\n')
    proc = subprocess.run([*ecufl_cmd(), "fleet", "shootout", str(sc)], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "scenario 'plain' has no [shootout] table" in proc.stderr, proc.stderr
