"""Regenerate kernels/golden/prng.json from numpy and CPython (the generators network.py uses).

Run: python kernels/golden/make_prng_golden.py > kernels/golden/prng.json
The file is the contract: Python tests check that numpy/CPython still produce it, and the C
tests check that kernels/common/ecufl_rand.h produces it bit for bit.
"""

import hashlib
import json
import random

import numpy as np

from ecufl.kernels.prng import EpochOrder, gaussians, init_params, mt19937_genrand, shuffle_uint32

SEEDS = [0, 1, 42, 12345, 4294967295]


def case(seed: int) -> dict:
    order = EpochOrder(1000, seed)
    epoch1, epoch2 = order.next(), order.next()
    p = init_params([784, 30, 10], seed)
    ps = init_params([784, 32, 16, 10], seed, scaled=True, dtype="float32")
    return {
        "seed": seed,
        "init_genrand_u32": [int(v) for v in mt19937_genrand(seed, 16)],
        "gauss": [float(v).hex() for v in gaussians(seed, 16)],
        "init_by_array_u32": shuffle_uint32(seed, 16),
        "shuffle_1000_epoch1_first32": epoch1[:32].tolist(),
        "shuffle_1000_epoch2_first32": epoch2[:32].tolist(),
        "shuffle_1000_epoch1_sha256_int32le": hashlib.sha256(epoch1.astype("<i4").tobytes()).hexdigest(),
        "shuffle_1000_epoch2_sha256_int32le": hashlib.sha256(epoch2.astype("<i4").tobytes()).hexdigest(),
        "init_784_30_10_f64_sha256": hashlib.sha256(b"".join(a.astype("<f8").tobytes() for a in p.flat())).hexdigest(),
        "init_784_30_10_f64_w1_first4": [float(v).hex() for v in p.weights[0].ravel()[:4]],
        "init_784_30_10_f64_b1_first4": [float(v).hex() for v in p.biases[0][:4]],
        "init_784_32_16_10_scaled_f32_sha256": hashlib.sha256(b"".join(a.astype("<f4").tobytes() for a in ps.flat())).hexdigest(),
    }


if __name__ == "__main__":
    print(json.dumps({
        "about": "Golden vectors of ecufl's PRNG (numpy legacy MT19937 + randn; CPython random.shuffle). "
                 "Arrays are hashed in transport order w1,b1,w2,b2,... little-endian.",
        "cases": [case(s) for s in SEEDS],
    }, indent=1))
