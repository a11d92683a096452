"""The int8 kernel built for the i.MX6 (Cortex-A9, NEON) and run under qemu-arm -cpu cortex-a9:
bit for bit the numpy reference, plain and NEON paths, dense and pruned.

The job runner ``int8_check`` (kernels/int8/int8_check.c) reads initial weights, data, order and
masks from a file, trains with the same C code as the Python kernels and writes the float32
masters and int8 weights back; the test compares them with ``int8-numpy`` on the same job.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from ecufl.kernels import EpochOrder, create, init_params
from ecufl.kernels.int8 import reference as ref
from ecufl.kernels.prune import magnitude_mask

pytestmark = pytest.mark.arm

INT8_DIR = Path(ref.__file__).parent
CC = "arm-linux-gnueabihf-gcc"
A9_FLAGS = ["-O3", "-mcpu=cortex-a9", "-mfpu=neon", "-mfloat-abi=hard", "-ffp-contract=off", "-static"]


@pytest.fixture(scope="module")
def arm_binaries(tmp_path_factory):
    for tool in (CC, "qemu-arm"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} missing: `make setup` installs gcc-arm-linux-gnueabihf and qemu-user")
    out = tmp_path_factory.mktemp("arm")
    bins = {}
    for path, ops in (("neon", "int8_ops_simd.c"), ("plain", "int8_ops_plain.c")):
        exe = out / f"int8_check_{path}"
        subprocess.run([CC, *A9_FLAGS, "-o", str(exe), str(INT8_DIR / "int8_check.c"), str(INT8_DIR / "int8_net.c"),
                        str(INT8_DIR / ops), "-lm"], check=True, capture_output=True, text=True)
        bins[path] = exe
    return bins


def write_job(path: Path, sizes, params, images, labels, order, lr, batch, masks) -> None:
    with open(path, "wb") as f:
        f.write(struct.pack(f"<{1 + len(sizes)}i", len(sizes), *sizes))
        f.write(struct.pack("<iiid", len(images), len(order), batch, lr))
        for a in params.flat():
            f.write(np.ascontiguousarray(a, np.float32).tobytes())
        f.write(np.ascontiguousarray(images, np.uint8).tobytes())
        f.write(np.ascontiguousarray(labels, np.uint8).tobytes())
        f.write(np.ascontiguousarray(order, np.int32).tobytes())
        f.write(struct.pack("<i", len(masks)))
        for layer, after, block, mask in masks:
            f.write(struct.pack("<iii", layer, after, block))
            f.write(np.ascontiguousarray(mask, np.uint8).tobytes())


def read_out(path: Path, sizes):
    raw = path.read_bytes()
    pos = 0
    arrays = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        for shape in ((n_out, n_in), (n_out,)):
            n = int(np.prod(shape))
            arrays.append(np.frombuffer(raw, np.float32, n, pos).reshape(shape))
            pos += 4 * n
    wq = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        wq.append(np.frombuffer(raw, np.int8, n_in * n_out, pos).reshape(n_out, n_in))
        pos += n_in * n_out
        wq.append(np.frombuffer(raw, np.float32, 1, pos)[0])
        pos += 4
    assert pos == len(raw)
    return arrays, wq[0::2], wq[1::2]


@pytest.mark.parametrize("path", ["neon", "plain"])
@pytest.mark.parametrize("prune", [False, True])
def test_cortex_a9_bit_exact_with_numpy(arm_binaries, path, prune, mnist_train, tmp_path):
    sizes = [784, 32, 16, 10]
    n = 1200
    images, labels = mnist_train.images[:n], mnist_train.labels[:n]
    p = init_params(sizes, 9, dtype="float32")
    order = EpochOrder(n, 9).next()
    nk = create("int8-numpy", p)
    masks = []
    if prune:  # dense for 600 samples, then both hidden matrices pruned to 80% in 8-row blocks
        nk.train(images, labels, order[:600], 3.0, 10)
        for l in (0, 1):
            m = magnitude_mask(nk.get_params().weights[l], 0.8, block=8)
            masks.append((l, 600, 8, m))
            nk.masks[l] = m
        nk._apply_masks()
        nk.train(images, labels, order[600:], 3.0, 10)
    else:
        nk.train(images, labels, order, 3.0, 10)
    job, out = tmp_path / "job.bin", tmp_path / "out.bin"
    write_job(job, sizes, p, images, labels, order, 3.0, 10, masks)
    proc = subprocess.run(["qemu-arm", "-cpu", "cortex-a9", str(arm_binaries[path]), str(job), str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert f"{path} path" in proc.stdout
    arrays, wq, maxabs = read_out(out, sizes)
    for i, (a, b) in enumerate(zip(arrays, nk.get_params().flat())):
        assert np.array_equal(a.view(np.uint32), b.view(np.uint32)), f"array {i}: max diff {np.abs(a - b).max()}"
    for l in range(3):
        assert np.array_equal(wq[l], nk.net.wq[l]) and maxabs[l] == nk.net.maxabs[l]
    if prune:
        assert np.count_nonzero(arrays[0]) == 8 * (4 * 784 - round(0.8 * 4 * 784))  # whole 8-row blocks


def test_neon_build_uses_the_neon_integer_instructions(arm_binaries):
    objdump = shutil.which("arm-linux-gnueabihf-objdump")
    if not objdump:
        pytest.fail("arm-linux-gnueabihf-objdump missing (binutils-arm-linux-gnueabihf)")
    asm = subprocess.run([objdump, "-d", str(arm_binaries["neon"])], capture_output=True, text=True).stdout
    for insn in ("vmull.s8", "vmlal.s8", "vpadal.s16", "vmlal.s16"):
        assert insn in asm, insn
    plain = subprocess.run([objdump, "-d", str(arm_binaries["plain"])], capture_output=True, text=True).stdout
    assert "vmull.s8" not in plain


def test_job_runner_refuses_a_truncated_job(arm_binaries, tmp_path):
    job = tmp_path / "job.bin"
    job.write_bytes(struct.pack("<4i", 3, 784, 30, 10))
    proc = subprocess.run(["qemu-arm", "-cpu", "cortex-a9", str(arm_binaries["neon"]), str(job), str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and proc.stderr.strip().count("\n") == 0 and "truncated" in proc.stderr


def test_cortex_a9_int8_trainer_trains_the_can_autoencoder_bit_exact(arm_binaries, tmp_path):
    """Any data (issue 17): ecufl-train-int8 built for the A9 (NEON) trains the CAN-shaped
    autoencoder from float32 IDX files (tests/test_any_data.py) bit for bit as int8-numpy."""
    from ecufl.kernels import weights as weightfile
    from test_any_data import SIZES, can_like, run_trainer, train, write_idx

    common = INT8_DIR.parent / "common"
    exe = tmp_path / "ecufl-train-int8"
    subprocess.run([CC, *A9_FLAGS, "-std=c11", f"-I{common}", f"-I{INT8_DIR}", '-DECUFL_TRAINER_KERNEL="int8"', "-o", str(exe),
                    *[str(common / f) for f in ("trainer.c", "ecufl_args.c", "ecufl_idx.c", "ecufl_npz.c")],
                    *[str(INT8_DIR / f) for f in ("int8_abi.c", "int8_net.c", "int8_ops_simd.c")], "-lm"],
                   check=True, capture_output=True, text=True)
    x = can_like(400)
    for split, rows in (("train", x[:300]), ("test", x[300:])):
        write_idx(tmp_path / f"{split}-inputs.idx", rows)
        write_idx(tmp_path / f"{split}-targets.idx", rows)
    weightfile.save(tmp_path / "init.npz", init_params(SIZES, 3, scaled=True, dtype="float32"))
    r = run_trainer(["qemu-arm", "-cpu", "cortex-a9", str(exe)], tmp_path, tmp_path / "arm.npz")
    assert r.returncode == 0, r.stderr
    arm, _ = weightfile.load(tmp_path / "arm.npz")
    ref = train("int8-numpy", x[:300], x[:300]).get_params()
    for a, b in zip(arm.flat(), ref.flat()):
        assert np.array_equal(a, b)
