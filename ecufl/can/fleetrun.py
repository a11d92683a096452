"""The CAN workload of a Flower run (run config ``workload = "can"``): what the ClientApp trains on
and what the ServerApp scores with, from the run's settings alone (no file is shipped around).

Vehicles. Partition ``p`` of a run with seed ``S`` is vehicle ``S + p`` (``ecufl.can.generate``:
its own ECU clocks, variant coding and drive cycles); it trains on its normal drive 100,
``can-train-seconds`` long, cut into ``can-window`` windows (``features.Featurizer``): inputs and
targets are the same windows (an autoencoder; no labels). Unseen vehicles ``S + 1000 + u``
(``u < can-test-vehicles``), which no model trains on, are the test: each calibrates a model it
receives on its own held-out normal drive 101 (half of ``can-test-seconds``, at least 20 s:
residual mean and sd, threshold = the largest score; ``detect.Autoencoder.calibrate``), then
scores its drive 2 of ``can-test-seconds`` with every attack family, placed by the vehicle's own
seed. Metrics per family are ``detect.metrics`` over the test vehicles' windows together.

Comparison (``baselines``, computed by the server with the numpy reference kernel in float32 on
the same windows, from the same initial weights, ``rounds x local-epochs`` epochs):
local-only (each training vehicle alone; each of its models scored on every unseen vehicle, so
``vehicles x`` the attacks) and centralised (all training vehicles' windows in one place). The
federated model is the Flower fleet's global model after the last round.

A second calibration (``score(..., calibration)``, "fleet-calibrated") is the one of ``ecufl can
fleet``: a model is calibrated once on the training vehicles' windows and held-out drives (101,
half of ``can-train-seconds``; local-only: its own vehicle's), and that threshold is used on every
unseen vehicle. In a fleet each vehicle would send its residual sums and held-out maximum; here
the server computes them from the vehicles' seeds (the same numbers; not sent over Flower).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np

from ..kernels.params import Params
from ..kernels.prng import EpochOrder, init_params
from ..kernels.reference import NumpyKernel
from . import attacks, detect, features
from .bus import default_bus
from .codec import EASY, STEALTHY
from .features import Windows
from .federated import concat, markdown_table  # noqa: F401 - the server's tables

TEST_OFFSET = 1000  # unseen vehicle u has seed run seed + TEST_OFFSET + u
TRAIN_DRIVE, HELD_DRIVE, TEST_DRIVE = 100, 101, 2


class LayersError(ValueError):
    """One line: the network and the features it must take."""


@lru_cache(maxsize=4)
def featurizer(window: float) -> features.Featurizer:
    return features.Featurizer(default_bus(), window)


def feature_count(window: float = 0.5) -> int:
    return featurizer(window).size


def check_layers(layers: list[int], window: float) -> None:
    """One-line LayersError when the network cannot be the autoencoder of these windows."""
    n = feature_count(window)
    if layers[0] != n or layers[-1] != n:
        hidden = ",".join(map(str, layers[1:-1])) or "32"
        raise LayersError(f"layers {','.join(map(str, layers))} do not fit the CAN windows: each {window:g} s "
                          f"window is {n} features, so the autoencoder must take and give {n} "
                          f"(layers = \"{n},{hidden},{n}\")")


@lru_cache(maxsize=8)
def vehicle_windows(seed: int, drive: int, seconds: float, window: float, attacked: bool = False) -> Windows:
    """Drive ``drive`` of vehicle ``seed`` as windows (every attack family on it if ``attacked``)."""
    frames = attacks.trace(default_bus(), int(seed), int(drive), float(seconds), EASY + STEALTHY if attacked else ())
    return featurizer(window)(frames, float(seconds))


def training_windows(run_seed: int, partition: int, seconds: float, window: float) -> np.ndarray:
    """What vehicle ``partition`` trains on: its normal windows (float32, in [0, 1])."""
    return vehicle_windows(run_seed + partition, TRAIN_DRIVE, seconds, window).x


def held_seconds(test_seconds: float) -> float:
    return max(20.0, test_seconds / 2)


@dataclass
class TestVehicle:
    seed: int
    held: np.ndarray  # normal windows that set the threshold
    test: Windows  # windows with attacks, scored


def test_vehicles(run_seed: int, count: int, seconds: float, window: float) -> list[TestVehicle]:
    out = []
    for u in range(count):
        s = run_seed + TEST_OFFSET + u
        out.append(TestVehicle(s, vehicle_windows(s, HELD_DRIVE, held_seconds(seconds), window).x,
                               vehicle_windows(s, TEST_DRIVE, seconds, window, attacked=True)))
    return out


def _kernel(params: Params) -> NumpyKernel:
    return NumpyKernel(params.astype("float32"), dtype="float32")


def score(models: list[Params], vehicles: list[TestVehicle],
          calibration: list[tuple[list[np.ndarray], list[np.ndarray]]] | None = None) -> dict:
    """Every model scoring every unseen vehicle: metrics per family, false alarms per hour,
    thresholds; ``accuracy``: share of the test windows called right (alarm = attack window).

    Calibration (residual mean and sd, threshold): by default each unseen vehicle calibrates the
    model on its own held-out normal drive; ``calibration`` gives instead, per model, the training
    vehicles' (normal windows, held-out windows) it is calibrated on once, as ``ecufl can fleet``
    does (the threshold is then the largest of those vehicles' held-out maxima)."""
    wins, alarms, thresholds, costs = [], [], [], []
    for i, p in enumerate(models):
        k = _kernel(p)
        fixed = None
        if calibration is not None:
            fixed = detect.Autoencoder(p.sizes[0], detect.TrainSettings()).calibrate(k, *calibration[i])
        for v in vehicles:
            ae = fixed or detect.Autoencoder(v.test.x.shape[1], detect.TrainSettings()).calibrate(k, [v.held], [v.held])
            alarms.append(ae.alarms(v.test.x))
            wins.append(v.test)
            thresholds.append(round(ae.threshold, 3))
            costs.append(ae.cost(v.held))
    win = concat(wins)
    alarm = np.concatenate(alarms)
    fams, fa_h, hours = detect.metrics(win, alarm)
    return {"models": len(models), "false_alarms_per_hour": fa_h, "normal_hours": hours,
            "accuracy": float(np.mean(alarm == (win.label != 0))), "alarms": int(alarm.sum()),
            "held_out_cost": float(np.mean(np.concatenate(costs))), "thresholds": thresholds,
            "families": {m.family: {k: v for k, v in asdict(m).items() if k != "family"} for m in fams}}


def _train(x: np.ndarray, sizes: list[int], seed: int, order_seed: int, epochs: int, lr: float,
           batch_size: int) -> Params:
    k = NumpyKernel(init_params(sizes, seed, scaled=True, dtype="float32"), dtype="float32")
    order = EpochOrder(len(x), order_seed)
    for _ in range(epochs):
        k.train(x, x, order.next(), lr, batch_size)
    return k.get_params()


def fleet_calibration(run_seed: int, vehicles: int, train_seconds: float, window: float
                      ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The training vehicles' normal windows and held-out normal windows (drive 101, half as long)."""
    return ([training_windows(run_seed, p, train_seconds, window) for p in range(vehicles)],
            [vehicle_windows(run_seed + p, HELD_DRIVE, train_seconds / 2, window).x for p in range(vehicles)])


def baselines(run_seed: int, vehicles: int, sizes: list[int], train_seconds: float, window: float,
              epochs: int, lr: float, batch_size: int) -> dict[str, list[Params]]:
    """Local-only (one model per training vehicle) and centralised (one model on all their
    windows), numpy float32, from the run's initial weights."""
    xs = [training_windows(run_seed, p, train_seconds, window) for p in range(vehicles)]
    local = [_train(x, sizes, run_seed, run_seed + p, epochs, lr, batch_size) for p, x in enumerate(xs)]
    central = _train(np.concatenate(xs), sizes, run_seed, run_seed, epochs, lr, batch_size)
    return {"local": local, "centralised": [central]}
