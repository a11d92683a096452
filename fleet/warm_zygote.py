"""A warm node's parent (zygote): imports, data and kernel held once, one forked ClientApp per message.

Started by the node's launcher (``ecufl.fleet.warm``). At start it imports flwr's ClientApp
process code, numpy and ecufl's ClientApp, loads MNIST's training set and builds the node's
kernel once (so a native library is loaded), then writes ``ready`` on stdout. Then, for every
line ``TOKEN TASK_ID`` on stdin, it forks; the child runs Flower's ``run_clientapp`` with that
token, as ``flwr-clientapp`` would, and exits. The parent opens no connection and starts no
thread, so nothing of gRPC, httpx or a lock held by another thread is copied into a child.

What the children build (the shard of a new split, a kernel for new layer sizes) they note on a
pipe (``client.task.note``); the parent builds the same once, so the next children inherit it:
a new run, split or kernel costs one message its build, later messages find it ready. A line
``built ...`` in the node's log says when that happened.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import sys
import threading
import time

import httpx
from flwr.app import Context, Error, Message
from flwr.cli.install import install_from_fab
from flwr.clientapp.client_app import LoadClientAppError
from flwr.clientapp.utils import get_load_client_app_fn
from flwr.common.constant import ErrorCode, SubStatus
from flwr.common.serde import context_from_proto, fab_from_proto, run_from_proto
from flwr.proto.node_pb2 import Node  # pylint: disable=E0611
from flwr.proto.runtime_pb2 import PullAppMessagesRequest, PullTaskInputRequest  # pylint: disable=E0611
from flwr.supercore.app_utils import start_parent_process_monitor
from flwr.supercore.exit import ExitCode, flwr_exit, register_signal_handlers
from flwr.supercore.heartbeat import HeartbeatSender, make_task_heartbeat_fn_http
from flwr.supercore.inflatable.inflatable_protobuf_utils import (
    make_confirm_message_received_fn_protobuf,
    make_pull_object_fn_protobuf,
)
from flwr.supercore.inflatable.inflatable_utils import pull_and_inflate_object_from_tree
from flwr.supercore.interceptors import RuntimeTokenHttpInterceptor, RuntimeVersionHttpInterceptor
from flwr.supercore.retry import make_simple_http_retry_invoker
from flwr.supercore.runtime import RuntimeHttpClient
from flwr.supercore.runtime.tracing import RuntimeTracingInterceptor
from flwr.supercore.task_identity import TaskIdentity
from flwr.supercore.telemetry import EventType
from flwr.supernode.runtime.run_clientapp import push_message, push_task_output

from ecufl.client import client_app  # noqa: F401 - the ClientApp and all it imports, loaded once here
from ecufl.client import can_task, runner, task
from ecufl.fleet.local import WARM_TIMING
from ecufl.kernels import available, kernel_class, split_spec, usable

DEFAULT_SIZES = [784, 30, 10]
# A SuperNode creates the task before it has pulled the message's objects from the SuperLink; a
# ClientApp that asks for them too early is told to retry. Flower's backoff starts at 1 s (a
# process that took seconds to start rarely meets it); a forked ClientApp is there within
# milliseconds, so it retries from 10 ms on, doubling to at most 0.1 s or the launcher's poll
# (ECUFL_WARM_POLL, nodes / 40 s: each try is one request to its own SuperNode, and at 16 nodes
# all 16 ClientApps wait at once).
PULL_BACKOFF = (0.01, max(0.1, min(0.5, float(os.environ.get("ECUFL_WARM_POLL", "0") or 0))))




MESSAGE_WAIT = 60.0  # seconds a forked ClientApp waits for its SuperNode to store the message


def _pull_messages(client: RuntimeHttpClient):
    """PullMessages until the SuperNode has stored the task's message (``PULL_BACKOFF``). The SuperNode makes the
    task before it stores the message (``start_client_internal._pull_and_store_message``); a
    forked ClientApp can ask in between and get an empty answer, which changes nothing there."""
    delay, end = PULL_BACKOFF[0], time.monotonic() + MESSAGE_WAIT
    while not (pulled := client.PullMessages(PullAppMessagesRequest())).messages_list:
        if time.monotonic() > end:
            raise RuntimeError(f"No messages received from Runtime API within {MESSAGE_WAIT:.0f} s")
        time.sleep(delay)
        delay = min(2 * delay, PULL_BACKOFF[1])
    return pulled


def run_clientapp(address: str, token: str, launcher_pid: int, forked_at: float = 0.0) -> None:
    """Flower's ClientApp process (``flwr.supernode.runtime.run_clientapp.run_clientapp`` of flwr
    1.42, step for step: heartbeat, pull task input and message with the token, install the FAB,
    load the ClientApp it names, call it, push the reply and the task output), with two
    differences: the message and its objects are pulled with ``PULL_BACKOFF`` (a forked ClientApp
    can be there before its SuperNode has stored them), and no runtime dependency installation
    (the fleet runs with it off). The app the FAB names is found in
    ``sys.modules``, loaded by the parent."""
    start_parent_process_monitor(launcher_pid)
    client = RuntimeHttpClient.from_server_address(
        server_address=address, insecure=True, root_certificates=None,
        interceptors=[RuntimeTracingInterceptor(), RuntimeVersionHttpInterceptor(component_name="flwr-clientapp"),
                      RuntimeTokenHttpInterceptor(token)],
        retry_invoker=(retry := make_simple_http_retry_invoker()))
    heartbeat = None
    message = reply = None
    context: Context | None = None
    sub_status, details, exit_code = SubStatus.FAILED, "ClientApp task failed due to unknown reason", ExitCode.SUCCESS
    times = {"pid": os.getpid(), "forked_at": forked_at or time.time()}

    def on_exit() -> None:
        retry.max_tries = 1
        push_task_output(client=client, context=context, sub_status=sub_status, details=details)
        if heartbeat is not None and heartbeat.is_running:
            heartbeat.stop()
        client.close()

    register_signal_handlers(event_type=EventType.FLWR_CLIENTAPP_RUN_LEAVE, exit_message="Task stopped.",
                             exit_handlers=[on_exit])
    try:
        heartbeat = HeartbeatSender(make_task_heartbeat_fn_http(client))
        heartbeat.start()
        res = client.PullTaskInput(PullTaskInputRequest())
        TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = res.task_id, res.run.run_id, res.context.node_id
        context, run, fab = context_from_proto(res.context), run_from_proto(res.run), fab_from_proto(res.fab)
        pulled = _pull_messages(client)
        node, tree = Node(node_id=context.node_id), pulled.message_object_trees[0]
        message = pull_and_inflate_object_from_tree(
            tree, make_pull_object_fn_protobuf(client.PullObject, node, context.run_id),
            make_confirm_message_received_fn_protobuf(client.ConfirmMessageReceived, node, context.run_id),
            return_type=Message, initial_backoff=PULL_BACKOFF[0], backoff_cap=PULL_BACKOFF[1])
        message.metadata.__dict__["_message_id"] = tree.object_id
        times["message_at"] = time.time()  # the SuperNode had the message's objects (it pulls them after the task is made)
        install_from_fab(fab.content, skip_prompt=True)
        app = get_load_client_app_fn(default_app_ref="", app_path=None, multi_app=True)(
            run.fab_id, run.fab_version, fab.hash_str)
        times["handler_at"] = time.time()
        reply = app(message=message, context=context)
        times["reply_at"] = time.time()
        sub_status, details = SubStatus.COMPLETED, ""
    except Exception as ex:  # noqa: BLE001 - as Flower's: an error reply, a failed task
        code = ErrorCode.LOAD_CLIENT_APP_EXCEPTION if isinstance(ex, LoadClientAppError) else ErrorCode.CLIENT_APP_RAISED_EXCEPTION
        details = str(type(ex)) + ":<'" + str(ex) + "'>"
        print(f"warm ClientApp {os.getpid()}: {type(ex).__name__}: {ex}", file=sys.stderr, flush=True)
        if message:
            reply = Message(Error(code=code, reason=details), reply_to=message)
        exit_code = ExitCode.COMMON_APP_IMPORT_ERROR if isinstance(ex, ImportError) else ExitCode.TASK_PROC_EXCEPTION
    finally:
        if reply and context:
            try:
                push_message(client, reply, context)
            except Exception as ex:  # noqa: BLE001
                print(f"warm ClientApp {os.getpid()}: failed to push the reply: {ex}", file=sys.stderr, flush=True)
                exit_code = ExitCode.CLIENTAPP_COMMUNICATION_ERROR
        times["pushed_at"] = time.time()
        print(WARM_TIMING + json.dumps(times), file=sys.stderr, flush=True)
    flwr_exit(code=exit_code, event_type=EventType.FLWR_CLIENTAPP_RUN_LEAVE)


def say(msg: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} warm parent {os.getpid()}: {msg}", file=sys.stderr, flush=True)


def preload(kernel_spec: str) -> None:
    t0 = time.perf_counter()
    httpx.Client(transport=httpx.HTTPTransport()).close()  # imports httpcore/h11 (httpx loads them lazily); no socket
    available()  # imports every kernel module
    options = [o.strip() for o in kernel_spec.split("|") if o.strip()] or ["numpy"]
    # usable() creates a tiny kernel and is cached per process, so the ClientApps inherit the answer;
    # only for kernels of plain memory: no interpreter threads (tflite), no connection (remote) here
    kernel_spec = next((o for o in options if split_spec(o)[0] in runner.KEEPABLE and usable(split_spec(o)[0])),
                       options[-1])
    try:
        task.training_set()
    except Exception as e:  # noqa: BLE001 - the ClientApps report it per message
        say(f"MNIST not loaded: {e}")
    name, dtype, _ = split_spec(kernel_spec)
    if name not in runner.KEEPABLE:
        say(f"ready in {time.perf_counter() - t0:.2f} s after imports; kernel {kernel_spec} is built per message")
        return
    try:
        cls = kernel_class(name)
        runner.prepare_kernel(name, dtype or cls.dtypes[0], DEFAULT_SIZES)
    except Exception as e:  # noqa: BLE001 - an unusable kernel is reported by each ClientApp
        say(f"kernel {kernel_spec} not built ahead: {e}")
    say(f"ready in {time.perf_counter() - t0:.2f} s after imports ({threading.active_count()} thread)")


def apply(hint: dict) -> None:
    """Build what a child noted, once, here."""
    try:
        if hint["kind"] == "shard":
            if task.prepare_shard(hint["num_partitions"], hint["seed"], hint["alpha"], hint["train_limit"]):
                say(f"built the shard of a new split: {hint['num_partitions']} partitions, seed {hint['seed']}, "
                    f"alpha {hint['alpha']}, train limit {hint['train_limit']}")
        elif hint["kind"] == "can-windows":
            if can_task.prepare_windows(hint["seed"], hint["partition"], hint["seconds"], hint["window"]):
                say(f"built the CAN windows of vehicle {hint['seed'] + hint['partition']}: "
                    f"{hint['seconds']:g} s of traffic in {hint['window']:g} s windows")
        elif hint["kind"] == "kernel":
            usable(hint["name"])
            if runner.prepare_kernel(hint["name"], hint["dtype"], hint["sizes"]):
                say(f"built a new kernel: {hint['name']}:{hint['dtype']} "
                    f"{'-'.join(map(str, hint['sizes']))}")
    except Exception as e:  # noqa: BLE001 - the children build it themselves then
        say(f"could not build ahead what a ClientApp noted ({hint.get('kind')}): {e}")


def fork_clientapp(address: str, token: str, launcher_pid: int, hints_w: int, closing: list[int]) -> int:
    forked_at = time.time()
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:  # the child: Flower's ClientApp process, with the parent's imports and data
        for fd in closing:
            os.close(fd)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(2, 1)  # Flower's log lines go to the node's log, not into the launcher's pipe
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        task.WARM_HINTS = hints_w
        run_clientapp(address, token, launcher_pid, forked_at)
        code = 0
    except SystemExit as e:  # flwr_exit ends with sys.exit
        code = e.code if isinstance(e.code, int) else 1
    except BaseException as e:  # noqa: BLE001
        print(f"warm ClientApp {os.getpid()}: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m ecufl.fleet.warm_zygote")
    ap.add_argument("--runtime-api-address", required=True)
    ap.add_argument("--launcher-pid", type=int, required=True)
    ap.add_argument("--kernel", default="numpy")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    preload(args.kernel)
    hints_r, hints_w = os.pipe()
    os.write(1, b"ready\n")
    os.dup2(2, 1)  # the launcher reads nothing more from us
    pending = b""
    hint_buf = b""
    children: set[int] = set()
    while True:
        ready, _, _ = select.select([0, hints_r], [], [], 1.0)
        while children:  # reap finished ClientApps
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                children.clear()
                break
            if pid == 0:
                break
            children.discard(pid)
        if hints_r in ready:
            hint_buf += os.read(hints_r, 65536)
            *lines, hint_buf = hint_buf.split(b"\n")
            for line in lines:
                apply(json.loads(line))
        if 0 in ready:
            data = os.read(0, 4096)
            if not data:  # the launcher is gone
                return
            pending += data
            *lines, pending = pending.split(b"\n")
            for line in lines:
                token, _, task_id = line.decode().partition(" ")
                children.add(fork_clientapp(args.runtime_api_address, token, args.launcher_pid, hints_w, [hints_r]))


if __name__ == "__main__":
    main()
