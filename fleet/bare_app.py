"""Flower's floor: a bare Flower 1.42 app with ecufl's message sizes whose ClientApps only sleep.

``ecufl fleet overhead --compare-flower`` runs it on a cold fleet (Flower's plain path: a new
``flwr-clientapp`` process per message) before ecufl's own runs, so the three rows of its table
come from the same machine minutes apart. Nothing of ecufl is imported here: the ServerApp sends
every connected node a train message holding an ArrayRecord as large as ecufl's global weights
(float32, run config ``layers``) and collects the replies with Flower's own
``Grid.send_and_receive``; the ClientApp sleeps ``sleep`` seconds and replies with an ArrayRecord
of the same size and what ecufl's RoundReport would say of its process: seconds from process
start to the handler (start-up), peak RSS, and when it started and finished. The ServerApp
appends one JSON line per round to the run config's ``out`` file, then ``{"done": true}``.
Its Flower App folder (a pyproject.toml naming these components) is written by
``ecufl.fleet.overhead.write_bare_app``.
"""

from __future__ import annotations

import json
import os
import resource
import time
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

server = ServerApp()
client = ClientApp()


def _arrays(layers: str) -> ArrayRecord:
    sizes = [int(v) for v in layers.split(",")]
    out = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        out += [np.zeros((n_out, n_in), dtype=np.float32), np.zeros(n_out, dtype=np.float32)]
    return ArrayRecord(out)


def _process_age() -> float:
    with open("/proc/self/stat") as f:
        start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/uptime") as f:
        uptime = float(f.read().split()[0])
    return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))


@client.train()
def train(msg: Message, context: Context) -> Message:
    started = time.time()
    startup = _process_age()
    arrays = msg.content.array_records["arrays"]
    time.sleep(float(msg.content.config_records["config"]["sleep"]))
    metrics = MetricRecord({"startup-seconds": startup, "sleep-seconds": time.time() - started,
                            "peak-rss-bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                            "started-at": started, "finished-at": time.time(), "pid": os.getpid()})
    # new values, as trained weights would be: Flower's object store would not send again what it holds
    reply = ArrayRecord([a + np.float32(started % 1000) for a in arrays.to_numpy_ndarrays()])
    return Message(content=RecordDict({"arrays": reply, "metrics": metrics}), reply_to=msg)


@server.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    out = Path(str(cfg["out"]))
    wanted, sleep = int(cfg["nodes"]), float(cfg["sleep"])
    end = time.monotonic() + float(cfg["connect-timeout"])
    while len(nodes := list(grid.get_node_ids())) < wanted and time.monotonic() < end:
        time.sleep(0.5)
    arrays = _arrays(str(cfg["layers"]))
    for rnd in range(1, int(cfg["num-server-rounds"]) + 1):
        t0, started = time.perf_counter(), time.time()
        content = RecordDict({"arrays": arrays, "config": ConfigRecord({"sleep": sleep, "server-round": rnd})})
        messages = [Message(content=content, message_type="train", dst_node_id=n) for n in nodes]
        replies = list(grid.send_and_receive(messages, timeout=600))
        wall = time.perf_counter() - t0
        clients = [dict(r.content.metric_records["metrics"]) for r in replies if r.has_content()]
        with open(out, "a") as f:
            f.write(json.dumps({"round": rnd, "asked": len(messages), "replied": len(clients), "wall_seconds": wall,
                                "started_at": started, "clients": clients}) + "\n")
    with open(out, "a") as f:
        f.write(json.dumps({"done": True}) + "\n")
