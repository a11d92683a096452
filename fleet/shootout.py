"""``ecufl fleet shootout``: a scenario's kernel shootout in the federated loop, against
``ecufl bench kernels`` run right before and right after it.

What is compared: samples trained per CPU-second of the training thread, the clock both sides use
(``ecufl.bench`` over its epochs, ``client/runner.py`` over each client's ``Kernel.train``), each
a median (the bench's over its repeats, the fleet's over client replies, see
``ecufl/report.py``). The bench brackets the fleet because the host's speed drifts within
minutes (``python -m ecufl.bench_drift``): a fleet figure is judged against both of its
neighbours, and against the bench's own spread between the two.

The fleet runs in simulation with one client at a time by default (every client has a core of its
own, as the bench's worker does); ``--engine deployment`` runs it on local SuperNodes whose
clients take turns to train (``ecufl fleet up --one-trainer``), or, with ``--all-at-once``, train
together and share the machine's cores.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ecufl import bench
from ecufl.fleet import launch, local
from ecufl.scenarios.schema import Scenario
from ecufl import report


def bench_rates(kernels: list[str], config: str, batch_size: int, lr: float, seed: int,
                repeats: int) -> dict[str, float | None]:
    """samples per CPU-second of each kernel's bench worker (None where it failed, with why on stderr)."""
    out: dict[str, float | None] = {}
    for k in kernels:
        row = bench.run_worker(dict(kernel=k, config=config, batch_size=batch_size, repeats=repeats, lr=lr,
                                    seed=seed, limit=None), timeout=900)
        out[k] = None if row.error else row.samples_per_cpu_second
    return out


def measure(sc: Scenario, results_base: Path, state: Path, *, engine: str = "simulation", repeats: int = 3,
            one_trainer: bool = True, echo: Callable[[str], None] | None = None) -> dict[str, Any]:
    if not sc.shootout:
        raise local.FleetError(f"scenario {sc.name!r} has no [shootout] table: nothing to compare kernel by kernel")
    sc = sc.model_copy(update={"engine": engine})
    names = sorted({k.partition(":")[0] for k in sc.shootout.kernels})
    config = "-".join(str(v) for v in sc.layers)

    def say(msg: str) -> None:
        if echo:
            echo(msg)

    def bracket() -> dict[str, float | None]:
        say(f"bench: {', '.join(names)} at {config}, batch {sc.batch_size}, {repeats} epoch(s) each")
        return bench_rates(names, config, sc.batch_size, sc.lr, sc.seed, repeats)

    before = bracket()
    if engine == "deployment":
        folder = state.parent / (state.name + "-shootout")
        local.down(folder)
        fleet = local.up(folder, sc.nodes, ["numpy:float32"], one_trainer=one_trainer)
        try:
            folders = launch.run_scenario(sc, results_base, fleet=fleet, echo=echo)
        finally:
            local.down(folder)
    else:
        folders = launch.run_scenario(sc, results_base, echo=echo, parallel=1)
    after = bracket()

    rows = []
    for folder in folders:
        for label, v in report.per_kernel(report.collect(folder)).items():
            name, _, dtype = label.partition(":")
            b0, b1 = before.get(name), after.get(name)
            fleet_rate = v["samples_per_cpu_second"]
            # the bench trains float32 where a kernel has it: other dtypes have no bench figure
            comparable = dtype in ("", "float32", "int8") and fleet_rate > 0
            rows.append({
                "kernel": label, "replies": v["replies"], "fleet_samples_per_cpu_second": fleet_rate,
                "bench_before": b0, "bench_after": b1,
                "fleet_over_bench_before": fleet_rate / b0 if comparable and b0 else None,
                "fleet_over_bench_after": fleet_rate / b1 if comparable and b1 else None,
            })
    top = folders[0].parent if len(folders) > 1 else folders[0]
    doc = {"scenario": sc.name, "engine": engine, "one_trainer": engine == "simulation" or one_trainer,
           "config": config, "batch_size": sc.batch_size,
           "bench_repeats": repeats, "results": str(top), "rows": rows}
    (top / "shootout.json").write_text(json.dumps(doc, indent=1))
    return doc


def table(doc: dict[str, Any]):
    from rich.table import Table

    def num(v: float | None, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    how = "one trainer at a time" if doc["one_trainer"] else "all clients at once"
    t = Table(title=f"{doc['scenario']} ({doc['engine']}, {how}) vs `ecufl bench kernels` at {doc['config']}, "
                    f"batch {doc['batch_size']}: samples per CPU-second of the training thread")
    for col in ("kernel", "replies", "bench before", "fleet (median)", "bench after", "fleet / before",
                "fleet / after"):
        t.add_column(col, justify="left" if col == "kernel" else "right")
    for r in doc["rows"]:
        t.add_row(r["kernel"], str(r["replies"]), num(r["bench_before"], ",.0f"),
                  num(r["fleet_samples_per_cpu_second"], ",.0f"), num(r["bench_after"], ",.0f"),
                  num(r["fleet_over_bench_before"], ".2f"), num(r["fleet_over_bench_after"], ".2f"))
    return t
