"""A hostile ECU for the hostile-fleet test: a Flower mod around ecufl's own ClientApp that turns one
partition's honest reply into one of the attacks of issue 15 (tests/test_hostile_strategy.py
sends the same ones straight to the strategy). Shipped inside its Flower App's FAB as
``hostile_app.py``: it imports nothing from the test suite.

Run config key ``hostile = "PARTITION:MODE/MODE/..."``: in round r the partition sends the
((r - 1) mod n)-th attack, so one run tries every attack once, one at a time. MODE ``refused``
sends NaN weights (refused by every version of the server): the run "without" the hostile client.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord

from ecufl import wire
from ecufl.client import client_app
from ecufl.proto import RoundReport
from flwr.clientapp import ClientApp

ATTACKS = ("garbage-report", "truncated-npy", "extra-metric", "second-arrayrecord", "num-examples-inf",
           "num-examples-huge", "weights-1e30", "weights-100", "refused")


def _report(reply: Message) -> RoundReport:
    r = RoundReport()
    r.ParseFromString(reply.content.config_records[wire.REPORT][wire.REPORT_BYTES])
    return r


def _set_report(reply: Message, r: RoundReport) -> None:
    reply.content[wire.REPORT] = ConfigRecord({wire.REPORT_BYTES: r.SerializeToString()})


def _metrics(reply: Message) -> dict:
    return dict(reply.content.metric_records[wire.METRICS])


def attack(reply: Message, mode: str) -> Message:
    if mode not in ATTACKS:
        raise ValueError(f"unknown attack {mode!r}")
    c = reply.content
    if wire.ARRAYS not in c.array_records:
        return reply  # the client failed: nothing to attack with
    params = wire.record_to_params(c.array_records[wire.ARRAYS])
    if mode == "garbage-report":
        c[wire.REPORT] = ConfigRecord({wire.REPORT_BYTES: b"\xff\xff\xff\xff garbage"})
    elif mode == "truncated-npy":
        arrays = dict(c.array_records[wire.ARRAYS].items())
        good = arrays["w1"]
        arrays["w1"] = Array(dtype=good.dtype, shape=tuple(good.shape), stype=good.stype, data=good.data[:-7])
        c[wire.ARRAYS] = ArrayRecord(arrays)
    elif mode == "extra-metric":
        c[wire.METRICS] = MetricRecord(_metrics(reply) | {"sneaky": 1.0})
    elif mode == "second-arrayrecord":
        c["more"] = wire.params_to_record(params)
    elif mode == "num-examples-inf":
        c[wire.METRICS] = MetricRecord(_metrics(reply) | {wire.NUM_EXAMPLES: float("inf")})
    elif mode == "num-examples-huge":  # weights 100 claiming 1e9 samples, the report agreeing
        c[wire.ARRAYS] = wire.params_to_record(params.__class__([np.full_like(w, 100) for w in params.weights],
                                                                [np.full_like(b, 100) for b in params.biases]))
        c[wire.METRICS] = MetricRecord(_metrics(reply) | {wire.NUM_EXAMPLES: 1_000_000_000})
        r = _report(reply)
        r.samples = 1_000_000_000
        _set_report(reply, r)
    elif mode in ("weights-1e30", "weights-100"):
        v = 1e30 if mode == "weights-1e30" else 100.0
        c[wire.ARRAYS] = wire.params_to_record(params.__class__([np.full_like(w, v) for w in params.weights],
                                                                [np.full_like(b, v) for b in params.biases]))
    else:  # refused: NaN weights
        params.weights[0] = params.weights[0].copy()
        params.weights[0][0, 0] = np.nan
        c[wire.ARRAYS] = wire.params_to_record(params)
    return reply


def attack_of(context: Context, server_round: int) -> str:
    spec = str(context.run_config.get("hostile", ""))
    pid, _, modes = spec.partition(":")
    if not modes or pid.strip() != str(context.node_config.get("partition-id")):
        return ""
    seq = [m.strip() for m in modes.split("/") if m.strip()]
    return seq[(server_round - 1) % len(seq)]


def hostile_mod(msg: Message, context: Context, call_next) -> Message:
    reply = call_next(msg, context)
    if msg.metadata.message_type != "train":
        return reply
    server_round = int(msg.content.config_records[wire.CONFIG].get("server-round", 0))
    mode = attack_of(context, server_round)
    return attack(reply, mode) if mode else reply


app = ClientApp(mods=[hostile_mod])
app.train()(client_app.train)
app.evaluate()(client_app.evaluate)


def build_app(folder: Path, root: Path) -> Path:
    """A Flower App in ``folder``: ecufl's pyproject.toml (``root``) with the ClientApp swapped for this
    module's and one more run-config key, ``hostile`` (as tests/faults.py does for ``corrupt``)."""
    folder.mkdir(parents=True, exist_ok=True)
    text = (root / "pyproject.toml").read_text()
    text = text.replace('clientapp = "ecufl.client.client_app:app"', 'clientapp = "hostile_app:app"')
    text = re.sub(r'fab-include = \[[^\]]*\]', 'fab-include = ["hostile_app.py"]', text)
    text = text.replace("[tool.flwr.app.config]\n", '[tool.flwr.app.config]\nhostile = ""\n')
    text = re.sub(r'(?m)^name = "ecufl"$', 'name = "ecufl-hostile"', text, count=1)
    assert 'clientapp = "hostile_app:app"' in text and 'hostile = ""' in text
    (folder / "pyproject.toml").write_text(text)
    shutil.copy(Path(__file__), folder / "hostile_app.py")
    return folder
