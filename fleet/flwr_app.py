"""The Flower side of a fleet: the app ``flwr run`` builds a FAB from (the project itself), the
SuperLink connection in ``$FLWR_HOME/config.toml`` (flwr 1.42 reads federations from there, not
from pyproject.toml), and the ``flwr run`` / ``flwr ls`` / ``flwr stop`` calls.

The project's pyproject.toml is the Flower App: it names the installed components
(``ecufl.server.server_app:app``, ``ecufl.client.client_app:app``) and carries only itself and the
README in the FAB (``fab-include``); SuperLink and SuperNodes run with runtime dependency
installation off and import ecufl from their environment, so nothing is installed per run.
"""

from __future__ import annotations

import json
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import ecufl
from ecufl.fleet.procs import tool

class FlowerError(RuntimeError):
    pass


def app_dir() -> Path:
    """The Flower App: the project's own folder, whose pyproject.toml names the components and holds
    every run-config key (``flwr run .`` from the project root is the same app)."""
    root = Path(ecufl.__file__).resolve().parent.parent
    try:
        flwr = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["flwr"]["app"]
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        raise FlowerError(f"ecufl's Flower App (pyproject.toml with [tool.flwr.app]) is not in {root}: "
                          "run ecufl from its checkout (`./bootstrap run` installs it there)") from None
    if "components" not in flwr:
        raise FlowerError(f"{root / 'pyproject.toml'}: [tool.flwr.app.components] is missing")
    return root


def write_connection(flwr_home: Path, name: str, port: int) -> None:
    flwr_home.mkdir(parents=True, exist_ok=True)
    (flwr_home / "config.toml").write_text(
        f'[superlink]\ndefault = "{name}"\n\n[superlink.{name}]\naddress = "127.0.0.1:{port}"\ninsecure = true\n')


def _flwr(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 120) -> dict[str, Any]:
    proc = subprocess.run([tool("flwr"), *args, "--format", "json"], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)
    out = proc.stdout.strip()
    start = out.find("{")
    try:
        data = json.loads(out[start:]) if start >= 0 else {}
    except json.JSONDecodeError:
        data = {}
    if proc.returncode != 0 or not data.get("success", False):
        detail = data.get("error-message") or (proc.stderr.strip().splitlines() or [out or f"exit {proc.returncode}"])[-1]
        raise FlowerError(f"flwr {args[0]} failed: {detail}")
    return data


def run(app: Path, connection: str, env: dict[str, str], cwd: Path, run_config: dict[str, Any],
        federation_config: dict[str, Any] | None = None) -> int:
    """Submit a run; returns its run id."""
    def toml(v: Any) -> str:
        return json.dumps(v) if not isinstance(v, bool) else str(v).lower()

    args = ["run", str(app), connection, "--run-config", " ".join(f"{k}={toml(v)}" for k, v in run_config.items())]
    if federation_config:
        args += ["--federation-config", " ".join(f"{k}={toml(v)}" for k, v in federation_config.items())]
    return int(_flwr(args, env, cwd)["run-id"])


def status(run_id: int, connection: str, env: dict[str, str], cwd: Path) -> str:
    """'pending', 'starting', 'running', 'finished:completed', 'finished:failed', ... ('' if unknown)."""
    try:
        runs = _flwr(["ls", connection, "--run-id", str(run_id)], env, cwd, timeout=30).get("runs", [])
    except (FlowerError, subprocess.TimeoutExpired):
        return ""
    return runs[0].get("status", "") if runs else ""


def stop(run_id: int, connection: str, env: dict[str, str], cwd: Path) -> None:
    try:
        _flwr(["stop", str(run_id), connection], env, cwd, timeout=30)
    except (FlowerError, subprocess.TimeoutExpired):
        pass
