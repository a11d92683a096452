"""``ecufl fleet overhead``: what the fleet itself costs per round, per engine and fleet size.

Overhead of a round = its wall time at the server minus the train time of its slowest client
(``rounds.csv: overhead_seconds``): process start-up, message transport, polling sleeps, data
loading, (de)serialisation, aggregation and the server's evaluation. The workload is kept tiny
(``samples`` per node, numpy float32) so the figure is the machinery's, not the training's.

``--compare-flower`` measures, back to back for each fleet size, three deployments on fresh
fleets of the same size: Flower's floor (``bare_app``: a bare Flower app with ecufl's message
sizes whose ClientApps sleep ``sleep`` seconds, on cold nodes, collecting replies with Flower's
own ``send_and_receive``), ecufl on cold nodes (Flower's plain path: a new ``flwr-clientapp``
per message) and ecufl on warm nodes (``ecufl.fleet.warm``). For each: overhead per round (round
1 and the median of later rounds), the ClientApps' start-up, data and setup seconds (medians over
the replies of later rounds) and the peak RSS of a node's whole client stack (SuperNode + its
SuperExec or warm launcher + the ClientApp; a warm node's forked ClientApps share the parent's
pages, so the parent and its children count once, as the larger of the two peaks).
With ``--engines simulation`` (or ``deployment,simulation``) it also runs, per fleet size, the bare
app and ecufl in Flower's simulation engine, each on a simulation SuperLink of its own with the
same federation (``launch.sim_federation``): Flower's floor there is its in-memory grid and Ray.
"""

from __future__ import annotations

import csv
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.table import Table

from ecufl.fleet import flwr_app, launch, local, procs
from ecufl.runconfig import new_run_folder
from ecufl.scenarios.schema import Scenario

MODES = ("flower", "cold", "warm")
BARE_PYPROJECT = """\
# Written by ecufl (fleet/overhead.py): Flower's floor for `ecufl fleet overhead --compare-flower`.
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "ecufl-bare-flower"
version = "1.0.0"
description = "A bare Flower app with ecufl's message sizes whose clients only sleep"
dependencies = []

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "ecufl"

[tool.flwr.app.components]
serverapp = "ecufl.fleet.bare_app:server"
clientapp = "ecufl.fleet.bare_app:client"

[tool.flwr.app.config]
num-server-rounds = 3
nodes = 4
layers = "784,30,10"
sleep = 0.5
out = ""
connect-timeout = 300.0
"""


