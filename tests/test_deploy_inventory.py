"""Inventory validation and bundles (no root needed): one clear line per bad input; manifests that catch tampering."""

from __future__ import annotations

import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT, ecufl_cmd
from ecufl.fleet.deploy import bundle as bundles
from ecufl.fleet.deploy.inventory import InventoryError, load

GOOD = """
[fleet]
superlink = "10.1.2.1:9092"
state_dir = "state"

[profiles.small]
memory_max_mb = 64

[boards.b1]
host = "10.1.2.11"
user = "root"
key = "id_test"
arch = "x86_64"
profile = "small"
mode = "supernode"
data = "/data"

[boards.b2]
host = "10.1.2.12"
port = 2222
user = "root"
key = "id_test"
arch = "armv7-a9"
profile = "small"
mode = "agent"
data = "/data"
"""


@pytest.fixture
def inv_dir(tmp_path):
    (tmp_path / "id_test").write_text("not checked here\n")
    return tmp_path


def write(d: Path, text: str) -> Path:
    p = d / "inventory.toml"
    p.write_text(text)
    return p


def test_good_inventory(inv_dir):
    inv = load(write(inv_dir, GOOD))
    assert list(inv.boards) == ["b1", "b2"]
    assert inv.boards["b2"].port == 2222 and inv.boards["b1"].port == 22
    assert inv.boards["b1"].key == inv_dir / "id_test"  # relative to the file
    assert inv.fleet.state_dir == inv_dir / "state"
    assert str(inv.boards["b1"].install_root) == "/opt/ecufl"


def test_example_inventory_validates():
    inv = load(ROOT / "fleet" / "inventory.toml", check_keys=False)
    assert {b.mode for b in inv.boards.values()} == {"agent", "supernode"}
    assert {b.arch for b in inv.boards.values()} == {"armv7-a9", "x86_64"}


@pytest.mark.parametrize("edit, expected", [
    (('arch = "x86_64"', 'arch = "aarch64"'), "boards.b1.arch: Input should be 'armv7-a9' or 'x86_64'"),
    (('port = 2222', 'port = 70000'), "boards.b2.port: Input should be less than or equal to 65535"),
    (('port = 2222', 'port = "ssh"'), "boards.b2.port: Input should be a valid integer"),
    (('mode = "agent"', 'mode = "agent"\ncolour = "red"'), "boards.b2.colour: unknown key"),
    (('user = "root"\nkey', 'user = "root"\npassword = "hunter2"\nkey'),
     "boards.b1: 'password': passwords are not accepted in files"),
    (('data = "/data"\n\n[boards.b2]', 'data = "data"\n\n[boards.b2]'), "boards.b1.data: expected an absolute path"),
    (('profile = "small"\nmode = "supernode"', 'profile = "big"\nmode = "supernode"'), "boards.b1.profile: unknown profile 'big'"),
    (('host = "10.1.2.12"', 'host = "10.1.2.11"\nport = 22'), None),  # duplicate key in TOML
    (('superlink = "10.1.2.1:9092"', 'superlink = "10.1.2.1"'), "fleet.superlink: String should match pattern"),
    (('host = "10.1.2.11"', 'host = "bad host!"'), "boards.b1.host: expected an IP address or host name"),
])
def test_bad_inventory_one_line(inv_dir, edit, expected):
    text = GOOD.replace(*edit)
    assert text != GOOD
    p = write(inv_dir, text)
    with pytest.raises(InventoryError) as e:
        load(p)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(str(p))
    if expected:
        assert expected in msg, msg


def test_duplicate_address(inv_dir):
    text = GOOD.replace('host = "10.1.2.12"\nport = 2222', 'host = "10.1.2.11"\nport = 22')
    with pytest.raises(InventoryError, match="boards.b2: same host:port as boards.b1"):
        load(write(inv_dir, text))


def test_missing_key_file(inv_dir):
    (inv_dir / "id_test").unlink()
    with pytest.raises(InventoryError, match=r"boards.b1.key: no such file .*id_test"):
        load(write(inv_dir, GOOD))


