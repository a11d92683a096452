"""simd.h's vectorised exp / sigmoid and byte-mask scan (kernels/c/simd_check.c) against libm and
a byte loop, for each instruction set the optimised C path is built for: AVX2+FMA (when this CPU
runs it, as the kernel's build decides), SSE2, and NEON under ``qemu-arm -cpu cortex-a9``.

Bounds, the figures kernels/README.md documents: vf_exp within 1 ulp of libm's expf on [-87, 88];
vf_sigmoid within 3 ulp (x86) / 4 ulp (NEON: reciprocal by Newton steps) of 1 / (1 + expf(-z))
where that is a normal float, and within 2.5e-7 absolute everywhere on [-100, 100] (2 ulp of 1.0).
The AVX2 case is skipped, visibly, on a CPU without AVX2+FMA; it never runs the SSE2 path.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "kernels" / "c" / "simd_check.c"
CFLAGS = ["-std=c11", "-O3", "-ffp-contract=off", "-Wall", "-Wextra", "-Werror"]


def host_runs_avx2_fma() -> bool:
    flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    return {"avx2", "fma"} <= set(flags.split())


def parse(line: str) -> dict[str, str]:
    words = line.split()
    return dict(zip(words[0::2], words[1::2]))


def check(result: dict[str, str], path: str) -> None:
    assert result["path"] == path  # the instruction set asked for, not a fallback
    assert int(result["exp_ulp"]) <= 1, result
    assert int(result["sigmoid_ulp"]) <= (4 if path == "neon" else 3), result
    assert float(result["sigmoid_abs"]) <= 2.5e-7
    assert int(result["sigmoid_bad"]) == 0
    assert int(result["mask_bad"]) == 0


HOST = [("sse2", []), ("avx2", ["-mavx2", "-mfma"])]


@pytest.mark.parametrize("path,flags", HOST, ids=[h[0] for h in HOST])
def test_simd_helpers_on_this_machine(tmp_path, path, flags):
    if path == "avx2" and not host_runs_avx2_fma():
        pytest.skip("this CPU has no AVX2+FMA: the AVX2 path cannot run here")
    exe = tmp_path / f"simd_check_{path}"
    subprocess.run(["cc", *CFLAGS, *flags, "-o", str(exe), str(SOURCE), "-lm"], check=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    check(parse(out), path)


@pytest.mark.arm
def test_simd_helpers_on_neon(tmp_path):
    for tool in ("arm-linux-gnueabihf-gcc", "qemu-arm"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} missing: `make setup` installs the ARM toolchain and qemu-user")
    exe = tmp_path / "simd_check_neon"
    subprocess.run(["arm-linux-gnueabihf-gcc", *CFLAGS, "-mcpu=cortex-a9", "-mfpu=neon", "-mfloat-abi=hard", "-static",
                    "-o", str(exe), str(SOURCE), "-lm"], check=True)
    out = subprocess.run(["qemu-arm", "-cpu", "cortex-a9", str(exe)], check=True, capture_output=True, text=True).stdout
    check(parse(out), "neon")
