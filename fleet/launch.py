"""Run a scenario: on a local fleet of real processes (deployment) or in Flower's simulation engine.

Both engines run the very same Flower App (the project's pyproject.toml) through ``flwr run``; only
what stands behind the SuperLink differs (SuperNode processes, or Ray actors in
``flower-superlink --simulation``). The scenario arrives as Flower's run config (flat keys,
``ecufl.runconfig``), with ``run-dir`` set to the run folder this launcher made; while the run goes
on, the server's ``progress.jsonl`` there is followed and printed (rounds, and clients as they reply).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ecufl.fleet import flwr_app, procs
from ecufl.fleet.local import CONNECTION, FleetError, FleetState, healthy
from ecufl.kernels import split_spec, usable
from ecufl.runconfig import RunConfig, RunConfigError, new_run_folder
from ecufl.scenarios.schema import Scenario

SIM_CONNECTION = "ecufl-sim"
START_TIMEOUT = 300.0  # seconds from `flwr run` to the ServerApp's first event


def _say(echo: Callable[[str], None] | None, rounds: int, ev: dict[str, Any]) -> None:
    if echo is None:
        return
    kind = ev["event"]
    if kind == "nodes":
        echo(f"  {ev['connected']}/{ev['wanted']} nodes connected")
    elif kind == "resumed":
        echo(f"  resumed after round {ev['round']}")
    elif kind == "round-start":
        echo(f"round {ev['round']}/{rounds}: {ev['asked']} clients asked")
    elif kind == "reply":
        echo(f"  reply from node {ev['node']} after {ev['seconds']:.1f} s")
    elif kind == "client" and not ev["accepted"]:
        echo(f"  [red]rejected[/] partition {ev['partition']} ({ev['kernel'] or '?'}, node {ev['node']}): {ev['reason']}")
    elif kind == "round-end":
        echo(f"round {ev['round']}/{rounds}: {ev['accepted']}/{ev['replied']} replies averaged, "
             f"test accuracy {ev['accuracy']:.4f}, {ev['wall_seconds']:.1f} s")


def follow(results: Path, rounds: int, status: Callable[[], str], timeout: float,
           echo: Callable[[str], None] | None, log_hint: str) -> dict[str, Any]:
    """Print progress events until the server says done (returns its summary) or fails (raises)."""
    path = results / "progress.jsonl"
    offset = path.stat().st_size if path.exists() else 0
    end = time.monotonic() + timeout
    # Flower gives a starting ServerApp 30 s to send its first heartbeat, else it starts another one;
    # on an overloaded machine that can repeat for ever, so say so instead of waiting out `timeout`.
    start_deadline = time.monotonic() + START_TIMEOUT
    started = False
    next_status = time.monotonic() + 5
    while True:
        if path.exists():
            with open(path) as f:
                f.seek(offset)
                chunk = f.read()
            complete = chunk[: chunk.rfind("\n") + 1]
            offset += len(complete.encode())
            for line in complete.splitlines():
                ev = json.loads(line)
                started = True
                if ev["event"] == "done":
                    return ev
                if ev["event"] == "failed":
                    raise FleetError(f"the server failed: {ev['error']} (see {log_hint})")
                _say(echo, rounds, ev)
        if time.monotonic() > next_status:
            next_status = time.monotonic() + 5
            state = status()
            if state.startswith("finished"):
                time.sleep(1.0)  # the last events may still be on their way to the file
                if path.exists() and '"event": "done"' in path.read_text():
                    continue
                raise FleetError(f"the Flower run ended ({state}) before the server finished; see {log_hint}")
        if time.monotonic() > end:
            raise FleetError(f"the run did not finish within {timeout:.0f} s; see {log_hint}")
        if not started and time.monotonic() > start_deadline:
            raise FleetError(f"the ServerApp did not start within {START_TIMEOUT:.0f} s (Flower restarts a "
                             "ServerApp that sends no heartbeat within 30 s of its start: is the machine "
                             f"overloaded?); see {log_hint}")
        time.sleep(0.3)


def _timeout(cfg: RunConfig) -> float:
    return 300 + cfg.rounds * (cfg.round_timeout + 60)


def _record(folder: Path, run_id: int, engine: str, where: Path | str) -> None:
    with open(folder / "flower-runs.txt", "a") as f:
        f.write(f"{run_id} {engine} {where}\n")


def engine_of(folder: Path) -> str:
    """The engine a run folder's last Flower run used (from flower-runs.txt; deployment if unknown)."""
    try:
        lines = (folder / "flower-runs.txt").read_text().split()
        return lines[-2] if len(lines) >= 2 and lines[-2] in ("simulation", "deployment") else "deployment"
    except OSError:
        return "deployment"


def prepare(cfg: RunConfig, folder: Path) -> RunConfig:
    """The run config to submit for ``folder`` (absolute: the ServerApp runs in another directory)."""
    folder.mkdir(parents=True, exist_ok=True)
    cfg.run_dir = str(folder.resolve())
    return cfg


