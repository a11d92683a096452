"""One detection experiment, from (bus, vehicle seed) to metrics: what ``ecufl can detect`` runs.

Drives of vehicle ``seed`` (``attacks.trace``): normal drive 100 (``train_seconds``) trains the
autoencoder, normal drive 101 (half as long, at least 60 s) sets its threshold; drive 1 with
every attack family (``train_seconds``) plus drive 100 train the classifier; drive 2 of vehicle
``test_seed`` (default: the same vehicle) with ``families`` (``test_seconds``), or a recorded log,
is scored. Attack placements, targets and drive cycles differ between drives 1 and 2.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from . import attacks, detect, features, logs
from .bus import Bus
from .codec import EASY, STEALTHY


@dataclass
class Experiment:
    seed: int = 1
    test_seed: int | None = None
    train_seconds: float = 600.0
    test_seconds: float = 600.0
    window: float = 0.5
    families: tuple[str, ...] = EASY + STEALTHY
    quantile: float = 1.0
    train: detect.TrainSettings = field(default_factory=detect.TrainSettings)
    test_file: str | None = None
    save_model: str | None = None


def run(bus: Bus, ex: Experiment, progress=lambda msg: None) -> dict:
    feat = features.Featurizer(bus, ex.window)
    started = time.perf_counter()
    held = max(60.0, ex.train_seconds / 2)
    progress(f"generating {ex.train_seconds:g} s normal + {held:g} s held-out + {ex.train_seconds:g} s labelled traffic")
    normal = feat(attacks.trace(bus, ex.seed, 100, ex.train_seconds, ()))
    held_out = feat(attacks.trace(bus, ex.seed, 101, held, ()))
    labelled = feat(attacks.trace(bus, ex.seed, 1, ex.train_seconds, EASY + STEALTHY))
    if ex.test_file:
        progress(f"reading {ex.test_file}")
        frames = logs.read_log(ex.test_file, bus.ids)
        test = feat(frames, float(frames.meta.get("seconds", frames.t[-1])))
        test_source = ex.test_file
    else:
        test_seed = ex.seed if ex.test_seed is None else ex.test_seed
        progress(f"generating {ex.test_seconds:g} s of test traffic (vehicle {test_seed}, drive 2)")
        test = feat(attacks.trace(bus, test_seed, 2, ex.test_seconds, ex.families))
        test_source = f"vehicle {test_seed}, drive 2, {ex.test_seconds:g} s"
    data_s = time.perf_counter() - started
    progress(f"training the autoencoder {'-'.join(map(str, [feat.size, ex.train.hidden, feat.size]))} on "
             f"{len(normal.x)} normal windows")
    t0 = time.perf_counter()
    ae = detect.Autoencoder(feat.size, ex.train).fit(normal.x, held_out.x, ex.quantile)
    ae_s = time.perf_counter() - t0
    if ex.save_model:
        ae.save(ex.save_model, feat.names, ex.window, bus.source)
    progress("training the classifier")
    t0 = time.perf_counter()
    x = np.concatenate([labelled.x, normal.x])
    y = np.concatenate([labelled.label, normal.label])
    cl = detect.Classifier(feat.size, ex.train).fit(x, y)
    cl_s = time.perf_counter() - t0
    out = {"experiment": {**{k: v for k, v in asdict(ex).items() if k != "train"}, "train": asdict(ex.train),
                          "families": list(ex.families), "test": test_source, "features": feat.size,
                          "windows": {"normal": len(normal.x), "held_out": len(held_out.x),
                                      "labelled": len(labelled.x), "test": len(test.x)}},
           "seconds": {"data": round(data_s, 2), "autoencoder": round(ae_s, 2), "classifier": round(cl_s, 2)},
           "autoencoder": {"threshold": ae.threshold}, "classifier": {}}
    for name, alarm in (("autoencoder", ae.alarms(test.x)), ("classifier", cl.alarms(test.x))):
        fams, fa_h, hours = detect.metrics(test, alarm)
        out[name].update(false_alarms_per_hour=fa_h, normal_hours=hours,
                         families={m.family: {k: v for k, v in asdict(m).items() if k != "family"} for m in fams})
    return out
