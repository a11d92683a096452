"""Fuzzing in CI (issue 15): every harness runs for a bounded time and must end without a finding.

C (libFuzzer + ASan + UBSan, tests/fuzz/build.sh): the IDX and npz readers built 64-bit and 32-bit
(-m32: size_t products wrap there, as on the armv7 boards) and the board agent's message path.
Python (atheris, tests/fuzz/py_fuzz.py): the weights, IDX, scenario and inventory loaders and the
server's handling of a train reply. A crash, a sanitizer report, a hang (an input running 60 s) or a
traceback makes the harness exit non-zero and the test fail with the finding's report.

Each starts from the committed seed corpus (tests/fuzz/corpus, written by make_corpus.py) and
runs ECUFL_FUZZ_SECONDS (default 15 for C, 8 for Python): 10 harnesses, 115 s of fuzzing, about
3-4 minutes with the builds on a loaded 2-core machine. Findings land in the test's tmp folder (crash-*, timeout-*), named in the failure.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

pytestmark = pytest.mark.fuzz
FUZZ = ROOT / "tests" / "fuzz"
C_SECONDS = int(os.environ.get("ECUFL_FUZZ_SECONDS", "15"))
PY_SECONDS = int(os.environ.get("ECUFL_FUZZ_SECONDS", "8"))


@pytest.fixture(scope="module")
def harnesses(tmp_path_factory) -> Path:
    if not shutil.which("clang"):
        pytest.fail("clang is needed for the libFuzzer harnesses (make system-deps-test installs it)")
    out = tmp_path_factory.mktemp("fuzz-build")
    r = subprocess.run(["sh", str(FUZZ / "build.sh"), str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return out


def run_fuzzer(cmd: list[str], corpus: Path, work: Path, seconds: int, max_len: int) -> str:
    (work / "corpus").mkdir(parents=True)
    (work / "findings").mkdir()
    args = [*cmd, f"-max_total_time={seconds}", "-timeout=60", "-rss_limit_mb=2560", f"-max_len={max_len}",
            "-print_final_stats=1", f"-artifact_prefix={work / 'findings'}/", str(work / "corpus"), str(corpus)]
    r = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 240,
                       env={**os.environ, "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=1",
                            "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1"})
    log = r.stdout + r.stderr
    findings = sorted(p.name for p in (work / "findings").iterdir())
    assert r.returncode == 0 and not findings, f"{findings} in {work / 'findings'}:\n{log[-4000:]}"
    runs = re.search(r"stat::number_of_executed_units:\s*(\d+)", log)
    assert runs and int(runs.group(1)) > 0, log[-2000:]
    print(f"\n{cmd[-1] if cmd[0] == sys.executable else Path(cmd[0]).name}: {int(runs.group(1)):,} inputs in {seconds} s, "
          f"corpus {len(list((work / 'corpus').iterdir()))} new")
    return log


@pytest.mark.parametrize("harness,corpus,max_len", [
    ("fuzz_idx", "idx", 8192), ("fuzz_idx32", "idx", 8192), ("fuzz_npz", "npz", 8192), ("fuzz_npz32", "npz", 8192),
    ("fuzz_agent", "agent", 16384)])
def test_c_harness_finds_nothing(harnesses, tmp_path, harness, corpus, max_len):
    run_fuzzer([str(harnesses / harness)], FUZZ / "corpus" / corpus, tmp_path, C_SECONDS, max_len)


@pytest.mark.parametrize("target", ["weights", "idx", "scenario", "inventory", "reply"])
def test_python_harness_finds_nothing(tmp_path, target):
    pytest.importorskip("atheris", reason="atheris is in the test extra (pip install -e '.[test]')")
    run_fuzzer([sys.executable, str(FUZZ / "py_fuzz.py"), target], FUZZ / "corpus" / f"py-{target}", tmp_path,
               PY_SECONDS, 4096)


def test_harnesses_catch_what_they_are_for(harnesses, tmp_path):
    """A fuzz stage that cannot fail is no check: the npz harness must report the 4f64f11 reader's
    wrapped pointer (UBSan) / out-of-bounds read (ASan) on the crafted zip64 seed (built from the
    reader at that commit)."""
    old = tmp_path / "old"
    (old / "kernels" / "common").mkdir(parents=True)
    for f in ("ecufl_npz.c", "ecufl_npz.h"):
        src = subprocess.run(["git", "-C", str(ROOT), "show", f"4f64f11:kernels/common/{f}"], capture_output=True)
        if src.returncode != 0:
            pytest.skip("no git history here (4f64f11)")
        (old / "kernels" / "common" / f).write_bytes(src.stdout)
    exe = tmp_path / "fuzz_npz_old"
    r = subprocess.run(["clang", "-g", "-O1", "-fsanitize=fuzzer,address,undefined", "-fno-sanitize-recover=all",
                        "-I", str(old / "kernels" / "common"), "-o", str(exe), str(FUZZ / "fuzz_npz.c"),
                        str(old / "kernels" / "common" / "ecufl_npz.c")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    crafted = FUZZ / "corpus" / "npz" / "zip64-end-record-wraps"
    r = subprocess.run([str(exe), str(crafted)], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and re.search(r"(AddressSanitizer|UndefinedBehaviorSanitizer)", r.stderr), r.stderr[-2000:]