def run_deployment(state: FleetState, cfg: RunConfig, folder: Path, *,
                   echo: Callable[[str], None] | None = None,
                   on_started: Callable[[int], None] | None = None,
                   app: Path | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Submit the run to the fleet's SuperLink with ``flwr run`` and follow it until it is done.
    ``app``: another Flower App using ecufl's ServerApp (e.g. its ClientApp wrapped in mods), with
    run-config keys of its own in ``extra``."""
    if cfg.nodes and len(state.nodes) != cfg.nodes:
        raise FleetError(f"the scenario has {cfg.nodes} nodes but the fleet in {state.folder} has "
                         f"{len(state.nodes)}; `ecufl fleet down` and run again (or `fleet up --nodes {cfg.nodes}`)")
    prepare(cfg, folder)
    env, cwd = state.env(), state.path
    try:
        run_id = flwr_app.run(app or flwr_app.app_dir(), CONNECTION, env, cwd, cfg.to_flat() | (extra or {}))
    except flwr_app.FlowerError as e:
        raise FleetError(str(e)) from None
    _record(folder, run_id, "deployment", state.folder)
    if on_started:
        on_started(run_id)
    try:
        return follow(folder, cfg.rounds, lambda: flwr_app.status(run_id, CONNECTION, env, cwd),
                      _timeout(cfg), echo, str(state.path / "logs" / "superlink.log"))
    except BaseException:
        flwr_app.stop(run_id, CONNECTION, env, cwd)
        raise


def run_simulation(cfg: RunConfig, folder: Path, *, echo: Callable[[str], None] | None = None,
                   parallel: int | None = None) -> dict[str, Any]:
    """Start a simulation SuperLink of our own (own port, own FLWR_HOME under the run folder),
    run, stop it with all its children (Ray included)."""
    need_ray()
    prepare(cfg, folder)
    if not cfg.nodes:
        raise FleetError("a simulation needs nodes > 0 (its number of virtual SuperNodes)")
    sim = folder / "sim"
    with sim_superlink(sim) as env:
        try:
            run_id = flwr_app.run(flwr_app.app_dir(), SIM_CONNECTION, env, sim, cfg.to_flat(),
                                  sim_federation(cfg.nodes, parallel))
        except flwr_app.FlowerError as e:
            raise FleetError(str(e)) from None
        _record(folder, run_id, "simulation", sim)
        return follow(folder, cfg.rounds, lambda: flwr_app.status(run_id, SIM_CONNECTION, env, sim),
                      _timeout(cfg) + 120, echo, str(sim / "superlink.log"))


def need_ray() -> None:
    try:
        import ray  # noqa: F401 - only to say which extra is missing, before any process starts
    except ImportError:
        raise FleetError("the simulation engine needs Ray, which `./bootstrap run` does not install: "
                         "`.venv/bin/pip install -e '.[simulation]'` (or `./bootstrap test`)") from None


def sim_federation(nodes: int, parallel: int | None = None) -> dict[str, Any]:
    """The federation config of ecufl's simulations: ``nodes`` virtual SuperNodes, one Ray actor
    per core (or ``parallel``), each client on one CPU."""
    actors = max(1, min(parallel or os.cpu_count() or 1, nodes))
    return {"num-supernodes": nodes, "client-resources-num-cpus": 1, "init-args-num-cpus": actors}


@contextmanager
def sim_superlink(sim: Path) -> Iterator[dict[str, str]]:
    """A simulation SuperLink of our own in ``sim`` (own port, FLWR_HOME ``sim/flwr-home`` naming it
    ``SIM_CONNECTION``, log ``sim/superlink.log``); yields the environment of the ``flwr`` calls and
    stops it with all its children (Ray included) at the end."""
    need_ray()
    sim.mkdir(parents=True, exist_ok=True)
    port = procs.free_port()
    flwr_app.write_connection(sim / "flwr-home", SIM_CONNECTION, port)
    env = procs.flower_env(sim / "flwr-home")
    env["RAY_DEDUP_LOGS"] = "0"
    log = sim / "superlink.log"
    pid = procs.start([procs.tool("flower-superlink"), "--insecure", "--simulation", "--isolation", "subprocess",
                       "--host", "127.0.0.1", "--port", str(port), "--disable-runtime-dependency-installation"],
                      env, log, sim, tied=True)
    try:
        end = time.monotonic() + 120
        while not healthy(port):
            if not procs.alive(pid) or time.monotonic() > end:
                raise FleetError(f"the simulation SuperLink did not start; see {log}")
            time.sleep(0.3)
        yield env
    finally:
        procs.stop(pid, grace=15)


def resume(folder: Path, fleet: FleetState | None, *, echo: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Continue the run in ``folder`` from its last checkpoint, with its saved settings, on the
    engine it ran on (deployment needs ``fleet``)."""
    try:
        cfg = RunConfig.saved(folder)
    except RunConfigError as e:
        raise FleetError(str(e)) from None
    cfg.resume = True
    if engine_of(folder) == "simulation":
        return run_simulation(cfg, folder, echo=echo)
    if fleet is None:
        raise FleetError("resuming a deployment run needs a fleet")
    return run_deployment(fleet, cfg, folder, echo=echo)


def run_scenario(scenario: Scenario, results_base: Path, *, fleet: FleetState | None = None,
                 echo: Callable[[str], None] | None = None, parallel: int | None = None) -> list[Path]:
    """Run the scenario (once, or once per kernel of its shootout); returns the run folders."""
    kernels: list[str | None] = [None]
    if scenario.shootout:
        kernels = [k for k in scenario.shootout.kernels if usable(split_spec(k)[0])]
        missing = [k for k in scenario.shootout.kernels if k not in kernels]
        if missing and echo:
            echo(f"shootout: skipping {', '.join(missing)} (not built here; see `ecufl kernels`)")
        if not kernels:
            raise FleetError("shootout: none of its kernels is available here")
    top = new_run_folder(results_base.resolve(), scenario.name)
    folders = []
    for kernel in kernels:
        cfg = scenario.config(kernel)
        folder = top / cfg.name if kernel else top
        if echo and kernel:
            echo(f"[bold]{cfg.name}[/]: every node on {kernel}")
        if scenario.engine == "simulation":
            run_simulation(cfg, folder, echo=echo, parallel=parallel)
        else:
            if fleet is None:
                raise FleetError("engine = 'deployment' needs a fleet")
            run_deployment(fleet, cfg, folder, echo=echo)
        folders.append(folder)
    return folders
