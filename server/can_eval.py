"""The server's side of a CAN run (run config ``workload = "can"``, ``ecufl.can.fleetrun``).

Every round the global autoencoder is scored on the unseen vehicles (each calibrates it on its own
held-out normal drive, then scores its drive with attacks): rounds.csv's ``test_loss`` is the mean
reconstruction cost 0.5 ||a - x||^2 of the held-out normal windows, ``test_accuracy`` the share of
the test windows called right (alarm on an attack window, none on a normal one). After the last
round the run folder gets

    can-metrics.json    per set-up (federated: the fleet's global model; local-only and centralised:
                        trained by this server on the same vehicles' windows, ``can-baselines``)
                        and attack family: precision, recall, F1, latency, detected/attacks; false
                        alarms per hour of normal driving, thresholds, the settings
                        ``fleet_calibrated``: the same three calibrated once on the training
                        vehicles' windows (fleetrun.score), with ``can-baselines``
    can-table.md        the same as markdown tables (F1, latency, false alarms per hour)

and summary.json the federated false alarms per hour and F1 per family.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from ecufl.can import fleetrun
from ecufl.kernels import Params
from ecufl.runconfig import RunConfig


class Evaluator:
    def __init__(self, spec: RunConfig, folder: Path) -> None:
        fleetrun.check_layers(spec.layers, spec.can_window)  # LayersError: one line
        self.spec, self.folder = spec, folder
        t0 = time.perf_counter()
        self.vehicles = fleetrun.test_vehicles(spec.seed, spec.can_test_vehicles, spec.can_test_seconds,
                                               spec.can_window)
        self.data_seconds = time.perf_counter() - t0

    def shard_sizes(self, partitions: int) -> list[int]:
        """Windows per vehicle (features.Featurizer's count for the training drive's length)."""
        n = max(1, int(np.floor(self.spec.can_train_seconds / self.spec.can_window + 1e-9)))
        return [n] * partitions

    def evaluate(self, params: Params) -> tuple[float, float, float]:
        t0 = time.perf_counter()
        res = fleetrun.score([params], self.vehicles)
        return res["held_out_cost"], res["accuracy"], time.perf_counter() - t0

    def final(self, params: Params) -> dict[str, Any]:
        """Score the federated model and (``can-baselines``) the local-only and centralised ones;
        write can-metrics.json and can-table.md; the summary's CAN fields."""
        spec = self.spec
        t0 = time.perf_counter()
        res: dict[str, Any] = {"federated": fleetrun.score([params], self.vehicles)}
        seconds = {"test_data": round(self.data_seconds, 2), "federated_score": round(time.perf_counter() - t0, 2)}
        if spec.can_baselines:
            t0 = time.perf_counter()
            base = fleetrun.baselines(spec.seed, spec.nodes, spec.layers, spec.can_train_seconds, spec.can_window,
                                      spec.rounds * spec.local_epochs, spec.lr, spec.batch_size)
            for name, models in base.items():
                res[name] = fleetrun.score(models, self.vehicles)
            seconds["baselines"] = round(time.perf_counter() - t0, 2)
            t0 = time.perf_counter()
            normal, held = fleetrun.fleet_calibration(spec.seed, spec.nodes, spec.can_train_seconds, spec.can_window)
            fleet = (normal, held)
            res["fleet_calibrated"] = {
                "federated": fleetrun.score([params], self.vehicles, [fleet]),
                "local": fleetrun.score(base["local"], self.vehicles, [([n], [h]) for n, h in zip(normal, held)]),
                "centralised": fleetrun.score(base["centralised"], self.vehicles, [fleet])}
            seconds["fleet_calibrated"] = round(time.perf_counter() - t0, 2)
        res["settings"] = {
            "vehicles": spec.nodes, "vehicle_seeds": [spec.seed + p for p in range(spec.nodes)],
            "test_vehicle_seeds": [v.seed for v in self.vehicles], "train_seconds": spec.can_train_seconds,
            "held_out_seconds": fleetrun.held_seconds(spec.can_test_seconds), "test_seconds": spec.can_test_seconds,
            "window": spec.can_window, "layers": spec.layers, "rounds": spec.rounds, "local_epochs": spec.local_epochs,
            "lr": spec.lr, "batch_size": spec.batch_size, "baseline_epochs": spec.rounds * spec.local_epochs,
            "baseline_kernel": "numpy float32 (server)"}
        res["seconds"] = seconds
        (self.folder / "can-metrics.json").write_text(json.dumps(_finite(res), indent=1))
        table = "Each unseen vehicle calibrates a model on its own held-out normal drive:\n\n" + fleetrun.markdown_table(res)
        if "fleet_calibrated" in res:
            table += ("\n\nCalibrated once on the training vehicles' windows (as `ecufl can fleet`):\n\n"
                      + fleetrun.markdown_table(res["fleet_calibrated"]))
        (self.folder / "can-table.md").write_text(table + "\n")
        fed = res["federated"]
        return {"can_false_alarms_per_hour": fed["false_alarms_per_hour"],
                "can_f1": {f: round(m["f1"], 4) for f, m in fed["families"].items()}}


def _finite(obj: Any) -> Any:
    """JSON without NaN (a family nobody detected has no latency: null)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj
