"""What one ECU client needs before it trains: who it is, its shard, its kernel.

Identity comes from the node config (``--node-config`` of ``flower-supernode``; in simulation Flower
fills ``partition-id`` and ``num-partitions``). The run's hyper-parameters and the fleet's layout
come from the server in every train message, so a fleet can run many scenarios without restarting.

Which kernel a client uses: the run config's ``kernel`` (a comma-separated list, indexed by the
partition id, cycled) when it names one, else the node config's ``kernel``, else ``numpy``. A kernel is
written ``name`` or ``name:dtype`` (``numpy:float64``); ``a|b`` picks the first one that loads on this
node (``choose``), so a node without the native library falls back where the scenario says.

MNIST is loaded once per process and kept (``_CACHE``) while its files stay the same (checked by
a stat of the two training files on every use: a vanished file is the loader's one-line error, a
replaced one is loaded again). On Flower's plain path every message starts a fresh
``flwr-clientapp`` process, so the load shows up in every round's ``data_seconds``; in simulation
the actor keeps it, and on a warm node (``ecufl.fleet.warm``) the node's parent process holds it
and every ClientApp forked from that parent inherits it. The shard of the latest (partitions,
seed, alpha, train limit) is kept the same way; a new one replaces it.

A warm parent learns what its ClientApps used through ``WARM_HINTS``: set in each forked
ClientApp, a pipe to the parent on which ``note`` writes one JSON line per shard or kernel built,
so the parent builds it once and the next ClientApps inherit it.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ecufl import data as mnist
from ecufl.kernels import split_spec, usable

_CACHE: dict[Any, Any] = {}
WARM_HINTS: int | None = None  # write end of the warm parent's hint pipe (set in forked ClientApps only)


def note(kind: str, **fields: Any) -> None:
    """Tell a warm parent what this ClientApp built (no-op elsewhere); one line < PIPE_BUF is atomic."""
    if WARM_HINTS is None:
        return
    try:
        os.write(WARM_HINTS, (json.dumps({"kind": kind, **fields}) + "\n").encode())
    except OSError:  # the parent is gone: nothing to tell
        pass


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


def choose(spec: str) -> str:
    """``a|b|c``: the first alternative whose kernel can be created on this node (``usable``), else
    the last one (whose error the client then reports)."""
    options = [s.strip() for s in spec.split("|") if s.strip()]
    return next((o for o in options if usable(split_spec(o)[0])), options[-1] if options else "numpy")


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
    kernel_spec = _pick(config.get("kernel", ""), pid) or str(node_config.get("kernel", "")) or "numpy"
    kernel, dtype, agent = split_spec(choose(kernel_spec))
    profile = _pick(config.get("profile", ""), pid) or str(node_config.get("profile", "")) or "host"
    return Identity(pid, n, kernel, dtype, profile, agent)


def _train_files() -> tuple:
    """(path, inode, size, mtime) of the two training files where the loader finds them now;
    ``mnist.DataError`` (one line naming the place and the missing files) if they are gone."""
    folder = mnist.locate(download=False)
    out = []
    for key in (("train", "images"), ("train", "labels")):
        name = mnist.FILES[key]
        for path in (folder / name, folder / f"{name}.gz"):
            try:
                st = path.stat()
            except OSError:
                continue
            out.append((str(path), st.st_ino, st.st_size, st.st_mtime_ns))
            break
    return tuple(out)


def training_set() -> tuple[mnist.Dataset, float]:
    """MNIST's training set and the seconds it took to load here (0 when this process had it and
    its files are unchanged)."""
    if "train" in _CACHE:
        if _train_files() == _CACHE["train-files"]:
            return _CACHE["train"], 0.0
        del _CACHE["train"]
    t0 = time.perf_counter()
    train = mnist.load("train")
    _CACHE["train-files"] = _train_files()
    _CACHE["train"] = train
    return train, time.perf_counter() - t0


def shard(labels: np.ndarray, ident: Identity, seed: int, alpha: float, train_limit: int) -> tuple[np.ndarray, float]:
    """This client's sample indices: ``ecufl.data.partition`` of the first ``train_limit`` samples
    (all if 0), IID if ``alpha`` is 0 else Dirichlet(alpha), from the run's seed. Every node and the
    server compute the same split. Returns (indices, seconds spent)."""
    key = ("shard", ident.num_partitions, seed, alpha, train_limit)
    if key in _CACHE:
        return _CACHE[key][ident.partition_id], 0.0
    t0 = time.perf_counter()
    pool = labels[:train_limit] if train_limit else labels
    shards = mnist.partition(pool, ident.num_partitions, seed, alpha=alpha or None)
    for old in [k for k in _CACHE if isinstance(k, tuple) and k[0] == "shard"]:
        del _CACHE[old]  # one split kept: the latest run's
    _CACHE[key] = shards
    note("shard", num_partitions=ident.num_partitions, seed=seed, alpha=alpha, train_limit=train_limit)
    return _CACHE[key][ident.partition_id], time.perf_counter() - t0


def prepare_shard(num_partitions: int, seed: int, alpha: float, train_limit: int) -> bool:
    """Build and keep the split a ClientApp noted (a warm parent); True if it was not kept yet."""
    train, _ = training_set()
    if ("shard", num_partitions, seed, alpha, train_limit) in _CACHE:
        return False
    shard(train.labels, Identity(0, num_partitions, "numpy", None, "host"), seed, alpha, train_limit)
    return True
