"""Board mode ``agent``: the SuperNodes that stand in for agent boards, on the gateway (this host).

An agent board runs no Python and no Flower: only ecufl-agent. For each such board, ecufl runs a
``flower-supernode`` here whose ClientApp trains with kernel ``remote:<board>``: the kernel finds its
agent through ``ECUFL_REMOTE_AGENT`` (a JSON endpoint: board address, fleet CA, the client
certificate) and sends each round's weights to the board over mutual TLS. The SuperNode
authenticates to the SuperLink with the board's node key, so the SuperLink sees one node per board.

    <state_dir>/gateway/<board>.json    the agent endpoint of that board
    <state_dir>/gateway/<board>.log     its SuperNode's log
    <state_dir>/gateway/state.json      board -> pid (process-group leader)
"""

from __future__ import annotations

import json
from pathlib import Path

from ecufl.fleet import procs

from .certs import PKI
from .config import node_config
from .inventory import Inventory
from .superlink import address


def folder(inv: Inventory) -> Path:
    return inv.fleet.state_dir / "gateway"


def agent_boards(inv: Inventory) -> list[str]:
    return [n for n, b in inv.boards.items() if b.mode == "agent"]


def endpoint(inv: Inventory, name: str) -> Path:
    b = inv.boards[name]
    pki = PKI(inv.fleet.state_dir)
    cert, key = pki.agent_client()
    f = folder(inv) / f"{name}.json"
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(json.dumps({"node": name, "address": f"{b.host}:{b.agent_port}", "ca": str(pki.ensure_ca()),
                             "cert": str(cert), "key": str(key)}, indent=1))
    return f


def start(inv: Inventory, *, insecure: bool) -> dict[str, int]:
    stop(inv)
    d = folder(inv)
    d.mkdir(parents=True, exist_ok=True)
    host, port = address(inv)
    pki = PKI(inv.fleet.state_dir)
    pids = {}
    for name in agent_boards(inv):
        env = procs.flower_env(d / "flwr-home" / name)
        env["ECUFL_REMOTE_AGENT"] = str(endpoint(inv, name))
        # kernel remote:<board> (node_config's default for agent boards): the ClientApp checks that
        # the endpoint it was given is that board's
        cmd = [procs.tool("flower-supernode"), "--superlink", f"{host}:{port}", "--port", str(procs.free_port()),
               "--node-config", node_config(inv, name)]
        if insecure:
            cmd.append("--insecure")
        else:
            key, _ = pki.node_key(name)
            cmd += ["--root-certificates", str(pki.ensure_ca()), "--auth-supernode-private-key", str(key)]
        pids[name] = procs.start(cmd, env, d / f"{name}.log", d)
    (d / "state.json").write_text(json.dumps(pids, indent=1))
    return pids


def stop(inv: Inventory) -> list[str]:
    f = folder(inv) / "state.json"
    try:
        pids = json.loads(f.read_text())
    except (OSError, json.JSONDecodeError):
        return []
    for pid in pids.values():
        if procs.alive(pid):
            procs.stop(pid, grace=10)
    f.unlink(missing_ok=True)
    return list(pids)


def status(inv: Inventory) -> dict[str, bool]:
    try:
        pids = json.loads((folder(inv) / "state.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return {n: procs.alive(p) for n, p in pids.items()}
