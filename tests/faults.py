"""Broken ECUs for the fault tests, kept out of the production ClientApp: a Flower mod that damages
the reply of ecufl's own ClientApp the way a broken board might (NaN/Inf weights, a wrong shape, a
wrong dtype), and a Flower App wrapping ecufl's ClientApp in it (``build_app``), so a real fleet
runs the real client with the damage added on top.

Which partition breaks how comes from the run config key ``corrupt`` (``"1:nan,2:shape"``), which
only the fault app has. This file is shipped inside that app's FAB as ``faults.py``: it imports
nothing from the test suite.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from ecufl.client import client_app
from ecufl import wire

FAULTS = ("nan", "inf", "shape", "dtype")


def damage(reply: Message, mode: str) -> Message:
    """The reply with its weights damaged in place (``mode`` one of FAULTS)."""
    if mode not in FAULTS:
        raise ValueError(f"unknown fault {mode!r}")
    if wire.ARRAYS not in reply.content.array_records:
        return reply  # the client failed: nothing to damage
    params = wire.record_to_params(reply.content.array_records[wire.ARRAYS])
    dtype: str | None = wire.TRANSPORT_DTYPE
    if mode in ("nan", "inf"):
        params.weights[0] = params.weights[0].copy()
        params.weights[0][0, 0] = np.nan if mode == "nan" else np.inf
    elif mode == "shape":
        params.weights[0] = params.weights[0][:, :-1]
    else:
        dtype = "float64"
    reply.content[wire.ARRAYS] = wire.params_to_record(params, dtype=dtype)
    return reply


def fault_of(context: Context) -> str:
    """This node's fault from the run config's ``corrupt`` (partition id -> fault), or ""."""
    wanted = dict(item.split(":", 1) for item in str(context.run_config.get("corrupt", "")).split(",") if ":" in item)
    return wanted.get(str(context.node_config.get("partition-id")), "").strip()


def corrupt_mod(msg: Message, context: Context, call_next) -> Message:
    reply = call_next(msg, context)
    mode = fault_of(context)
    return damage(reply, mode) if mode and msg.metadata.message_type == "train" else reply


app = ClientApp(mods=[corrupt_mod])
app.train()(client_app.train)
app.evaluate()(client_app.evaluate)


def build_app(folder: Path, root: Path) -> Path:
    """A Flower App in ``folder``: ecufl's pyproject.toml (``root``) with the ClientApp swapped for
    this module's and one more run-config key, ``corrupt``."""
    folder.mkdir(parents=True, exist_ok=True)
    text = (root / "pyproject.toml").read_text()
    text = text.replace('clientapp = "ecufl.client.client_app:app"', 'clientapp = "faults:app"')
    text = re.sub(r'fab-include = \[[^\]]*\]', 'fab-include = ["faults.py"]', text)
    text = text.replace("[tool.flwr.app.config]\n", '[tool.flwr.app.config]\ncorrupt = ""\n')
    text = re.sub(r'(?m)^name = "ecufl"$', 'name = "ecufl-faults"', text, count=1)  # the [project] name
    assert 'clientapp = "faults:app"' in text and 'corrupt = ""' in text
    (folder / "pyproject.toml").write_text(text)
    shutil.copy(Path(__file__), folder / "faults.py")
    return folder
