"""A run's settings: one flat set of keys, Flower's run config.

These keys are the ``[tool.flwr.app.config]`` table of the project's ``pyproject.toml`` (a test
holds the two equal), so ``flwr run . <federation> --run-config "num-server-rounds=5 kernel='c'"``
works as in any Flower app. The ServerApp reads them from ``context.run_config``; a scenario file
(``ecufl.scenarios``) is validated by pydantic and then flattened into them; ``ecufl fleet run`` and
``ecufl sim`` are launchers that pass them to ``flwr run``. The server sends the resolved set to
every client with each train message, so server and clients always agree (a resumed run's settings
come from its folder, not from the command line).

    key                 default         meaning
    name                "ecufl"         run name: the results folder is <results-dir>/<name>-<time>
    num-server-rounds   3               federated rounds
    nodes               0               partitions (ECUs); 0: the SuperNodes connected at the start
    fraction-train      1.0             fraction of the nodes asked to train each round
    local-epochs        1               epochs each client trains per round
    lr                  3.0             learning rate (network.py's eta)
    batch-size          10              mini-batch size
    layers              "784,30,10"     layer sizes
    seed                1               initial weights, shards, client sampling, epoch orders
    split-alpha         0.0             0: IID shards; > 0: Dirichlet(alpha) label skew
    train-limit         0               split only the first N training samples (0: all 60,000)
    kernel              ""              kernel per node, comma-separated and cycled over the partitions
                                        ("c" for all, "numpy,c,eigen,tflite" one each; "a|b": a if it
                                        loads on the node, else b); "": each node's own --node-config
    profile             ""              device profile per node, the same way ("": the node's own, or host)
    link                "ethernet-100"  network of the virtual clock (ecufl.links)
    aggregator          "fedavg"        fedavg (sample-weighted mean) | median | trimmed-mean (per coordinate)
    trim-fraction       0.25            trimmed-mean: share cut from each end of every coordinate
    max-update-norm     3.0             a reply is refused when ||w - g|| > this x max(||g||, 1),
                                        g the global model it was sent (0: no bound)
    round-timeout       120.0           seconds the server waits for a round's replies
    connect-timeout     120.0           seconds the server waits for the nodes to connect
    results-dir         "results"       where run folders are created (relative: to $ECUFL_WORKDIR,
                                        which ``ecufl fleet up`` sets to the folder it ran in, else
                                        to the ServerApp's working directory)
    run-dir             ""              the run folder itself ("": <results-dir>/<name>-<time>)
    resume              false           continue run-dir from its last checkpoint, with its settings
    workload            "mnist"         mnist | can: each node a vehicle training the CAN autoencoder on its
                                        own normal traffic (ecufl.can.fleetrun; layers F,...,F with F the
                                        feature count, 339 for the shipped Ford bus)
    can-train-seconds   120.0           can: seconds of normal traffic each vehicle trains on
    can-window          0.5             can: window length in seconds (ecufl.can.features)
    can-test-vehicles   2               can: unseen vehicles the server scores every model on
    can-test-seconds    300.0           can: seconds of traffic with attacks per unseen vehicle (plus half
                                        as much held-out normal traffic that sets its threshold)
    can-baselines       true            can: the server also trains local-only and centralised models
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ecufl.links import DEFAULT_LINK

AGGREGATORS = ("fedavg", "median", "trimmed-mean")
WORKLOADS = ("mnist", "can")  # ecufl.server.strategy implements them
CONFIG_FILE = "run-config.json"  # the resolved settings, kept in the run folder (resume reads them)


class RunConfigError(ValueError):
    """One line: the key and what was expected."""


def _list(value: str) -> list[str]:
    return [s.strip() for s in str(value).split(",") if s.strip()]


@dataclass
class RunConfig:
    """The run's settings, in Python names; ``KEYS`` maps each to its run-config key."""

    name: str = "ecufl"
    rounds: int = 3
    nodes: int = 0
    fraction: float = 1.0
    local_epochs: int = 1
    lr: float = 3.0
    batch_size: int = 10
    layers: list[int] = field(default_factory=lambda: [784, 30, 10])
    seed: int = 1
    alpha: float = 0.0
    train_limit: int = 0
    kernels: list[str] = field(default_factory=list)
    profiles: list[str] = field(default_factory=list)
    link: str = DEFAULT_LINK
    aggregator: str = "fedavg"
    trim_fraction: float = 0.25
    max_update_norm: float = 3.0
    round_timeout: float = 120.0
    connect_timeout: float = 120.0
    results_dir: str = "results"
    run_dir: str = ""
    resume: bool = False
    workload: str = "mnist"
    can_train_seconds: float = 120.0
    can_window: float = 0.5
    can_test_vehicles: int = 2
    can_test_seconds: float = 300.0
    can_baselines: bool = True

    # -- flat keys <-> fields ---------------------------------------------------------------------
    @classmethod
    def from_flat(cls, flat: dict[str, Any]) -> "RunConfig":
        """Parse a run config (unknown keys are ignored: Flower allows other apps' keys)."""
        kw: dict[str, Any] = {}
        for f in fields(cls):
            key = KEYS[f.name]
            if key not in flat:
                continue
            value = flat[key]
            try:
                kw[f.name] = _PARSE[f.name](value)
            except (TypeError, ValueError) as e:
                raise RunConfigError(f"run config {key}={value!r}: {e}") from None
        cfg = cls(**kw)
        cfg.check()
        return cfg

    def to_flat(self) -> dict[str, Any]:
        d = asdict(self)
        out = {}
        for name, value in d.items():
            if isinstance(value, list):
                value = ",".join(map(str, value))
            out[KEYS[name]] = value
        return out

    def check(self) -> None:
        def need(ok: bool, key: str, what: str) -> None:
            if not ok:
                raise RunConfigError(f"run config {key}={self.to_flat()[key]!r}: {what}")

        need(self.rounds >= 1, "num-server-rounds", "must be at least 1")
        need(self.nodes >= 0, "nodes", "must be 0 (the connected nodes) or more")
        need(0 < self.fraction <= 1, "fraction-train", "must be in (0, 1]")
        need(self.local_epochs >= 1, "local-epochs", "must be at least 1")
        need(self.lr > 0 and math.isfinite(self.lr), "lr", "must be a positive number")
        need(self.batch_size >= 1, "batch-size", "must be at least 1")
        need(len(self.layers) >= 2 and min(self.layers) >= 1, "layers", "need at least two positive sizes")
        need(self.workload in WORKLOADS, "workload", f"must be one of {', '.join(WORKLOADS)}")
        if self.workload == "mnist":
            need(self.layers[0] == 784 and self.layers[-1] == 10, "layers", "must start with 784 and end with 10")
        else:  # the feature count is checked where ecufl.can is at hand (client and server)
            need(self.layers[0] == self.layers[-1], "layers", "an autoencoder must end with its input size")
            need(10 <= self.can_train_seconds <= 86_400, "can-train-seconds", "must be in 10..86400")
            need(0.05 <= self.can_window <= 60, "can-window", "must be between 0.05 and 60 seconds")
            need(self.can_train_seconds >= 4 * self.can_window, "can-window",
                 f"leaves fewer than 4 windows in can-train-seconds={self.can_train_seconds:g}")
            need(1 <= self.can_test_vehicles <= 100, "can-test-vehicles", "must be in 1..100")
            need(20 <= self.can_test_seconds <= 86_400, "can-test-seconds", "must be in 20..86400")
        need(0 <= self.seed <= 2**32 - 1, "seed", "must be in 0..2^32-1")
        need(self.alpha >= 0 and math.isfinite(self.alpha), "split-alpha", "must be 0 (IID) or positive")
        need(0 <= self.train_limit <= 60_000, "train-limit", "must be in 0..60000")
        need(self.aggregator in AGGREGATORS, "aggregator", f"must be one of {', '.join(AGGREGATORS)}")
        need(0 <= self.trim_fraction < 0.5, "trim-fraction", "must be in [0, 0.5)")
        need(self.max_update_norm >= 0, "max-update-norm", "must be 0 (no bound) or positive")
        need(self.round_timeout > 0, "round-timeout", "must be positive")
        need(self.connect_timeout > 0, "connect-timeout", "must be positive")

    def identity(self) -> dict[str, Any]:
        """What must not change between a run and its resumption."""
        d = asdict(self)
        for k in ("round_timeout", "connect_timeout", "results_dir", "run_dir", "resume"):
            d.pop(k)
        return d

    # -- where the run lives ----------------------------------------------------------------------
    def folder(self, workdir: Path | None = None) -> Path:
        """The run folder: ``run-dir``, or a new ``<results-dir>/<name>-<time>``; relative paths are
        taken from ``workdir`` ($ECUFL_WORKDIR, else the current directory)."""
        base = workdir or Path(os.environ.get("ECUFL_WORKDIR") or Path.cwd())
        if self.run_dir:
            path = Path(self.run_dir).expanduser()
            return path if path.is_absolute() else base / path
        results = Path(self.results_dir).expanduser()
        return new_run_folder(results if results.is_absolute() else base / results, self.name)

    def save(self, folder: Path) -> Path:
        path = folder / CONFIG_FILE
        path.write_text(json.dumps(self.to_flat(), indent=1))
        return path

    @classmethod
    def saved(cls, folder: Path) -> "RunConfig":
        path = folder / CONFIG_FILE
        try:
            return cls.from_flat(json.loads(path.read_text()))
        except OSError as e:
            raise RunConfigError(f"{path}: cannot read the run's settings ({e.strerror})") from None
        except json.JSONDecodeError as e:
            raise RunConfigError(f"{path}: not valid JSON ({e})") from None


