"""``ecufl fleet up/run/status/down/overhead/shootout`` and ``ecufl sim``: the command line of the fleet."""

from __future__ import annotations

import json
import signal
from collections import Counter
from pathlib import Path

import click

from ecufl import report
from ecufl.fleet import launch, local, overhead, shootout
from ecufl.runconfig import RunConfig, RunConfigError
from ecufl.scenarios.schema import ScenarioError, check_kernel, load
from ecufl.ui import Failure, console, err_console

STATE_OPTION = click.option("--state", "state_path", type=click.Path(file_okay=False),
                            help="Fleet state folder (default: .fleet, or $ECUFL_FLEET_DIR).")
RESULTS_OPTION = click.option("--results", "results_base", default="results", show_default=True,
                              type=click.Path(file_okay=False), help="Where run folders are created.")


def _console(as_json: bool = False):
    """The terminal console; with --json, progress goes to stderr so stdout stays one JSON document."""

    return err_console if as_json else console


def _scenario(path: str, **overrides):
    try:
        return load(path, **overrides)
    except ScenarioError as e:
        raise click.UsageError(str(e))


def _csv(value: str, flag: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise click.UsageError(f"{flag}: expected a comma-separated list, got {value!r}")
    return items


def _check_kernels(kernels: list[str], flag: str) -> None:
    for k in kernels:
        try:
            check_kernel(k)
        except ValueError as e:
            raise click.UsageError(f"{flag}: {e}")


def _fail(e: Exception):

    return Failure(str(e))


def _finish(folders: list[Path]) -> None:
    """Write the report of what ran and say where it is."""
    console = _console()
    target = folders[0].parent if len(folders) > 1 else folders[0]
    html = report.build(target)
    console.print(report.table(target))
    click.echo(f"results: {target}")  # plain echo: a path must not be wrapped by rich
    click.echo(f"report:  {html}")


def _terminate_cleanly() -> None:
    """SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C, so the processes this command started
    are stopped by its ``finally`` blocks instead of being left behind."""
    def handler(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


@click.group()
def fleet():
    """A local fleet of real Flower processes (SuperLink + SuperNodes on loopback)."""
    _terminate_cleanly()


@fleet.command("up")
@click.option("--nodes", default=4, show_default=True, type=int, help="Number of SuperNodes (ECUs).")
@click.option("--kernels", default="numpy", show_default=True,
              help="Comma-separated kernels, cycled over the nodes (name or name:dtype).")
@click.option("--profiles", default="host", show_default=True, help="Comma-separated device profiles, cycled.")
@click.option("--one-trainer", is_flag=True,
              help="Clients take turns to train, so each timing is a core of its own (as on separate ECUs).")
@click.option("--warm/--cold", default=True, show_default=True,
              help="warm: each node forks its ClientApps from a parent holding imports, data and kernel; "
                   "cold: Flower's plain path, a new flwr-clientapp process per message.")
@click.option("--cold-nodes", default="", help="Comma-separated partitions that run cold in a warm fleet.")
@click.option("--data-dirs", default="", type=str,
              help="Comma-separated MNIST folders, cycled over the nodes (each node's ECUFL_DATA).")
@STATE_OPTION
def fleet_up(nodes, kernels, profiles, one_trainer, warm, cold_nodes, data_dirs, state_path):
    """Start one flower-superlink and NODES flower-supernode processes."""
    if not 1 <= nodes <= 64:
        raise click.UsageError(f"--nodes must be in 1..64 on one machine, got {nodes} (use `ecufl sim` beyond)")
    kernel_list = _csv(kernels, "--kernels")
    _check_kernels(kernel_list, "--kernels")
    cold = set()
    for v in _csv(cold_nodes, "--cold-nodes") if cold_nodes.strip() else []:
        if not v.isdigit() or int(v) >= nodes:
            raise click.UsageError(f"--cold-nodes: expected partitions in 0..{nodes - 1}, got {v!r}")
        cold.add(int(v))
    dirs = _csv(data_dirs, "--data-dirs") if data_dirs.strip() else []
    for d in dirs:
        if not Path(d).is_dir():
            raise click.UsageError(f"--data-dirs: {d} is not a folder")
    folder = local.state_dir(state_path)
    try:
        state = local.up(folder, nodes, kernel_list, _csv(profiles, "--profiles"), one_trainer=one_trainer,
                         warm=warm, cold_nodes=cold, data_dirs=dirs or None)
    except local.FleetError as e:
        raise _fail(e)
    n_warm = sum(n.warm for n in state.nodes)
    _console().print(f"fleet up in {folder}: superlink on 127.0.0.1:{state.port}, "
                     f"{nodes} nodes ({', '.join(n.kernel for n in state.nodes)}), "
                     + (f"{n_warm} warm, {nodes - n_warm} cold" if n_warm and n_warm < nodes
                        else "warm" if n_warm else "cold (Flower's plain path)")
                     + (", one trainer at a time" if one_trainer else ""))
    rel = folder.relative_to(Path.cwd()) if folder.is_relative_to(Path.cwd()) else folder
    click.echo(f"Flower's own CLI reaches it as: FLWR_HOME={rel / 'flwr-home'} flwr run . {local.CONNECTION}")


@fleet.command("down")
@STATE_OPTION
def fleet_down(state_path):
    """Stop every process of the fleet (process groups, superexec children included)."""
    folder = local.state_dir(state_path)
    stopped = local.down(folder)
    _console().print(f"stopped {', '.join(stopped)}" if stopped else f"no fleet running in {folder}")


@fleet.command("status")
@STATE_OPTION
@click.option("--json", "as_json", is_flag=True)
def fleet_status(state_path, as_json):
    """Show the fleet's processes and whether they are alive."""
    st = local.status(local.state_dir(state_path))
    if as_json:
        click.echo(json.dumps(st))
        return
    console = _console()
    if "superlink" not in st:
        console.print(f"no fleet in {st['folder']}")
        return
    sl = st["superlink"]
    console.print(f"superlink pid {sl['pid']} on 127.0.0.1:{st['port']}: "
                  f"{'up' if sl['healthy'] else 'alive' if sl['alive'] else 'DOWN'}")
    for n in st["nodes"]:
        console.print(f"  node {n['partition']}: pid {n['pid']} port {n['port']} kernel {n['kernel']} "
                      f"profile {n['profile']}: {'alive' if n['alive'] else 'DOWN'}, "
                      + (f"warm (launcher pid {n['exec_pid']} {'alive' if n['launcher_alive'] else 'DOWN'}, "
                         f"parent pid {', '.join(map(str, n['parent_pids'])) or 'none'})" if n.get("warm") else "cold"))
        for line in n.get("parent_deaths", [])[-3:]:
            console.print(f"    {line}", markup=False)


@fleet.command("run")
@click.argument("scenario", required=False, type=click.Path(dir_okay=False))
@click.option("--resume", "resume_dir", type=click.Path(file_okay=False),
              help="Continue the run in this results folder from its last checkpoint.")
@click.option("--keep", is_flag=True, help="Leave a fleet this command started running afterwards.")
@STATE_OPTION
@RESULTS_OPTION
def fleet_run(scenario, resume_dir, keep, state_path, results_base):
    """Run SCENARIO on the local fleet (started to fit it if none is up) and write its report."""
    console = _console()
    folder = local.state_dir(state_path)
    if resume_dir:
        return _resume(Path(resume_dir), folder, keep)
    if not scenario:
        raise click.UsageError("give a SCENARIO file (or --resume RESULTS_DIR)")
    sc = _scenario(scenario)
    if sc.engine == "simulation":
        return _run_sim(sc, Path(results_base))
    started = False
    state = local.FleetState.load(folder)
    try:
        if state is None or not local.procs.alive(state.superlink_pid):
            kernels = sc.node_kernels() or ["numpy"]  # a|b stays as written: each node chooses
            console.print(f"starting a fleet of {sc.nodes} nodes in {folder}")
            state = local.up(folder, sc.nodes, kernels, sc.profiles or [sc.profile])
            started = True
        folders = launch.run_scenario(sc, Path(results_base), fleet=state, echo=console.print)
    except local.FleetError as e:
        raise _fail(e)
    finally:
        if started and not keep:
            local.down(folder)
    _finish(folders)


def _resume(results: Path, folder: Path, keep: bool) -> None:
    if not (results / "checkpoint.npz").exists():
        raise click.UsageError(f"--resume {results}: no checkpoint.npz to continue from")
    try:
        cfg = RunConfig.saved(results)
    except RunConfigError as e:
        raise click.UsageError(f"--resume {results}: {e}")
    started = False
    try:
        state = None
        if launch.engine_of(results) == "deployment":
            state = local.FleetState.load(folder)
            if state is None or not local.procs.alive(state.superlink_pid):
                state = local.up(folder, cfg.nodes, cfg.kernels or ["numpy"], cfg.profiles or None)
                started = True
        launch.resume(results, state, echo=_console().print)
    except local.FleetError as e:
        raise _fail(e)
    finally:
        if started and not keep:
            local.down(folder)
    _finish([results])


def _run_sim(sc, results_base: Path, parallel: int | None = None) -> None:
    try:
        folders = launch.run_scenario(sc, results_base, echo=_console().print, parallel=parallel)
    except local.FleetError as e:
        raise _fail(e)
    _finish(folders)


@fleet.command("overhead")
@click.option("--nodes", "node_counts", default="4,16", show_default=True, help="Fleet sizes to measure.")
@click.option("--engines", default=None,
              help="deployment and/or simulation [default: deployment,simulation; with --compare-flower: deployment].")
@click.option("--rounds", default=3, show_default=True, type=int)
@click.option("--samples", default=200, show_default=True, type=int, help="Training samples per node.")
@click.option("--compare-flower", is_flag=True,
              help="Per fleet size, back to back: a bare Flower app with sleeping clients (Flower's floor), "
                   "ecufl on cold nodes, ecufl on warm nodes; with --engines simulation: the bare app and "
                   "ecufl in Flower's simulation engine.")
@click.option("--sleep", default=0.5, show_default=True, type=click.FloatRange(min=0),
              help="--compare-flower: seconds the bare app's clients sleep (deployment; in simulation they do not).")
@click.option("--runs", default="flower,cold,warm", show_default=True,
              help="--compare-flower: which of the three runs to make.")
@STATE_OPTION
@RESULTS_OPTION
@click.option("--json", "as_json", is_flag=True)
def fleet_overhead(node_counts, engines, rounds, samples, compare_flower, sleep, runs, state_path, results_base,
                   as_json):
    """Measure the fleet's own overhead per round: wall time minus the slowest client's train time."""
    try:
        counts = [int(v) for v in _csv(node_counts, "--nodes")]
    except ValueError:
        raise click.UsageError(f"--nodes: expected comma-separated fleet sizes, got {node_counts!r}") from None
    if any(not 1 <= c <= 64 for c in counts):
        raise click.UsageError(f"--nodes: fleet sizes must be in 1..64, got {node_counts}")
    if rounds < 1:
        raise click.UsageError(f"--rounds must be >= 1, got {rounds}")
    engine_list = _csv(engines or ("deployment" if compare_flower else "deployment,simulation"), "--engines")
    for e in engine_list:
        if e not in ("deployment", "simulation"):
            raise click.UsageError(f"--engines: expected deployment and/or simulation, got {e!r}")
    run_list = _csv(runs, "--runs")
    for r in run_list:
        if r not in overhead.MODES:
            raise click.UsageError(f"--runs: expected some of {', '.join(overhead.MODES)}, got {r!r}")
    try:
        if compare_flower:
            rows = overhead.compare_flower(counts, rounds, samples, local.state_dir(state_path), Path(results_base),
                                           sleep=sleep, echo=_console(as_json).print, modes=tuple(run_list),
                                           engines=tuple(engine_list))
        else:
            rows = overhead.measure(counts, engine_list, rounds, samples, local.state_dir(state_path),
                                    Path(results_base), echo=_console(as_json).print)
    except local.FleetError as e:
        raise _fail(e)
    if as_json:
        click.echo(json.dumps(rows, indent=1))
    else:
        _console().print(overhead.compare_table(rows) if compare_flower else overhead.table(rows))


@fleet.command("shootout")
@click.argument("scenario", type=click.Path(dir_okay=False))
@click.option("--engine", type=click.Choice(["simulation", "deployment"]), default="simulation", show_default=True,
              help="simulation: one client at a time, each with a core of its own; deployment: local SuperNodes.")
@click.option("--repeats", default=3, show_default=True, type=click.IntRange(min=1),
              help="Epochs per kernel in each of the two bench runs (median).")
@click.option("--all-at-once", is_flag=True,
              help="deployment: clients train at the same time and share the cores (default: they take turns).")
@STATE_OPTION
@RESULTS_OPTION
@click.option("--json", "as_json", is_flag=True)
def fleet_shootout(scenario, engine, repeats, all_at_once, state_path, results_base, as_json):
    """Run SCENARIO's kernel shootout between two bench runs (ecufl bench kernels with the scenario's
    kernels and config) and compare samples per CPU-second."""
    _terminate_cleanly()
    sc = _scenario(scenario)
    try:
        doc = shootout.measure(sc, Path(results_base), local.state_dir(state_path), engine=engine, repeats=repeats,
                               one_trainer=not all_at_once, echo=_console(as_json).print)
    except local.FleetError as e:
        raise _fail(e)
    if as_json:
        click.echo(json.dumps(doc, indent=1))
    else:
        _console().print(shootout.table(doc))
        click.echo(f"results: {doc['results']}")


@click.command("sim")
@click.argument("scenario", type=click.Path(dir_okay=False))
@click.option("--nodes", type=int, help="Override the scenario's number of nodes.")
@click.option("--rounds", type=int, help="Override the scenario's number of rounds.")
@click.option("--parallel", type=click.IntRange(min=1), default=None,
              help="Clients trained at once (Ray actors); default: one per core. 1 gives every client a core "
                   "of its own, for timings that compare with the bench (ecufl bench kernels).")
@RESULTS_OPTION
def sim(scenario, nodes, rounds, parallel, results_base):
    """Run SCENARIO in Flower's simulation engine (Ray): the same apps, virtual SuperNodes."""
    _terminate_cleanly()
    sc = _scenario(scenario, engine="simulation", nodes=nodes, rounds=rounds)
    _run_sim(sc, Path(results_base), parallel)


@click.group("scenario")
def scenario_group():
    """Scenario files."""


@scenario_group.command("check")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
def scenario_check(files):
    """Validate scenario files; print what each would run."""
    for f in files:
        sc = _scenario(f)
        mix = ", ".join(f"{n}x {k}" for k, n in Counter(sc.node_kernels()).items()) or "each node its own"
        _console().print(f"{f}: ok: {sc.engine}, {sc.nodes} nodes, {sc.rounds} rounds, kernels {mix}"
                         + (f"; shootout of {', '.join(sc.shootout.kernels)}" if sc.shootout else ""))


@scenario_group.command("config")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--kernel", help="The run of this kernel, for a scenario with a [shootout].")
@click.option("--out", type=click.Path(dir_okay=False), help="Write the TOML here instead of printing it.")
def scenario_config(file, kernel, out):
    """Print FILE as Flower run config (TOML), for `flwr run . <federation> --run-config FILE.toml`."""
    sc = _scenario(file)
    if kernel is not None and (sc.shootout is None or kernel not in sc.shootout.kernels):
        raise click.UsageError(f"--kernel {kernel}: not one of {file}'s [shootout] kernels")
    flat = sc.run_config(kernel)
    text = "".join(f"{k} = {json.dumps(v) if not isinstance(v, bool) else str(v).lower()}\n"
                   for k, v in flat.items() if k not in ("run-dir", "resume"))
    if out:
        Path(out).write_text(text)
        click.echo(f"wrote {out}")
    else:
        click.echo(text, nl=False)
