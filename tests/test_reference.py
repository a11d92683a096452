"""The vectorised numpy reference computes what network.py computes."""

import numpy as np
import pytest

from ecufl.kernels import EpochOrder, Params, create, init_params
from ecufl.kernels.reference import NumpyKernel, TextbookKernel


def test_reference_equals_textbook_one_epoch(mnist_train):
    """float64, 1,000 samples in network.py's shuffled order: equal to 1e-10."""
    sizes = [784, 30, 10]
    p = init_params(sizes, 1)
    ref, book = NumpyKernel(p), TextbookKernel(p)
    order = EpochOrder(1000, 1).next()
    for k in (ref, book):
        k.train(mnist_train.images, mnist_train.labels, order, 3.0, 10)
    for a, b in zip(ref.get_params().flat(), book.get_params().flat()):
        assert np.max(np.abs(a - b)) < 1e-10
    # and training did move the weights
    assert np.max(np.abs(ref.get_params().weights[0] - p.weights[0])) > 1e-3


def test_partial_last_batch_and_deep_net(mnist_train):
    sizes = [784, 16, 12, 10]
    p = init_params(sizes, 2, scaled=True)
    ref, book = NumpyKernel(p), TextbookKernel(p)
    order = np.arange(237, dtype=np.int32)  # 23 full batches of 10 and one of 7
    for k in (ref, book):
        k.train(mnist_train.images, mnist_train.labels, order, 0.5, 10)
    for a, b in zip(ref.get_params().flat(), book.get_params().flat()):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-10)


def test_split_calls_equal_one_call(mnist_train):
    p = init_params([784, 30, 10], 3, dtype="float32")
    a, b = NumpyKernel(p, dtype="float32"), NumpyKernel(p, dtype="float32")
    order = EpochOrder(2000, 3).next()
    a.train(mnist_train.images, mnist_train.labels, order, 3.0, 10)
    for k in range(0, 2000, 500):
        b.train(mnist_train.images, mnist_train.labels, order[k:k + 500], 3.0, 10)
    for x, y in zip(a.get_params().flat(), b.get_params().flat()):
        assert np.array_equal(x, y)


def test_gradient_matches_finite_differences(mnist_train):
    """dC/dw by backprop against central differences of the summed quadratic cost (float64)."""
    sizes = [784, 8, 6, 10]
    p = init_params(sizes, 4, scaled=True)
    k = NumpyKernel(p)
    x = k._inputs(mnist_train.images[:5])
    y = np.eye(10)[mnist_train.labels[:5]]

    def cost():
        return 0.5 * np.sum((k.forward(x)[-1] - y) ** 2)

    grad_w, grad_b = k.gradients(x, y)
    rng = np.random.default_rng(0)
    eps = 1e-6
    for l in range(len(sizes) - 1):
        for _ in range(6):
            i, j = rng.integers(k.w[l].shape[0]), rng.integers(k.w[l].shape[1])
            if l == 0:
                j = int(np.flatnonzero(x[0])[rng.integers(np.count_nonzero(x[0]))])  # a lit pixel
            old = k.w[l][i, j]
            k.w[l][i, j] = old + eps
            up = cost()
            k.w[l][i, j] = old - eps
            down = cost()
            k.w[l][i, j] = old
            num = (up - down) / (2 * eps)
            assert abs(num - grad_w[l][i, j]) <= 1e-6 * max(1.0, abs(num)), (l, i, j)
        i = rng.integers(k.b[l].shape[0])
        old = k.b[l][i]
        k.b[l][i] = old + eps
        up = cost()
        k.b[l][i] = old - eps
        down = cost()
        k.b[l][i] = old
        assert abs((up - down) / (2 * eps) - grad_b[l][i]) <= 1e-6


def test_float32_close_to_float64(mnist_train):
    p = init_params([784, 30, 10], 1)
    k64 = NumpyKernel(p)
    k32 = NumpyKernel(p, dtype="float32")
    order = EpochOrder(1000, 1).next()
    for k in (k64, k32):
        k.train(mnist_train.images, mnist_train.labels, order, 3.0, 10)
    assert k32.get_params().dtype == np.float32
    # kernels/README.md: the float32/float64 drift after 10,000 samples (784-30-10 b10 lr 3) is 1.6e-5;
    # here 1,000 samples: held at 1.6e-5, the documented figure (a 10x smaller run, so the margin)
    for a, b in zip(k64.get_params().flat(), k32.get_params().flat()):
        assert np.max(np.abs(a - b)) < 1.6e-5


def test_one_epoch_reaches_90_percent(mnist_train, mnist_test):
    """network.py's result: 784-30-10, lr 3.0, batch 10, one epoch -> > 90% on the test set."""
    k = create("numpy", init_params([784, 30, 10], 1))
    k.train(mnist_train.images, mnist_train.labels, EpochOrder(60000, 1).next(), 3.0, 10)
    ev = k.evaluate(mnist_test.images, mnist_test.labels)
    assert ev.accuracy >= 0.90
    assert ev.count == 10000


def test_wrong_shapes_and_dtype_rejected():
    p = init_params([784, 30, 10], 1)
    k = NumpyKernel(p)
    with pytest.raises(ValueError, match="w1 has shape"):
        k.set_params(Params([p.weights[0][:, :10], p.weights[1]], p.biases))
    with pytest.raises(ValueError, match="b2 has shape"):
        k.set_params(Params(p.weights, [p.biases[0], p.biases[1][:3]]))
    with pytest.raises(ValueError, match="--dtype float16"):
        NumpyKernel(p, dtype="float16")
    with pytest.raises(ValueError, match="takes no option"):
        NumpyKernel(p, prune=0.5)
