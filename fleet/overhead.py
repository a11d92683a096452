"""``ecufl fleet overhead``: what the fleet itself costs per round, per engine and fleet size.

Overhead of a round = its wall time at the server minus the train time of its slowest client
(``rounds.csv: overhead_seconds``): process start-up, message transport, polling sleeps, data
loading, (de)serialisation, aggregation and the server's evaluation. The workload is kept tiny
(``samples`` per node, numpy float32) so the figure is the machinery's, not the training's.
"""

from __future__ import annotations

import csv
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ecufl.fleet import launch, local
from ecufl.scenarios.schema import Scenario


def _rows(results: Path) -> list[dict[str, str]]:
    with open(results / "rounds.csv", newline="") as f:
        return [r for r in csv.DictReader(f) if int(r["round"]) > 0]


def measure(node_counts: list[int], engines: list[str], rounds: int, samples: int, state: Path,
            results_base: Path, echo: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    out = []
    for engine in engines:
        for n in node_counts:
            sc = Scenario(name=f"overhead-{engine}-{n}", engine=engine, nodes=n, rounds=rounds,
                          kernel="numpy:float32", train_limit=min(60_000, samples * n), round_timeout=600)
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


def table(rows: list[dict[str, Any]]):
    from rich.table import Table

    t = Table(title="fleet overhead per round = wall time - slowest client's train time")
    for col in ("engine", "nodes", "rounds", "round 1 (s)", "later rounds, median (s)", "wall median (s)",
                "slowest train median (s)"):
        t.add_column(col, justify="right")
    for r in rows:
        t.add_row(r["engine"], str(r["nodes"]), str(r["rounds"]), f"{r['overhead_round1_s']:.2f}",
                  f"{r['overhead_later_median_s']:.2f}", f"{r['wall_median_s']:.2f}",
                  f"{r['slowest_train_median_s']:.3f}")
    return t
