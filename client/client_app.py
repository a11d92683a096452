"""The ECU client: a Flower ClientApp (Message API) that trains HDRNN on its shard with one kernel.

``train``: receive the global weights and the round's config, train ``local-epochs`` on this
node's shard with its kernel (``client.runner``), reply with the weights (ArrayRecord), the
FedAvg metrics (MetricRecord: num-examples, loss, accuracy, timings) and a RoundReport (serialised
protobuf in the ConfigRecord ``report``). A client that cannot train (kernel not built here,
unknown profile, bad node config) replies with a report whose ``error`` says why and no weights:
the server logs it and the round goes on with the others.

``evaluate``: loss and accuracy of the received weights on this node's shard (numpy reference).

The client never imports the server; both share only ``ecufl.proto``.
"""

from __future__ import annotations

import os
import resource
import socket
import time
import traceback

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

import numpy as np

import ecufl
from ecufl.client import can_task, emulated, runner, task  # noqa: F401 - emulated registers the i.MX6 profiles' trainer
from ecufl.kernels import KernelUnavailable, create
from ecufl import wire
from ecufl.proto import RoundReport
from ecufl.runconfig import RunConfig, RunConfigError

app = ClientApp()
_handled = 0  # messages this process has handled: start-up counts only for the first one
_IMPORTED_AT = time.time()  # a process that started after this was forked from one that imported us


def _cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _process_age() -> float:
    """Seconds since this process started (from /proc; 0 where there is no /proc)."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


@app.train()
def train(msg: Message, context: Context) -> Message:
    global _handled
    started_at = time.time()
    startup = _process_age() if _handled == 0 else 0.0  # deployment: a fresh process per message
    forked = _handled == 0 and started_at - startup > _IMPORTED_AT + 0.02  # /proc start ticks are 10 ms
    client_process = "reused" if _handled else ("forked" if forked else "fresh")
    _handled += 1
    cpu0 = _cpu_seconds()
    config = dict(msg.content.config_records.get(wire.CONFIG, ConfigRecord()))
    server_round = int(config.get("server-round", 0))
    report = RoundReport(node_id=int(context.node_id), server_round=server_round, startup_seconds=startup,
                         started_at=started_at, ecufl_version=ecufl.__version__, hostname=socket.gethostname(),
                         pid=os.getpid(), client_process=client_process)
    try:
        ident = task.identity(dict(context.node_config), config)
        run = RunConfig.from_flat(config)
        report.partition_id = ident.partition_id
        report.num_partitions = ident.num_partitions
        report.kernel = ident.kernel + "".join(f":{q}" for q in (ident.dtype, ident.agent) if q)
        report.profile = ident.profile
        report.layers.extend(run.layers)
        report.lr = run.lr
        report.batch_size = run.batch_size
        report.local_epochs = run.local_epochs
        seed = run.seed

        arrays = msg.content.array_records[wire.ARRAYS]
        report.bytes_received = arrays.count_bytes()
        global_params = wire.record_to_params(arrays)

        if run.workload == "can":  # a vehicle: its own normal CAN windows, inputs = targets (can_task)
            windows, report.data_seconds = can_task.windows(run, ident.partition_id)
            indices = np.arange(len(windows))
        else:
            train_set, load_seconds = task.training_set()
            indices, split_seconds = task.shard(train_set.labels, ident, seed, run.alpha, run.train_limit)
            report.data_seconds = load_seconds + split_seconds
            report.data_load_seconds = load_seconds
        report.samples = len(indices)

        job = runner.TrainJob(kernel=ident.kernel, dtype=ident.dtype, profile=ident.profile, params=global_params,
                              options={"agent": ident.agent} if ident.agent else {},
                              shard=indices, lr=report.lr, batch_size=report.batch_size,
                              epochs=report.local_epochs,
                              order_seed=runner.order_seed(seed, ident.partition_id, server_round))
        if run.workload == "can":
            outcome = can_task.train(job, windows)
        else:
            outcome = runner.run(job, train_set.images, train_set.labels)
    except (KernelUnavailable, RunConfigError, ValueError, KeyError) as e:
        report.error = f"{type(e).__name__}: {e}" if isinstance(e, KeyError) else str(e)
        return _reply(msg, report, None, cpu0)
    except Exception as e:  # noqa: BLE001 - any failure becomes this client's report, not a crash
        report.error = f"{type(e).__name__}: {e} ({traceback.extract_tb(e.__traceback__)[-1].name})"
        return _reply(msg, report, None, cpu0)

    report.dtype = outcome.dtype
    report.setup_seconds = outcome.setup_seconds
    report.train_seconds = outcome.train_seconds
    report.train_cpu_seconds = outcome.train_cpu_seconds
    report.local_loss = outcome.local_loss
    report.local_accuracy = outcome.local_accuracy
    report.trainer = outcome.trainer
    if outcome.arm_instructions is not None:
        report.arm_instructions = outcome.arm_instructions
    if outcome.board_seconds_projected is not None:
        report.board_seconds_projected = outcome.board_seconds_projected
    if outcome.extra.get("peak_rss_bytes") is not None:  # an external trainer's own peak (emulated board)
        report.trainer_peak_rss_bytes = int(outcome.extra["peak_rss_bytes"])

    t0 = time.perf_counter()
    record = wire.params_to_record(outcome.params)
    report.bytes_sent = record.count_bytes()
    report.serialise_seconds = time.perf_counter() - t0  # the report's own bytes are added in _reply
    return _reply(msg, report, record, cpu0)


def _reply(msg: Message, report: RoundReport, record: ArrayRecord | None, cpu0: float) -> Message:
    t0 = time.perf_counter()
    report.cpu_seconds = _cpu_seconds() - cpu0
    report.peak_rss_bytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    report.finished_at = time.time()
    metrics = MetricRecord({
        wire.NUM_EXAMPLES: int(report.samples) if record is not None else 0,
        "loss": float(report.local_loss), "accuracy": float(report.local_accuracy),
        "train-seconds": float(report.train_seconds),
    })
    content = RecordDict({wire.METRICS: metrics})
    if record is not None:
        content[wire.ARRAYS] = record
    report.serialise_seconds += time.perf_counter() - t0
    content[wire.REPORT] = ConfigRecord({wire.REPORT_BYTES: report.SerializeToString()})
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    config = dict(msg.content.config_records.get(wire.CONFIG, ConfigRecord()))
    ident = task.identity(dict(context.node_config), config)
    run = RunConfig.from_flat(config)
    params = wire.record_to_params(msg.content.array_records[wire.ARRAYS])
    train_set, _ = task.training_set()
    indices, _ = task.shard(train_set.labels, ident, run.seed, run.alpha, run.train_limit)
    kernel = create("numpy", params.astype("float64"), dtype="float64")
    ev = kernel.evaluate(train_set.images[indices], train_set.labels[indices])
    metrics = MetricRecord({wire.NUM_EXAMPLES: len(indices), "loss": ev.loss, "accuracy": ev.accuracy})
    return Message(content=RecordDict({wire.METRICS: metrics}), reply_to=msg)
