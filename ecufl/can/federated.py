"""Federated vs local-only vs centralised training of the CAN autoencoder, in one process.

This is FedAvg as ecufl's ServerApp runs it (sample-weighted mean of the clients' weights after
``local_epochs`` of SGD from the global weights), computed here in-process with the numpy reference
kernel rather than through a Flower fleet: the ClientApp does not load CAN data yet.

Fleet: ``vehicles`` vehicles (seeds ``seed`` .. ``seed + vehicles - 1``), each with its own normal
drive (drive 100, ``train_seconds``) and held-out normal drive (drive 101, half as long). Test:
``unseen`` vehicles no model trained on (seeds ``seed + 1000`` ...), drive 2 with every attack
family (``test_seconds``); an autoencoder never sees an attack in any of the three set-ups.

- local-only: each vehicle trains on its own windows (``rounds x local_epochs`` epochs) and sets its
  own threshold; every local model is scored on every unseen vehicle (metrics over all pairs);
- federated: ``rounds`` of FedAvg; the residual statistics are pooled from each vehicle's sums and
  the threshold is the largest of the vehicles' held-out maxima (detect.Autoencoder.calibrate);
- centralised: all vehicles' windows in one place, ``rounds x local_epochs`` epochs, one threshold.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np

from ..kernels.params import Params
from ..kernels.prng import EpochOrder, init_params
from ..kernels.reference import NumpyKernel
from . import attacks, detect, features
from .bus import Bus
from .codec import EASY, STEALTHY
from .features import Windows


@dataclass
class Fleet:
    vehicles: int = 8
    seed: int = 1
    unseen: int = 2
    train_seconds: float = 300.0
    test_seconds: float = 600.0
    rounds: int = 10
    local_epochs: int = 2
    window: float = 0.5
    hidden: int = 32
    lr: float = 1.0
    batch_size: int = 10


def concat(wins: list[Windows]) -> Windows:
    """One set of windows from several (instances' window indices shifted)."""
    instances, off = [], 0
    for w in wins:
        instances += [{**i, "windows": [j + off for j in i["windows"]]} for i in w.instances]
        off += len(w.x)
    return Windows(np.concatenate([w.x for w in wins]), np.concatenate([w.label for w in wins]),
                   np.concatenate([w.start for w in wins]), wins[0].window, instances)


def fedavg(params: list[Params], counts: list[int]) -> Params:
    total = float(sum(counts))
    flat = [p.flat() for p in params]
    avg = [sum(f[i].astype(np.float64) * (c / total) for f, c in zip(flat, counts)) for i in range(len(flat[0]))]
    return Params.from_flat([a.astype(params[0].dtype) for a in avg])


def run(bus: Bus, fl: Fleet, progress=lambda msg: None) -> dict:
    feat = features.Featurizer(bus, fl.window)
    cfg = detect.TrainSettings(hidden=fl.hidden, epochs=fl.rounds * fl.local_epochs, lr=fl.lr,
                               batch_size=fl.batch_size, seed=fl.seed)
    sizes = [feat.size, fl.hidden, feat.size]
    started = time.perf_counter()
    seeds = [fl.seed + v for v in range(fl.vehicles)]
    progress(f"generating {fl.vehicles} vehicles x ({fl.train_seconds:g} s normal + {fl.train_seconds / 2:g} s held-out), "
             f"{fl.unseen} unseen x {fl.test_seconds:g} s with attacks")
    normal = [feat(attacks.trace(bus, s, 100, fl.train_seconds, ())).x for s in seeds]
    held = [feat(attacks.trace(bus, s, 101, fl.train_seconds / 2, ())).x for s in seeds]
    tests = [feat(attacks.trace(bus, fl.seed + 1000 + u, 2, fl.test_seconds, EASY + STEALTHY)) for u in range(fl.unseen)]
    test = concat(tests)
    data_s = time.perf_counter() - started
    results: dict = {"fleet": asdict(fl), "features": feat.size, "seconds": {"data": round(data_s, 2)}}

    def report(name: str, models: list[detect.Autoencoder]) -> None:
        wins = concat([test] * len(models))
        alarm = np.concatenate([m.alarms(test.x) for m in models])
        fams, fa_h, hours = detect.metrics(wins, alarm)
        results[name] = {"false_alarms_per_hour": fa_h, "normal_hours": hours, "models": len(models),
                         "thresholds": [round(m.threshold, 3) for m in models],
                         "alarms": int(alarm.sum()),
                         "families": {m.family: {k: v for k, v in asdict(m).items() if k != "family"} for m in fams}}

    # local-only
    t0 = time.perf_counter()
    progress("local-only: one autoencoder per vehicle")
    local = [detect.Autoencoder(feat.size, cfg).fit(n, h) for n, h in zip(normal, held)]
    report("local", local)
    results["seconds"]["local"] = round(time.perf_counter() - t0, 2)
    # federated
    t0 = time.perf_counter()
    progress(f"federated: {fl.rounds} rounds of FedAvg, {fl.local_epochs} local epochs")
    glob = init_params(sizes, fl.seed, scaled=True, dtype=cfg.dtype)
    kernels = [NumpyKernel(glob, dtype=cfg.dtype) for _ in seeds]
    orders = [EpochOrder(len(n), s) for n, s in zip(normal, seeds)]
    for _ in range(fl.rounds):
        for k, n, o in zip(kernels, normal, orders):
            k.set_params(glob)
            for _ in range(fl.local_epochs):
                k.train(n, n, o.next(), fl.lr, fl.batch_size)
        glob = fedavg([k.get_params() for k in kernels], [len(n) for n in normal])
    fed_kernel = NumpyKernel(glob, dtype=cfg.dtype)
    fed = detect.Autoencoder(feat.size, cfg).calibrate(fed_kernel, normal, held)
    report("federated", [fed])
    results["seconds"]["federated"] = round(time.perf_counter() - t0, 2)
    # centralised
    t0 = time.perf_counter()
    progress("centralised: one autoencoder on every vehicle's windows")
    cen = detect.Autoencoder(feat.size, cfg).fit(np.concatenate(normal), np.concatenate(held))
    report("centralised", [cen])
    results["seconds"]["centralised"] = round(time.perf_counter() - t0, 2)
    return results


NAMES = {"local": "local-only", "federated": "federated", "centralised": "centralised"}


def markdown_table(res: dict) -> str:
    """Per family F1 and latency (detected/attacks) of each set-up in ``res``, and false alarms/hour."""
    names = [n for n in ("local", "federated", "centralised") if n in res]
    lines = ["| family | " + " | ".join(f"{NAMES[n]} F1 | latency" for n in names) + " |",
             "|---|" + "---|" * (2 * len(names))]
    for fam in res["federated"]["families"]:
        cells = []
        for n in names:
            m = res[n]["families"][fam]
            cells += [f"{m['f1']:.2f}",
                      f"{m['latency']:.2f} s ({m['detected']}/{m['attacks']})" if m["detected"] else f"- (0/{m['attacks']})"]
        lines.append(f"| {fam} | " + " | ".join(cells) + " |")
    lines.append("| false alarms per hour | " + " | ".join(f"{res[n]['false_alarms_per_hour']:.1f} | " for n in names) + "|")
    return "\n".join(lines)
