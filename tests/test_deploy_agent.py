"""The native board agent (fleet/agent) on loopback: mutual TLS, protobuf, the C kernel.

The agent is built with CMake from the source tree (static, OpenSSL + protobuf-c), given
certificates from the fleet CA (ecufl.fleet.deploy.certs) and the MNIST training set of ECUFL_DATA,
and driven by the `remote` kernel (kernels/remote.py) exactly as a ClientApp would.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def agent_bin(tmp_path_factory) -> Path:
    build = tmp_path_factory.mktemp("agent-build")
    gen = ["-G", "Ninja"] if shutil.which("ninja") else []
    r = subprocess.run(["cmake", "-S", str(ROOT / "fleet" / "agent"), "-B", str(build), *gen], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    r = subprocess.run(["cmake", "--build", str(build)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    exe = build / "ecufl-agent"
    ldd = subprocess.run(["ldd", str(exe)], capture_output=True, text=True)
    assert "not a dynamic executable" in ldd.stdout + ldd.stderr or "statically linked" in ldd.stdout, ldd
    return exe


@contextlib.contextmanager
def running_agent(cmd: list[str], d: Path, data: Path, node: str = "board", timeout: float = 60):
    """``cmd`` (the agent, or an emulator and the agent) serving on loopback with certificates from a
    fleet CA made in ``d`` and ``data`` as its board data; stopped on exit. Yields what tests need."""
    from ecufl.fleet.deploy.certs import PKI

    pki = PKI(d / "state")
    ca = pki.ensure_ca()
    pem, key = pki.agent_server(node, "127.0.0.1")
    cpem, ckey = pki.agent_client()
    port = free_port()
    conf = d / "agent.conf"
    conf.write_text(f"listen = 127.0.0.1:{port}\nca = {ca}\ncert = {pem}\nkey = {key}\ndata = {data}\nnode = {node}\n")
    log = d / "agent.log"
    proc = subprocess.Popen([*cmd, "--config", str(conf)], stdout=open(log, "w"), stderr=subprocess.STDOUT)
    deadline = time.time() + timeout
    while "serving TLS" not in log.read_text():
        assert proc.poll() is None and time.time() < deadline, log.read_text()
        time.sleep(0.1)
    endpoint = d / "endpoint.json"
    endpoint.write_text(json.dumps({"node": node, "address": f"127.0.0.1:{port}", "ca": str(ca),
                                    "cert": str(cpem), "key": str(ckey)}))
    try:
        yield {"port": port, "endpoint": endpoint, "log": log, "ca": ca, "dir": d, "pki": pki, "proc": proc}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def agent(agent_bin, tmp_path_factory, mnist_dir):
    with running_agent([str(agent_bin)], tmp_path_factory.mktemp("agent"), mnist_dir) as a:
        yield a


@pytest.fixture(scope="module")
def remote(agent):
    os.environ["ECUFL_REMOTE_AGENT"] = str(agent["endpoint"])
    try:
        import ecufl.kernels.remote as remote

        yield importlib.reload(remote)
    finally:
        os.environ.pop("ECUFL_REMOTE_AGENT", None)


def test_remote_kernel_trains_like_the_reference(remote, agent, mnist_train):
    """784-32-10 on a 6,000-sample shard, one epoch: the agent's C kernel vs the float32 numpy truth."""
    from ecufl.kernels import EpochOrder, create, init_params

    params = init_params([784, 32, 10], 1, dtype="float32")
    shard = np.arange(6000, 12000)
    order = shard[EpochOrder(len(shard), 1).next()]  # well-conditioned (see test_deploy_agent_arm.py)
    ref = create("numpy", params, dtype="float32")
    ref.train(mnist_train.images, mnist_train.labels, order, 3.0, 10)
    k = remote.RemoteAgentKernel(params)
    k.train(mnist_train.images, mnist_train.labels, order, 3.0, 10)
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(k.get_params().flat(), ref.get_params().flat()))
    assert diff < 1e-4, diff
    rep = k.last_report
    assert rep.kernel == "c" and rep.samples == 6000 and rep.train_seconds > 0
    # the agent's training thread's CPU: positive, within its wall time (one thread, never more)
    assert 0 < rep.train_cpu_seconds <= rep.train_seconds * 1.01 + 1e-3, (rep.train_cpu_seconds, rep.train_seconds)
    assert k.describe()["trainer_train_cpu_seconds"] == rep.train_cpu_seconds
    # footprint while training 784-32-10 on a 6,000-sample shard (the MNIST training set it holds included)
    assert 0 < rep.peak_rss_bytes <= 64 * 2**20, rep.peak_rss_bytes
    # natively the resident bytes of its own mappings (the figure the agent can give under qemu-user
    # too) agree with the kernel's VmHWM, up to page-cache pages of the mapped binary (< 8 MiB)
    assert abs(rep.trainer_peak_rss_bytes - rep.peak_rss_bytes) < 8 * 2**20, (rep.trainer_peak_rss_bytes, rep.peak_rss_bytes)
    print(f"\nagent peak RSS {rep.peak_rss_bytes / 2**20:.1f} MiB (own mappings resident "
          f"{rep.trainer_peak_rss_bytes / 2**20:.1f} MiB), train {rep.train_seconds:.3f} s")
    ev = k.evaluate(mnist_train.images[shard], mnist_train.labels[shard])
    assert ev.accuracy > 0.6
    k.close()


