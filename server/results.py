"""The results folder of one run, and the checkpoint that lets a stopped run continue.

    run-config.json     the run's settings as the ServerApp resolved them (flat run-config keys)
    rounds.csv          one row per round (round 0 = the initial weights)
    clients.csv         one row per client per round: every RoundReport field + accepted/reason
    progress.jsonl      events as they happen (round start, each reply, round end, done/failed)
    checkpoint.npz      weights after the last finished round; meta holds the round and the run
    checkpoints/        the same after every round (round-001.npz, ...)
    final.npz           the final global weights (ecufl weight file)
    summary.json        final accuracy, rounds, seconds

Rows are appended and flushed as soon as a round ends, then the checkpoint is written; on resume
the CSV rows of rounds later than the checkpoint are dropped, so nothing is counted twice.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any

from ecufl.kernels import weights as weightfile
from ecufl.kernels import Params
from ecufl.proto import report_fields
from ecufl.server.virtual_clock import CLOCK_COLUMNS

ROUND_COLUMNS = [
    "round", "clients_asked", "clients_replied", "clients_accepted", "aggregate_seconds", "evaluate_seconds",
    "test_loss", "test_accuracy", "wall_seconds", "slowest_train_seconds", "overhead_seconds", "started_at",
    "virtual_seconds", "virtual_time",  # server/virtual_clock.py: the round's, and the run's so far
]
CLIENT_COLUMNS = (["round", "accepted", "reject_reason", "reply_seconds"] + report_fields()
                  + CLOCK_COLUMNS)  # virtual_clock.py: projected training, the rest of the client on its board, transfer


class Results:
    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "checkpoints").mkdir(exist_ok=True)

    # -- tables -----------------------------------------------------------------------------------
    def _append(self, name: str, columns: list[str], rows: list[dict[str, Any]]) -> None:
        path = self.dir / name
        new = not path.exists() or path.stat().st_size == 0
        with open(path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerows(rows)

    def add_round(self, row: dict[str, Any]) -> None:
        self._append("rounds.csv", ROUND_COLUMNS, [row])

    def add_clients(self, rows: list[dict[str, Any]]) -> None:
        self._append("clients.csv", CLIENT_COLUMNS, rows)

    def truncate_after(self, last_round: int) -> None:
        """Drop rows of rounds after ``last_round`` (a restart after a crash mid-write)."""
        for name in ("rounds.csv", "clients.csv"):
            path = self.dir / name
            if not path.exists():
                continue
            with open(path, newline="") as f:
                reader = csv.DictReader(f)
                columns = reader.fieldnames or []
                rows = [r for r in reader if int(r["round"]) <= last_round]
            with open(path, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=columns)
                w.writeheader()
                w.writerows(rows)

    # -- events -----------------------------------------------------------------------------------
    def event(self, kind: str, **fields: Any) -> None:
        with open(self.dir / "progress.jsonl", "a") as f:
            f.write(json.dumps({"event": kind, "time": time.time(), **fields}) + "\n")

    # -- weights ----------------------------------------------------------------------------------
    def checkpoint(self, params: Params, server_round: int, run: dict[str, Any]) -> None:
        meta = {"kind": "checkpoint", "round": server_round, "run": run, "kernel": "fedavg", "seed": run.get("seed")}
        weightfile.save(self.dir / "checkpoints" / f"round-{server_round:03d}.npz", params, **meta)
        weightfile.save(self.dir / "checkpoint.npz", params, **meta)  # atomic replace: never half a file

    def load_checkpoint(self) -> tuple[Params, int, dict[str, Any]]:
        params, meta = weightfile.load(self.dir / "checkpoint.npz")
        return params, int(meta["round"]), dict(meta.get("run", {}))

    def final(self, params: Params, run: dict[str, Any], summary: dict[str, Any]) -> None:
        weightfile.save(self.dir / "final.npz", params, kernel="fedavg", seed=run.get("seed"),
                        round=summary.get("rounds"), scenario=run.get("name"))
        (self.dir / "summary.json").write_text(json.dumps(summary, indent=1))
