"""Crafted files against the C readers (kernels/common/ecufl_idx.c, ecufl_npz.c): issue 15, defect 4.

tests/fuzz/read_file.c is built three ways: natively with ASan + UBSan, 32-bit (-m32) with ASan +
UBSan (size_t is 32-bit there, as on the boards), and for armv7 (static, run under qemu-arm as the
boards' binaries are). Each crafted file must be refused with one line naming the file; on
4f64f11 each was accepted with a too-small buffer or read out of bounds (an ASan report, a
segfault, or uninitialised bytes as the message).
"""

from __future__ import annotations

import gzip
import io
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT

SRC = [ROOT / "tests" / "fuzz" / "read_file.c", ROOT / "kernels" / "common" / "ecufl_idx.c",
       ROOT / "kernels" / "common" / "ecufl_npz.c"]
SAN = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"]


def _build(out: Path, cc: str, flags: list[str], libs: tuple[str, ...] = ()) -> Path:
    r = subprocess.run([cc, "-std=c11", "-O1", "-g", *flags, "-I", str(ROOT / "kernels" / "common"),
                        "-o", str(out), *map(str, SRC), *libs], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def readers(tmp_path_factory) -> dict[str, list[str]]:
    d = tmp_path_factory.mktemp("readers")
    # Debian's <asm/...> link for -m32 comes with gcc-multilib, which conflicts with the ARM cross
    # compiler: the kernel's x86 asm headers serve i386 too (tests/fuzz/build.sh does the same)
    (d / "include32").mkdir()
    (d / "include32" / "asm").symlink_to("/usr/include/x86_64-linux-gnu/asm")
    out = {"native-asan": [str(_build(d / "read_file", "gcc", ["-DECUFL_HAVE_ZLIB", *SAN], ("-lz",)))],
           "m32-asan": [str(_build(d / "read_file32", "gcc", ["-m32", "-isystem", str(d / "include32"), *SAN]))]}
    if shutil.which("arm-linux-gnueabihf-gcc") and shutil.which("qemu-arm"):
        exe = _build(d / "read_file_arm", "arm-linux-gnueabihf-gcc", ["-static", "-march=armv7-a", "-mfpu=neon"])
        out["armv7-qemu"] = ["qemu-arm", "-cpu", "cortex-a9", str(exe)]
    else:  # CI has both (Makefile DEB_PACKAGES); say so rather than skip silently
        pytest.fail("arm-linux-gnueabihf-gcc and qemu-arm are needed (make system-deps)")
    return out


def read(cmd: list[str], kind: str, path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*cmd, kind, str(path)], capture_output=True, text=True, timeout=120)


def refused(r: subprocess.CompletedProcess, path: Path, words: str) -> None:
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr[-3000:])  # not 0 (accepted), not a sanitizer abort
    assert r.stderr == "", r.stderr[-3000:]
    line = r.stdout.strip()
    assert "\n" not in line and line.startswith(f"error: {path}") and words in line, line
    assert "UUUU" not in line  # the message was set


# --- IDX -------------------------------------------------------------------------------------------
def idx_images(count: int, body: bytes) -> bytes:
    return struct.pack(">IIII", 0x803, count, 28, 28) + body


def test_idx_count_that_wraps_32_bit_size_t_is_refused(readers, tmp_path):
    # 5,478,275 x 28 x 28 = 2^32 + 304: a 32-bit size_t product is 304, and the file holds 304 data
    # bytes (320 in all). On 4f64f11 the -m32 and armv7 readers accepted it with a 304-byte buffer.
    assert (5_478_275 * 784) % 2**32 == 304
    f = tmp_path / "wrap-images"
    f.write_bytes(idx_images(5_478_275, bytes(304)))
    assert f.stat().st_size == 320
    for name, cmd in readers.items():
        refused(read(cmd, "idx3", f), f, "implausible dimensions 5478275 x 28 x 28")


@pytest.mark.parametrize("case", ["short", "trailing", "gzip-bomb-claim"])
def test_idx_size_must_match_the_header(readers, tmp_path, case):
    f = tmp_path / case
    if case == "short":
        f.write_bytes(idx_images(3, bytes(784 * 2)))
        words = "truncated"
    elif case == "trailing":
        f.write_bytes(idx_images(2, bytes(784 * 3)))
        words = "trailing"
    else:  # a small gzip file announcing 1 GiB - 784 bytes of images: refused before the allocation
        f = tmp_path / "bomb.gz"
        f.write_bytes(gzip.compress(idx_images(1_369_000, bytes(784))))
        words = "truncated"
    for name, cmd in readers.items():
        if case == "gzip-bomb-claim" and name != "native-asan":
            continue  # only the native build links zlib; the others say the file is gzip
        refused(read(cmd, "idx3", f), f, words)


def test_idx_good_file_still_reads(readers, tmp_path):
    f = tmp_path / "good"
    body = bytes(range(256)) * 6 + bytes(784 * 2 - 1536)
    f.write_bytes(idx_images(2, body))
    for name, cmd in readers.items():
        r = read(cmd, "idx3", f)
        assert r.returncode == 0 and r.stdout.split()[:4] == ["ok", "2", "28", "28"], (name, r.stdout, r.stderr)


# --- npz -------------------------------------------------------------------------------------------
def npy(a: np.ndarray, version: tuple[int, int] = (1, 0)) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, a, version=version)
    return buf.getvalue()


