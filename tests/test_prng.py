"""The portable PRNG equals network.py's generators and the golden vectors stored in the repo."""

import hashlib
import json
import random
from pathlib import Path

import numpy as np
import pytest

from ecufl.kernels.prng import EpochOrder, check_seed, gaussians, init_params, mt19937_genrand, shuffle_uint32

GOLDEN = json.loads((Path(__file__).resolve().parents[1] / "kernels" / "golden" / "prng.json").read_text())


def sha(arrays, fmt):
    return hashlib.sha256(b"".join(a.astype(fmt).tobytes() for a in arrays)).hexdigest()


@pytest.mark.parametrize("case", GOLDEN["cases"], ids=lambda c: f"seed{c['seed']}")
def test_golden_vectors(case):
    s = case["seed"]
    assert [int(v) for v in mt19937_genrand(s, 16)] == case["init_genrand_u32"]
    assert [float(v).hex() for v in gaussians(s, 16)] == case["gauss"]
    assert shuffle_uint32(s, 16) == case["init_by_array_u32"]
    order = EpochOrder(1000, s)
    e1, e2 = order.next(), order.next()
    assert e1[:32].tolist() == case["shuffle_1000_epoch1_first32"]
    assert e2[:32].tolist() == case["shuffle_1000_epoch2_first32"]
    assert hashlib.sha256(e1.astype("<i4").tobytes()).hexdigest() == case["shuffle_1000_epoch1_sha256_int32le"]
    assert hashlib.sha256(e2.astype("<i4").tobytes()).hexdigest() == case["shuffle_1000_epoch2_sha256_int32le"]
    p = init_params([784, 30, 10], s)
    assert sha(p.flat(), "<f8") == case["init_784_30_10_f64_sha256"]
    ps = init_params([784, 32, 16, 10], s, scaled=True, dtype="float32")
    assert sha(ps.flat(), "<f4") == case["init_784_32_16_10_scaled_f32_sha256"]


def test_init_equals_network_py():
    """network.py: np.random.seed(S); biases = [randn(y, 1)]; weights = [randn(y, x)]."""
    sizes = [784, 30, 10]
    np.random.seed(7)
    biases = [np.random.randn(y, 1) for y in sizes[1:]]
    weights = [np.random.randn(y, x) for x, y in zip(sizes[:-1], sizes[1:])]
    p = init_params(sizes, 7)
    for a, b in zip(p.weights, weights):
        assert np.array_equal(a, b)
    for a, b in zip(p.biases, biases):
        assert np.array_equal(a, b.ravel())


def test_order_equals_random_shuffle_in_place():
    """network.py shuffles its list in place every epoch after random.seed(S)."""
    data = list(range(500))
    random.seed(3)
    order = EpochOrder(500, 3)
    for _ in range(3):
        random.shuffle(data)
        assert order.next().tolist() == data


def test_no_shuffle_keeps_order():
    order = EpochOrder(50, 1, shuffle=False)
    assert order.next().tolist() == list(range(50))
    assert order.next().tolist() == list(range(50))


def test_scaled_init_divides_by_sqrt_fan_in():
    a = init_params([784, 30, 10], 5)
    b = init_params([784, 30, 10], 5, scaled=True)
    assert np.array_equal(b.weights[0], a.weights[0] / np.sqrt(784))
    assert np.array_equal(b.biases[1], a.biases[1])


@pytest.mark.parametrize("bad", [-1, 2**32, 1.5, "1", True])
def test_bad_seed(bad):
    with pytest.raises(ValueError, match="seed"):
        check_seed(bad)
