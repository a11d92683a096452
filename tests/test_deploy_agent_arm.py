"""The board agent built for the i.MX6 (armv7-a9) and run under `qemu-arm -cpu cortex-a9`.

`ecufl deploy build --arch armv7-a9` cross-builds ecufl-agent (static, against Debian's armhf
OpenSSL/protobuf-c/zlib unpacked into build/armhf-sysroot) into the armv7-a9 bundle; the agent is
taken from that bundle and run under qemu-user with the A9's strict instruction set, holding as its
board data either the MNIST training set (what a deployed agent board holds today: the gateway sends
indices of the board's partition into it) or only a 6,000-sample shard. The gateway side is the
real `remote` kernel.
Checks: one training request over mutual TLS gives the float32 reference's weights within the
native kernels' tolerance (kernels/README.md), the footprint target (<= 64 MiB), and a client
without a certificate from the fleet CA is refused.
"""

from __future__ import annotations

import importlib
import json
import os
import ssl
import subprocess
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import ecufl_cmd
from netns import keygen
from test_deploy_agent import handshake, running_agent

pytestmark = [pytest.mark.arm, pytest.mark.slow]
QEMU = ["qemu-arm", "-cpu", "cortex-a9", "-L", "/usr/arm-linux-gnueabihf"]
ATOL = 1e-4  # float32 kernels vs the float32 reference (kernels/README.md, "Tolerances")
SHARD = slice(6000, 12000)


