"""remote: HDRNN trained by the native ecufl agent on a board (board mode ``agent``).

The ClientApp runs on the gateway (or the host); this kernel sends the round's weights, the
hyper-parameters and the sample indices of its epoch orders to the agent over TLS with a client
certificate (proto/agent.proto, 4-byte length frames), and gets the trained weights and the agent's
RoundReport back. The images stay on the board: the board holds the MNIST training set in its data
directory and ``train`` sends indices into it, never pixels (``images``/``labels`` are ignored).

Which agent: kernel ``remote:NODE`` (node config ``kernel="remote:NODE"``, as ``ecufl deploy``
writes it for each agent-mode board) trains on board NODE. ``ECUFL_REMOTE_AGENT`` names either
one JSON endpoint ``{"node", "address", "ca", "cert", "key"}`` or a folder of them, one
``NODE.json`` per board (a gateway SuperNode may serve several boards); with a single file the
board named in the kernel must be the file's ``node``, and plain ``remote`` takes the file's board.
Without the variable this module does not load, so "remote" is not among the available kernels.
Kernels never import Flower: this module needs only ssl, socket and protobuf.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import struct
import sys
from pathlib import Path
from typing import Any

import numpy as np

from .base import EvalResult, Kernel
from .params import Params
from .reference import NumpyKernel

ENV = "ECUFL_REMOTE_AGENT"
if not os.environ.get(ENV):
    raise ImportError(f"no board agent configured ({ENV} is set by `ecufl deploy` for agent-mode boards)")

# agent_pb2 is generated with `import round_report_pb2` (protoc's flat import): alias our module.
from ecufl.proto import round_report_pb2  # noqa: E402

sys.modules.setdefault("round_report_pb2", round_report_pb2)
from ecufl.proto import agent_pb2  # noqa: E402

MAX_REPLY = 64 << 20


class AgentError(RuntimeError):
    pass


def load_endpoint(path: str | None = None, agent: str | None = None) -> dict[str, str]:
    """The endpoint of board ``agent`` (or of the one board ``path`` names) from a file or a folder."""
    path = path or os.environ[ENV]
    f = Path(path)
    if f.is_dir():
        if not agent:
            raise AgentError(f"{ENV}={path} is a folder of boards: name one with kernel remote:NODE")
        f = f / f"{agent}.json"
        if not f.is_file():
            boards = sorted(p.stem for p in Path(path).glob("*.json") if p.stem != "state")
            raise AgentError(f"kernel remote:{agent}: no endpoint {f} (boards here: {', '.join(boards) or 'none'})")
    try:
        ep = json.loads(f.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise AgentError(f"{ENV}={path}: cannot read the agent endpoint ({e})")
    missing = [k for k in ("node", "address", "ca", "cert", "key") if not ep.get(k)]
    if missing:
        raise AgentError(f"{ENV}={f}: missing {', '.join(missing)}")
    if agent and ep["node"] != agent:
        raise AgentError(f"kernel remote:{agent}: this SuperNode's agent endpoint ({f}) is board {ep['node']!r}")
    return ep


class AgentConnection:
    """One mutually authenticated TLS connection to one agent; framed protobuf request/reply."""

    def __init__(self, ep: dict[str, str], timeout: float = 600.0):
        host, _, port = ep["address"].rpartition(":")
        self.node, self.host, self.port = ep["node"], host.strip("[]"), int(port)
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ep["ca"])
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(ep["cert"], ep["key"])
        try:
            raw = socket.create_connection((self.host, self.port), timeout=timeout)
            self.sock = ctx.wrap_socket(raw, server_hostname=self.host)
        except (OSError, ssl.SSLError) as e:
            raise AgentError(f"agent {self.node} at {ep['address']}: cannot connect ({e})") from None

    def _recv(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise AgentError(f"agent {self.node}: connection closed mid-reply")
            buf += chunk
        return bytes(buf)

    def call(self, req: "agent_pb2.TrainRequest") -> "agent_pb2.TrainReply":
        data = req.SerializeToString()
        try:
            self.sock.sendall(struct.pack(">I", len(data)) + data)
            (n,) = struct.unpack(">I", self._recv(4))
            if n > MAX_REPLY:
                raise AgentError(f"agent {self.node}: reply of {n} bytes is too large")
            reply = agent_pb2.TrainReply.FromString(self._recv(n))
        except (OSError, ssl.SSLError) as e:
            raise AgentError(f"agent {self.node}: connection lost ({e})") from None
        if reply.error:
            raise AgentError(f"agent {self.node}: {reply.error}")
        return reply

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class RemoteAgentKernel(Kernel):
    name = "remote"
    dtypes = ("float32",)

    def __init__(self, params: Params, *, dtype: str | None = None, agent: str | None = None, **options: Any) -> None:
        super().__init__(params, dtype=dtype, **options)
        self.endpoint = load_endpoint(agent=agent)
        self._params = params.astype("float32")
        self._conn: AgentConnection | None = None
        self.last_report: "round_report_pb2.RoundReport | None" = None

    def _connection(self) -> AgentConnection:
        if self._conn is None:
            self._conn = AgentConnection(self.endpoint)
        return self._conn

    def train(self, images: np.ndarray, labels: np.ndarray, order: np.ndarray, lr: float, batch_size: int) -> None:
        req = agent_pb2.TrainRequest(
            layers=self.sizes, params=[np.ascontiguousarray(a, dtype="<f4").tobytes() for a in self._params.flat()],
            order=np.asarray(order, dtype=np.int32).tolist(), lr=float(lr), batch_size=int(batch_size))
        reply = self._connection().call(req)
        shapes = [a.shape for a in self._params.flat()]
        arrays = [np.frombuffer(b, dtype="<f4").reshape(s).astype(np.float32) for b, s in zip(reply.params, shapes)]
        if len(arrays) != len(shapes):
            raise AgentError(f"agent {self.endpoint['node']}: returned {len(arrays)} arrays, expected {len(shapes)}")
        self._params = Params.from_flat(arrays)
        self.last_report = reply.report

    def evaluate(self, images: np.ndarray, labels: np.ndarray) -> EvalResult:
        # Loss/accuracy of the current weights on data the caller holds: computed here, in float32.
        k = NumpyKernel(self._params, dtype="float32")
        return k.evaluate(images, labels)

    def get_params(self) -> Params:
        return self._params.copy()

    def set_params(self, params: Params) -> None:
        params.check(self.sizes)
        self._params = params.astype("float32")

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {"agent": self.endpoint["node"], "address": self.endpoint["address"]}
        if self.last_report is not None:
            d |= {"agent_peak_rss_bytes": self.last_report.peak_rss_bytes,
                  "agent_train_seconds": self.last_report.train_seconds, "agent_kernel": self.last_report.kernel,
                  # the board's own training CPU: this process only waits for the reply meanwhile
                  "trainer_train_cpu_seconds": self.last_report.train_cpu_seconds,
                  # what the board's memory must hold (the agent's own mappings; its VmHWM when absent):
                  # the client reports it as its trainer's peak (RoundReport.trainer_peak_rss_bytes)
                  "trainer_peak_rss_bytes": (self.last_report.trainer_peak_rss_bytes
                                             if self.last_report.HasField("trainer_peak_rss_bytes")
                                             else self.last_report.peak_rss_bytes)}
        return d

    def close(self) -> None:
        if self._conn:
            self._conn.close()
            self._conn = None
