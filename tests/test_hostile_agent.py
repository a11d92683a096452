"""Hostile peers against the native board agent (fleet/agent): issue 15, defects 2 and 3.

The agent is the real static binary built from this tree (test_deploy_agent's ``agent_bin``), serving
real mutual TLS on loopback with certificates from a fleet CA. On 4f64f11 it served one connection
at a time with a 600 s read timeout during the handshake: an idle TCP connection or a slow-loris
handshake kept every valid client out. It also took an eval_order of any length (n * 784 wraps a
32-bit size_t: a heap overflow on the armv7 agent; on x86_64 minutes of evaluating).
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT
from test_deploy_agent import agent_bin, free_port, handshake  # noqa: F401 - agent_bin is a fixture

pytestmark = pytest.mark.slow
HANDSHAKE_TIMEOUT = 3  # seconds, set in the agent's config for these tests


@contextlib.contextmanager
def agent_with(exe_cmd: list[str], d: Path, data: Path, extra: str = "", timeout: float = 60):
    from ecufl.fleet.deploy.certs import PKI

    pki = PKI(d / "state")
    ca = pki.ensure_ca()
    pem, key = pki.agent_server("board", "127.0.0.1")
    port = free_port()
    conf = d / "agent.conf"
    conf.write_text(f"listen = 127.0.0.1:{port}\nca = {ca}\ncert = {pem}\nkey = {key}\ndata = {data}\nnode = board\n"
                    + extra)
    log = d / "agent.log"
    proc = subprocess.Popen([*exe_cmd, "--config", str(conf)], stdout=open(log, "w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while "serving TLS" not in log.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)
    try:
        yield {"port": port, "log": log, "ca": ca, "pki": pki, "proc": proc}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def client_context(a) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(a["ca"]))
    cpem, ckey = a["pki"].agent_client()
    ctx.load_cert_chain(cpem, ckey)
    return ctx


@pytest.fixture(scope="module")
def asan_agent_bin(tmp_path_factory) -> Path:
    """The agent built with ASan + UBSan (dynamically linked: the sanitizers do not link statically)."""
    import shutil

    build = tmp_path_factory.mktemp("agent-asan")
    gen = ["-G", "Ninja"] if shutil.which("ninja") else []
    flags = "-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -g"
    r = subprocess.run(["cmake", "-S", str(ROOT / "fleet" / "agent"), "-B", str(build), *gen, "-DECUFL_AGENT_STATIC=OFF",
                        "-DCMAKE_BUILD_TYPE=RelWithDebInfo", f"-DCMAKE_C_FLAGS={flags}",
                        f"-DCMAKE_EXE_LINKER_FLAGS={flags}"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    r = subprocess.run(["cmake", "--build", str(build)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    return build / "ecufl-agent"


@pytest.fixture(scope="module", params=["static", "asan"])
def agent(request, tmp_path_factory, mnist_dir):
    """The agent as deployed (static), then built with ASan + UBSan: every hostile request runs under
    the sanitizers too, and any report in its log fails the module."""
    exe = request.getfixturevalue("agent_bin" if request.param == "static" else "asan_agent_bin")
    with agent_with([str(exe)], tmp_path_factory.mktemp(f"hostile-agent-{request.param}"), mnist_dir,
                    f"handshake_timeout = {HANDSHAKE_TIMEOUT}\nmax_connections = 4\n") as a:
        yield a
        log = a["log"].read_text()
        assert "Sanitizer" not in log and "runtime error" not in log, log[-4000:]


def agent_pb2():
    from ecufl.proto import round_report_pb2

    sys.modules.setdefault("round_report_pb2", round_report_pb2)  # agent_pb2's flat import (kernels/remote.py)
    from ecufl.proto import agent_pb2 as pb

    return pb


def call(a, payload: bytes, timeout: float = 120):
    """One framed request over mutual TLS; the parsed TrainReply."""
    with socket.create_connection(("127.0.0.1", a["port"]), timeout=timeout) as raw:
        with client_context(a).wrap_socket(raw, server_hostname="127.0.0.1") as s:
            s.sendall(struct.pack(">I", len(payload)) + payload)
            head = b""
            while len(head) < 4:
                chunk = s.recv(4 - len(head))
                assert chunk, "the agent closed the connection without a reply"
                head += chunk
            (n,) = struct.unpack(">I", head)
            body = b""
            while len(body) < n:
                chunk = s.recv(n - len(body))
                assert chunk
                body += chunk
    return agent_pb2().TrainReply.FromString(body)


def request(layers=(784, 4, 10), order=(0, 1, 2, 3), eval_order=(0, 1), params=None) -> bytes:
    rng = np.random.default_rng(0)
    if params is None:
        params = []
        for n_in, n_out in zip(layers[:-1], layers[1:]):
            params += [rng.standard_normal((n_out, n_in)).astype("<f4").tobytes(),
                       rng.standard_normal(n_out).astype("<f4").tobytes()]
    return agent_pb2().TrainRequest(layers=list(layers), params=params, order=list(order), lr=3.0, batch_size=2,
                                    server_round=1, eval_order=list(eval_order)).SerializeToString()


def test_valid_request_is_served(agent):
    rep = call(agent, request())
    assert rep.error == "" and len(rep.params) == 4 and rep.report.samples == 4


def test_idle_connection_does_not_keep_a_valid_client_out(agent):
    idle = [socket.create_connection(("127.0.0.1", agent["port"]), timeout=30) for _ in range(2)]
    try:
        # the handshake of a valid client while two TCP connections sit idle (on 4f64f11: timed out)
        assert handshake(agent["port"], client_context(agent), timeout=30) == "served"
        assert call(agent, request(), timeout=30).error == ""
    finally:
        for s in idle:
            s.close()


def test_slow_loris_handshake_is_cut_at_the_deadline(agent):
    before = agent["log"].read_text().count("no TLS handshake within")
    s = socket.create_connection(("127.0.0.1", agent["port"]), timeout=60)
    hello = bytes.fromhex("16030100c8") + bytes(40)  # a TLS record header announcing a 200-byte ClientHello
    closed = False
    try:
        for b in hello:  # one byte every 0.2 s: each read succeeds, the handshake never finishes
            s.sendall(bytes([b]))
            time.sleep(0.2)
            # a valid client is served meanwhile
        assert handshake(agent["port"], client_context(agent), timeout=30) == "served"
        s.settimeout(60)
        while True:  # the agent ends the connection at its deadline: EOF or a reset, not a 60 s wait
            if not s.recv(100):
                closed = True
                break
    except (ConnectionResetError, BrokenPipeError):
        closed = True
    except socket.timeout:
        closed = False
    finally:
        s.close()
    assert closed
    for _ in range(50):  # the child's line is written as it exits
        if agent["log"].read_text().count("no TLS handshake within") > before:
            break
        time.sleep(0.1)
    assert f"no TLS handshake within {HANDSHAKE_TIMEOUT} s" in agent["log"].read_text()


def test_oversized_eval_order_is_refused(agent):
    # 5,478,275 indices (a 5.5 MB frame, under the 64 MiB cap): n * 784 = 2^32 + 304 on a 32-bit board
    rep = call(agent, request(eval_order=np.zeros(5_478_275, np.int32)), timeout=120)
    assert "5478275 evaluation indices" in rep.error and not rep.params, rep.error
    assert agent["proc"].poll() is None
    assert call(agent, request()).error == ""  # and it goes on serving


@pytest.mark.parametrize("layers,words", [((784, 100_000, 10), "layers: size 100000 out of range"),
                                          ((784, 0, 10), "layers: size 0 out of range"),
                                          ((784, 2**32 - 1, 10), "layers: size 4294967295 out of range")])
def test_absurd_layer_sizes_are_refused(agent, layers, words):
    rep = call(agent, request(layers=layers, params=[b"", b"", b"", b""]))
    assert words in rep.error, rep.error
    assert agent["proc"].poll() is None


def test_rogue_certificate_and_plaintext_do_not_stop_service(agent, tmp_path):
    from ecufl.fleet.deploy.certs import PKI

    other = PKI(tmp_path / "rogue")
    opem, okey = other.agent_client()
    rogue = ssl.create_default_context(cafile=str(agent["ca"]))
    rogue.load_cert_chain(opem, okey)
    assert handshake(agent["port"], rogue).startswith(("refused", "closed"))
    assert call(agent, request()).error == ""


def test_bad_handshake_timeout_is_one_line(agent_bin, tmp_path, mnist_dir):  # noqa: F811
    conf = tmp_path / "agent.conf"
    conf.write_text(f"listen = 127.0.0.1:1\nca = x\ncert = x\nkey = x\ndata = {mnist_dir}\nhandshake_timeout = 0\n")
    r = subprocess.run([str(agent_bin), "--config", str(conf)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "handshake_timeout must be a whole number" in r.stderr
    assert json.dumps(r.stderr)  # one printable line


# --- the armv7 agent under qemu: where n * 784 wrapped ----------------------------------------------
@pytest.fixture(scope="module")
def arm_agent_bin(tmp_path_factory) -> Path:
    """The agent cross-built for the i.MX6 (static, armv7-a9, Debian's armhf libraries in
    build/armhf-sysroot as `make agent-arm` makes them)."""
    import shutil

    sysroot = ROOT / "build" / "armhf-sysroot"
    if not (sysroot / "PACKAGES").exists():
        r = subprocess.run(["make", "-C", str(ROOT), "agent-arm"], capture_output=True, text=True, timeout=1800)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    build = tmp_path_factory.mktemp("agent-arm")
    gen = ["-G", "Ninja"] if shutil.which("ninja") else []
    r = subprocess.run(["cmake", "-S", str(ROOT / "fleet" / "agent"), "-B", str(build), *gen,
                        f"-DCMAKE_TOOLCHAIN_FILE={ROOT / 'kernels' / 'cmake' / 'armv7-cortex-a9.cmake'}",
                        f"-DECUFL_AGENT_SYSROOT={sysroot}"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    r = subprocess.run(["cmake", "--build", str(build)], capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    return build / "ecufl-agent"


@pytest.mark.arm
def test_armv7_agent_refuses_an_eval_order_that_wraps_32_bits(arm_agent_bin, tmp_path, mnist_dir):
    # 5,478,275 x 784 = 2^32 + 304: on 4f64f11 the armv7 agent allocated 304 bytes and copied
    # 4 GiB into them (a heap overflow on the board)
    cmd = ["qemu-arm", "-cpu", "cortex-a9", str(arm_agent_bin)]
    with agent_with(cmd, tmp_path, mnist_dir, "handshake_timeout = 120\n", timeout=300) as a:
        rep = call(a, request(eval_order=np.zeros(5_478_275, np.int32)), timeout=600)
        assert "5478275 evaluation indices" in rep.error and not rep.params, rep.error
        assert a["proc"].poll() is None
        assert call(a, request(), timeout=600).error == ""  # and it goes on serving
