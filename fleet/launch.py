"""Run a scenario: on a local fleet of real processes (deployment) or in Flower's simulation engine.

Both engines run the very same ServerApp and ClientApp through ``flwr run``; only what stands
behind the SuperLink differs (SuperNode processes, or Ray actors in ``flower-superlink --simulation``).
The run is described to the server by ``spec.json`` in its results folder; while it runs, the
server's ``progress.jsonl`` is followed and printed (rounds, and clients as they reply).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ecufl.fleet import flwr_app, procs
from ecufl.fleet.local import CONNECTION, FleetError, FleetState, healthy
from ecufl.scenarios.schema import Scenario

SIM_CONNECTION = "ecufl-sim"
START_TIMEOUT = 300.0  # seconds from `flwr run` to the ServerApp's first event


def new_results_dir(base: Path, name: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = base / f"{name}-{stamp}"
    n = 1
    while path.exists():
        n += 1
        path = base / f"{name}-{stamp}-{n}"
    path.mkdir(parents=True)
    return path


def write_spec(results: Path, spec: dict[str, Any]) -> Path:
    results.mkdir(parents=True, exist_ok=True)
    path = results / "spec.json"
    path.write_text(json.dumps(spec, indent=1))
    return path


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


def _timeout(spec: dict[str, Any]) -> float:
    return 300 + spec["rounds"] * (spec["round_timeout"] + 60)


def run_deployment(state: FleetState, spec: dict[str, Any], results: Path, *, resume: bool = False,
                   echo: Callable[[str], None] | None = None,
                   on_started: Callable[[int], None] | None = None) -> dict[str, Any]:
    if len(state.nodes) != spec["nodes"]:
        raise FleetError(f"the scenario has {spec['nodes']} nodes but the fleet in {state.folder} has "
                         f"{len(state.nodes)}; `ecufl fleet down` and run again (or `fleet up --nodes {spec['nodes']}`)")
    spec_path = results / "spec.json" if resume else write_spec(results, spec)
    env, cwd = state.env(), state.path
    # the ServerApp runs in a process of Flower's with another working directory: an absolute path
    run_id = flwr_app.run(state.app, CONNECTION, env, cwd, {"run-spec": str(spec_path.resolve()), "resume": resume})
    with open(results / "flower-runs.txt", "a") as f:
        f.write(f"{run_id} deployment {state.folder}\n")
    if on_started:
        on_started(run_id)
    try:
        return follow(results, spec["rounds"], lambda: flwr_app.status(run_id, CONNECTION, env, cwd),
                      _timeout(spec), echo, str(state.path / "logs" / "superlink.log"))
    except BaseException:
        flwr_app.stop(run_id, CONNECTION, env, cwd)
        raise


def run_simulation(spec: dict[str, Any], results: Path, *, resume: bool = False,
                   echo: Callable[[str], None] | None = None, parallel: int | None = None) -> dict[str, Any]:
    """Start a simulation SuperLink of our own (own port, own FLWR_HOME under the results folder),
    run, stop it with all its children (Ray included)."""
    try:
        import ray  # noqa: F401
    except ImportError:
        raise FleetError("engine = 'simulation' needs Ray: pip install 'flwr[simulation]==1.42.0' "
                         "(or install ecufl with the test/simulation extra)") from None
    folder = results / "sim"
    folder.mkdir(parents=True, exist_ok=True)
    spec_path = results / "spec.json" if resume else write_spec(results, spec)
    port = procs.free_port()
    flwr_app.write_app(folder / "app")
    flwr_app.write_connection(folder / "flwr-home", SIM_CONNECTION, port)
    env = procs.flower_env(folder / "flwr-home")
    env["RAY_DEDUP_LOGS"] = "0"
    log = folder / "superlink.log"
    pid = procs.start([procs.tool("flower-superlink"), "--insecure", "--simulation", "--isolation", "subprocess",
                       "--host", "127.0.0.1", "--port", str(port), "--disable-runtime-dependency-installation"],
                      env, log, folder, tied=True)
    try:
        end = time.monotonic() + 120
        while not healthy(port):
            if not procs.alive(pid) or time.monotonic() > end:
                raise FleetError(f"the simulation SuperLink did not start; see {log}")
            time.sleep(0.3)
        cpus = os.cpu_count() or 1
        actors = max(1, min(parallel or cpus, spec["nodes"]))
        federation = {"num-supernodes": spec["nodes"], "client-resources-num-cpus": 1,
                      "init-args-num-cpus": actors}
        run_id = flwr_app.run(folder / "app", SIM_CONNECTION, env, folder,
                              {"run-spec": str(spec_path.resolve()), "resume": resume}, federation)
        with open(results / "flower-runs.txt", "a") as f:
            f.write(f"{run_id} simulation {folder}\n")
        return follow(results, spec["rounds"], lambda: flwr_app.status(run_id, SIM_CONNECTION, env, folder),
                      _timeout(spec) + 120, echo, str(log))
    finally:
        procs.stop(pid, grace=15)


def run_scenario(scenario: Scenario, results_base: Path, *, fleet: FleetState | None = None,
                 echo: Callable[[str], None] | None = None, parallel: int | None = None) -> list[Path]:
    """Run the scenario (once, or once per kernel of its shootout); returns the results folders."""
    from ecufl.scenarios.schema import usable

    kernels: list[str | None] = [None]
    if scenario.shootout:
        kernels = [k for k in scenario.shootout.kernels if usable(k.partition(":")[0])]
        missing = [k for k in scenario.shootout.kernels if k not in kernels]
        if missing and echo:
            echo(f"shootout: skipping {', '.join(missing)} (not built here; see `ecufl kernels`)")
        if not kernels:
            raise FleetError("shootout: none of its kernels is available here")
    top = new_results_dir(results_base, scenario.name)
    folders = []
    for kernel in kernels:
        spec = scenario.run_spec(kernel)
        results = top / spec["name"] if kernel else top
        if echo and kernel:
            echo(f"[bold]{spec['name']}[/]: every node on {spec['kernels'][0]}")
        if scenario.engine == "simulation":
            run_simulation(spec, results, echo=echo, parallel=parallel)
        else:
            if fleet is None:
                raise FleetError("engine = 'deployment' needs a fleet")
            run_deployment(fleet, spec, results, echo=echo)
        folders.append(results)
    return folders
