"""Bad files and values against the Python loaders: one line, never a traceback (issue 15, defects 7 and 8).

Weight files, MNIST IDX files, scenario and inventory TOML, and inventory values that would reach
a board's shell. Each case raised something other than the loader's own one-line error on 4f64f11
(zipfile.BadZipFile, zlib.error, RuntimeError, ValueError, UnicodeDecodeError, RecursionError,
...), or, for the inventory values, was accepted.
"""

from __future__ import annotations

import gzip
import io
import struct
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import ecufl_cmd

# --- weight files ----------------------------------------------------------------------------------


def good_npz() -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    np.savez(buf, w1=rng.standard_normal((3, 4)).astype(np.float32), b1=np.zeros(3, np.float32),
             w2=rng.standard_normal((2, 3)).astype(np.float32), b2=np.zeros(2, np.float32))
    return buf.getvalue()


def compressed_npz() -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, w1=np.ones((30, 40), np.float32), b1=np.zeros(30, np.float32))
    return buf.getvalue()


def _bad_zlib() -> bytes:
    data = bytearray(compressed_npz())
    start = data.index(b"w1.npy") + len("w1.npy")  # inside w1's deflate stream
    for k in range(start + 4, start + 40):
        data[k] ^= 0x5A
    return bytes(data)


def _encrypted() -> bytes:
    data = bytearray(good_npz())
    # set the "encrypted" flag (bit 0 of the general purpose flags) of every member's headers
    for sig, at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        k = data.find(sig)
        while k >= 0:
            data[k + at] |= 1
            k = data.find(sig, k + 4)
    return bytes(data)


def _member(name: str, body: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(name, body)
    return buf.getvalue()


def _npy_header(header: bytes) -> bytes:
    return _member("w1.npy", b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header)


def _plain_npy() -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ones((3, 4), np.float32))
    return buf.getvalue()


WEIGHT_CASES = {
    "bad-zip": b"PK\x03\x04" + bytes(100),
    "truncated-zip": good_npz()[:-30],
    "bad-zlib-stream": _bad_zlib(),
    "encrypted-member": _encrypted(),
    "plain-npy": _plain_npy(),
    "member-not-npy": _member("w1.npy", b"just some text, not an array"),
    "header-not-a-dict": _npy_header(b"[1, 2, 3]" + b" " * 54 + b"\n"),
    "header-not-python": _npy_header(b"{'descr': <f4, " + b" " * 48 + b"\n"),
    "header-bad-descr": _npy_header(b"{'descr': 'zz', 'fortran_order': False, 'shape': (3, 4), }" + b" " * 4 + b"\n"),
    "header-huge-shape": _npy_header(b"{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999, 99999999999), }"
                                     + b" " * 18 + b"\n"),
    "header-negative-shape": _npy_header(b"{'descr': '<f4', 'fortran_order': False, 'shape': (-3, 4), }" + b" " * 2 + b"\n"),
    "object-array": _npy_header(b"{'descr': '|O', 'fortran_order': False, 'shape': (3,), }" + b" " * 6 + b"\n"),
    "meta-not-an-object": None,  # built below with numpy
    "weights-3d": None,
    "empty-file": b"",
}