def test_cli_bad_inventory_exit_2(inv_dir):
    p = write(inv_dir, GOOD.replace('mode = "agent"', 'mode = "robot"'))
    r = subprocess.run(ecufl_cmd() + ["deploy", "-i", str(p), "status"], capture_output=True, text=True)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "boards.b2.mode" in lines[0] and str(p) in lines[0], r.stderr


def test_cli_unknown_board_exit_2(inv_dir):
    p = write(inv_dir, GOOD)
    r = subprocess.run(ecufl_cmd() + ["deploy", "-i", str(p), "logs", "nope"], capture_output=True, text=True)
    assert r.returncode == 2 and "no board 'nope'" in r.stderr


# --- bundles ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def wheel() -> Path:
    from netns import ecufl_wheel

    return ecufl_wheel()


def test_bundle_manifest_and_tamper(tmp_path, wheel):
    b = bundles.build("x86_64", tmp_path / "out", wheel=wheel, natives=tmp_path / "none")
    assert b.id.startswith("x86_64-") and b.tarball.is_file()
    tree = tmp_path / "tree"
    with tarfile.open(b.tarball) as t:
        t.extractall(tree, filter="data")
    names = {p.relative_to(tree).as_posix() for p in tree.rglob("*") if p.is_file()}
    assert {"MANIFEST.sha256", "BUNDLE.json", "bin/ecufl-supervise", "bin/flower-supernode",
            "share/units/ecufl-supernode.service", "lib/ecufl/__init__.py"} <= names
    with zipfile.ZipFile(wheel) as z:
        assert {"lib/" + n for n in z.namelist() if not n.endswith("/")} <= names
    listed = {ln.split("  ", 1)[1] for ln in (tree / "MANIFEST.sha256").read_text().splitlines()}
    assert listed == names - {"MANIFEST.sha256"}
    assert bundles.verify_tree(tree) == []
    # the board's own tool agrees
    assert subprocess.run(["sha256sum", "-c", "--quiet", "MANIFEST.sha256"], cwd=tree).returncode == 0
    f = tree / "bin" / "ecufl-supervise"
    f.write_text(f.read_text() + "\n# tampered\n")
    assert bundles.verify_tree(tree) == ["bin/ecufl-supervise"]
    assert subprocess.run(["sha256sum", "-c", "--quiet", "MANIFEST.sha256"], cwd=tree,
                          capture_output=True).returncode != 0
    # same inputs, same id; latest() finds it and notices a changed manifest
    assert bundles.latest(tmp_path / "out", "x86_64").id == b.id
    b.manifest.write_text(b.manifest.read_text() + "0" * 64 + "  extra\n")
    with pytest.raises(bundles.BundleError, match="manifest changed"):
        bundles.latest(tmp_path / "out", "x86_64")


def test_bundle_refuses_wrong_architecture(tmp_path):
    nat = tmp_path / "natives"
    nat.mkdir()
    host_binary = nat / "ecufl-train-c"
    host_binary.write_bytes(Path("/bin/true").read_bytes())
    host_binary.chmod(0o755)
    with pytest.raises(bundles.BundleError, match="not a 32-bit ARM executable"):
        bundles.build("armv7-a9", tmp_path / "out", natives=nat)
    with pytest.raises(bundles.BundleError, match="no native programs found"):
        bundles.build("armv7-a9", tmp_path / "out", natives=tmp_path / "empty")


def test_bundle_arm_with_natives(tmp_path):
    """An ARM program (cross-compiled here) goes into the armv7-a9 bundle, no wheel."""
    cc = "arm-linux-gnueabihf-gcc"
    nat = tmp_path / "natives"
    nat.mkdir()
    src = tmp_path / "t.c"
    src.write_text("int main(void){return 0;}\n")
    r = subprocess.run([cc, "-static", "-mcpu=cortex-a9", "-mfpu=neon", "-mfloat-abi=hard", "-o",
                        str(nat / "ecufl-train-c"), str(src)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    b = bundles.build("armv7-a9", tmp_path / "out", natives=nat)
    with tarfile.open(b.tarball) as t:
        names = t.getnames()
    assert "bin/ecufl-train-c" in names and not any(n.startswith("lib/") for n in names)
