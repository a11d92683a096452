"""Scenario files: one TOML file describes one federated run (or one per kernel, for a shootout).

The schema is a pydantic model with ``extra="forbid"`` and strict types, so an unknown key, a
wrong type or an impossible value stops everything before a process starts, with one line that
names the file, the key and what was expected (``ScenarioError``).

    name = "quickstart"            # default: the file's stem
    engine = "deployment"          # deployment (real SuperLink + SuperNodes) | simulation (Ray)
    workload = "mnist"             # mnist | can: every node a vehicle training the CAN autoencoder
                                   # (layers = [339, H, 339] for 0.5 s windows of the Ford bus)
    nodes = 4                      # fleet size (ECUs)
    rounds = 3
    seed = 1                       # initial weights, shards, client sampling, epoch orders
    fraction = 1.0                 # fraction of the clients asked to train each round
    round_timeout = 120.0          # seconds the server waits for replies in one round
    layers = [784, 30, 10]
    lr = 3.0
    batch_size = 10
    local_epochs = 1
    train_limit = 0                # split only the first N training samples (0: all 60,000)
    kernel = "numpy"               # one kernel for all nodes, or
    kernels = ["numpy", "c|numpy:float32", ...]   # one per node; "a|b": a if built here, else b
    profile = "host"               # device profile for all nodes, or profiles = [...] per node
                                   # (host | imx6 | imx6-792 | imx6-1200: kernels/arm/profiles.py)
    link = "ethernet-100"          # network of the virtual clock: ethernet-100 | can-fd-gateway |
                                   # lte-uplink (ecufl/links.py)
    aggregator = "fedavg"          # fedavg | median | trimmed-mean (robust to a few hostile clients)
    trim_fraction = 0.25           # trimmed-mean: share cut from each end of every coordinate
    max_update_norm = 3.0          # refuse a reply farther than this x max(||global||, 1) from the
                                   # global model it was sent (0: no bound)
    [split]
    kind = "iid"                   # iid | dirichlet
    alpha = 0.5                    # dirichlet only: smaller = more label skew
    [shootout]
    kernels = ["numpy", "c", ...]  # run the same scenario once per kernel (all nodes on that kernel)
    [can]                          # workload = "can" only (ecufl/can/fleetrun.py)
    train_seconds = 120.0          # normal traffic each vehicle trains on
    window = 0.5                   # window length (s)
    test_vehicles = 2              # unseen vehicles the server scores every model on
    test_seconds = 300.0           # their traffic with attacks (+ half as much held-out normal)
    baselines = true               # the server also trains local-only and centralised models

A kernel is a registry name (``ecufl kernels``) with an optional ``:float32``/``:float64``.

A valid scenario becomes Flower's run config (``run_config``: the flat keys of ``ecufl.runconfig``,
one set per run of a shootout), which is all the ServerApp and the ClientApps see. Validation only
checks names and values; whether a kernel loads is decided on each node when it trains.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from ecufl import tomlfile
from ecufl.kernels import KERNELS, split_spec
from ecufl.kernels.arm.profiles import get as get_profile
from ecufl.links import DEFAULT_LINK, get_link
from ecufl.runconfig import RunConfig

# What a board in supernode mode holds besides its training data: Flower's SuperNode, the ClientApp
# runtime (ecufl's warm launcher and parent, or Flower's SuperExec and a ClientApp process) and one
# ClientApp: 484 MiB peak per node measured on this host with warm nodes (`ecufl fleet overhead
# --compare-flower --nodes 4`, 2026-12-06; cold: 551), plus the OS of a minimal Yocto image, which
# is assumed (64 MB), not measured. A profile with less memory cannot run a supernode board.
SUPERNODE_STACK_MB = 484
OS_RESERVE_MB = 64
MAX_DEPLOYMENT_NODES = 64  # each SuperNode + its SuperExec is ~260 MiB here; beyond this use simulation


class ScenarioError(ValueError):
    """One line: file, key, expectation."""


def check_kernel(spec: str) -> str:
    for alternative in spec.split("|"):
        name, dtype, _board = split_spec(alternative)  # remote:NODE names a board, not a dtype
        if name not in KERNELS:
            raise ValueError(f"unknown kernel {name!r}; kernels: {', '.join(KERNELS)}")
        if dtype and dtype not in ("float32", "float64"):
            raise ValueError(f"dtype after ':' must be float32 or float64, got {dtype!r}")
    return spec


Kernel = Annotated[str, Field(min_length=1)]


class Split(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    kind: Literal["iid", "dirichlet"] = "iid"
    alpha: float | None = Field(default=None, gt=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _alpha(self) -> "Split":
        if self.kind == "dirichlet" and self.alpha is None:
            raise ValueError("kind = 'dirichlet' needs alpha > 0")
        if self.kind == "iid" and self.alpha is not None:
            raise ValueError("alpha is only for kind = 'dirichlet'")
        return self


class Shootout(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    kernels: list[Kernel] = Field(min_length=1)

    _names = field_validator("kernels")(lambda cls, v: [check_kernel(k) for k in v])


class Can(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    train_seconds: float = Field(default=120.0, ge=10, le=86_400, allow_inf_nan=False)
    window: float = Field(default=0.5, ge=0.05, le=60, allow_inf_nan=False)
    test_vehicles: int = Field(default=2, ge=1, le=100)
    test_seconds: float = Field(default=300.0, ge=20, le=86_400, allow_inf_nan=False)
    baselines: bool = True


class Scenario(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(default="", pattern=r"^[A-Za-z0-9_.-]*$")
    description: str = ""
    engine: Literal["deployment", "simulation"] = "deployment"
    workload: Literal["mnist", "can"] = "mnist"  # before layers: their check depends on it
    nodes: int = Field(ge=1, le=10_000)
    rounds: int = Field(ge=1, le=10_000)
    seed: int = Field(default=1, ge=0, le=2**32 - 1)
    fraction: float = Field(default=1.0, gt=0, le=1, allow_inf_nan=False)
    round_timeout: float = Field(default=120.0, gt=0, allow_inf_nan=False)
    layers: list[int] = Field(default=[784, 30, 10], min_length=2)
    lr: float = Field(default=3.0, gt=0, allow_inf_nan=False)
    batch_size: int = Field(default=10, ge=1)
    local_epochs: int = Field(default=1, ge=1)
    train_limit: int = Field(default=0, ge=0, le=60_000)
    kernel: Kernel | None = None
    kernels: list[Kernel] | None = None
    profile: str = "host"
    profiles: list[str] | None = None
    link: str = DEFAULT_LINK
    aggregator: Literal["fedavg", "median", "trimmed-mean"] = "fedavg"
    trim_fraction: float = Field(default=0.25, ge=0, lt=0.5, allow_inf_nan=False)
    max_update_norm: float = Field(default=3.0, ge=0, allow_inf_nan=False)
    split: Split = Split()
    shootout: Shootout | None = None
    can: Can | None = None

    @field_validator("kernel")
    @classmethod
    def _kernel(cls, v: str | None) -> str | None:
        return None if v is None else check_kernel(v)

    @field_validator("kernels")
    @classmethod
    def _kernels(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else [check_kernel(k) for k in v]

    @field_validator("profile")
    @classmethod
    def _profile(cls, v: str) -> str:
        return get_profile(v).name  # UnknownProfile is a ValueError: pydantic reports its message

    @field_validator("profiles")
    @classmethod
    def _profiles(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else [cls._profile(p) for p in v]

    @field_validator("link")
    @classmethod
    def _link(cls, v: str) -> str:
        return get_link(v).name  # UnknownLink is a ValueError

    @field_validator("layers")
    @classmethod
    def _layers(cls, v: list[int], info: ValidationInfo) -> list[int]:
        if info.data.get("workload", "mnist") == "mnist" and (v[0] != 784 or v[-1] != 10) or min(v) < 1:
            raise ValueError(f"layers must start with 784, end with 10 and be positive, got {v}")
        return v

    @model_validator(mode="after")
    def _workload(self) -> "Scenario":
        if self.workload == "mnist":
            if self.can is not None:
                raise ValueError("[can] is only for workload = 'can'")
            return self
        from ecufl.can.fleetrun import check_layers

        can = self.can or Can()
        if can.train_seconds < 4 * can.window:
            raise ValueError(f"can.window = {can.window:g} leaves fewer than 4 windows in can.train_seconds = "
                             f"{can.train_seconds:g}")
        check_layers(self.layers, can.window)  # LayersError (a ValueError): one line
        return self

    @model_validator(mode="after")
    def _fleet(self) -> "Scenario":
        if self.kernel is not None and self.kernels is not None:
            raise ValueError("give either kernel (all nodes) or kernels (one per node), not both")
        if self.kernels is not None and len(self.kernels) != self.nodes:
            raise ValueError(f"kernels has {len(self.kernels)} entries for nodes = {self.nodes}")
        if self.profiles is not None and len(self.profiles) != self.nodes:
            raise ValueError(f"profiles has {len(self.profiles)} entries for nodes = {self.nodes}")
        if self.train_limit and self.train_limit < self.nodes:
            raise ValueError(f"train_limit = {self.train_limit} leaves some of the {self.nodes} nodes without data")
        for name in dict.fromkeys(self.profiles or [self.profile]):
            mem = get_profile(name).memory_bytes
            if mem is not None and mem < (SUPERNODE_STACK_MB + OS_RESERVE_MB) * 2**20:
                raise ValueError(
                    f"profile {name!r} has {mem // 2**20} MB, but a supernode board needs about "
                    f"{SUPERNODE_STACK_MB} MB for SuperNode + ClientApp runtime and {OS_RESERVE_MB} MB for its OS: "
                    "it does not fit (use a 1 GB profile, or an agent board via `ecufl deploy`)")
        if self.engine == "deployment" and self.nodes > MAX_DEPLOYMENT_NODES:
            raise ValueError(f"engine = 'deployment' runs at most {MAX_DEPLOYMENT_NODES} nodes as processes "
                             "on one machine; use engine = 'simulation'")
        return self

    # -- what the fleet hands to Flower ------------------------------------------------------------
    def node_kernels(self, kernel: str | None = None) -> list[str]:
        """The kernel spec per node as written (``a|b`` alternatives are chosen on the node); empty
        when the scenario names none (each node then uses its own node config)."""
        if kernel is not None:
            return [kernel] * self.nodes
        if self.kernels is not None:
            return list(self.kernels)
        if self.kernel is not None:
            return [self.kernel] * self.nodes
        return []

    def config(self, kernel: str | None = None) -> RunConfig:
        """The run's settings (one run; ``kernel``: the shootout's run of that kernel)."""
        kernels = self.node_kernels(kernel)
        if kernels and len(set(kernels)) == 1:
            kernels = kernels[:1]  # one for all: "kernel = 'c'" rather than "c,c,c,c"
        profiles = self.profiles or [self.profile]
        return RunConfig(
            name=self.name + (f"-{kernel.replace(':', '-').replace('|', '-')}" if kernel else ""),
            rounds=self.rounds, nodes=self.nodes, fraction=self.fraction, local_epochs=self.local_epochs,
            lr=self.lr, batch_size=self.batch_size, layers=list(self.layers), seed=self.seed,
            alpha=self.split.alpha or 0.0, train_limit=self.train_limit, kernels=kernels,
            profiles=profiles if len(set(profiles)) > 1 else profiles[:1], link=self.link,
            aggregator=self.aggregator, trim_fraction=self.trim_fraction, max_update_norm=self.max_update_norm,
            round_timeout=self.round_timeout, workload=self.workload, **self._can_config())

    def _can_config(self) -> dict[str, Any]:
        if self.workload != "can":
            return {}
        can = self.can or Can()
        return {"can_train_seconds": can.train_seconds, "can_window": can.window,
                "can_test_vehicles": can.test_vehicles, "can_test_seconds": can.test_seconds,
                "can_baselines": can.baselines}

    def run_config(self, kernel: str | None = None) -> dict[str, Any]:
        """The flat run config ``flwr run --run-config`` takes."""
        return self.config(kernel).to_flat()


def load(path: str | Path, **overrides: Any) -> Scenario:
    """Read and validate a scenario file; raise ScenarioError with one line on anything wrong."""
    path = Path(path)
    raw = tomlfile.read(path, "scenario", ScenarioError)
    raw.update({k: v for k, v in overrides.items() if v is not None})
    raw.setdefault("name", path.stem)
    return tomlfile.validate(Scenario, raw, path, "scenario", ScenarioError)
