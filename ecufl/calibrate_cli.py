"""``ecufl calibrate``: fit the Cortex-A9 cycle table on a real board (see calibrate.py)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import click
from ecufl.ui import Failure, console


@click.command()
@click.option("--board", help="The board over SSH: user@host or user@host:port.")
@click.option("--qemu", "use_qemu", is_flag=True,
              help="Run the loops under qemu-arm here instead (tests the procedure; not A9 timing).")
@click.option("--profile", "profile_name", default="imx6", show_default=True,
              help="Device profile whose clock is used when the board exposes no cpufreq.")
@click.option("--out", type=click.Path(dir_okay=False),
              help="Calibration file to write (default: ~/.config/ecufl/a9-calibration.json for --board).")
@click.option("--known-hosts", type=click.Path(dir_okay=False), help="known_hosts file (default: ~/.ssh/known_hosts).")
@click.option("--identity", type=click.Path(dir_okay=False), help="Private key for the board.")
@click.option("--repeats", default=3, show_default=True, type=int, help="Runs per loop and length; the fastest counts.")
@click.option("--iterations", default="100000,1000000", show_default=True,
              help="The two loop lengths whose time difference is measured.")
@click.option("--loops", "loop_names", help="Comma-separated subset of the loops (default: all).")
@click.option("--remote-wrapper", default="", hidden=True,
              help="Command prefix on the board (tests: an x86 sshd runs the loops through qemu-arm).")
@click.option("--published", is_flag=True,
              help="Check the model against OpenSSL's published Cortex-A9 cycles/byte (Debian's armhf "
                   "libcrypto counted under qemu); refit by class group, judged leave-one-out. With --out: "
                   "write the refitted table as a calibration file.")
@click.option("--memory", is_flag=True,
              help="Also time memwalk (L1-, L2- and DRAM-sized arrays) and measure the L2 hit cost and "
                   "the DRAM streaming bandwidth; projections then price the memory term with them.")
@click.option("--client-stack", is_flag=True,
              help="Count a supernode board's Python client stack (interpreter start, import numpy, MNIST "
                   "load through ecufl.data, npy serialisation) on Debian's armhf python3 under qemu-arm "
                   "-cpu cortex-a9 and write the committed table (kernels/arm/measured/client-stack-a9.json, "
                   "or --out). Needs `make build/armhf-python/PACKAGES` and the MNIST files.")
@click.option("--json", "as_json", is_flag=True)
def calibrate(board, use_qemu, profile_name, out, known_hosts, identity, repeats, iterations,
              loop_names, remote_wrapper, published, memory, client_stack, as_json):
    """Time the known-count loops on a board and fit the A9 cycles per instruction class."""

    from ecufl.kernels.arm import calibrate as cal
    from ecufl.kernels.arm.costmodel import TABLE, default_calibration_path
    from ecufl.kernels.arm.count import EmulationError
    from ecufl.kernels.arm.microbench import BuildError

    if client_stack:
        if board or use_qemu or published:
            raise click.UsageError("--client-stack counts under qemu here: no --board, --qemu or --published with it")
        _client_stack(out, profile_name, as_json)
        return
    if published:
        if board or use_qemu:
            raise click.UsageError("--published checks against OpenSSL's figures: no --board or --qemu with it")
        _published(out, as_json)
        return
    if bool(board) == bool(use_qemu):
        raise click.UsageError("give exactly one of --board user@HOST, --qemu and --published")
    profile = _emulated_profile(profile_name)
    if repeats < 1:
        raise click.UsageError(f"--repeats must be at least 1, got {repeats}")
    try:
        n1, n2 = (int(v) for v in iterations.split(","))
        if not 0 < n1 < n2:
            raise ValueError
    except ValueError:
        raise click.UsageError(f"--iterations: expected two increasing positive integers like 100000,1000000, got {iterations!r}")
    loops = None
    if loop_names:
        loops = [v.strip() for v in loop_names.split(",") if v.strip()]
        unknown = [v for v in loops if v not in cal.CALIBRATION_LOOPS]
        if unknown or not loops:
            raise click.UsageError(f"--loops: unknown loop {', '.join(unknown) or '(none)'}; loops: {', '.join(cal.CALIBRATION_LOOPS)}")
    if use_qemu and not out:
        raise click.UsageError("--qemu measures qemu, not a board: give --out so it never replaces your board calibration")
    try:
        target = (cal.QemuBoard() if use_qemu else
                  cal.SSHBoard(board, known_hosts=known_hosts, identity=identity, wrapper=remote_wrapper))
    except ValueError as e:
        raise click.UsageError(str(e))
    try:
        result = cal.calibrate(target, profile, loops=loops, iterations=(n1, n2), repeats=repeats, memory=memory)
    except (cal.CalibrationFailed, EmulationError, BuildError) as e:
        raise Failure(str(e))
    path = result.write(out or default_calibration_path())
    if as_json:
        click.echo(json.dumps(result.to_dict() | {"out": str(path)}))
        return
    from rich.table import Table

    t = Table(title=f"A9 cycles per instruction, {result.board} at {result.clock_hz / 1e6:.0f} MHz ({result.clock_source})")
    for col in ("class", "fitted", "TRM table"):
        t.add_column(col, justify="right")
    for k, v in sorted(result.cycles.items()):
        t.add_row(k, f"{v:.2f}", f"{TABLE[k][0]:g}" if k in TABLE else "-")
    console.print(t)
    console.print(f"rms relative residual {result.residual_rms:.1%}; calibration written to {path}")
    if result.memory:
        m = result.memory
        console.print(f"memory: L2 hit {m['l2_hit_cycles']:.1f} cycles, DRAM streaming "
                      f"{m['dram_bandwidth_bytes_per_second'] / 1e9:.2f} GB/s (memwalk, {m['line_bytes']}-byte lines)")


def _published(out, as_json) -> None:
    from ecufl.kernels.arm import published as pub
    from ecufl.kernels.arm.count import EmulationError
    from ecufl.kernels.arm.costmodel import CostModel
    from ecufl.kernels.arm.microbench import BuildError

    try:
        rep = pub.report(CostModel.trm())
    except (EmulationError, BuildError) as e:
        raise Failure(str(e))
    if out:
        pub.write_fit(rep, out)
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in rep.rows]))
        return
    from rich.table import Table

    t = Table(title=f"Cortex-A9 cycles per byte: OpenSSL's published figures vs ecufl's projection ({rep.library})")
    for col in ("primitive", "path", "published", "projected (TRM)", "ratio", "refit, leave-one-out", "ratio",
                "source"):
        t.add_column(col, justify="left" if col in ("primitive", "path", "source") else "right")
    for r in rep.rows:
        f = r.figure
        t.add_row(f.primitive, f.path, f"{f.published:g}", f"{r.projected:.2f}", f"{r.ratio:.2f}",
                  f"{r.projected_loo:.2f}", f"{r.projected_loo / f.published:.2f}", f"{f.source}:{f.line}")
    console.print(t)
    s, l = rep.stats, rep.stats_loo
    console.print(f"TRM table: median |error| {s['median_abs_error']:.1%}, worst ratio {s['worst_ratio']:.2f}; "
                  f"group refit out of sample: median |error| {l['median_abs_error']:.1%}, worst ratio "
                  f"{l['worst_ratio']:.2f} (factors on all figures: "
                  + ", ".join(f"{g} {v:.2f}" for g, v in rep.factors.items()) + ")"
                  + (f"; refitted table written to {out}" if out else ""))


# What a ClientApp process imports beyond numpy (extrapolated for the A9 from this host's ratio)
CLIENT_IMPORTS = "import flwr.app, flwr.clientapp; import ecufl.client.client_app"


def _emulated_profile(name: str):
    """The i.MX6 profile ``name`` (its clock prices the counts), or a one-line usage error."""
    from ecufl.kernels.arm import profiles

    try:
        profile = profiles.get(name)
    except profiles.UnknownProfile as e:
        raise click.UsageError(f"--profile: {e}")
    if not profile.emulated:
        raise click.UsageError(f"--profile: {name} has no clock; use an i.MX6 profile")
    return profile


def _client_stack(out, profile_name, as_json) -> None:
    from ecufl import data as mnist
    from ecufl.kernels.arm import clientstack as cs
    from ecufl.kernels.arm.count import EmulationError

    profile = _emulated_profile(profile_name)
    try:
        folder = mnist.locate(download=False)
        agent_bin = Path(cs._REPO_ROOT) / "build" / "agent-armv7-a9" / "ecufl-agent"
        if not agent_bin.is_file():  # built on first use, as the ARM trainers are (`make agent-arm`)
            with console.status("building the ARM board agent (make agent-arm)"):
                proc = subprocess.run(["make", "-C", str(cs._REPO_ROOT), "agent-arm"], capture_output=True,
                                      text=True)
            if proc.returncode != 0 or not agent_bin.is_file():
                tail = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()][-1:]
                raise cs.ClientStackError(f"the ARM board agent is not built ({agent_bin}) and `make agent-arm` "
                                          f"failed" + (f": {tail[0]}" if tail else ""))
        with console.status("counting the armhf Python client stack under qemu-arm -cpu cortex-a9"):
            table = cs.measure(Path(mnist.__file__), folder, CLIENT_IMPORTS)
        with console.status("counting the board agent's TLS, I/O and protobuf-c under qemu-arm -cpu cortex-a9"):
            table["agent"] = _count_agent(cs, agent_bin, mnist)
    except (cs.ClientStackError, EmulationError, mnist.DataError, subprocess.CalledProcessError) as e:
        raise Failure(" ".join(str(e).split()))
    path = cs.write(table, Path(out) if out else cs.TABLE_PATH)
    if as_json:
        click.echo(json.dumps(table | {"out": str(path)}))
        return
    from rich.table import Table

    hz = profile.clock_hz
    t = Table(title=f"A supernode board's Python client on one Cortex-A9 at {hz / 1e6:.0f} MHz ({profile.name})")
    for col in ("phase", "ARM instructions", f"A9 s ({profile.name})", "how", "what"):
        t.add_column(col, justify="right" if col in ("ARM instructions", f"A9 s ({profile.name})") else "left")
    for name, p in table["phases"].items():
        if name == "serialise":
            for pt in p["points"]:
                t.add_row(f"serialise {'-'.join(map(str, pt['layers']))}", f"{pt['instructions']:,}",
                          f"{pt['cycles'] / hz:.3f}", "counted", f"{pt['npy_bytes']:,} npy bytes, decode + encode")
            continue
        t.add_row(name, f"{p['instructions']:,}" if "instructions" in p else "-", f"{p['cycles'] / hz:.3f}",
                  "counted" if p.get("counted") else "extrapolated", p["what"])
    a = table["agent"]
    for part in ("tls_handshake", "io", "serialise"):
        for i, b in enumerate(a["weight_bytes"]):
            if part == "tls_handshake":
                cyc, n = a["tls_handshake_cycles"], a["tls_handshake_instructions"]
            else:
                cyc, n = a[f"{part}_fixed_cycles"] + a[f"{part}_cycles_per_byte"] * b, a[f"{part}_instructions"][i]
            t.add_row(f"agent {part}", f"{n:,}", f"{cyc / hz:.4f}", "counted", f"per round, {b:,} weight bytes")
    console.print(t)
    console.print(f"table written to {path}")


# The certificates' key type sets the handshake's cost: the same as `ecufl deploy`'s fleet PKI
# (fleet/deploy/certs.py, which this core module may not import; tests/test_arm_clientstack.py
# holds the two equal): ECDSA on P-384, signed with SHA-384.
AGENT_CURVE, AGENT_HASH = "secp384r1", "sha384"


def _throwaway_pki(d: Path):
    """A CA, an agent server certificate for 127.0.0.1 and a remote-kernel client certificate."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    curve, digest = ec.SECP384R1(), hashes.SHA384()
    now = dt.datetime.now(dt.timezone.utc)

    def cert(cn, key, issuer, issuer_key, *, ca=False, usages=(), sans=()):
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        b = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer or name).public_key(key.public_key())
             .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
             .not_valid_after(now + dt.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True))
        if usages:
            b = b.add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
        return b.sign(issuer_key or key, digest)

    def write(stem, c, key):
        pem, kf = d / f"{stem}.pem", d / f"{stem}.key"
        pem.write_bytes(c.public_bytes(serialization.Encoding.PEM))
        kf.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()))
        return pem, kf

    ca_key = ec.generate_private_key(curve)
    ca = cert("ecufl calibrate CA", ca_key, None, None, ca=True)
    ca_pem, _ = write("ca", ca, ca_key)
    skey, ckey = ec.generate_private_key(curve), ec.generate_private_key(curve)
    server = write("agent", cert("ecufl agent a9", skey, ca.subject, ca_key, usages=[ExtendedKeyUsageOID.SERVER_AUTH],
                                 sans=[x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), skey)
    client = write("client", cert("ecufl remote kernel", ckey, ca.subject, ca_key,
                                  usages=[ExtendedKeyUsageOID.CLIENT_AUTH]), ckey)
    return ca_pem, server, client


def _count_agent(cs, binary: Path, mnist) -> dict:
    """The ARM agent under qemu-arm with gates on its TLS handshake, frame I/O and protobuf-c, one
    run per gate set, each serving two training requests (784-30-10 and 784-128-10 weights) from
    the real `remote` kernel over mutual TLS; the agent holds a 1,000-sample shard as IDX files."""
    import importlib
    import os
    import socket
    import tempfile

    import numpy as np

    from ecufl.kernels import init_params

    train = mnist.load("train")
    with tempfile.TemporaryDirectory(prefix="ecufl-agent-calibrate-") as tmp:
        d = Path(tmp)
        data = d / "data"
        data.mkdir()
        n = 1000
        (data / "train-images-idx3-ubyte").write_bytes(np.array([0x803, n, 28, 28], ">u4").tobytes()
                                                       + train.images[:n].tobytes())
        (data / "train-labels-idx1-ubyte").write_bytes(np.array([0x801, n], ">u4").tobytes() + train.labels[:n].tobytes())
        ca, (pem, key), (cpem, ckey) = _throwaway_pki(d)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        conf = d / "agent.conf"
        conf.write_text(f"listen = 127.0.0.1:{port}\nca = {ca}\ncert = {pem}\nkey = {key}\ndata = {data}\nnode = a9\n")
        endpoint = d / "endpoint.json"
        endpoint.write_text(json.dumps({"node": "a9", "address": f"127.0.0.1:{port}", "ca": str(ca),
                                        "cert": str(cpem), "key": str(ckey)}))
        old = os.environ.get("ECUFL_REMOTE_AGENT")
        os.environ["ECUFL_REMOTE_AGENT"] = str(endpoint)
        try:
            import ecufl.kernels.remote as remote

            remote = importlib.reload(remote)

            def drive(sizes):
                def go():
                    k = remote.RemoteAgentKernel(init_params(list(sizes), 1, dtype="float32"))
                    k.train(None, None, np.arange(10), 3.0, 10)
                    k.close()
                return go

            counted = {part: cs.run_gated_server(binary, ["--config", str(conf)], fns, "serving TLS",
                                                 [drive(s) for s in cs.WEIGHT_SIZES])
                       for part, fns in cs.AGENT_GATES.items()}
        except remote.AgentError as e:
            raise cs.ClientStackError(str(e)) from None
        finally:
            if old is None:
                os.environ.pop("ECUFL_REMOTE_AGENT", None)
            else:
                os.environ["ECUFL_REMOTE_AGENT"] = old
    return cs.agent_section(counted, tuple(cs._npy_bytes(s) for s in cs.WEIGHT_SIZES), binary=binary.name)
