"""Per-board configuration: the rendered unit, its environment file, certificates and keys.

What a board gets in ROOT/etc (everything else on the board is the checksummed bundle):
  supernode mode: ecufl-supernode.service, supernode.env, ca.pem, node.key (0600)
  agent mode:     ecufl-agent.service, agent.conf, ca.pem, agent.pem, agent.key (0600)
Secure by default: without ``insecure`` the SuperNode dials the SuperLink over TLS (ca.pem) and
authenticates with its node key; the agent serves TLS and demands a client certificate from the CA.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from .certs import PKI
from .inventory import SAFE_RE, Inventory
from .remote import SERVICE, BoardConfig

UNITS = Path(__file__).resolve().parent / "units"
AGENT_CREDENTIAL = "/run/credentials/ecufl-agent.service/agent.key"  # LoadCredential= of the agent unit


def _env_line(k: str, v: str) -> str:
    # KEY='value': read the same by systemd's EnvironmentFile= and by sh (the supervisor sources it).
    return f"{k}={shlex.quote(v)}"


def render_unit(inv: Inventory, name: str) -> str:
    b = inv.boards[name]
    p = inv.profiles[b.profile]
    if not SAFE_RE.match(str(b.install_root)):  # the inventory refuses these; never paste one into a unit
        raise ValueError(f"boards.{name}.install_root: {str(b.install_root)!r} is not a plain path")
    text = (UNITS / f"{SERVICE[b.mode]}.service").read_text()
    for k, v in {"@ROOT@": str(b.install_root), "@MEMORY_MAX_MB@": str(p.memory_max_mb),
                 "@CPU_QUOTA@": str(p.cpu_quota_percent), "@NICE@": str(p.nice)}.items():
        text = text.replace(k, v)
    return text


def node_config(inv: Inventory, name: str, kernel: str | None = None) -> str:
    b = inv.boards[name]
    idx = list(inv.boards).index(name)
    kernel = kernel or (f"remote:{name}" if b.mode == "agent" else "numpy")
    return f'partition-id={idx} num-partitions={len(inv.boards)} profile="{b.profile}" kernel="{kernel}"'


def board_config(inv: Inventory, name: str, *, insecure: bool, kernel: str | None = None) -> BoardConfig:
    b = inv.boards[name]
    R = str(b.install_root)
    pki = PKI(inv.fleet.state_dir)
    files: dict[str, tuple[str, int]] = {}
    if b.mode == "supernode":
        if insecure:
            tls = "--insecure"
        else:
            files["ca.pem"] = (pki.ensure_ca().read_text(), 0o644)
            key, _ = pki.node_key(name)
            files["node.key"] = (key.read_text(), 0o600)
            tls = f"--root-certificates {R}/etc/ca.pem --auth-supernode-private-key {R}/etc/node.key"
        env = {
            "ECUFL_PYTHON": b.python,
            "PYTHONPATH": ":".join([f"{R}/current/lib"] + [str(p) for p in b.python_path]),
            # the release holds exactly its manifest (remote.verify): no bytecode is written into it
            "PYTHONDONTWRITEBYTECODE": "1",
            "PATH": f"{R}/current/bin:/usr/local/bin:/usr/bin:/bin",
            "ECUFL_DATA": str(b.data),
            "FLWR_HOME": f"{R}/run/flwr",
            "ECUFL_SUPERLINK": inv.fleet.superlink,
            "ECUFL_SUPERNODE_PORT": str(b.supernode_port),
            "ECUFL_NODE_CONFIG": node_config(inv, name, kernel),
            "ECUFL_TLS_ARGS": tls,
        }
        files["supernode.env"] = ("\n".join(_env_line(k, v) for k, v in env.items()) + "\n", 0o600)
    else:
        ca = pki.ensure_ca()
        pem, key = pki.agent_server(name, b.host)
        files["ca.pem"] = (ca.read_text(), 0o644)
        files["agent.pem"] = (pem.read_text(), 0o644)
        files["agent.key"] = (key.read_text(), 0o600)
        files["agent.conf"] = ("\n".join([
            f"listen = {b.host}:{b.agent_port}",
            f"ca = {R}/etc/ca.pem",
            f"cert = {R}/etc/agent.pem",
            # systemd hands the key to the unprivileged service as a credential (units/ecufl-agent.service)
            f"key = {AGENT_CREDENTIAL if b.init == 'systemd' else R + '/etc/agent.key'}",
            f"data = {b.data}",
            f"node = {name}",
        ]) + "\n", 0o644)  # paths only; readable by the agent's own (dynamic) user
    return BoardConfig(files=files, unit=render_unit(inv, name))
