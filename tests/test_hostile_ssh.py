"""Host key pinning and bundle integrity against a real sshd on loopback (issue 15, defects 5 and 6).

On 4f64f11 ``pinned()`` compared the first field of each known_hosts line with "[host]:port", so a
hashed line (``ssh-keygen -H`` / ``ssh-keyscan -H``) or a multi-host line for the board did not
count: ecufl appended the key the board presented now and trusted it. Now known_hosts is matched
the way asyncssh matches it, and a board whose key differs from any line for it is refused.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from pathlib import Path

import pytest

from netns import SSHD, keygen

pytestmark = pytest.mark.root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """Debian's sshd on 127.0.0.1:<port> with host key B; a client key authorised for root."""
    d = tmp_path_factory.mktemp("sshd")
    host_key = keygen(d / "host_b")
    client = keygen(d / "client")
    (d / "authorized_keys").write_text(Path(str(client) + ".pub").read_text())
    port = free_port()
    (d / "sshd_config").write_text("\n".join([
        "ListenAddress 127.0.0.1", f"Port {port}", f"HostKey {host_key}", f"AuthorizedKeysFile {d}/authorized_keys",
        f"PidFile {d}/sshd.pid", "PermitRootLogin prohibit-password", "PasswordAuthentication no",
        "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no", "Subsystem sftp internal-sftp",
        "LogLevel ERROR", ""]))
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(d / "sshd_config")], stdout=open(d / "sshd.log", "wb"),
                            stderr=subprocess.STDOUT)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert proc.poll() is None, (d / "sshd.log").read_text()
            time.sleep(0.1)
    try:
        yield {"port": port, "client": client, "host_pub": Path(str(host_key) + ".pub").read_text().split()[:2],
               "dir": d}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def board(sshd):
    from ecufl.fleet.deploy.inventory import Board

    return Board(host="127.0.0.1", port=sshd["port"], user="root", key=sshd["client"], arch="x86_64",
                 mode="agent", data="/var/lib/ecufl/mnist")


def other_key(tmp_path: Path) -> str:
    return " ".join(Path(str(keygen(tmp_path / "host_a")) + ".pub").read_text().split()[:2])


def hashed(tmp_path: Path, line: str) -> str:
    f = tmp_path / "to_hash"
    f.write_text(line + "\n")
    subprocess.run(["ssh-keygen", "-H", "-f", str(f)], check=True, capture_output=True)
    return f.read_text()


def connect(sshd, known_hosts: Path, **kw):
    from ecufl.fleet.deploy.ssh import connect as ssh_connect

    async def go():
        c = await ssh_connect("ecu", board(sshd), known_hosts, log=lambda *_: None, **kw)
        try:
            return (await c.run("echo pinned-ok")).out.strip()
        finally:
            c.close()
    return asyncio.run(go())


@pytest.mark.parametrize("form", ["hashed", "multi-host", "hashed-multi-host"])
def test_a_different_key_pinned_in_another_form_is_refused(sshd, tmp_path, form):
    from ecufl.fleet.deploy.ssh import BoardError

    pat = f"[127.0.0.1]:{sshd['port']}"
    wrong = other_key(tmp_path)
    if form == "hashed":
        text = hashed(tmp_path, f"{pat} {wrong}")
    elif form == "multi-host":
        text = f"ecu.example,{pat},10.9.9.9 {wrong}\n"
    else:
        text = hashed(tmp_path, f"ecu.example,{pat} {wrong}")
    kh = tmp_path / "known_hosts"
    kh.write_text(text)
    with pytest.raises(BoardError, match="differs from the one pinned"):
        connect(sshd, kh)
    assert kh.read_text() == text  # nothing appended: the board's key was not trusted on the side


def test_the_right_key_in_a_hashed_line_connects(sshd, tmp_path):
    kh = tmp_path / "known_hosts"
    text = hashed(tmp_path, f"[127.0.0.1]:{sshd['port']} {' '.join(sshd['host_pub'])}")
    kh.write_text(text)
    assert connect(sshd, kh) == "pinned-ok"
    assert kh.read_text() == text


def test_first_contact_pins_then_a_changed_key_is_refused(sshd, tmp_path):
    from ecufl.fleet.deploy.ssh import BoardError

    kh = tmp_path / "known_hosts"
    with pytest.raises(BoardError, match="--no-pin"):
        connect(sshd, kh, pin=False)
    assert connect(sshd, kh) == "pinned-ok"  # trust on first use
    assert sshd["host_pub"][1] in kh.read_text()
    kh.write_text(kh.read_text().replace(sshd["host_pub"][1], other_key(tmp_path).split()[1]))
    with pytest.raises(BoardError, match="differs from the one pinned"):
        connect(sshd, kh)


def test_malformed_known_hosts_is_one_line(sshd, tmp_path):
    from ecufl.fleet.deploy.ssh import BoardError

    kh = tmp_path / "known_hosts"
    kh.write_text("@bogus [127.0.0.1]:22 ssh-ed25519 AAAA\n")
    with pytest.raises(BoardError, match="not a known_hosts file") as e:
        connect(sshd, kh)
    assert "\n" not in str(e.value)


# --- bundle integrity on the board (defect 6) -----------------------------------------------------------
# The "boards" are this machine through the sshd above (root@127.0.0.1, and as localhost for a second
# board name), each install_root a temporary folder; the bundle is a real `bundle.build` with a one-file wheel and no native programs.