def _weights_with(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


WEIGHT_CASES["meta-not-an-object"] = _weights_with(w1=np.ones((3, 4), np.float32), b1=np.ones(3, np.float32),
                                                   meta=np.array("[1, 2]"))
WEIGHT_CASES["weights-3d"] = _weights_with(w1=np.ones((3, 4, 1), np.float32), b1=np.ones(3, np.float32))


@pytest.mark.parametrize("case", sorted(WEIGHT_CASES))
def test_bad_weight_file_is_one_line(tmp_path, case):
    from ecufl.kernels.weights import WeightFileError, load

    f = tmp_path / f"{case}.npz"
    f.write_bytes(WEIGHT_CASES[case])
    with pytest.raises(WeightFileError) as e:
        load(f)
    msg = str(e.value)
    assert msg.startswith(str(f)) and "\n" not in msg and len(msg) < 400, msg


def test_bad_weight_file_through_the_cli_is_one_line(tmp_path):
    f = tmp_path / "enc.npz"
    f.write_bytes(WEIGHT_CASES["encrypted-member"])
    r = subprocess.run([*ecufl_cmd(), "compare", str(f), str(f)], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert str(f) in r.stderr


def test_good_weight_file_still_loads(tmp_path):
    from ecufl.kernels.weights import load

    f = tmp_path / "good.npz"
    f.write_bytes(good_npz())
    params, meta = load(f)
    assert params.sizes == [4, 3, 2] and meta == {}


# --- MNIST IDX -------------------------------------------------------------------------------------


def test_corrupt_gzip_stream_is_one_line(tmp_path):
    from ecufl import data

    raw = bytearray(gzip.compress(struct.pack(">IIII", 0x803, 2, 28, 28) + bytes(range(256)) * 7, mtime=0))
    for k in range(12, 30):  # inside the deflate stream: zlib.error, not a gzip header error
        raw[k] ^= 0xA5
    f = tmp_path / "train-images-idx3-ubyte.gz"
    f.write_bytes(bytes(raw))
    with pytest.raises(data.DataError) as e:
        data.read_images(f)
    assert str(e.value).startswith(str(f)) and "\n" not in str(e.value)


def test_dimension_product_that_wraps_int64_is_one_line(tmp_path):
    # 2^31 x 2^31 x 4 = 2^64: numpy's int64 product is 0, matching the empty body, and the reshape
    # raised ValueError on 4f64f11
    from ecufl import data

    f = tmp_path / "train-images-idx3-ubyte"
    f.write_bytes(struct.pack(">IIII", 0x803, 2**31, 2**31, 4))
    with pytest.raises(data.DataError, match="truncated"):
        data.read_images(f)


# --- scenario and inventory TOML ----------------------------------------------------------------------
TOML_CASES = {"non-utf8": b'name = "\xff\xfe"\n', "deep-arrays": b"a = " + b"[" * 5000 + b"]" * 5000 + b"\n",
              "deep-tables": b"a = " + b"{b = " * 5000 + b"1" + b"}" * 5000 + b"\n"}


@pytest.mark.parametrize("case", sorted(TOML_CASES))
def test_bad_scenario_bytes_are_one_line(tmp_path, case):
    from ecufl.scenarios.schema import ScenarioError, load

    f = tmp_path / f"{case}.toml"
    f.write_bytes(TOML_CASES[case])
    with pytest.raises(ScenarioError) as e:
        load(f)
    assert str(e.value).startswith(str(f)) and "\n" not in str(e.value)


@pytest.mark.parametrize("case", sorted(TOML_CASES))
def test_bad_inventory_bytes_are_one_line(tmp_path, case):
    from ecufl.fleet.deploy.inventory import InventoryError, load

    f = tmp_path / f"{case}.toml"
    f.write_bytes(TOML_CASES[case])
    with pytest.raises(InventoryError) as e:
        load(f)
    assert str(e.value).startswith(str(f)) and "\n" not in str(e.value)


def inventory(tmp_path: Path, **board) -> Path:
    key = tmp_path / "id_test"
    key.write_text("not really a key\n")
    fields = {"host": '"10.0.0.2"', "user": '"root"', "key": f'"{key}"', "arch": '"x86_64"', "mode": '"agent"',
              "data": '"/var/lib/ecufl/mnist"', **board}
    f = tmp_path / "inv.toml"
    f.write_text('[fleet]\nsuperlink = "10.0.0.1:9092"\n[boards.ecu]\n'
                 + "".join(f"{k} = {v}\n" for k, v in fields.items()))
    return f


def test_key_of_unknown_user_is_one_line(tmp_path):
    from ecufl.fleet.deploy.inventory import InventoryError, load

    f = inventory(tmp_path, key='"~nosuchuser-ecufl/id_rsa"')
    with pytest.raises(InventoryError, match=r"boards\.ecu\.key: cannot resolve") as e:
        load(f)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("key,value", [
    ("install_root", '"/opt/$(touch /tmp/ecufl-pwned)"'),
    ("install_root", '"/opt/ecufl`id`"'),
    ("data", '"/var/lib/ecufl; rm -rf /"'),
    ("data", '"/var/lib/ecufl\\nExecStartPre=/bin/sh"'),
    ("python", '"python3 -c \'import os\'"'),
    ("python", '"$(id)"'),
    ("python_path", '["/usr/lib/py thon"]'),
    ("python_path", '["/usr/lib/$HOME"]'),
])
def test_values_that_would_reach_a_shell_are_refused(tmp_path, key, value):
    # config.py pastes install_root into the unit and supervise.sh runs ExecStart through eval:
    # on 4f64f11 `$(...)` in install_root ran on the board
    from ecufl.fleet.deploy.inventory import InventoryError, load

    with pytest.raises(InventoryError, match=rf"boards\.ecu\.{key}"):
        load(inventory(tmp_path, **{key: value}))


def test_plain_values_are_still_accepted(tmp_path):
    from ecufl.fleet.deploy.inventory import load

    inv = load(inventory(tmp_path, install_root='"/opt/ecufl-2.1_a+b"', python='"/usr/bin/python3.11"',
                         python_path='["/usr/lib/python3/dist-packages"]'))
    assert str(inv.boards["ecu"].install_root) == "/opt/ecufl-2.1_a+b"


def test_agent_unit_is_unprivileged_and_sandboxed(tmp_path):
    from ecufl.fleet.deploy.config import AGENT_CREDENTIAL, board_config
    from ecufl.fleet.deploy.inventory import load

    inv = load(inventory(tmp_path))
    inv = inv.model_copy(update={"fleet": inv.fleet.model_copy(update={"state_dir": tmp_path / "state"})})
    cfg = board_config(inv, "ecu", insecure=False)
    unit = cfg.unit
    for line in ("DynamicUser=yes", "NoNewPrivileges=yes", "ProtectSystem=strict", "CapabilityBoundingSet=\n",
                 "PrivateTmp=yes", "LoadCredential=agent.key:/opt/ecufl/etc/agent.key"):
        assert line in unit, line
    assert "User=root" not in unit
    conf, mode = cfg.files["agent.conf"]
    assert f"key = {AGENT_CREDENTIAL}" in conf and mode == 0o644  # readable by the dynamic user; holds no secret
    assert cfg.files["agent.key"][1] == 0o600


# --- the fleet CA's key (defect 9) -------------------------------------------------------------------


@pytest.mark.parametrize("stale", ["world-readable-file", "symlink"])
def test_ca_key_is_private_whatever_tmp_file_was_left(tmp_path, stale):
    # On 4f64f11 _write opened "<name>.tmp" with O_CREAT|O_TRUNC: a stale 0644 ca.key.tmp kept its
    # mode (a world-readable CA key) and a planted symlink was written through.
    import os
    import stat

    from ecufl.fleet.deploy.certs import PKI

    pki = PKI(tmp_path / "state")
    pki.dir.mkdir(parents=True)
    tmp = pki.dir / "ca.key.tmp"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("untouched\n")
    if stale == "world-readable-file":
        tmp.write_text("old\n")
        os.chmod(tmp, 0o644)
    else:
        tmp.symlink_to(elsewhere)
    old_umask = os.umask(0o022)
    try:
        pki.ensure_ca()
    finally:
        os.umask(old_umask)
    key = pki.dir / "ca.key"
    assert not key.is_symlink() and stat.S_IMODE(key.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in key.read_bytes()
    assert elsewhere.read_text() == "untouched\n"
    assert stat.S_IMODE((pki.dir / "ca.pem").stat().st_mode) == 0o644
