"""The deployed fleet's SuperLink: TLS and SuperNode authentication unless `--insecure` is given.

    <state_dir>/superlink/state.json   pid, address, insecure
    <state_dir>/superlink/flwr-home/   FLWR_HOME of the SuperLink and of the `flwr` CLI (config.toml:
                                       connection "ecufl-deploy" with the fleet CA as root certificate)
    <state_dir>/superlink/superlink.db the SuperLink's SQLite state (registered node keys live here)
    <state_dir>/superlink/registered.json  board -> node id of each registered node key

Secure mode runs ``flower-superlink --ssl-ca-certfile ca.pem --ssl-certfile superlink.pem
--ssl-keyfile superlink.key --enable-supernode-auth`` and registers every supernode board's public
key with ``flwr supernode register`` (Flower 1.42 dropped ``--auth-list-public-keys``): a SuperNode
whose key is not registered is refused (HTTP 412 on activate-node) and a plaintext client cannot
talk to the TLS port at all.
"""

from __future__ import annotations

import json
import socket
import ssl
import time
from pathlib import Path

from ecufl.fleet import flwr_app, procs

from .certs import PKI
from .inventory import Inventory

CONNECTION = "ecufl-deploy"


class SuperLinkError(RuntimeError):
    pass


def folder(inv: Inventory) -> Path:
    return inv.fleet.state_dir / "superlink"


def address(inv: Inventory) -> tuple[str, int]:
    host, _, port = inv.fleet.superlink.rpartition(":")
    return host.strip("[]"), int(port)


def write_connection(home: Path, host: str, port: int, ca: Path | None) -> None:
    home.mkdir(parents=True, exist_ok=True)
    tls = "insecure = true\n" if ca is None else f'root-certificates = "{ca}"\n'
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\naddress = "{host}:{port}"\n{tls}')


def env(inv: Inventory) -> dict[str, str]:
    return procs.flower_env(folder(inv) / "flwr-home")


def state(inv: Inventory) -> dict | None:
    f = folder(inv) / "state.json"
    try:
        st = json.loads(f.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return st if procs.alive(st["pid"]) else None


def answers(host: str, port: int, ca: Path | None, timeout: float = 1.0) -> bool:
    """The port accepts a connection (and, with TLS, completes a handshake verified against ca)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            if ca is None:
                return True
            ctx = ssl.create_default_context(cafile=str(ca))
            with ctx.wrap_socket(s, server_hostname=host):
                return True
    except (OSError, ssl.SSLError):
        return False


def start(inv: Inventory, *, insecure: bool, timeout: float = 120) -> dict:
    if state(inv):
        raise SuperLinkError(f"a SuperLink is already running for this inventory (pid {state(inv)['pid']}); "
                             "`ecufl deploy superlink stop` first")
    d = folder(inv)
    d.mkdir(parents=True, exist_ok=True)
    host, port = address(inv)
    (d / "superlink.db").unlink(missing_ok=True)  # fresh state: registrations are made again below
    (d / "registered.json").unlink(missing_ok=True)
    cmd = [procs.tool("flower-superlink"), "--host", host, "--port", str(port), "--database", str(d / "superlink.db"),
           "--disable-runtime-dependency-installation"]
    ca = None
    if insecure:
        cmd.append("--insecure")
    else:
        pki = PKI(inv.fleet.state_dir)
        ca = pki.ensure_ca()
        pem, key = pki.superlink([host, "127.0.0.1", "localhost"])
        cmd += ["--ssl-ca-certfile", str(ca), "--ssl-certfile", str(pem), "--ssl-keyfile", str(key),
                "--enable-supernode-auth"]
    write_connection(d / "flwr-home", host, port, ca)
    pid = procs.start(cmd, env(inv), d / "superlink.log", d)
    st = {"pid": pid, "host": host, "port": port, "insecure": insecure, "cmd": cmd}
    (d / "state.json").write_text(json.dumps(st, indent=1))
    end = time.monotonic() + timeout
    while not answers(host, port, ca):
        if not procs.alive(pid):
            tail = (d / "superlink.log").read_text(errors="replace").strip().splitlines()[-1:]
            raise SuperLinkError(f"flower-superlink exited at start: {tail[0] if tail else '?'} (see {d / 'superlink.log'})")
        if time.monotonic() > end:
            stop(inv)
            raise SuperLinkError(f"flower-superlink did not answer on {host}:{port} within {timeout:.0f} s")
        time.sleep(0.3)
    return st


def register(inv: Inventory, names: list[str]) -> dict[str, int]:
    """Register the node keys of ``names`` with the running secure SuperLink; returns node ids."""
    st = state(inv)
    if not st:
        raise SuperLinkError("no SuperLink running: `ecufl deploy superlink start` first")
    if st["insecure"]:
        raise SuperLinkError("the SuperLink runs with --insecure: there is no node authentication to register with")
    d = folder(inv)
    reg_file = d / "registered.json"
    reg = json.loads(reg_file.read_text()) if reg_file.is_file() else {}
    pki = PKI(inv.fleet.state_dir)
    for name in names:
        if name in reg:
            continue
        _, pub = pki.node_key(name)
        try:
            out = flwr_app._flwr(["supernode", "register", str(pub), CONNECTION, "--name", name], env(inv), d)
        except flwr_app.FlowerError as e:
            raise SuperLinkError(f"registering board {name}'s node key failed: {e}")
        reg[name] = int(out["node-id"])
        reg_file.write_text(json.dumps(reg, indent=1))
    return reg


def stop(inv: Inventory) -> bool:
    d = folder(inv)
    try:
        st = json.loads((d / "state.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    if procs.alive(st["pid"]):
        procs.stop(st["pid"], grace=10)
    (d / "state.json").unlink(missing_ok=True)
    return True
