"""The C PRNG (kernels/common/ecufl_rand.h) against the golden vectors, bit for bit.

``ecufl-prng-dump`` prints every stream the golden file pins down (raw words, Gaussians as IEEE
bits, epoch shuffles, whole initial parameter sets); the hashes are computed here. It is
compiled in ISO C11 (how the kernels build it) and in GNU C with FMA allowed and contraction on
(-ffp-contract=fast), to show the Gaussians do not depend on the compiler fusing x1*x1 + x2*x2.
The libraries' own initial weights (through the C ABI) must equal numpy's bit for bit.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from ecufl.kernels import init_params

ROOT = Path(__file__).resolve().parent.parent
COMMON = ROOT / "kernels" / "common"
GOLDEN = json.loads((ROOT / "kernels" / "golden" / "prng.json").read_text())["cases"]

FLAGS = {
    "iso-c11": ["-std=c11", "-O2"],
    "gnu11-fma-contract": ["-std=gnu11", "-O3", "-march=x86-64-v3", "-ffp-contract=fast"],
}


def parse_dump(text: str) -> dict[str, list[str]]:
    out = {}
    for line in text.splitlines():
        name, _, values = line.partition(":")
        out[name] = values.split()
    return out


def check_against_golden(dump: dict[str, list[str]], case: dict) -> None:
    """Every field of one golden case, from the dump of the same seed."""
    assert [int(v) for v in dump["genrand_u32"]] == case["init_genrand_u32"]
    gauss = np.array([int(v, 16) for v in dump["gauss"]], dtype=np.uint64).view(np.float64)
    assert [float(g).hex() for g in gauss] == case["gauss"]
    assert [int(v) for v in dump["by_array_u32"]] == case["init_by_array_u32"]
    for e in (1, 2):
        order = np.array([int(v) for v in dump[f"epoch{e}"]], dtype="<i4")
        assert order[:32].tolist() == case[f"shuffle_1000_epoch{e}_first32"]
        assert hashlib.sha256(order.tobytes()).hexdigest() == case[f"shuffle_1000_epoch{e}_sha256_int32le"]
    f64 = np.array([int(v, 16) for v in dump["init_784_30_10_f64"]], dtype=np.uint64).view("<f8")
    assert hashlib.sha256(f64.tobytes()).hexdigest() == case["init_784_30_10_f64_sha256"]
    assert [float(v).hex() for v in f64[:4]] == case["init_784_30_10_f64_w1_first4"]
    assert [float(v).hex() for v in f64[784 * 30 : 784 * 30 + 4]] == case["init_784_30_10_f64_b1_first4"]
    f32 = np.array([int(v, 16) for v in dump["init_784_32_16_10_scaled_f32"]], dtype=np.uint32).view("<f4")
    assert hashlib.sha256(f32.tobytes()).hexdigest() == case["init_784_32_16_10_scaled_f32_sha256"]


def compile_dump(tmp: Path, flags: list[str], cc: str = "cc") -> Path:
    exe = tmp / "ecufl-prng-dump"
    subprocess.run([cc, *flags, "-Wall", "-Werror", f"-I{COMMON}", str(COMMON / "prng_dump.c"), "-o", str(exe), "-lm"],
                   check=True, capture_output=True, text=True)
    return exe


@pytest.fixture(scope="module", params=sorted(FLAGS))
def prng_dump(request, tmp_path_factory) -> Path:
    if not shutil.which("cc"):
        pytest.fail("no C compiler (cc): run `make setup`")
    return compile_dump(tmp_path_factory.mktemp(request.param), FLAGS[request.param])


@pytest.mark.parametrize("case", GOLDEN, ids=lambda c: f"seed{c['seed']}")
def test_c_prng_matches_golden_vectors(prng_dump, case):
    out = subprocess.run([str(prng_dump), str(case["seed"])], check=True, capture_output=True, text=True).stdout
    check_against_golden(parse_dump(out), case)


def test_prng_dump_rejects_bad_seed(prng_dump):
    for bad in ["-1", "4294967296", "x", ""]:
        r = subprocess.run([str(prng_dump), bad], capture_output=True, text=True)
        assert r.returncode == 2 and "usage" in r.stderr


@pytest.mark.parametrize("library", ["ecufl_c", "ecufl_c_plain", "ecufl_eigen"])
@pytest.mark.parametrize("sizes,seed,scaled", [
    ([784, 30, 10], 1, False), ([784, 32, 16, 10], 42, True), ([784, 2, 10], 4294967295, False),
    ([784, 128, 10], 0, True),
])
def test_library_initial_weights_bit_identical_to_numpy(library, sizes, seed, scaled):
    from ecufl.kernels.native import native_init_params

    c = native_init_params(library, sizes, seed, scaled=scaled)
    py = init_params(sizes, seed, scaled=scaled, dtype="float32")
    for name, a, b in zip(py.arrays(), c.flat(), py.flat()):
        assert a.dtype == np.float32 and a.shape == b.shape
        assert a.tobytes() == b.tobytes(), f"{library} {name} differs from numpy's initial weights"
