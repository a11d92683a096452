"""The federated loop on real Flower processes: one flower-superlink and flower-supernode processes
on loopback, driven through the ``ecufl`` command line. Slow (minutes): deployment rounds carry
Flower's polling sleeps and a fresh ClientApp process per message.

One fleet of 4 nodes is shared by the tests of this module (the scenario's kernels override the
nodes' own); the node-killing test has a fleet of its own.
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

from conftest import ROOT, ecufl_cmd

pytestmark = pytest.mark.slow


def ecufl(*args: str, timeout: float = 600, check: bool = True, cwd: Path | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([*ecufl_cmd(), *args], capture_output=True, text=True, timeout=timeout, cwd=cwd)
    if check and proc.returncode != 0:
        raise AssertionError(f"ecufl {' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def results_of(proc: subprocess.CompletedProcess) -> Path:
    line = next(l for l in proc.stdout.splitlines() if l.startswith("results: "))
    return Path(line.removeprefix("results: ").strip())


def scenario(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / f"{name}.toml"
    p.write_text(text)
    return p


def events(results: Path) -> list[dict]:
    path = results / "progress.jsonl"
    return [json.loads(l) for l in path.read_text().splitlines()] if path.exists() else []


def wait_for_event(results_base: Path, pred, timeout: float) -> Path:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for run in results_base.glob("*"):
            if any(pred(e) for e in events(run)):
                return run
        time.sleep(0.3)
    raise AssertionError(f"no matching progress event in {results_base} within {timeout} s")


def pids_of(state: Path) -> list[int]:
    st = json.loads((state / "state.json").read_text())
    return [st["superlink_pid"]] + [n["pid"] for n in st["nodes"]]


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def family(pid: int) -> list[int]:
    from ecufl.fleet.procs import descendants

    return [pid] + descendants(pid)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, mnist_dir):
    state = tmp_path_factory.mktemp("fleet") / "state"
    ecufl("fleet", "up", "--nodes", "4", "--kernels", "numpy,numpy:float32", "--state", str(state), timeout=180)
    pids = pids_of(state)
    families = [p for pid in pids for p in family(pid)]
    yield state
    ecufl("fleet", "down", "--state", str(state), check=False)
    time.sleep(0.5)
    assert not [p for p in families if alive(p)], "processes of the fleet outlived `fleet down`"


SMALL = """\
nodes = 4
rounds = {rounds}
seed = 11
train_limit = 2000
layers = [784, 16, 10]
kernels = ["numpy", "numpy:float32", "numpy:float32", "numpy"]
round_timeout = 90.0
"""


def test_status_lists_live_nodes(fleet):
    st = json.loads(ecufl("fleet", "status", "--state", str(fleet), "--json").stdout)
    assert st["up"] and st["superlink"]["healthy"]
    assert [n["partition"] for n in st["nodes"]] == [0, 1, 2, 3] and all(n["alive"] for n in st["nodes"])
    assert len({n["port"] for n in st["nodes"]} | {st["port"]}) == 5  # own port per process
    assert (fleet / "flwr-home" / "config.toml").exists()


def test_quickstart_end_to_end(fleet, tmp_path):
    """The README's scenario: 4 ECUs with mixed kernels, 3 rounds, > 90 % test accuracy. Run as
    `make run` does, with a relative results folder (Flower's processes work in other folders)."""
    proc = ecufl("fleet", "run", str(ROOT / "scenarios" / "quickstart.toml"), "--state", str(fleet),
                 "--results", "results", timeout=900, cwd=tmp_path)
    shown = results_of(proc)
    res = tmp_path / shown
    spec = json.loads((res / "run-config.json").read_text())
    spec["kernels"] = [k.split("|")[0] for k in spec["kernel"].split(",")]  # all built here: the first choice
    rounds = rows(res / "rounds.csv")
    assert [int(r["round"]) for r in rounds] == [0, 1, 2, 3]
    assert float(rounds[-1]["test_accuracy"]) > 0.90
    clients = rows(res / "clients.csv")
    for rnd in (1, 2, 3):
        got = sorted((int(c["partition_id"]), c["kernel"]) for c in clients if int(c["round"]) == rnd)
        assert got == list(enumerate(spec["kernels"])), f"round {rnd}: {got}"  # a row per client per round
        assert all(c["accepted"] == "1" and float(c["train_seconds"]) > 0 for c in clients if int(c["round"]) == rnd)
    # every native kernel ran as itself: this machine builds them all (`make setup`), so a fallback
    # of c, eigen or tflite to the numpy stand-in is a failure, not a pass with "two distinct kernels"
    assert spec["kernels"] == ["numpy", "c", "eigen", "tflite"], spec["kernel"]
    ran = {c["kernel"] for c in clients}
    assert ran == {"numpy", "c", "eigen", "tflite"}, ran
    assert (res / "final.npz").exists() and (res / "checkpoints" / "round-003.npz").exists()
    assert (res / "report.html").exists() and f"report:  {shown / 'report.html'}" in proc.stdout
    assert "round 3/3" in proc.stdout  # progress was shown


def test_flwr_run_dot_is_the_same_app_and_run_config_overrides_reach_the_clients(fleet, tmp_path):
    """A Flower user's door: `flwr run .` from the project root against `ecufl fleet up`'s SuperLink
    trains and returns a global model; --run-config picks the kernel (visible in clients.csv);
    without it every node trains with its own node-config kernel."""
    from ecufl.kernels import weights

    env = {k: v for k, v in os.environ.items() if not k.startswith("ECUFL_")} | {
        "FLWR_HOME": str(fleet / "flwr-home"), "ECUFL_DATA": os.environ["ECUFL_DATA"]}
    flwr = str(Path(ecufl_cmd()[0]).parent / "flwr")
    kernels = {}
    for name, override in (("c", "kernel='c'"), ("own", "")):
        run_dir = tmp_path / name
        cfg = f"num-server-rounds=1 train-limit=800 seed=5 run-dir='{run_dir}' {override}"
        proc = subprocess.run([flwr, "run", ".", "ecufl-fleet", "--stream", "--run-config", cfg], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        params, meta = weights.load(run_dir / "final.npz")
        assert params.sizes == [784, 30, 10]  # pyproject.toml's defaults, as Flower passes them
        assert json.loads((run_dir / "run-config.json").read_text())["nodes"] == 4  # every node connected
        kernels[name] = sorted((int(c["partition_id"]), c["kernel"]) for c in rows(run_dir / "clients.csv"))
    assert [k for _, k in kernels["c"]] == ["c"] * 4
    assert kernels["own"] == [(0, "numpy"), (1, "numpy:float32"), (2, "numpy"), (3, "numpy:float32")]
    # a mistake in the settings is one line in Flower's stream, not a traceback: a bad value, and
    # layers that do not fit the CAN workload (found only once the ServerApp knows the workload)
    for cfg, said in (("batch-size=0", "run config batch-size=0: must be at least 1"),
                      ("workload='can' layers='784,30,784'", "do not fit the CAN windows")):
        proc = subprocess.run([flwr, "run", ".", "ecufl-fleet", "--stream", "--run-config",
                               f"{cfg} run-dir='{tmp_path / 'bad'}'"], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=600)
        out = proc.stdout + proc.stderr
        assert said in out and "Traceback" not in out, out[-3000:]


def test_bad_replies_are_rejected_and_the_round_goes_on(fleet, tmp_path):
    """Three of four ECUs reply with damaged weights (tests/faults.py: ecufl's ClientApp wrapped in a
    Flower mod, submitted as a Flower App of its own to the same fleet)."""
    from ecufl.fleet import launch, local
    from ecufl.scenarios.schema import load
    from faults import build_app

    sc = load(scenario(tmp_path, "faults", SMALL.format(rounds=1)))
    res = tmp_path / "r" / "faults"
    launch.run_deployment(local.FleetState.load(fleet), sc.config(), res, app=build_app(tmp_path / "app", ROOT),
                          extra={"corrupt": "1:nan,2:shape,3:dtype"})
    rounds = rows(res / "rounds.csv")
    assert [(r["clients_replied"], r["clients_accepted"]) for r in rounds[1:]] == [("4", "1")]
    assert float(rounds[-1]["test_accuracy"]) > float(rounds[0]["test_accuracy"])  # partition 0 still trained
    clients = rows(res / "clients.csv")
    reasons = {int(c["partition_id"]): c["reject_reason"] for c in clients}
    assert reasons[0] == ""
    assert reasons[1].startswith("NaN/Inf in w1")
    assert reasons[2].startswith("wrong shape: w1 is (16, 783)")
    assert reasons[3].startswith("wrong dtype: w1 is float64")
    node_ids = {int(c["partition_id"]): c["node_id"] for c in clients}
    log = (res / "server.log").read_text()
    for p in (1, 2, 3):  # logged with the node id
        assert f"rejected the reply of node {node_ids[p]} (partition {p}" in log


def _final(res: Path):
    from ecufl.kernels import weights

    return weights.load(res / "final.npz")[0].flat()


def test_server_stopped_after_round_2_resumes_to_identical_weights(fleet, tmp_path):
    """The uninterrupted reference run is made by the simulation engine (same apps, same seed): the
    resumed deployment run matching it bit for bit shows both that resuming loses nothing and that
    the two engines run the same experiment, at a third of the cost of a second deployment run."""
    sc = scenario(tmp_path, "resume", SMALL.format(rounds=4))
    whole = results_of(ecufl("sim", str(sc), "--results", str(tmp_path / "a"), timeout=900))
    assert json.loads((whole / "summary.json").read_text())["engine"] == "simulation"

    # the same run, with its ServerApp process killed once round 2 is checkpointed
    base = tmp_path / "b"
    cli = subprocess.Popen([*ecufl_cmd(), "fleet", "run", str(sc), "--state", str(fleet), "--results", str(base)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        res = wait_for_event(base, lambda e: e["event"] == "round-end" and e["round"] == 2, 600)
        superlink = pids_of(fleet)[0]
        servers = [p for p in family(superlink) if b"flwr-serverapp" in Path(f"/proc/{p}/cmdline").read_bytes()]
        assert servers, "no flwr-serverapp process found"
        for p in servers:
            os.kill(p, signal.SIGKILL)
        # the CLI must notice by itself that the run ended without finishing: a CLI that hangs fails
        # here (TimeoutExpired; the test used to interrupt it itself and then see the non-zero exit)
        out, err = cli.communicate(timeout=600)
        assert cli.returncode != 0, out[-2000:]
        assert err.strip() and "Traceback" not in err, err[-2000:]
    finally:
        if cli.poll() is None:
            cli.kill()
    assert not (res / "final.npz").exists()
    assert max(int(r["round"]) for r in rows(res / "rounds.csv")) in (2, 3)

    ecufl("fleet", "run", "--resume", str(res), "--state", str(fleet), timeout=900)
    assert [int(r["round"]) for r in rows(res / "rounds.csv")] == [0, 1, 2, 3, 4]  # no round counted twice
    assert len(rows(res / "clients.csv")) == 16
    for a, b in zip(_final(whole), _final(res)):
        assert np.array_equal(a, b)  # bit for bit


@pytest.fixture
def own_fleet(tmp_path_factory, mnist_dir):
    """A fleet for the test that kills one of its nodes (the shared one stays whole, whatever the order)."""
    state = tmp_path_factory.mktemp("fleet-kill") / "state"
    ecufl("fleet", "up", "--nodes", "4", "--kernels", "numpy,numpy:float32", "--state", str(state), timeout=180)
    yield state
    ecufl("fleet", "down", "--state", str(state), check=False)


def test_supernode_killed_mid_round(own_fleet, tmp_path):
    """Kills node 3 of a fleet of its own (any test order)."""
    fleet = own_fleet
    # The timeout must exceed a live node's reply time on a loaded 2-core machine (up to ~30 s seen):
    # only the killed node may miss the round.
    sc = scenario(tmp_path, "kill", SMALL.format(rounds=2).replace("round_timeout = 90.0", "round_timeout = 60.0"))
    base = tmp_path / "r"
    cli = subprocess.Popen([*ecufl_cmd(), "fleet", "run", str(sc), "--state", str(fleet), "--results", str(base)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_event(base, lambda e: e["event"] == "round-start" and e["round"] == 1, 300)
        from ecufl.fleet.procs import kill_now

        kill_now(pids_of(fleet)[4])  # node 3: SuperNode, its SuperExec and any ClientApp, at once
        out, err = cli.communicate(timeout=600)
    finally:
        if cli.poll() is None:
            cli.kill()
    assert cli.returncode == 0, err[-2000:]
    res = results_of(subprocess.CompletedProcess([], 0, out, err))
    rounds = rows(res / "rounds.csv")
    assert [int(r["round"]) for r in rounds] == [0, 1, 2]  # the run went on
    r1 = rounds[1]
    assert (r1["clients_asked"], r1["clients_accepted"]) == ("4", "3")  # the round completed with the others
    round1 = [c for c in rows(res / "clients.csv") if c["round"] == "1"]
    assert sorted(int(c["partition_id"]) for c in round1 if c["accepted"] == "1") == [0, 1, 2]
    # The dead node either never answers (the round ends at its timeout) or Flower answers for it
    # ("Node Unavailable" once its heartbeat is overdue): either way it is not averaged.
    missing = [c for c in round1 if c["accepted"] != "1"]
    assert (r1["clients_replied"] == "3" and float(r1["wall_seconds"]) >= 60.0) or \
        (len(missing) == 1 and "Node Unavailable" in missing[0]["reject_reason"])
    assert int(rounds[2]["clients_accepted"]) == 3
    st = json.loads(ecufl("fleet", "status", "--state", str(fleet), "--json").stdout)
    assert [n["alive"] for n in st["nodes"]] == [True, True, True, False]


def test_one_trainer_fleet_hands_its_supernodes_the_train_lock(tmp_path, mnist_dir):
    """`fleet up --one-trainer`: every SuperNode (and so every ClientApp it starts) gets the fleet's
    lock file in ECUFL_TRAIN_LOCK; without the flag no SuperNode has it (runner test: the turns)."""
    def lock_of(pid: int) -> str | None:
        env = dict(kv.split(b"=", 1) for kv in open(f"/proc/{pid}/environ", "rb").read().split(b"\0") if b"=" in kv)
        v = env.get(b"ECUFL_TRAIN_LOCK")
        return v.decode() if v is not None else None

    for flag, want in (("--one-trainer", True), (None, False)):
        state = tmp_path / f"fleet-{bool(flag)}"
        ecufl("fleet", "up", "--nodes", "2", *([flag] if flag else []), "--state", str(state), timeout=180)
        try:
            nodes = pids_of(state)[1:]
            assert len(nodes) == 2
            locks = {lock_of(p) for p in nodes}
            assert locks == ({str(state / "train.lock")} if want else {None}), locks
        finally:
            ecufl("fleet", "down", "--state", str(state), check=False)