def write_bare_app(folder: Path) -> Path:
    """The Flower App folder of ``ecufl.fleet.bare_app`` (imported only by Flower's processes)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pyproject.toml").write_text(BARE_PYPROJECT)
    return folder


MIB = 1024 * 1024


def _rows(results: Path) -> list[dict[str, str]]:
    with open(results / "rounds.csv", newline="") as f:
        return [r for r in csv.DictReader(f) if int(r["round"]) > 0]


def _clients(results: Path) -> list[dict[str, str]]:
    with open(results / "clients.csv", newline="") as f:
        return list(csv.DictReader(f))


def measure(node_counts: list[int], engines: list[str], rounds: int, samples: int, state: Path,
            results_base: Path, echo: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    out = []
    for engine in engines:
        for n in node_counts:
            sc = _scenario(f"overhead-{engine}-{n}", engine, n, rounds, samples)
            if echo:
                echo(f"[bold]{engine}, {n} nodes[/]")
            if engine == "deployment":
                folder = state.parent / (state.name + "-overhead")
                local.down(folder)
                fleet = local.up(folder, n, ["numpy:float32"])
                try:
                    (results,) = launch.run_scenario(sc, results_base, fleet=fleet, echo=echo)
                finally:
                    local.down(folder)
            else:
                (results,) = launch.run_scenario(sc, results_base, echo=echo)
            rows = _rows(results)
            over = [float(r["overhead_seconds"]) for r in rows]
            out.append({
                "engine": engine, "nodes": n, "rounds": len(rows), "samples_per_node": samples,
                "overhead_median_s": statistics.median(over), "overhead_round1_s": over[0],
                "overhead_later_median_s": statistics.median(over[1:]) if len(over) > 1 else over[0],
                "wall_median_s": statistics.median(float(r["wall_seconds"]) for r in rows),
                "slowest_train_median_s": statistics.median(float(r["slowest_train_seconds"]) for r in rows),
                "results": str(results),
            })
    return out


def _scenario(name: str, engine: str, n: int, rounds: int, samples: int) -> Scenario:
    return Scenario(name=name, engine=engine, nodes=n, rounds=rounds, kernel="numpy:float32",
                    train_limit=min(60_000, samples * n), round_timeout=600)


def table(rows: list[dict[str, Any]]) -> Table:
    t = Table(title="fleet overhead per round = wall time - slowest client's train time")
    for col in ("engine", "nodes", "rounds", "round 1 (s)", "later rounds, median (s)", "wall median (s)",
                "slowest train median (s)"):
        t.add_column(col, justify="right")
    for r in rows:
        t.add_row(r["engine"], str(r["nodes"]), str(r["rounds"]), f"{r['overhead_round1_s']:.2f}",
                  f"{r['overhead_later_median_s']:.2f}", f"{r['wall_median_s']:.2f}",
                  f"{r['slowest_train_median_s']:.3f}")
    return t


# --- --compare-flower ---------------------------------------------------------------------------
def _hwm(pid: int) -> int:
    """Peak resident memory (VmHWM) of a live process, bytes (0 if gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _stack_peaks(state: local.FleetState) -> dict[int, dict[str, int]]:
    """Per partition: peak RSS of the SuperNode and of its long-lived helpers, read before `down`.
    cold: ``exec`` = the SuperNode's flower-superexec; warm: ``exec`` = the launcher, ``parent`` =
    the warm parent (ClientApps still running are not counted here: they report their own peak)."""
    out = {}
    for node in state.nodes:
        kids = procs.descendants(node.pid)
        peaks = {"supernode": _hwm(node.pid), "exec": max((_hwm(p) for p in kids), default=0), "parent": 0}
        if node.warm and node.exec_pid:
            peaks["exec"] = _hwm(node.exec_pid)
            parents = [p for p in procs.descendants(node.exec_pid) if local._ppid(p) == node.exec_pid]
            peaks["parent"] = max((_hwm(p) for p in parents), default=0)
        out[node.partition] = peaks
    return out


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _summary(mode: str, n: int, walls: list[float], trains: list[float], clients: list[list[dict[str, float]]],
             peaks: dict[int, dict[str, int]], results: str) -> dict[str, Any]:
    """clients: per round, per reply: startup, data, setup, peak_rss, partition."""
    over = [w - t for w, t in zip(walls, trains)]
    later = [c for rnd in clients[1:] for c in rnd] or [c for rnd in clients for c in rnd]
    per_node = []
    for part, p in peaks.items():
        app_peak = max((c["peak_rss"] for rnd in clients for c in rnd if c["partition"] == part), default=0)
        per_node.append(p["supernode"] + p["exec"] + max(app_peak, p["parent"]))
    return {
        "mode": mode, "nodes": n, "rounds": len(walls),
        "overhead_round1_s": over[0] if over else float("nan"),
        "overhead_later_median_s": _median(over[1:]) if len(over) > 1 else (over[0] if over else float("nan")),
        "wall_later_median_s": _median(walls[1:]) if len(walls) > 1 else (walls[0] if walls else float("nan")),
        "startup_round1_median_s": _median([c["startup"] for c in clients[0]]) if clients else float("nan"),
        "startup_later_median_s": _median([c["startup"] for c in later]),
        "data_later_median_s": _median([c["data"] for c in later]),
        "setup_later_median_s": _median([c["setup"] for c in later]),
        "message_wait_later_median_s": _median([c["message_wait"] for c in later if "message_wait" in c]),
        "replies": sum(len(r) for r in clients), "asked": n * len(walls),
        "node_peak_rss_mib_max": max(per_node, default=0) / MIB,
        "node_peak_rss_mib_median": _median(per_node) / MIB,
        "results": results,
    }


def _run_bare(state: local.FleetState, n: int, rounds: int, sleep: float, layers: str, folder: Path,
              echo: Callable[[str], None] | None) -> tuple[list[float], list[float], list[list[dict[str, float]]]]:
    return _bare_run(local.CONNECTION, state.env(), state.path, n, rounds, sleep, layers, folder, echo,
                     lambda: _why(state), str(state.path / "logs"))


def _bare_run(connection: str, env: dict[str, str], cwd: Path, n: int, rounds: int, sleep: float, layers: str,
              folder: Path, echo: Callable[[str], None] | None, why: Callable[[], str], logs: str,
              federation: dict[str, Any] | None = None
              ) -> tuple[list[float], list[float], list[list[dict[str, float]]]]:
    """Submit the bare Flower app to the SuperLink of ``connection`` (a fleet's, or a simulation
    SuperLink with ``federation``) and read its rounds."""
    folder.mkdir(parents=True, exist_ok=True)
    app = write_bare_app(cwd / "bare-app")
    out = (folder / "bare-rounds.jsonl").resolve()
    try:
        run_id = flwr_app.run(app, connection, env, cwd, {"num-server-rounds": rounds, "nodes": n, "layers": layers,
                                                          "sleep": sleep, "out": str(out)}, federation)
    except flwr_app.FlowerError as e:
        raise local.FleetError(str(e)) from None
    end = time.monotonic() + 300 + rounds * 660
    seen = 0
    try:
        while True:
            lines = out.read_text().splitlines() if out.exists() else []
            for line in lines[seen:]:
                ev = json.loads(line)
                if echo and "round" in ev:
                    echo(f"  round {ev['round']}/{rounds}: {ev['replied']}/{ev['asked']} replies, {ev['wall_seconds']:.1f} s")
            seen = len(lines)
            if lines and json.loads(lines[-1]).get("done"):
                break
            if time.monotonic() > end:
                raise local.FleetError(f"the bare Flower app did not finish in time; see {logs}")
            status = flwr_app.status(run_id, connection, env, cwd)
            if status.startswith("finished") and not (out.exists() and '"done"' in out.read_text()):
                time.sleep(1.0)
                if not (out.exists() and '"done"' in out.read_text()):
                    raise local.FleetError(f"the bare Flower app ended ({status}{why()}); see {logs}")
            time.sleep(1.0)
    except BaseException:
        flwr_app.stop(run_id, connection, env, cwd)
        raise
    events = [json.loads(line) for line in out.read_text().splitlines() if '"round"' in line]
    walls, trains, clients = [], [], []
    for ev in events:
        walls.append(ev["wall_seconds"])
        trains.append(max((c["sleep-seconds"] for c in ev["clients"]), default=0.0))
        # the bare replies name no partition (-1): each node's stack is counted with the largest ClientApp
        clients.append([{"startup": c["startup-seconds"], "data": 0.0, "setup": 0.0, "peak_rss": c["peak-rss-bytes"],
                         "partition": -1} for c in ev["clients"]])
    return walls, trains, clients


def _why(state: local.FleetState) -> str:
    """Flower's reason for a failed ServerApp, from the SuperLink's log (one line, or "")."""
    try:
        text = (state.path / "logs" / "superlink.log").read_text(errors="replace")
    except OSError:
        return ""
    mark = "ServerApp failed with exception: "
    at = text.rfind(mark)
    return f": {text[at + len(mark):].splitlines()[0][:160]}" if at >= 0 else ""


def _ecufl_rounds(results: Path) -> tuple[list[float], list[float], list[list[dict[str, float]]]]:
    rows = _rows(results)
    by_round: dict[int, list[dict[str, float]]] = {int(r["round"]): [] for r in rows}
    for c in _clients(results):
        if c.get("accepted") == "1" and int(c["round"]) in by_round:
            by_round[int(c["round"])].append({
                "startup": float(c["startup_seconds"] or 0), "data": float(c["data_seconds"] or 0),
                "setup": float(c["setup_seconds"] or 0), "peak_rss": float(c["peak_rss_bytes"] or 0),
                "partition": int(c["partition_id"]), "pid": int(c["pid"] or 0)})
    return ([float(r["wall_seconds"]) for r in rows], [float(r["slowest_train_seconds"]) for r in rows],
            [by_round[k] for k in sorted(by_round)])


def _message_waits(state: local.FleetState, clients: list[list[dict[str, float]]]) -> None:
    """Warm nodes: how much of each forked ClientApp's start-up was waiting for its SuperNode to
    hold the message (Flower's SuperNode makes the task before it pulls the message's objects from
    the SuperLink; a process that starts in seconds never sees that wait). From the node logs."""
    times = {}
    for node in state.nodes:
        try:
            lines = Path(node.warm_log).read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            if local.WARM_TIMING in line:
                t = json.loads(line.split(local.WARM_TIMING, 1)[1])
                if "message_at" in t:
                    times[t["pid"]] = t["message_at"] - t["forked_at"]
    for rnd in clients:
        for c in rnd:
            if c.get("pid") in times:
                c["message_wait"] = times[c["pid"]]


def compare_simulation(n: int, rounds: int, samples: int, top: Path, sleep: float,
                       echo: Callable[[str], None] | None, modes: tuple[str, ...]) -> list[dict[str, Any]]:
    """In Flower's simulation engine, back to back: the bare Flower app (Flower's own
    ``send_and_receive``) and ecufl, each on a simulation SuperLink of its own with the same
    federation (``n`` virtual SuperNodes, one Ray actor per core). The bare clients do not sleep
    here (``sleep`` is for deployment): the clients take turns on the actors, so every sleep but the
    slowest client's would count as overhead; ecufl's clients train for milliseconds."""
    sleep = 0.0
    out = []
    for mode in ("flower", "ecufl"):
        if mode == "flower" and "flower" not in modes or mode == "ecufl" and not {"cold", "warm"} & set(modes):
            continue
        if echo:
            echo(f"[bold]{n} nodes, simulation: {'bare Flower app, sleeping clients' if mode == 'flower' else 'ecufl'}[/]")
        try:
            if mode == "flower":
                where = top / f"sim-flower-{n}"
                with launch.sim_superlink(where / "sim") as env:
                    walls, trains, clients = _bare_run(
                        launch.SIM_CONNECTION, env, where / "sim", n, rounds, sleep, "784,30,10", where, echo,
                        lambda: "", str(where / "sim" / "superlink.log"), launch.sim_federation(n))
            else:
                (where,) = launch.run_scenario(_scenario(f"sim-{n}", "simulation", n, rounds, samples), top, echo=echo)
                walls, trains, clients = _ecufl_rounds(where)
        except local.FleetError as e:
            if echo:
                echo(f"  [red]failed[/]: {e}")
            out.append({"engine": "simulation", "mode": mode, "nodes": n, "error": str(e).splitlines()[0]})
            continue
        out.append(_summary(mode, n, walls, trains, clients, {}, str(where)) | {"engine": "simulation"})
    return out


def compare_flower(node_counts: list[int], rounds: int, samples: int, state: Path, results_base: Path,
                   sleep: float = 0.5, echo: Callable[[str], None] | None = None,
                   modes: tuple[str, ...] = MODES, engines: tuple[str, ...] = ("deployment",)) -> list[dict[str, Any]]:
    """Flower's floor, ecufl cold, ecufl warm (or some of them): back to back per fleet size, each on
    a fresh fleet; with ``simulation`` in ``engines``, also the bare app and ecufl in Flower's
    simulation engine (``compare_simulation``)."""
    folder = state.parent / (state.name + "-overhead")
    top = new_run_folder(results_base.resolve(), "overhead-compare")
    out = []
    for n in node_counts:
        if "simulation" in engines:
            out += compare_simulation(n, rounds, samples, top, sleep, echo, modes)
        if "deployment" not in engines:
            continue
        for mode in [m for m in MODES if m in modes]:
            if echo:
                echo(f"[bold]{n} nodes: {'bare Flower app, sleeping clients' if mode == 'flower' else 'ecufl ' + mode}[/]")
            local.down(folder)
            try:
                fleet = local.up(folder, n, ["numpy:float32"], warm=mode == "warm")
                try:
                    if mode == "flower":
                        where = top / f"flower-{n}"
                        walls, trains, clients = _run_bare(fleet, n, rounds, sleep, "784,30,10", where, echo)
                        top_app = max((c["peak_rss"] for rnd in clients for c in rnd), default=0)
                        peaks = _stack_peaks(fleet)
                        for p in peaks.values():
                            p["parent"] = max(p["parent"], top_app)
                    else:
                        (where,) = launch.run_scenario(_scenario(f"{mode}-{n}", "deployment", n, rounds, samples), top,
                                                       fleet=fleet, echo=echo)
                        walls, trains, clients = _ecufl_rounds(where)
                        peaks = _stack_peaks(fleet)
                        _message_waits(fleet, clients)
                finally:
                    local.down(folder)
            except local.FleetError as e:  # a run that fails is a row of the table, the others still run
                if echo:
                    echo(f"  [red]failed[/]: {e}")
                out.append({"engine": "deployment", "mode": mode, "nodes": n, "error": str(e).splitlines()[0]})
                continue
            out.append(_summary(mode, n, walls, trains, clients, peaks, str(where)) | {"engine": "deployment"})
    (top / "overhead.json").write_text(json.dumps(out, indent=1))
    return out


def compare_table(rows: list[dict[str, Any]]) -> Table:
    t = Table(title="overhead per round (wall - slowest client's train or sleep); start-up: round 1 / later "
                    "rounds, client medians")
    for col in ("nodes", "run", "replies", "round 1 (s)", "later rounds (s)", "vs Flower", "start-up (s)",
                "data (s)", "setup (s)", "node peak RSS (MiB)"):
        t.add_column(col, justify="right")
    def key(r: dict[str, Any]) -> tuple[str, int]:
        return r.get("engine", "deployment"), r["nodes"]

    floor = {key(r): r["overhead_later_median_s"] for r in rows if r["mode"] == "flower" and "error" not in r}
    names = {"flower": "bare Flower, clients sleep", "cold": "ecufl cold", "warm": "ecufl warm", "ecufl": "ecufl"}
    for r in rows:
        name = (("bare Flower, clients return at once" if r["mode"] == "flower" else names[r["mode"]])
                + " (simulation)") if r.get("engine") == "simulation" else names[r["mode"]]
        if "error" in r:
            t.add_row(str(r["nodes"]), name, "failed", r["error"][:120], *[""] * 6)
            continue
        ratio = r["overhead_later_median_s"] / floor[key(r)] if floor.get(key(r)) else float("nan")
        dash = r["mode"] == "flower"
        t.add_row(str(r["nodes"]), name, f"{r['replies']}/{r['asked']}", f"{r['overhead_round1_s']:.2f}",
                  f"{r['overhead_later_median_s']:.2f}", f"{ratio:.2f}",
                  f"{r['startup_round1_median_s']:.2f} / {r['startup_later_median_s']:.3f}"
                  + (f" ({r['message_wait_later_median_s']:.3f} waiting for the message)"
                     if r["message_wait_later_median_s"] == r["message_wait_later_median_s"] else ""),
                  "-" if dash else f"{r['data_later_median_s']:.3f}", "-" if dash else f"{r['setup_later_median_s']:.4f}",
                  f"{r['node_peak_rss_mib_median']:.0f} (max {r['node_peak_rss_mib_max']:.0f})"
                  if r["node_peak_rss_mib_max"] else "-")
    return t