def new_run_folder(base: Path, name: str) -> Path:
    """``base/<name>-<YYYYmmdd-HHMMSS>`` (``-2``, ``-3``, ... if taken), created."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = base / f"{name}-{stamp}"
    n = 1
    while path.exists():
        n += 1
        path = base / f"{name}-{stamp}-{n}"
    path.mkdir(parents=True)
    return path


def _bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if str(v).lower() in ("true", "1", "yes"):
        return True
    if str(v).lower() in ("false", "0", "no", ""):
        return False
    raise ValueError("expected true or false")


def _int(v: Any) -> int:
    if isinstance(v, bool) or (isinstance(v, float) and not v.is_integer()):
        raise ValueError("expected an integer")
    return int(v)


def _float(v: Any) -> float:
    if isinstance(v, bool):
        raise ValueError("expected a number")
    x = float(v)
    if not math.isfinite(x):
        raise ValueError("expected a finite number")
    return x


def _layers(v: Any) -> list[int]:
    if isinstance(v, list):
        return [_int(x) for x in v]
    return [int(x) for x in str(v).replace("-", ",").split(",") if x.strip()]


KEYS: dict[str, str] = {
    "name": "name", "rounds": "num-server-rounds", "nodes": "nodes", "fraction": "fraction-train",
    "local_epochs": "local-epochs", "lr": "lr", "batch_size": "batch-size", "layers": "layers", "seed": "seed",
    "alpha": "split-alpha", "train_limit": "train-limit", "kernels": "kernel", "profiles": "profile",
    "link": "link", "aggregator": "aggregator", "trim_fraction": "trim-fraction",
    "max_update_norm": "max-update-norm", "round_timeout": "round-timeout", "connect_timeout": "connect-timeout",
    "results_dir": "results-dir", "run_dir": "run-dir", "resume": "resume", "workload": "workload",
    "can_train_seconds": "can-train-seconds", "can_window": "can-window", "can_test_vehicles": "can-test-vehicles",
    "can_test_seconds": "can-test-seconds", "can_baselines": "can-baselines",
}
_PARSE: dict[str, Any] = {
    "name": str, "rounds": _int, "nodes": _int, "fraction": _float, "local_epochs": _int, "lr": _float,
    "batch_size": _int, "layers": _layers, "seed": _int, "alpha": _float, "train_limit": _int,
    "kernels": _list, "profiles": _list, "link": str, "aggregator": str, "trim_fraction": _float,
    "max_update_norm": _float, "round_timeout": _float, "connect_timeout": _float,
    "results_dir": str, "run_dir": str, "resume": _bool, "workload": str, "can_train_seconds": _float,
    "can_window": _float, "can_test_vehicles": _int, "can_test_seconds": _float, "can_baselines": _bool,
}


def defaults() -> dict[str, Any]:
    """The default run config (= pyproject.toml's ``[tool.flwr.app.config]``)."""
    return RunConfig().to_flat()
