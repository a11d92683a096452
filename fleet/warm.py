"""A warm node's launcher: it takes the place of Flower's ``flower-superexec`` for ClientApps.

Flower 1.42 runs a SuperNode's ClientApps through a SuperExec: it polls the SuperNode's Runtime
API (``AcquireTask``), gets a task and a one-time token, and starts ``flwr-clientapp --token T``,
a fresh Python process that imports flwr, numpy and the app, pulls the message with the token,
calls the ClientApp and pushes the reply. A warm node (``ecufl fleet up``, the default) runs
``flower-supernode --isolation process`` (the SuperNode starts no SuperExec of its own) and this
launcher beside it, which speaks the SuperExec side of that protocol: the same ``AcquireTask``
calls, the same tokens. It hands each token to the node's warm parent (``warm_zygote``), a
process that has imported flwr, numpy and ecufl and holds the node's MNIST data, shard and
kernel; the parent forks, and the child runs Flower's own ClientApp process code
(``run_clientapp``) with that token. So the SuperLink, the SuperNode, the messages, the tokens
and one process per message stay Flower's; only the interpreter start, the imports and the data
loading are gone.

The parent never opens a connection: the launcher holds the only Runtime API client, and each
forked child opens its own. When the parent dies, the launcher writes one line to the node's log
(``logs/node-N.warm.log``: ``warm parent ... died ...``), runs the messages that arrive meanwhile
on Flower's plain path (``flwr-clientapp``), and starts a new parent.

The launcher polls every ``ECUFL_WARM_POLL`` seconds (``ecufl fleet up`` sets nodes / 40, 0.05 to
0.5 s, so a fleet's launchers together poll about 40 times a second): a SuperNode creates a task
only when its own poll of the SuperLink brings a message. A warm node's SuperNode is Flower's with
its fixed waits made short (``ecufl.fleet.warm_supernode``: it polls the SuperLink as often as the
launcher polls it while a run is busy, instead of every 3 s).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

import httpx
from flwr.proto.runtime_pb2 import AcquireTaskRequest  # pylint: disable=E0611
from flwr.supercore.constant import TaskType
from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor
from flwr.supercore.runtime import RuntimeHttpClient

POLL_ENV = "ECUFL_WARM_POLL"
DIED = "warm parent"  # every line about a dead parent starts with this, after the time stamp


def say(msg: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}", file=sys.stderr, flush=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _how(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class Parent:
    """The node's warm parent process (``python -m ecufl.fleet.warm_zygote``) and its pipes."""

    def __init__(self, address: str, kernel: str, starts: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ecufl.fleet.warm_zygote", "--runtime-api-address", address,
             "--launcher-pid", str(os.getpid()), "--kernel", kernel],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None, bufsize=0)
        os.set_blocking(self.proc.stdout.fileno(), False)
        self.ready = False
        self.starts = starts

    def poll_ready(self) -> bool:
        if not self.ready:
            try:
                got = self.proc.stdout.read()
            except (BlockingIOError, OSError):
                got = None
            if got and b"ready" in got:
                self.ready = True
        return self.ready

    def hand(self, token: str, task_id: int) -> bool:
        try:
            self.proc.stdin.write(f"{token} {task_id}\n".encode())
            return True
        except (BrokenPipeError, OSError):
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def cold_launch(address: str, token: str) -> subprocess.Popen:
    """Flower's plain path for one message (what its SubprocessExecutor runs)."""
    return subprocess.Popen(["flwr-clientapp", "--runtime-api-address", address, "--token", token, "--insecure",
                             "--parent-pid", str(os.getpid())])


def serve(address: str, supernode_pid: int, kernel: str, poll: float) -> None:
    client = RuntimeHttpClient.from_server_address(
        server_address=address, insecure=True, root_certificates=None,
        interceptors=[RuntimeVersionHttpInterceptor(component_name="SuperExec")])
    parent = Parent(address, kernel, 1)
    say(f"warm launcher {os.getpid()} for the SuperNode at {address}: parent pid {parent.proc.pid}")
    wanted = [TaskType.CLIENT_APP.value]
    cold: list[subprocess.Popen] = []
    failing = ""
    try:
        while _alive(supernode_pid):
            cold = [p for p in cold if p.poll() is None]  # reap Flower's ClientApps that finished
            code = parent.proc.poll()
            if code is not None:
                say(f"{DIED} pid {parent.proc.pid} died ({_how(code)}); messages run on Flower's plain "
                    f"path (flwr-clientapp) until a new parent is ready")
                parent = Parent(address, kernel, parent.starts + 1)
            try:
                res = client.AcquireTask(AcquireTaskRequest(supported_task_types=wanted))
                failing = ""
            except (httpx.HTTPError, OSError):  # the SuperNode's Runtime API is not up (yet)
                time.sleep(0.5)
                continue
            except Exception as e:  # noqa: BLE001 - an error answer of the Runtime API: say it once, go on
                if str(e) != failing:
                    say(f"warm launcher: AcquireTask failed: {type(e).__name__}: {e}")
                    failing = str(e)
                time.sleep(0.5)
                continue
            if res.HasField("task") and res.token:
                if not (parent.poll_ready() and parent.hand(res.token, res.task.task_id)):
                    cold.append(cold_launch(address, res.token))
                continue  # there may be more
            time.sleep(poll)
    finally:
        parent.stop()
        client.close()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m ecufl.fleet.warm", description=__doc__.splitlines()[0])
    ap.add_argument("--runtime-api-address", required=True)
    ap.add_argument("--supernode-pid", type=int, required=True)
    ap.add_argument("--kernel", default="numpy", help="the node's kernel, built ahead by the parent")
    args = ap.parse_args(argv)
    try:
        poll = min(5.0, max(0.01, float(os.environ.get(POLL_ENV, "0.05"))))
    except ValueError:
        sys.exit(f"{POLL_ENV}={os.environ[POLL_ENV]!r}: expected seconds between polls")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    serve(args.runtime_api_address, args.supernode_pid, args.kernel, poll)


if __name__ == "__main__":
    main()
