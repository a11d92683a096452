"""The float kernels' standalone trainers of the board build (ecufl-train-c, -c-plain, -eigen from
`make arm`), trained under qemu-arm -cpu cortex-a9 on a client's shard from the round's weights,
match the float32 reference and the x86 run of the same kernel (kernels/README.md: float32
kernels within 1e-4), and the NEON path projects faster than the plain one."""

from __future__ import annotations

import numpy as np
import pytest

from ecufl.kernels import EpochOrder, create, init_params
from ecufl.kernels.arm import emulate
from ecufl.kernels.arm.costmodel import CostModel

pytestmark = pytest.mark.arm
SIZES = [784, 32, 10]


@pytest.fixture(scope="module")
def job(mnist_train):
    params = init_params(SIZES, 5, dtype="float32")
    shard = np.arange(10000, 10600)
    order = EpochOrder(len(shard), 3)
    return params, mnist_train.images, mnist_train.labels, [shard[order.next()].astype(np.int32)]


@pytest.fixture(scope="module")
def emulated(job):
    params, images, labels, orders = job
    return {k: emulate.run_emulated(k, params, images, labels, orders, 3.0, 32, "imx6", model=CostModel.trm())
            for k in ("c", "c-plain", "eigen")}


@pytest.mark.parametrize("kernel", ["c", "c-plain", "eigen"])
def test_arm_weights_match_the_float32_reference(job, emulated, kernel):
    params, images, labels, orders = job
    ref = create("numpy", params, dtype="float32")
    ref.train(images, labels, orders[0], 3.0, 32)
    for a, b in zip(emulated[kernel].params.flat(), ref.get_params().flat()):
        assert np.abs(a - b).max() <= 1e-4


@pytest.mark.parametrize("kernel, atol", [("c", 1e-4), ("c-plain", 1e-5), ("eigen", 1e-4)])
def test_arm_weights_match_the_x86_run_of_the_same_kernel(job, emulated, kernel, atol):
    params, images, labels, orders = job
    x86 = create(kernel, params, dtype="float32")
    x86.train(images, labels, orders[0], 3.0, 32)
    want = x86.get_params()
    x86.close()
    got = emulated[kernel].params
    for a, b in zip(got.flat(), want.flat()):
        assert np.abs(a - b).max() <= atol
    assert not np.array_equal(got.weights[0], params.weights[0])


def test_neon_path_uses_neon_and_projects_faster(emulated):
    c, plain = emulated["c"].report, emulated["c-plain"].report
    assert c["instruction_classes"].get("neon.fmla.q", 0) > 0
    assert not any(k.startswith("neon.f") for k in plain["instruction_classes"])  # the plain path is scalar
    assert c["projected_seconds"] * 3 < plain["projected_seconds"]
    for r in emulated.values():
        assert r.report["arm_instructions"] > 0 and r.report["unpriced_classes"] == {}
