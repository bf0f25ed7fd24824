import numpy as np
import pytest

from skcnn.functions import (
    conv2d,
    conv2d_backward,
    conv2d_input_grad,
    conv2d_kernel_grad,
    conv_output_size,
    cross_entropy,
    im2col,
    log_softmax,
    numerical_gradient,
    softmax,
)


def naive_conv(x, w, b, stride, pad):
    """Obvious loops: x (N, H, W, C), w (F, K, K, C) -> (N, OH, OW, F)."""
    n, h, wd, c = x.shape
    f, k, _, _ = w.shape
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    oh = (h + 2 * pad - k) // stride + 1
    ow = (wd + 2 * pad - k) // stride + 1
    out = np.zeros((n, oh, ow, f))
    for i in range(n):
        for y in range(oh):
            for xx in range(ow):
                patch = xp[i, y * stride : y * stride + k, xx * stride : xx * stride + k, :]
                for j in range(f):
                    out[i, y, xx, j] = np.sum(patch * w[j]) + b[j]
    return out


@pytest.mark.parametrize(
    "shape,k,stride,pad",
    [((2, 7, 5, 3), 3, 1, 1), ((1, 9, 9, 2), 3, 2, 0), ((3, 6, 8, 1), 5, 1, 2), ((2, 1, 1, 4), 3, 1, 1)],
)
def test_im2col_conv_matches_naive_loops(shape, k, stride, pad, rng):
    x = rng.standard_normal(shape)
    w = rng.standard_normal((4, k, k, shape[3]))
    b = rng.standard_normal(4)
    n = shape[0]
    oh = conv_output_size(shape[1], k, stride, pad)
    ow = conv_output_size(shape[2], k, stride, pad)
    fast = (im2col(x, k, k, stride, pad) @ w.reshape(4, -1).T + b).reshape(n, oh, ow, 4)
    np.testing.assert_allclose(fast, naive_conv(x, w, b, stride, pad), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "shape,f,k,stride,pad",
    [
        ((3, 7, 6, 2), 3, 3, 1, 1),  # one lowering for both gradients
        ((2, 8, 8, 4), 5, 3, 1, 0),
        ((2, 9, 9, 3), 2, 5, 1, 4),  # pad = K - 1
        ((2, 5, 5, 3), 3, 1, 1, 0),  # 1x1 kernels
        ((2, 6, 6, 3), 1, 3, 1, 0),  # one output channel: the lowered gradient is column-major
        ((2, 9, 8, 3), 2, 3, 2, 1),  # stride 2: the two functions in turn
        ((2, 6, 6, 2), 2, 3, 1, 3),  # pad > K - 1: likewise
    ],
)
def test_conv2d_backward_gives_both_gradients_of_the_separate_functions(shape, f, k, stride, pad, monkeypatch, rng):
    monkeypatch.setattr("skcnn.functions.CONV_BLOCK_BYTES", 1)  # a block per image
    x = rng.standard_normal(shape)
    w = rng.standard_normal((k, k, shape[3], f))
    g = rng.standard_normal(conv2d(x, w, stride, pad).shape)
    grad_w, grad_x = conv2d_backward(x, g, w, stride, pad)
    np.testing.assert_allclose(grad_w, conv2d_kernel_grad(x, g, k, k, stride, pad), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grad_x, conv2d_input_grad(g, w, x.shape, stride, pad), rtol=1e-12, atol=1e-12)
    # and the kernel gradient is that of sum(conv2d(x, w) * g)
    i = (k // 2, 0, shape[3] - 1, f - 1)
    w_plus, w_minus = w.copy(), w.copy()
    w_plus[i] += 1e-6
    w_minus[i] -= 1e-6
    numerical = (np.sum(conv2d(x, w_plus, stride, pad) * g) - np.sum(conv2d(x, w_minus, stride, pad) * g)) / 2e-6
    assert grad_w[i] == pytest.approx(numerical, rel=1e-6)


def test_conv_output_size_rejects_a_kernel_that_does_not_fit():
    with pytest.raises(ValueError, match="does not fit"):
        conv_output_size(2, 5, 1, 0)


def test_softmax_never_overflows():
    z = np.array([[1000.0, 0.0, -1000.0], [-1e30, -1e30, -1e30]])
    p = softmax(z)
    assert np.all(np.isfinite(p))
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    np.testing.assert_allclose(p[0], [1.0, 0.0, 0.0])
    lp = log_softmax(z)
    assert np.all(np.isfinite(lp))
    np.testing.assert_allclose(lp[0], [0.0, -1000.0, -2000.0])
    np.testing.assert_allclose(np.exp(lp), p)


def test_softmax_keeps_float32():
    z = np.ones((2, 3), dtype=np.float32)
    assert softmax(z).dtype == np.float32
    assert log_softmax(z).dtype == np.float32


def test_cross_entropy_weights_count_like_repeated_samples(rng):
    lp = log_softmax(rng.standard_normal((5, 3)))
    y = np.array([0, 2, 1, 1, 0])
    w = np.array([2, 0, 1, 3, 1])
    repeated = np.repeat(np.arange(5), w)
    assert cross_entropy(lp, y, w) == pytest.approx(cross_entropy(lp[repeated], y[repeated]))
    assert cross_entropy(lp, y) == pytest.approx(-lp[np.arange(5), y].mean())


def test_numerical_gradient_of_a_known_function(rng):
    x = rng.standard_normal((3, 4))
    g = numerical_gradient(lambda: float(np.sum(x**3)), x)
    np.testing.assert_allclose(g, 3 * x**2, rtol=1e-7)
