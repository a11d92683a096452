"""A secured deployed fleet end to end (root): four netns boards, two in each mode, run quickstart.

Boards b1, b2 run in mode `supernode` (a Flower SuperNode from the bundle on the board); b3, b4 in
mode `agent` (only the native ecufl-agent on the board; their SuperNodes run on the gateway with the
`remote` kernel and reach the agents over mutual TLS). `ecufl deploy` builds and pushes the x86_64
bundle, starts the services (ecufl-supervise), starts the SuperLink with TLS and SuperNode
authentication and registers the boards' keys, then runs scenarios/quickstart.toml on the boards.
In round 2 one board's SuperNode is killed (its supervisor restarts it) and one agent board
reboots (it misses round 2 with one line naming it, boots, and trains again in round 3). Then the security checks: a SuperNode whose key is not registered
is refused, a plaintext SuperNode and a plaintext request are refused by the TLS SuperLink. Finally
rollback and remove, and nothing is left (the lab's teardown checks the namespaces).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from conftest import ROOT
from netns import Lab, ecufl_wheel, new_prefix
from test_deploy_netns import board_toml, cgroup_limits, deploy, errors, inventory, status

pytestmark = [pytest.mark.root, pytest.mark.slow]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.fail("the deploy tests need root (network namespaces, sshd); CI runs as root")
    lab = Lab(new_prefix() + "e", tmp_path_factory.mktemp("lab"), n=4)
    try:
        yield lab.up()
    finally:
        left = lab.down()
        assert left == [], f"namespaces left behind: {left}"


@pytest.fixture(scope="module")
def fleet(lab, tmp_path_factory, mnist_dir):
    """Built, pushed (secure), started, SuperLink up with the keys registered."""
    work = tmp_path_factory.mktemp("fleet")
    state = work / "state"
    boards = [board_toml(b.name, b.addr, lab.client_key, b.dir / "opt" / "ecufl", data=str(mnist_dir),
                         mode="supernode" if i < 2 else "agent", profile="default" if i < 2 else "imx6")
              for i, b in enumerate(lab.boards)]
    inv = inventory(lab, work / "inv.toml", boards, state)
    wheel = ecufl_wheel()
    r = deploy(lab, inv, "build", "--wheel", str(wheel))
    assert r.returncode == 0, r.stderr
    r = deploy(lab, inv, "push")
    assert r.returncode == 0, r.stderr
    r = deploy(lab, inv, "start")
    assert r.returncode == 0, r.stderr
    r = deploy(lab, inv, "superlink", "start", timeout=600)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("node key registered") == 4 and "TLS, SuperNode authentication" in r.stdout
    assert r.stdout.count("gateway: SuperNode for agent board") == 2
    try:
        yield {"inv": inv, "state": state, "work": work, "wheel": wheel}
    finally:
        deploy(lab, inv, "superlink", "stop")


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def test_tls_end_to_end_in_process_arguments(lab, fleet):
    sl = json.loads((fleet["state"] / "superlink" / "state.json").read_text())
    args = cmdline(sl["pid"])
    for flag in ("--ssl-ca-certfile", "--ssl-certfile", "--ssl-keyfile", "--enable-supernode-auth"):
        assert flag in args
    assert "--insecure" not in args
    for b in lab.boards[:2]:
        # the supervisor may be between two starts of the SuperNode (it exits when turned away)
        assert wait_for(lambda: any("flower-supernode" in c for c in lab.cmdlines(b)), 60)
        nodes = [c for c in lab.cmdlines(b) if "flower-supernode" in c]
        assert len(nodes) == 1, nodes
        assert "--root-certificates" in nodes[0] and "--auth-supernode-private-key" in nodes[0]
        assert "--insecure" not in nodes[0]
    for b in lab.boards[2:]:  # agent boards: only the agent, no Python, no Flower
        cmds = [c for c in lab.cmdlines(b) if not c.startswith(("sshd", "/usr/sbin/sshd", "sh -c"))]
        assert any("/bin/ecufl-agent --config" in c for c in cmds) and not any("python" in c for c in cmds), cmds
        # in a cgroup holding it to the imx6 profile's MemoryMax (64 MB), trained in by the quickstart test
        child = int((b.dir / "opt" / "ecufl" / "run" / "ecufl-agent.child").read_text())
        assert cgroup_limits(child)["memory"] == 64 * 2**20
    gw = json.loads((fleet["state"] / "gateway" / "state.json").read_text())
    for name, pid in gw.items():
        args = cmdline(pid)
        assert "--root-certificates" in args and "--auth-supernode-private-key" in args and "--insecure" not in args


def test_quickstart_across_boards_survives_a_killed_node_and_a_rebooted_board(lab, fleet, tmp_path):
    """Round 2: b2's SuperNode is killed (its supervisor restarts it) and agent board b4 reboots
    (every process on it dies; sshd comes back, the agent does not). Round 2 goes on without b4, which
    is one line naming the board; once its round-2 reply is in, b4 "boots" (`deploy start`, what
    systemd does for an enabled unit), its untouched release passes the checksum check, and it trains
    again in round 3."""
    results = tmp_path / "results"
    env = dict(os.environ)
    run = lab.gw_popen(*deploy_cmd(fleet["inv"]), "run", str(ROOT / "scenarios" / "quickstart.toml"),
                       "--results", str(results), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    victim, rebooted = lab.boards[1], lab.boards[3]
    before = status(lab, fleet["inv"])["b4"]
    try:
        child_file = victim.dir / "opt" / "ecufl" / "run" / "ecufl-supernode.child"
        deadline = time.time() + 900
        stage, b4_node = "wait-round-2", None
        while time.time() < deadline and run.poll() is None and stage != "done":
            prog = list(results.glob("*/progress.jsonl"))
            events = [json.loads(ln) for ln in prog[0].read_text().splitlines() if ln.strip()] if prog else []
            b4_node = next((e["node"] for e in events if e["event"] == "client" and e["partition"] == 3), None)
            if stage == "wait-round-2" and any(e["event"] == "round-start" and e["round"] == 2 for e in events):
                os.kill(int(child_file.read_text()), 9)
                lab.reboot(rebooted)  # power cut mid-round: agent, supervisor and sshd die; sshd comes back
                stage = "wait-b4-reply"
            elif stage == "wait-b4-reply" and any(e["event"] == "reply" and e["round"] == 2 and e["node"] == b4_node
                                                  for e in events):
                # b4's gateway has answered round 2 for it (with the error); the round still runs (b2's
                # SuperNode was killed). Now b4 boots: its enabled unit starts, as systemd would.
                st = status(lab, fleet["inv"])["b4"]
                assert not st["running"] and (st["current"], st["previous"]) == (before["current"], before["previous"])
                r = deploy(lab, fleet["inv"], "start", "b4")
                assert r.returncode == 0, r.stderr
                stage = "done"
            time.sleep(0.5)
        assert stage == "done", f"stopped at {stage}"
        out, err = run.communicate(timeout=1200)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0, err
    folder = next(results.iterdir())
    rows = list(csv.DictReader(open(folder / "clients.csv")))
    rounds = [r for r in csv.DictReader(open(folder / "rounds.csv")) if int(r["round"]) >= 1]
    assert len(rounds) == 3
    # every board replied in round 1 and 3; per-client rows carry the boards' node ids
    registered = json.loads((fleet["state"] / "superlink" / "registered.json").read_text())
    by_round = {r: {row["node_id"] for row in rows if row["round"] == str(r) and row["accepted"] == "1"} for r in (1, 2, 3)}
    assert by_round[1] == {str(v) for v in registered.values()}, (by_round, registered)
    assert len(by_round[3]) >= 3
    assert float(rounds[-1]["test_accuracy"]) > 0.90, rounds[-1]
    # the rebooted agent board: out of round 2 with one line naming it, back in round 3
    b4 = {int(row["round"]): row for row in rows if row["partition_id"] == "3"}
    assert b4[2]["accepted"] == "0" and "agent b4" in b4[2]["error"], b4[2]
    assert b4[3]["accepted"] == "1", b4[3]
    said = [ln for ln in out.splitlines() if "rejected partition 3 " in ln]
    assert len(said) == 1 and "agent b4" in said[0], out
    assert len(by_round[2]) >= 2  # the round went on with the others
    # both modes delivered rows: the agent boards' clients trained with the remote kernel
    kernels = {row["partition_id"]: row["kernel"] for row in rows if row["round"] == "1"}
    assert kernels["2"] == "remote:b3" and kernels["3"] == "remote:b4", kernels  # kernel remote:NODE
    assert not kernels["0"].startswith("remote") and not kernels["1"].startswith("remote"), kernels
    st = status(lab, fleet["inv"])
    assert st["b2"]["running"] and st["b2"]["restarts"] >= 1 and st["b4"]["running"]
    agent_log = deploy(lab, fleet["inv"], "logs", "b3", "-n", "400").stdout
    assert "trained" in agent_log and "peak RSS" in agent_log
    assert "over MemoryMax" not in agent_log  # trained within the imx6 profile's 64 MB


def deploy_cmd(inv: Path) -> list[str]:
    from conftest import ecufl_cmd

    return [*ecufl_cmd(), "deploy", "-i", str(inv)]


def superlink_log(fleet) -> str:
    return (fleet["state"] / "superlink" / "superlink.log").read_text(errors="replace")


def wait_for(pred, timeout=60.0, step=0.5) -> bool:
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(step)
    return False


def test_unregistered_node_key_is_refused(lab, fleet):
    b1 = lab.boards[0]
    nodes = fleet["state"] / "pki" / "nodes"
    for f in nodes.glob("b1.*"):  # b1 gets a key the SuperLink has never seen
        f.unlink()
    mark = len(superlink_log(fleet))
    assert deploy(lab, fleet["inv"], "push", "b1").returncode == 0
    assert deploy(lab, fleet["inv"], "start", "b1").returncode == 0
    refused = f'{b1.addr}:'
    def activations() -> list[str]:
        return [ln for ln in superlink_log(fleet)[mark:].splitlines() if refused in ln and "activate-node" in ln]

    # the new key is turned away (412) again and again, and never let in after the first refusal
    assert wait_for(lambda: sum(" 412" in ln for ln in activations()) >= 2, 120), activations()
    acts = activations()
    first = next(i for i, ln in enumerate(acts) if " 412" in ln)
    assert not any(" 200" in ln for ln in acts[first:]), acts


def test_plaintext_is_refused(lab, fleet):
    b2 = lab.boards[1]
    # a raw plaintext HTTP request to the TLS port gets no HTTP answer; the same over TLS does
    probe = ("import httpx,sys\n"
             f"try:\n r = httpx.get('http://{lab.gw_addr}:9092/health', timeout=5); print('plain', r.status_code)\n"
             "except httpx.HTTPError as e: print('plain refused', type(e).__name__)\n"
             f"r = httpx.get('https://{lab.gw_addr}:9092/health', timeout=5, verify=sys.argv[1]); print('tls', r.status_code)\n")
    r = lab.gw(str(Path(os.sys.executable)), "-c", probe, str(fleet["state"] / "pki" / "ca.pem"))
    assert "plain refused" in r.stdout and "tls 200" in r.stdout, r.stdout + r.stderr
    # a SuperNode configured for plaintext never gets in
    assert deploy(lab, fleet["inv"], "push", "--insecure", "b2").returncode == 0
    assert deploy(lab, fleet["inv"], "start", "b2").returncode == 0  # stops the TLS SuperNode first
    mark = len(superlink_log(fleet))
    # until the plaintext SuperNode has tried and failed (no fixed sleep: as soon as its log says so)
    def tried() -> str:
        return deploy(lab, fleet["inv"], "logs", "b2", "-n", "40").stdout
    assert wait_for(lambda: "Starting insecure channel" in (t := tried()) and "Connection attempt failed" in t,
                    180, 2.0), tried()
    assert not any(f"{b2.addr}:" in ln and " 200" in ln for ln in superlink_log(fleet)[mark:].splitlines())
    # and the SuperLink refuses to start plaintext against boards pushed with TLS (and vice versa)
    r = deploy(lab, fleet["inv"], "superlink", "start")
    assert r.returncode == 2 and "pushed with --insecure" in errors(r)[0]


def test_rollback_and_remove_leave_nothing(lab, fleet):
    r = deploy(lab, fleet["inv"], "build", "--wheel", str(fleet["wheel"]))
    assert r.returncode == 0
    assert deploy(lab, fleet["inv"], "push").returncode == 0
    st = status(lab, fleet["inv"])
    assert all(s["previous"] for s in st.values())
    r = deploy(lab, fleet["inv"], "rollback")
    assert r.returncode == 0, r.stderr
    r = deploy(lab, fleet["inv"], "remove")
    assert r.returncode == 0, r.stderr
    for b in lab.boards:
        assert not (b.dir / "opt" / "ecufl").exists()
        assert all(c.startswith(("/usr/sbin/sshd", "sshd:")) for c in lab.cmdlines(b)), lab.cmdlines(b)