@pytest.fixture(scope="module")
def deployed(sshd, tmp_path_factory):
    import zipfile

    from ecufl.fleet.deploy import bundle as bundles
    from ecufl.fleet.deploy.config import board_config, render_unit
    from ecufl.fleet.deploy.inventory import load

    d = tmp_path_factory.mktemp("deploy")
    whl = d / "tiny-0.1-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as z:
        z.writestr("tiny/__init__.py", "")
    (d / "natives").mkdir()
    (d / "inv.toml").write_text(
        f'[fleet]\nsuperlink = "127.0.0.1:9092"\nstate_dir = "{d / "state"}"\n'
        + "".join(f'[boards.{n}]\nhost = "{"127.0.0.1" if n == "ecu" else "localhost"}"\nport = {sshd["port"]}\nuser = "root"\nkey = "{sshd["client"]}"\n'
                  f'arch = "x86_64"\nmode = "agent"\ninit = "supervise"\ndata = "/var/lib/ecufl/mnist"\n'
                  f'install_root = "{d / n}"\n' for n in ("ecu", "ecu2")))
    (d / "ecu2").mkdir()
    (d / "ecu2" / "my-notes.txt").write_text("the board owner's file\n")
    inv = load(d / "inv.toml")
    b = bundles.build("x86_64", inv.fleet.state_dir / "bundles", natives=d / "natives", wheel=whl)
    return {"dir": d, "inv": inv, "bundle": b, "cfg": {n: board_config(inv, n, insecure=False) for n in inv.boards},
            "unit": {n: render_unit(inv, n) for n in inv.boards}}


def on_board(sshd, deployed, name, fn):
    from ecufl.fleet.deploy.ssh import connect as ssh_connect

    inv = deployed["inv"]

    async def go():
        c = await ssh_connect(name, inv.boards[name], inv.fleet.state_dir / "known_hosts", log=lambda *_: None)
        try:
            return await fn(c)
        finally:
            c.close()
    return asyncio.run(go())


def fresh_push(sshd, deployed):
    from ecufl.fleet.deploy import remote

    return on_board(sshd, deployed, "ecu", lambda c: remote.push(c, deployed["bundle"], deployed["cfg"]["ecu"],
                                                                   log=lambda *_: None))


def start(sshd, deployed):
    from ecufl.fleet.deploy import remote

    manifests = remote.manifest_digests(deployed["inv"].fleet.state_dir / "bundles")
    return on_board(sshd, deployed, "ecu", lambda c: remote.start(c, manifests, deployed["unit"]["ecu"]))


def test_file_not_in_the_manifest_is_refused(sshd, deployed):
    import shutil

    from ecufl.fleet.deploy.ssh import BoardError

    bid = fresh_push(sshd, deployed)
    rel = deployed["dir"] / "ecu" / "releases" / bid
    (rel / "bin" / "evil").write_text("#!/bin/sh\ntouch /tmp/pwned\n")
    try:
        with pytest.raises(BoardError, match=r"files not in its manifest \(bin/evil\)"):
            start(sshd, deployed)
    finally:
        (rel / "bin" / "evil").unlink()
    (rel / "lib" / "link").symlink_to("/etc/passwd")
    try:
        with pytest.raises(BoardError, match=r"symbolic links \(lib/link\)"):
            start(sshd, deployed)
    finally:
        (rel / "lib" / "link").unlink()
    assert shutil.which("sh")


def test_current_pointing_outside_the_verified_release_is_refused(sshd, deployed):
    import shutil

    from ecufl.fleet.deploy.ssh import BoardError

    bid = fresh_push(sshd, deployed)
    root = deployed["dir"] / "ecu"
    evil = deployed["dir"] / "evil" / "releases" / bid  # same basename, another folder
    shutil.copytree(root / "releases" / bid, evil)
    (evil / "bin" / "ecufl-supervise").write_text("#!/bin/sh\ntouch /tmp/pwned\n")
    (root / "current.x").symlink_to(evil)
    (root / "current.x").replace(root / "current")
    with pytest.raises(BoardError, match=f"current points at {evil}, not at the release folder releases/{bid}"):
        start(sshd, deployed)


def test_tampered_unit_is_not_installed(sshd, deployed):
    from ecufl.fleet.deploy.ssh import BoardError

    fresh_push(sshd, deployed)
    unit = deployed["dir"] / "ecu" / "etc" / "ecufl-agent.service"
    unit.write_text(unit.read_text().replace("ExecStart=", "ExecStartPre=/bin/touch /tmp/pwned\nExecStart="))
    with pytest.raises(BoardError, match="is not the unit ecufl renders for this board"):
        start(sshd, deployed)


def test_push_refuses_a_folder_that_holds_someone_elses_files(sshd, deployed):
    from ecufl.fleet.deploy import remote
    from ecufl.fleet.deploy.ssh import BoardError

    with pytest.raises(BoardError, match="holds files and was not made by ecufl"):
        on_board(sshd, deployed, "ecu2", lambda c: remote.push(c, deployed["bundle"], deployed["cfg"]["ecu2"],
                                                                 log=lambda *_: None))
    with pytest.raises(BoardError, match="not made by ecufl"):  # and remove leaves it alone
        on_board(sshd, deployed, "ecu2", remote.remove)
    assert (deployed["dir"] / "ecu2" / "my-notes.txt").read_text() == "the board owner's file\n"
    assert not (deployed["dir"] / "ecu2" / ".ecufl-root").exists()