def write_idx(d: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """The board's shard as MNIST IDX files (what an ECU would hold in its data directory)."""
    n = len(labels)
    (d / "train-images-idx3-ubyte").write_bytes(np.array([0x803, n, 28, 28], ">u4").tobytes() + images.tobytes())
    (d / "train-labels-idx1-ubyte").write_bytes(np.array([0x801, n], ">u4").tobytes() + labels.tobytes())


@pytest.fixture(scope="module")
def arm_bundle(tmp_path_factory) -> Path:
    """`ecufl deploy build --arch armv7-a9` for an inventory with an agent board; --natives names an
    empty directory so the agent is built from this source tree, not taken from an earlier build."""
    d = tmp_path_factory.mktemp("arm-bundle")
    key = keygen(d / "id_deploy")
    (d / "empty").mkdir()
    inv = d / "inv.toml"
    inv.write_text(f'[fleet]\nsuperlink = "10.0.0.1:9092"\nstate_dir = "{d / "state"}"\n'
                   f'[boards.ecu]\nhost = "10.0.0.2"\nuser = "root"\nkey = "{key}"\narch = "armv7-a9"\n'
                   'mode = "agent"\ndata = "/var/lib/ecufl/mnist"\n')
    r = subprocess.run([*ecufl_cmd(), "deploy", "-i", str(inv), "build", "--arch", "armv7-a9",
                        "--natives", str(d / "empty")], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    latest = json.loads((d / "state" / "bundles" / "latest-armv7-a9.json").read_text())
    assert "bin/ecufl-agent" in latest["contents"]
    out = d / "unpacked"
    with tarfile.open(latest["tarball"]) as t:
        t.extractall(out, filter="data")
    return out


def test_bundle_carries_a_static_arm_agent(arm_bundle):
    exe = arm_bundle / "bin" / "ecufl-agent"
    head = exe.read_bytes()[:20]
    assert head[:4] == b"\x7fELF" and head[4] == 1 and int.from_bytes(head[18:20], "little") == 0x28  # 32-bit ARM
    hdrs = subprocess.run(["arm-linux-gnueabihf-readelf", "-lA", str(exe)], capture_output=True, text=True, check=True).stdout
    assert "INTERP" not in hdrs  # static: no dynamic loader needed on the board
    # ARMv7 with VFPv3 + NEONv1 in every object linked in (OpenSSL's included): VFPv4 would mean
    # fused multiply-add, which the A9 lacks (SIGILL on the board)
    assert "Tag_CPU_arch: v7\n" in hdrs and "Tag_FP_arch: VFPv3\n" in hdrs, hdrs[-800:]
    assert "Tag_Advanced_SIMD_arch: NEONv1\n" in hdrs
    r = subprocess.run([*QEMU, str(exe), "--version"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("ecufl-agent"), r.stderr
    digests = dict(ln.split("  ", 1)[::-1] for ln in (arm_bundle / "MANIFEST.sha256").read_text().splitlines())
    import hashlib

    assert digests["bin/ecufl-agent"] == hashlib.sha256(exe.read_bytes()).hexdigest()


@pytest.fixture(scope="module", params=["training-set", "shard"])
def arm_agent(request, arm_bundle, tmp_path_factory, mnist_train, mnist_dir):
    """The agent holding what a deployed agent board holds today, the whole MNIST training set (the
    gateway sends indices of its partition into it), or only its 6,000-sample shard as IDX files."""
    d = tmp_path_factory.mktemp("arm-agent")
    if request.param == "shard":
        data, first = d / "shard", 0
        data.mkdir()
        write_idx(data, mnist_train.images[SHARD], mnist_train.labels[SHARD])
    else:
        data, first = mnist_dir, SHARD.start
    with running_agent([*QEMU, str(arm_bundle / "bin" / "ecufl-agent")], d, data, node="a9", timeout=120) as a:
        yield a | {"holds": request.param, "first": first}


def host_vm(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {key} for pid {pid}")


def test_arm_agent_trains_one_request_like_the_reference(arm_agent, mnist_train):
    """784-32-10, one epoch over the 6,000-sample shard, batch 10, lr 3: the A9 agent's C kernel (NEON)
    against the float32 numpy truth and the host's C kernel; footprint on the emulated board."""
    from ecufl.kernels import EpochOrder, create, init_params

    os.environ["ECUFL_REMOTE_AGENT"] = str(arm_agent["endpoint"])
    try:
        import ecufl.kernels.remote as remote

        remote = importlib.reload(remote)
        params = init_params([784, 32, 10], 1, dtype="float32")
        # indices into the board's shard. A well-conditioned run (kernels/README.md, "Tolerances"):
        # numpy float32 vs float64 drift 2.1e-5 with this order; with EpochOrder(6000, 7) they
        # already differ by 1.3e-4, beyond what any float32 kernel can be held to.
        order = EpochOrder(6000, 1).next()
        images, labels = mnist_train.images[SHARD], mnist_train.labels[SHARD]
        k = remote.RemoteAgentKernel(params)
        k.train(None, None, arm_agent["first"] + order, 3.0, 10)
        rep = k.last_report
        k.close()
    finally:
        os.environ.pop("ECUFL_REMOTE_AGENT", None)
    got = k.get_params().flat()
    diffs = {}
    for name in ("numpy", "c"):
        ref = create(name, params, dtype="float32")
        ref.train(images, labels, order, 3.0, 10)
        diff = max(float(np.max(np.abs(a - b))) for a, b in zip(got, ref.get_params().flat()))
        print(f"\nA9 agent vs {name} float32: max |diff| {diff:.2e}")
        diffs[name] = diff
    assert max(diffs.values()) <= ATOL, diffs
    assert rep.kernel == "c" and rep.samples == 6000 and rep.train_seconds > 0
    # Footprint. The agent's own figure: resident bytes of its own mappings as the guest sees them
    # (qemu shows a guest only its mappings and passes mincore through). The qemu process's host
    # peak RSS also holds the emulator (translated code, qemu's heap): it exists only here.
    qemu_hwm = host_vm(arm_agent["proc"].pid, "VmHWM")
    print(f"A9 agent holding the {arm_agent['holds']}: own resident peak {rep.trainer_peak_rss_bytes / 2**20:.1f} MiB; "
          f"qemu-arm process VmHWM {qemu_hwm / 2**20:.1f} MiB (agent's VmHWM read: {rep.peak_rss_bytes / 2**20:.1f} MiB); "
          f"emulated train {rep.train_seconds:.2f} s")
    assert 4 * 2**20 < rep.trainer_peak_rss_bytes <= 64 * 2**20, rep.trainer_peak_rss_bytes
    assert rep.trainer_peak_rss_bytes < qemu_hwm  # the guest's share of the emulator process
    assert "round 0: trained 6000 samples" in arm_agent["log"].read_text()


def test_arm_agent_refuses_clients_without_a_valid_certificate(arm_agent, tmp_path):
    from ecufl.fleet.deploy.certs import PKI

    port = arm_agent["port"]
    before = arm_agent["log"].read_text().count("TLS handshake failed")
    assert handshake(port, ssl.create_default_context(cafile=str(arm_agent["ca"])), 60).startswith(("refused", "closed"))
    foreign = ssl.create_default_context(cafile=str(arm_agent["ca"]))
    foreign.load_cert_chain(*PKI(tmp_path / "other").agent_client())  # signed by another CA
    assert handshake(port, foreign, 60).startswith(("refused", "closed"))
    time.sleep(0.5)
    assert arm_agent["log"].read_text().count("TLS handshake failed") >= before + 2
    good = ssl.create_default_context(cafile=str(arm_agent["ca"]))
    good.load_cert_chain(*arm_agent["pki"].agent_client())
    assert handshake(port, good, 60) == "served"
    assert arm_agent["proc"].poll() is None


def test_arm_agent_trains_the_can_autoencoder(arm_bundle, tmp_path):
    """Any data (issue 17): the bundle's static ARM agent under qemu, its data directory holding
    float32 train-inputs.idx / train-targets.idx (tests/test_any_data.py's CAN-shaped windows),
    trains the 339-32-339 autoencoder within ATOL of the host's numpy float32."""
    import importlib
    import os

    from ecufl.kernels import EpochOrder, create, init_params
    from test_any_data import SIZES, can_like
    from test_any_data import write_idx as write_any_idx

    data = tmp_path / "data"
    data.mkdir()
    x = can_like(200)
    write_any_idx(data / "train-inputs.idx", x)
    write_any_idx(data / "train-targets.idx", x)
    with running_agent([*QEMU, str(arm_bundle / "bin" / "ecufl-agent")], tmp_path / "agent", data, node="a9",
                       timeout=120) as a:
        os.environ["ECUFL_REMOTE_AGENT"] = str(a["endpoint"])
        try:
            import ecufl.kernels.remote as remote

            remote = importlib.reload(remote)
            params = init_params(SIZES, 3, scaled=True, dtype="float32")
            order = EpochOrder(200, 3).next()
            ref = create("numpy", params, dtype="float32")
            ref.train(x, x, order, 1.0, 10)
            k = remote.RemoteAgentKernel(params)
            k.train(x, x, order, 1.0, 10)
            diff = max(float(np.max(np.abs(u - v))) for u, v in zip(k.get_params().flat(), ref.get_params().flat()))
            assert diff <= ATOL, diff
        finally:
            os.environ.pop("ECUFL_REMOTE_AGENT", None)
