"""Two detectors over windows (features.py), both HDRNN trained by the numpy reference kernel, and
the metrics per attack family.

- **Autoencoder** (what a vehicle can learn without labels): HDRNN ``F-H-F`` with target = input
  (real-valued targets), trained on normal windows only. A window's score is its largest
  standardised residual, max_j |(a_j - x_j) - m_j| / s_j, with m_j and s_j (at least 0.01) the mean
  and sd of feature j's residual over the training windows: one feature far off is an alarm even
  when the other 400 are reproduced well (the plain quadratic cost 0.5 ||a - x||^2 drowned DoS in
  the noise of the others: F1 0 instead of 0.88 on the same windows). The threshold is the
  ``quantile`` (default 1.0: the largest) of the scores of *held-out* normal windows (another
  drive of the same vehicle), so the false-alarm rate is set without labels.
- **Classifier** (for comparison, needs labelled attacks): HDRNN ``F-H-10`` with one-hot targets,
  one output per family and one for normal, trained on labelled drives; a window is an alarm
  when its largest output is not "normal". (One attack/normal output learnt less: DoS F1 0.42.)
  Both train 60 epochs by default: at 30 the classifier had not learnt the rare families (vehicle
  2, 22 DoS windows among 3,600: DoS F1 0.00 after 30 epochs at lr 1 or 3, 0.95 after 60).

Metrics per family (``metrics``), over the test windows of that family and all normal windows:
precision = TP / (TP + FP) with FP the false alarms on normal windows, recall = TP / (TP + FN),
F1; detection latency = from the attack's start to the end of its first alarmed window (median
over the attacks detected; ``detected`` counts them); false alarms per hour = alarmed normal
windows per hour of normal windows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..kernels import weights
from ..kernels.base import check_data
from ..kernels.prng import EpochOrder, init_params
from ..kernels.reference import NumpyKernel
from .codec import FAMILIES, LABELS
from .features import Windows


@dataclass
class TrainSettings:
    hidden: int = 32
    epochs: int = 60
    lr: float = 1.0
    batch_size: int = 10
    seed: int = 1
    dtype: str = "float32"


def _train(x: np.ndarray, targets: np.ndarray, sizes: list[int], cfg: TrainSettings) -> NumpyKernel:
    check_data(sizes, x, targets)
    kernel = NumpyKernel(init_params(sizes, cfg.seed, scaled=True, dtype=cfg.dtype), dtype=cfg.dtype)
    order = EpochOrder(len(x), cfg.seed)
    for _ in range(cfg.epochs):
        kernel.train(x, targets, order.next(), cfg.lr, cfg.batch_size)
    return kernel


def outputs(kernel: NumpyKernel, x: np.ndarray) -> np.ndarray:
    return kernel.forward(np.asarray(x, dtype=kernel._dt))[-1]


class Autoencoder:
    def __init__(self, n_features: int, cfg: TrainSettings) -> None:
        self.sizes = [n_features, cfg.hidden, n_features]
        self.cfg = cfg
        self.kernel: NumpyKernel | None = None
        self.threshold = np.inf

    def fit(self, normal: np.ndarray, held_out: np.ndarray, quantile: float = 1.0) -> "Autoencoder":
        self.kernel = _train(normal, normal, self.sizes, self.cfg)
        return self.calibrate(self.kernel, [normal], [held_out], quantile)

    def calibrate(self, kernel: NumpyKernel, normal: list[np.ndarray], held_out: list[np.ndarray],
                  quantile: float = 1.0) -> "Autoencoder":
        """Residual statistics from the training windows and the threshold from held-out ones, over
        one or several vehicles: each sends only sums (count, sum, sum of squares) and its held-out
        scores' quantile; the fleet's threshold is the largest of those."""
        self.kernel = kernel
        n, s1, s2 = 0, 0.0, 0.0
        for x in normal:
            r = outputs(kernel, x).astype(np.float64) - x
            n, s1, s2 = n + len(r), s1 + r.sum(axis=0), s2 + (r**2).sum(axis=0)
        self.mean = s1 / n
        self.sd = np.maximum(np.sqrt(np.maximum(s2 / n - self.mean**2, 0)), 0.01)
        self.threshold = max(float(np.quantile(self.score(h), quantile)) for h in held_out)
        return self

    def cost(self, x: np.ndarray) -> np.ndarray:
        """The training cost per window, 0.5 ||a - x||^2."""
        return 0.5 * np.sum((outputs(self.kernel, x).astype(np.float64) - x) ** 2, axis=1)

    def score(self, x: np.ndarray) -> np.ndarray:
        r = outputs(self.kernel, x).astype(np.float64) - x
        return np.max(np.abs(r - self.mean) / self.sd, axis=1)

    def alarms(self, x: np.ndarray) -> np.ndarray:
        return self.score(x) > self.threshold

    # -- a trained detector as an ecufl weight file (meta "can": what scoring needs) -------------
    def save(self, path, names: list[str], window: float, bus: str) -> None:
        weights.save(path, self.kernel.get_params(), kernel="numpy", can={
            "format": MODEL_FORMAT, "window": window, "bus": bus, "features": names,
            "threshold": self.threshold, "mean": self.mean.tolist(), "sd": self.sd.tolist()})

    @classmethod
    def load(cls, path, names: list[str], window: float | None = None) -> "Autoencoder":
        """A saved autoencoder, checked against the features it will be given (one line if not)."""
        params, meta = weights.load(path)
        info = meta.get("can")
        if not isinstance(info, dict) or info.get("format") != MODEL_FORMAT:
            raise weights.WeightFileError(f"{path}: not a CAN autoencoder (written by ecufl can detect --save-model)")
        sizes = params.sizes
        try:
            feats, mean, sd = list(info["features"]), np.asarray(info["mean"], float), np.asarray(info["sd"], float)
            threshold, win = float(info["threshold"]), float(info["window"])
        except (KeyError, TypeError, ValueError) as e:
            raise weights.WeightFileError(f"{path}: malformed CAN metadata ({type(e).__name__}: {e})") from None
        if sizes[0] != sizes[-1] or len(feats) != sizes[0] or mean.shape != (sizes[0],) or sd.shape != (sizes[0],):
            raise weights.WeightFileError(f"{path}: network {'-'.join(map(str, sizes))} does not match its "
                                          f"{len(feats)} features")
        if window is not None and abs(window - win) > 1e-9:
            raise ValueError(f"{path}: trained on {win:g} s windows, not {window:g} s")
        if feats != list(names):
            diff = next((i for i, (a, b) in enumerate(zip(feats, names)) if a != b), min(len(feats), len(names)))
            raise ValueError(f"{path}: the network takes {len(feats)} features, this bus gives {len(names)} "
                             f"(first difference at feature {diff}: "
                             f"{feats[diff] if diff < len(feats) else '-'} vs {names[diff] if diff < len(names) else '-'})")
        ae = cls(sizes[0], TrainSettings(hidden=sizes[1] if len(sizes) == 3 else 0, dtype=str(params.dtype)))
        ae.sizes = sizes
        ae.kernel = NumpyKernel(params, dtype=str(params.dtype))
        ae.mean, ae.sd, ae.threshold, ae.window = mean, sd, threshold, win
        return ae


MODEL_FORMAT = "ecufl-can-autoencoder/1"


class Classifier:
    def __init__(self, n_features: int, cfg: TrainSettings) -> None:
        self.sizes = [n_features, cfg.hidden, len(FAMILIES)]
        self.cfg = cfg
        self.kernel: NumpyKernel | None = None

    def fit(self, x: np.ndarray, label: np.ndarray) -> "Classifier":
        label = np.where(label < len(FAMILIES), label, 1).astype(np.uint8)  # "injected" (family unknown)
        self.kernel = _train(x, label, self.sizes, self.cfg)
        return self

    def alarms(self, x: np.ndarray) -> np.ndarray:
        return outputs(self.kernel, x).argmax(axis=1) != 0


@dataclass
class FamilyMetrics:
    family: str
    windows: int
    attacks: int
    detected: int
    precision: float
    recall: float
    f1: float
    latency: float  # seconds, median over detected attacks (nan if none)


def metrics(win: Windows, alarm: np.ndarray) -> tuple[list[FamilyMetrics], float, float]:
    """Per-family metrics, false alarms per hour of normal windows, and hours of normal windows."""
    normal = win.label == 0
    fp = int(np.sum(alarm & normal))
    hours = float(np.sum(normal)) * win.window / 3600.0
    out = []
    for code, fam in enumerate(LABELS):
        if code == 0:
            continue
        mine = win.label == code
        inst = [i for i in win.instances if i["family"] == fam]
        if not mine.any() and not inst:
            continue
        tp = int(np.sum(alarm & mine))
        fn = int(np.sum(~alarm & mine))
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        lat = []
        for i in inst:
            hit = [j for j in i["windows"] if alarm[j]]
            if hit:
                lat.append(max(0.0, win.start[hit[0]] + win.window - i["t0"]))
        out.append(FamilyMetrics(fam, int(mine.sum()), len(inst), len(lat), precision, recall, f1,
                                 float(np.median(lat)) if lat else float("nan")))
    return out, (fp / hours if hours else float("nan")), hours
