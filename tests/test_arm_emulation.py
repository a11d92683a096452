"""The instruction-counting plugin is exact, and the board flags never drift past the Cortex-A9.

Each known-count loop of kernels/arm/loops/loops.S runs N iterations of 8 instructions of one
class plus `subs` and `bne`, then `bx lr`: the expected counts below are read off the assembly,
not measured. They must hold exactly, for two N (so a constant offset cannot hide), in Thumb and
ARM state, with callees included and the start-up code excluded.
"""

from __future__ import annotations

import subprocess

import pytest

from ecufl.kernels.arm import count, microbench

pytestmark = pytest.mark.arm

BODY_CLASS = {
    "alu": "int.alu", "alu_arm": "int.alu", "mul": "int.mul", "load": "int.load",
    "store": "int.store", "branch": "int.branch", "vfp_add": "vfp.add", "vfp_mul": "vfp.mul",
    "vfp_mla": "vfp.mla", "vfp_div": "vfp.div", "vfp_load": "vfp.load",
    "neon_fadd_q": "neon.fadd.q", "neon_fmul_q": "neon.fmul.q", "neon_fmla_q": "neon.fmla.q",
    "neon_fmla_d": "neon.fmla.d", "neon_int_q": "neon.int.q", "neon_imul_q": "neon.imul.q",
    "neon_load_2": "neon.load.2", "neon_store_2": "neon.store.2",
}


def expected(name: str, n: int) -> dict[str, int]:
    if name == "call":
        # push, bl, [leaf: add, bx lr], pop, 5 x add, subs, bne ; then bx lr
        return {"int.stm": n, "int.ldm": n, "int.branch": 3 * n + 1, "int.alu": 7 * n}
    want = {"int.alu": n, "int.branch": n + 1}
    body = BODY_CLASS[name]
    want[body] = want.get(body, 0) + 8 * n
    return want


@pytest.fixture(scope="module")
def binary(tmp_path_factory):
    return microbench.build(tmp_path_factory.mktemp("mb"))


def test_every_loop_is_in_the_expected_table():
    assert sorted(microbench.names()) == sorted([*BODY_CLASS, "call"])


@pytest.mark.parametrize("name", [*BODY_CLASS, "call"])
def test_known_count_loop_is_counted_exactly(binary, name):
    for n in (1000, 37):
        run = count.run(binary, [name, str(n)], [f"mb_{name}"])
        assert run.counts.classes == expected(name, n), run.counts.mnemonics
        assert run.counts.regions == 1
        assert run.stdout.split()[:2] == [name, str(n)]


def test_startup_and_environment_are_not_counted(binary):
    bare = count.run(binary, ["alu", "100"], ["mb_alu"], env={})
    crowded = count.run(binary, ["alu", "100"], ["mb_alu"],
                        env={f"VAR{i}": "x" * 200 for i in range(50)} | {"LANG": "C.UTF-8"})
    assert bare.counts.classes == crowded.counts.classes == expected("alu", 100)
    # the whole program did see the difference: the region really excluded it
    assert crowded.counts.program_total != bare.counts.program_total
    assert bare.counts.program_total > bare.counts.total


def test_mnemonics_of_the_neon_loop(binary):
    run = count.run(binary, ["neon_fmla_q", "10"], ["mb_neon_fmla_q"])
    assert run.counts.mnemonics["vmla.f32"] == 80


def test_unknown_function_and_missing_binary_are_one_line(binary, tmp_path):
    with pytest.raises(count.EmulationError, match="no function 'mb_nope'"):
        count.run(binary, ["alu", "1"], ["mb_nope"])
    with pytest.raises(count.EmulationError, match="ARM binary not found"):
        count.run(tmp_path / "missing", [], ["main"])


def test_missing_plugin_is_one_line(binary, monkeypatch, tmp_path):
    monkeypatch.setenv("ECUFL_QEMU_PLUGIN", str(tmp_path / "nope.so"))
    with pytest.raises(count.EmulationError, match="make qemu-plugin"):
        count.run(binary, ["alu", "1"], ["mb_alu"])


# --- the board flags never drift to instructions the A9 lacks -----------------------------------
FMA_SOURCE = r"""
#include <stdio.h>
#include <stdlib.h>
/* a*b+c written so that gcc emits vfma.f32 when the FPU has it (VFPv4) */
int main(int argc, char **argv) {
    volatile float a = 1.5f, b = 2.0f, c = 0.25f;
    float r = __builtin_fmaf(a, b, c);
    printf("%g\n", r);
    return r == 3.25f ? 0 : 1;
}
"""


def _build_fma(tmp_path, fpu: str):
    src = tmp_path / "fma.c"
    src.write_text(FMA_SOURCE)
    out = tmp_path / f"fma-{fpu}"
    flags = [f if not f.startswith("-mfpu=") else f"-mfpu={fpu}" for f in microbench.BOARD_FLAGS]
    subprocess.run([microbench.compiler(), "-O2", "-static", *flags, "-o", str(out), str(src), "-lm"], check=True)
    disasm = subprocess.run(["arm-linux-gnueabihf-objdump", "-d", str(out)], capture_output=True,
                            text=True, check=True).stdout
    return out, disasm


def test_vfpv4_fma_is_refused_by_cortex_a9(tmp_path):
    binary, disasm = _build_fma(tmp_path, "neon-vfpv4")
    assert "vfma.f32" in disasm
    proc = subprocess.run(["qemu-arm", "-cpu", "cortex-a9", str(binary)], capture_output=True)
    assert proc.returncode == -4, proc  # SIGILL: the A9 has no fused multiply-add
    # ... while qemu's default CPU would have run it and hidden the bug
    assert subprocess.run(["qemu-arm", str(binary)], capture_output=True).returncode == 0


def test_board_flags_build_runs_on_cortex_a9(tmp_path):
    binary, disasm = _build_fma(tmp_path, "neon")
    assert "vfma" not in disasm  # fmaf() becomes a library call, not the missing instruction
    proc = subprocess.run(["qemu-arm", "-cpu", "cortex-a9", str(binary)], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "3.25"


def test_sigill_under_counting_is_one_clear_line(tmp_path):
    binary, _ = _build_fma(tmp_path, "neon-vfpv4")
    with pytest.raises(count.EmulationError, match="SIGILL: illegal instruction.*Cortex-A9 lacks"):
        count.run(binary, [], ["printf"])


def test_missing_qemu_is_one_line(binary, monkeypatch):
    monkeypatch.setattr(count, "QEMU", "qemu-arm-not-installed")
    with pytest.raises(count.EmulationError, match="qemu-arm-not-installed not found: install Debian's qemu-user"):
        count.run(binary, ["alu", "1"], ["mb_alu"])