def good_members() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    return {"w1.npy": npy(rng.standard_normal((3, 4)).astype(np.float32)),
            "b1.npy": npy(rng.standard_normal(3).astype(np.float32)),
            "w2.npy": npy(rng.standard_normal((2, 3)).astype(np.float32)),
            "b2.npy": npy(rng.standard_normal(2).astype(np.float32))}


def make_zip(members: dict[str, bytes], cd: dict[str, dict] | None = None, eocd_cd: int | None = None,
             locator_z64: int | None = None) -> bytes:
    """A stored zip; ``cd[name]`` overrides central-directory fields of that member (offset, csize,
    usize, extra); ``eocd_cd``/``locator_z64`` forge the end records."""
    out, entries = bytearray(), []
    for name, data in members.items():
        entries.append((name, len(out), zlib.crc32(data), len(data)))
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 0, 0, 0x21, zlib.crc32(data), len(data), len(data),
                           len(name), 0) + name.encode() + data
    cd_start = len(out)
    for name, offset, crc, size in entries:
        o = (cd or {}).get(name, {})
        extra = o.get("extra", b"")
        out += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 0, 0, 0x21, crc, o.get("csize", size),
                           o.get("usize", size), len(name), o.get("extra_len", len(extra)), 0, 0, 0, 0,
                           o.get("offset", offset)) + name.encode() + extra
    cd_size = len(out) - cd_start
    if locator_z64 is not None:
        out += struct.pack("<IIQI", 0x07064B50, 0, locator_z64, 1)
    out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(entries), len(entries), cd_size,
                       cd_start if eocd_cd is None else eocd_cd, 0)
    return bytes(out)


def zip64_extra(*values: int, declared: int | None = None) -> bytes:
    body = b"".join(struct.pack("<Q", v) for v in values)
    return struct.pack("<HH", 1, len(body) if declared is None else declared) + body


CRAFTED = {
    # :56 z64 + 56 wrapped: the zip64 end record "at" 2^64 - 8
    "zip64-end-record-wraps": lambda m: make_zip(m, eocd_cd=0xFFFFFFFF, locator_z64=2**64 - 8),
    # :85 offset + 30 wrapped: the local header "at" 2^64 - 16 (from the zip64 extra field)
    "local-offset-wraps": lambda m: make_zip(m, cd={"w1.npy": {"offset": 0xFFFFFFFF, "extra": zip64_extra(2**64 - 16)}}),
    # :87 start + size wrapped: the last member "of" 2^64 - 40 bytes (start + size = start - 40)
    "member-size-wraps": lambda m: make_zip(m, cd={"b2.npy": {"usize": 0xFFFFFFFF, "csize": 0xFFFFFFFF,
                                                              "extra": zip64_extra(2**64 - 40, 2**64 - 40)}}),
    # :74-76 a zip64 sub-field longer than the extra field that holds it: the last member's extra
    # field is empty by the header's length, its sub-field claims 24 bytes past the central directory
    "extra-field-overruns-header": lambda m: make_zip(
        m, cd={"b2.npy": {"offset": 0xFFFFFFFF, "usize": 0xFFFFFFFF, "csize": 0xFFFFFFFF,
                          "extra": struct.pack("<HH", 1, 24), "extra_len": 4}}),
}


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_npz_crafted_zip64_fields_are_refused(readers, tmp_path, case):
    f = tmp_path / f"{case}.npz"
    f.write_bytes(CRAFTED[case](good_members()))
    for name, cmd in readers.items():
        refused(read(cmd, "npz", f), f, "not a readable .npz archive")


def test_npz_short_version_2_header_sets_the_error(readers, tmp_path):
    # :109 returned -1 without a message: the trainer printed uninitialised bytes
    m = good_members()
    m["w1.npy"] = b"\x93NUMPY\x02\x00\x10\x00\x00"  # version 2.0, 11 bytes: too short for its 4-byte header length
    f = tmp_path / "short-v2.npz"
    f.write_bytes(make_zip(m))
    for name, cmd in readers.items():
        refused(read(cmd, "npz", f), f, "w1.npy has a broken .npy header")


def test_npz_good_files_still_read(readers, tmp_path):
    m = good_members()
    w2_at = sum(30 + len(k) + len(v) for k, v in list(m.items())[:2])  # w2's local header: after w1 and b1
    files = {"ours": make_zip(m),
             "npy-v2": make_zip({**m, "w1.npy": npy(np.ones((3, 4), np.float32), (2, 0))}),
             # w2's offset in a zip64 extra field, as numpy writes members of large files
             "zip64": make_zip(m, cd={"w2.npy": {"offset": 0xFFFFFFFF, "extra": zip64_extra(w2_at)}})}
    np.savez(tmp_path / "numpy.npz", **{k[:-4]: np.load(io.BytesIO(v)) for k, v in m.items()})
    files["numpy"] = (tmp_path / "numpy.npz").read_bytes()
    for label, data in files.items():
        f = tmp_path / f"{label}.npz"
        f.write_bytes(data)
        for name, cmd in readers.items():
            r = read(cmd, "npz", f)
            assert r.returncode == 0 and r.stdout.strip() == "ok", (label, name, r.stdout, r.stderr[-2000:])
