"""What one ECU client needs before it trains: who it is, its shard, its kernel.

Identity comes from the node config (``--node-config`` of ``flower-supernode``; in simulation Flower
fills ``partition-id`` and ``num-partitions``). The run's hyper-parameters and the fleet's layout
come from the server in every train message, so a fleet can run many scenarios without restarting.

Which kernel a client uses: the scenario's list (``node-kernels`` in the message, indexed by the
partition id) when it names one, else the node config's ``kernel``, else ``numpy``. A kernel is
written ``name`` or ``name:dtype`` (``numpy:float64``).

MNIST is loaded once per process and kept (``_CACHE``): in deployment every message starts a fresh
``flwr-clientapp`` process, so the load shows up in every round's ``data_seconds``; in simulation the
actor keeps it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ecufl import data as mnist
from ecufl.kernels import split_spec

_CACHE: dict[Any, Any] = {}


@dataclass(frozen=True)
class Identity:
    partition_id: int
    num_partitions: int
    kernel: str
    dtype: str | None
    profile: str
    agent: str | None = None  # kernel `remote:NODE`: the board whose agent trains


def _pick(listing: str, index: int) -> str:
    items = [s.strip() for s in str(listing).split(",") if s.strip()]
    return items[index % len(items)] if items else ""


def identity(node_config: dict[str, Any], config: dict[str, Any]) -> Identity:
    """Resolve this client's partition, kernel and profile; ValueError names a bad key."""
    if "partition-id" not in node_config:
        raise ValueError("node config has no partition-id (start the SuperNode with --node-config 'partition-id=N ...')")
    pid = int(node_config["partition-id"])
    n = int(config.get("num-partitions") or node_config.get("num-partitions") or 0)
    if "num-partitions" in node_config and int(node_config["num-partitions"]) != n:
        raise ValueError(f"node config num-partitions={node_config['num-partitions']} but the run has {n} partitions")
    if not 0 <= pid < n:
        raise ValueError(f"node config partition-id={pid} is outside 0..{n - 1}")
    kernel_spec = _pick(config.get("node-kernels", ""), pid) or str(node_config.get("kernel", "")) or "numpy"
    kernel, dtype, agent = split_spec(kernel_spec)
    profile = _pick(config.get("node-profiles", ""), pid) or str(node_config.get("profile", "")) or "host"
    return Identity(pid, n, kernel, dtype, profile, agent)


def training_set() -> tuple[mnist.Dataset, float]:
    """MNIST's training set and the seconds it took to load here (0 when this process had it)."""
    if "train" in _CACHE:
        return _CACHE["train"], 0.0
    t0 = time.perf_counter()
    _CACHE["train"] = mnist.load("train")
    return _CACHE["train"], time.perf_counter() - t0


def shard(labels: np.ndarray, ident: Identity, seed: int, alpha: float, train_limit: int) -> tuple[np.ndarray, float]:
    """This client's sample indices: ``ecufl.data.partition`` of the first ``train_limit`` samples
    (all if 0), IID if ``alpha`` is 0 else Dirichlet(alpha), from the run's seed. Every node and the
    server compute the same split. Returns (indices, seconds spent)."""
    key = ("shard", ident.num_partitions, seed, alpha, train_limit)
    if key in _CACHE:
        return _CACHE[key][ident.partition_id], 0.0
    t0 = time.perf_counter()
    pool = labels[:train_limit] if train_limit else labels
    _CACHE[key] = mnist.partition(pool, ident.num_partitions, seed, alpha=alpha or None)
    return _CACHE[key][ident.partition_id], time.perf_counter() - t0


def corruption(config: dict[str, Any], partition_id: int) -> str:
    """TEST HOOK: the fault this client injects into its reply ("nan", "inf", "shape", "dtype" or "").

    Set by a scenario's ``[test_hooks] corrupt = {"1" = "nan"}`` (partition id -> fault) and sent
    as ``test-corrupt = "1:nan"``; used by the fault tests to check that the server rejects bad
    replies. Never set in real runs.
    """
    for item in str(config.get("test-corrupt", "")).split(","):
        pid, _, mode = item.partition(":")
        if pid.strip() == str(partition_id):
            return mode.strip()
    return ""