def handshake(port: int, ctx: ssl.SSLContext, timeout: float = 10) -> str:
    """Connect to an agent on loopback with ``ctx``, send an empty frame: served, closed or refused."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                s.sendall(b"\0\0\0\0")
                return "served" if s.recv(4) else "closed"
        except (ssl.SSLError, OSError) as e:
            return f"refused: {e}"


def test_agent_refuses_clients_without_a_valid_certificate(agent, tmp_path):
    from ecufl.fleet.deploy.certs import PKI

    before = agent["log"].read_text().count("refused 127.0.0.1")
    no_cert = ssl.create_default_context(cafile=str(agent["ca"]))
    assert handshake(agent["port"], no_cert).startswith(("refused", "closed"))
    other = PKI(tmp_path / "other")  # a client certificate from another CA
    opem, okey = other.agent_client()
    foreign = ssl.create_default_context(cafile=str(agent["ca"]))
    foreign.load_cert_chain(opem, okey)
    assert handshake(agent["port"], foreign).startswith(("refused", "closed"))
    # plaintext
    with socket.create_connection(("127.0.0.1", agent["port"]), timeout=10) as raw:
        raw.sendall(b"\0\0\0\4abcd")
        raw.settimeout(10)
        try:
            data = raw.recv(100)
        except OSError:
            data = b""
        assert not data.startswith(b"\0\0")  # at most a TLS alert, never a framed reply
    time.sleep(0.5)
    assert agent["log"].read_text().count("refused 127.0.0.1") >= before + 3
    assert "TLS handshake failed" in agent["log"].read_text()
    # the agent still serves a valid client afterwards
    good = ssl.create_default_context(cafile=str(agent["ca"]))
    cpem, ckey = agent["pki"].agent_client()
    good.load_cert_chain(cpem, ckey)
    assert handshake(agent["port"], good) == "served"


def test_agent_bad_request_is_one_line(remote, agent):
    from ecufl.kernels import init_params

    k = remote.RemoteAgentKernel(init_params([784, 16, 10], 1, dtype="float32"))
    with pytest.raises(remote.AgentError, match=r"agent board: order: an index is outside 0\.\.59999"):
        k.train(None, None, np.array([0, 60000]), 3.0, 10)
    k.close()
    assert agent["proc"].poll() is None


def test_client_runner_reports_the_agents_own_peak(remote, agent, mnist_train):
    """Through the ClientApp's runner, kernel `remote`: the outcome names the board agent's own peak
    memory (RoundReport.trainer_peak_rss_bytes, a column of clients.csv), not the gateway's."""
    import resource

    from ecufl.client import runner
    from ecufl.kernels import init_params

    job = runner.TrainJob(kernel="remote", dtype="float32", profile="host",
                          params=init_params([784, 16, 10], 1, dtype="float32"), shard=np.arange(2000, 3000),
                          lr=3.0, batch_size=10, epochs=1, order_seed=1)
    out = runner.run(job, mnist_train.images, mnist_train.labels)
    own = out.extra["peak_rss_bytes"]
    assert 0 < own <= 64 * 2**20, own
    # the agent holds the uint8 training set (44.9 MiB): its own figure is at least that
    assert own >= mnist_train.images.nbytes, own
    assert own != resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # not this process's figure
    assert out.samples == 1000 and out.local_accuracy > 0.3
    # its training CPU is the agent's too, inside the wall time of the call that waited for it
    assert 0 < out.train_cpu_seconds <= out.train_seconds, (out.train_cpu_seconds, out.train_seconds)


def test_agent_trains_the_can_autoencoder_from_float_idx(agent_bin, tmp_path):
    """Any data (issue 17): a board whose data directory holds train-inputs.idx / train-targets.idx
    (float32, tests/test_any_data.py's CAN-shaped windows) trains the 339-32-339 autoencoder within
    1e-4 of numpy float32; layers that do not fit its windows are one line."""
    from ecufl.kernels import EpochOrder, create, init_params
    from test_any_data import SIZES, can_like, write_idx

    data = tmp_path / "data"
    data.mkdir()
    x = can_like(300)
    write_idx(data / "train-inputs.idx", x)
    write_idx(data / "train-targets.idx", x)
    with running_agent([str(agent_bin)], tmp_path / "agent", data) as a:
        os.environ["ECUFL_REMOTE_AGENT"] = str(a["endpoint"])
        try:
            import ecufl.kernels.remote as remote

            remote = importlib.reload(remote)
            params = init_params(SIZES, 3, scaled=True, dtype="float32")
            order = EpochOrder(300, 3).next()
            ref = create("numpy", params, dtype="float32")
            ref.train(x, x, order, 1.0, 10)
            k = remote.RemoteAgentKernel(params)
            k.train(x, x, order, 1.0, 10)
            diff = max(float(np.max(np.abs(u - v))) for u, v in zip(k.get_params().flat(), ref.get_params().flat()))
            assert diff <= 1e-4, diff
            assert k.last_report.samples == 300
            with pytest.raises(Exception, match="layers: the input must be 339") as e:
                remote.RemoteAgentKernel(init_params([784, 8, 10], 1, dtype="float32")).train(
                    x, x, order[:10], 1.0, 10)
            assert "\n" not in str(e.value)
        finally:
            os.environ.pop("ECUFL_REMOTE_AGENT", None)
