import json

import numpy as np
import pytest
from conftest import check_layer_gradients, rel_error
from threadpoolctl import threadpool_limits

import skcnn.layers
from skcnn.functions import numerical_gradient
from skcnn.layers import (
    LAYERS,
    AvgPool2D,
    BatchNorm,
    Bias,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool2D,
    Layer,
    MaxPool2D,
    ReLU,
    Rescale,
    Residual,
    SoftmaxCrossEntropy,
    layer_from_config,
)


@pytest.fixture(autouse=True, scope="module")
def one_blas_thread():
    """Matrix products on one BLAS thread, as skcnn always runs them
    (skcnn.parallel.worker_pool): tiny products are slower with more."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def built(layer, input_shape, rng, dtype=np.float64):
    """``layer`` built for samples of ``input_shape`` (channels-last)."""
    layer.build(input_shape, rng, dtype)
    return layer


def randomise(layer, rng):
    """Give every learnable array of ``layer`` (and of the layers inside it)
    random values: zero biases and unit scales would hide mistakes."""
    for p in layer.params.values():
        p[...] = rng.standard_normal(p.shape) * (0.5 if p.ndim > 1 else 1.0)
    if "gamma" in layer.params:
        layer.params["gamma"][...] = rng.uniform(0.5, 1.5, layer.params["gamma"].shape)
    for sub in layer.sublayers().values():
        randomise(sub, rng)
    return layer


# -- Conv2D ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "n,h,w,c,filters,k,stride,pad",
    [
        (1, 5, 5, 1, 2, 3, 1, 1),  # batch of one
        (2, 7, 5, 3, 4, 3, 1, 0),  # odd sizes, padding 0, several channels
        (2, 7, 7, 2, 3, 3, 2, 1),  # stride 2
        (2, 4, 6, 2, 2, 3, 2, 2),  # padding 2, stride 2
        (3, 1, 1, 2, 3, 3, 1, 1),  # 1x1 input
        (2, 6, 6, 1, 2, 5, 1, 2),  # 5x5 kernel
        (2, 5, 6, 2, 3, 3, 1, "same"),  # "same" padding
        (2, 4, 5, 2, 3, 3, 1, 3),  # padding over K - 1: the input gradient is not a convolution
    ],
)
def test_conv2d_gradients(n, h, w, c, filters, k, stride, pad, rng):
    layer = built(Conv2D(filters, k, stride, pad), (h, w, c), rng)
    layer.params["b"][:] = rng.standard_normal(filters)
    errors = check_layer_gradients(layer, rng.standard_normal((n, h, w, c)), rng)
    assert set(errors) == {"x", "W", "b"}


def test_conv2d_in_several_blocks_of_images_with_a_short_last_one(monkeypatch, rng):
    """The blocks of images that conv2d lowers one at a time (here 2, 2 and
    1 images) give the same output and gradients as one block."""
    layer = randomise(built(Conv2D(3, 3, padding=1), (6, 6, 2), rng), rng)
    x = rng.standard_normal((5, 6, 6, 2))
    whole = layer.forward(x, training=True)
    g = rng.standard_normal(whole.shape)
    dx_whole, dw_whole = layer.backward(g), layer.grads["W"].copy()
    one_image = 6 * 6 * (3 * 3 * 2) * x.itemsize  # bytes of one image's lowered matrix
    monkeypatch.setattr("skcnn.functions.CONV_BLOCK_BYTES", 2 * one_image)
    np.testing.assert_allclose(layer.forward(x, training=True), whole, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer.backward(g), dx_whole, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer.grads["W"], dw_whole, rtol=1e-12, atol=1e-12)
    check_layer_gradients(layer, x, rng)


def test_conv2d_without_bias_gradients(rng):
    layer = built(Conv2D(3, 3, padding="same", bias=False), (5, 5, 2), rng)
    assert set(layer.params) == {"W"}
    check_layer_gradients(layer, rng.standard_normal((2, 5, 5, 2)), rng)


def test_conv2d_without_input_gradient_still_fills_weight_gradients(rng):
    layer = built(Conv2D(3, 3, padding=1), (4, 4, 2), rng)
    layer.input_grad = False
    x = rng.standard_normal((2, 4, 4, 2))
    out = layer.forward(x, training=True)
    g = rng.standard_normal(out.shape)
    assert layer.backward(g) is None
    num = numerical_gradient(lambda: float(np.sum(layer.forward(x) * g)), layer.params["W"])
    assert rel_error(layer.grads["W"], num) < 1e-6


@pytest.mark.parametrize(
    "shape,filters,k,stride,pad",
    [((2, 5, 6, 3), 4, 3, 1, "same"), ((1, 7, 7, 2), 3, 3, 2, 0), ((2, 6, 5, 1), 2, 5, 2, 2)],
)
def test_conv2d_matches_a_loop_over_output_pixels_with_hwio_kernels(
    shape, filters, k, stride, pad, rng
):
    layer = randomise(built(Conv2D(filters, k, stride, pad), shape[1:], rng), rng)
    w, b = layer.params["W"], layer.params["b"]
    assert w.shape == (k, k, shape[3], filters)  # HWIO
    x = rng.standard_normal(shape)
    p = k // 2 if pad == "same" else pad
    xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    out = layer.forward(x)
    expected = np.empty(out.shape)
    for i, j in np.ndindex(out.shape[1:3]):
        patch = xp[:, i * stride : i * stride + k, j * stride : j * stride + k, :]  # (N, K, K, C)
        expected[:, i, j] = (
            np.tensordot(patch, w, axes=3) + b
        )  # sum over ky, kx, c of x * W[ky, kx, c, f]
    np.testing.assert_allclose(out, expected, rtol=1e-10, atol=1e-12)


def test_conv2d_same_padding_keeps_the_size_and_bad_padding_is_rejected(rng):
    layer = built(Conv2D(4, 5, padding="same"), (7, 6, 2), rng)
    assert layer.pad == 2
    assert layer.forward(rng.standard_normal((1, 7, 6, 2))).shape == (1, 7, 6, 4)
    for bad in (-1, "valid", 1.5):
        with pytest.raises(ValueError, match="padding"):
            Conv2D(4, 3, padding=bad)


# -- pooling --------------------------------------------------------------------

POOL_CASES = [
    (2, 4, 4, 3, 2, None),  # divisible
    (1, 5, 7, 2, 2, None),  # not divisible: partial windows at the edge
    (2, 1, 1, 3, 2, None),  # 1x1 input, smaller than the window
    (2, 7, 7, 2, 3, 2),  # overlapping windows
    (1, 2, 3, 1, 3, None),  # input smaller than the window on one axis
    (1, 7, 8, 2, 2, 3),  # stride larger than the window: gaps
]


@pytest.mark.parametrize("n,h,w,c,pool,stride", POOL_CASES)
def test_maxpool_gradients(n, h, w, c, pool, stride, rng):
    layer = built(MaxPool2D(pool, stride), (h, w, c), rng)
    check_layer_gradients(layer, rng.standard_normal((n, h, w, c)), rng)


@pytest.mark.parametrize("n,h,w,c,pool,stride", POOL_CASES)
def test_avgpool_gradients(n, h, w, c, pool, stride, rng):
    layer = built(AvgPool2D(pool, stride), (h, w, c), rng)
    check_layer_gradients(layer, rng.standard_normal((n, h, w, c)), rng)


def test_maxpool_shapes_and_values_on_awkward_inputs():
    x = np.arange(15, dtype=np.float64).reshape(1, 3, 5, 1)
    out = MaxPool2D(2).forward(x)
    # rows {0,1},{2}; columns {0,1},{2,3},{4}: partial windows are kept
    np.testing.assert_array_equal(out[0, :, :, 0], [[6, 8, 9], [11, 13, 14]])
    one = np.array([[[[-3.0]]]])
    np.testing.assert_array_equal(MaxPool2D(2).forward(one), one)


def test_avgpool_shapes_and_values_on_awkward_inputs():
    x = np.arange(15, dtype=np.float64).reshape(1, 3, 5, 1)
    out = AvgPool2D(2).forward(x)
    # partial windows average the pixels they cover, padding not counted
    expected = [
        [(0 + 1 + 5 + 6) / 4, (2 + 3 + 7 + 8) / 4, (4 + 9) / 2],
        [(10 + 11) / 2, (12 + 13) / 2, 14],
    ]
    np.testing.assert_allclose(out[0, :, :, 0], expected, rtol=1e-15)
    one = np.array([[[[-3.0]]]])
    np.testing.assert_array_equal(AvgPool2D(2).forward(one), one)


def test_maxpool_gradient_goes_to_the_first_maximum_on_ties():
    x = np.zeros((1, 2, 2, 1))
    layer = MaxPool2D(2)
    layer.forward(x, training=True)
    dx = layer.backward(np.ones((1, 1, 1, 1)))
    np.testing.assert_array_equal(dx[0, :, :, 0], [[1, 0], [0, 0]])


def naive_maxpool(x, grad, k, s):
    """Loop over every window: its maximum, and its gradient routed to the
    first maximum in reading order."""
    n, h, w, c = x.shape
    oh, ow = grad.shape[1:3]
    out, dx = np.empty(grad.shape), np.zeros(x.shape)
    for i, j in np.ndindex(oh, ow):
        for b, ch in np.ndindex(n, c):
            window = x[b, i * s : i * s + k, j * s : j * s + k, ch]
            out[b, i, j, ch] = window.max()
            ky, kx = np.unravel_index(np.argmax(window), window.shape)  # argmax: first maximum
            dx[b, i * s + ky, j * s + kx, ch] += grad[b, i, j, ch]
    return out, dx


def naive_avgpool(x, grad, k, s):
    """Loop over every window: the mean of the pixels it covers, and its
    gradient shared equally among them."""
    oh, ow = grad.shape[1:3]
    out, dx = np.empty(grad.shape), np.zeros(x.shape)
    for i, j in np.ndindex(oh, ow):
        window = x[:, i * s : i * s + k, j * s : j * s + k, :]  # slicing clips partial windows
        count = window.shape[1] * window.shape[2]
        out[:, i, j, :] = window.sum(axis=(1, 2)) / count
        dx[:, i * s : i * s + k, j * s : j * s + k, :] += grad[:, i : i + 1, j : j + 1, :] / count
    return out, dx


@pytest.mark.parametrize(
    "shape,k,s",
    [
        ((3, 6, 8, 4), 2, 2),  # the 2x2 path
        ((2, 5, 7, 3), 2, 2),  # the 2x2 path with partial windows
        ((2, 7, 7, 2), 3, 2),  # overlapping windows: the general path
        ((2, 6, 6, 2), 3, 3),  # the general path, tiling
    ],
)
def test_maxpool_matches_a_loop_over_windows_with_many_ties(shape, k, s, rng):
    x = rng.integers(0, 3, size=shape).astype(np.float64)  # three values: ties everywhere
    layer = MaxPool2D(k, s)
    out = layer.forward(x, training=True)
    grad = rng.standard_normal(out.shape)
    expected_out, expected_dx = naive_maxpool(x, grad, k, s)
    np.testing.assert_array_equal(out, expected_out)
    np.testing.assert_allclose(layer.backward(grad), expected_dx, rtol=1e-12, atol=1e-12)


def to_pool_order(a):
    """Images (N, H, W, C) in the pool order of skcnn.functions.conv2d,
    (4N, H/2, W/2, C), written out with explicit parities."""
    n, h, w, c = a.shape
    out = np.empty((n, 2, 2, h // 2, w // 2, c), dtype=a.dtype)
    for dy, dx in np.ndindex(2, 2):
        out[:, dy, dx] = a[:, dy::2, dx::2]
    return out.reshape(4 * n, h // 2, w // 2, c)


@pytest.mark.parametrize(
    "n,h,w,c,filters,k,stride,pad,input_grad",
    [
        (2, 6, 8, 1, 3, 3, 1, 1, False),  # one channel (the lowered matrix stored transposed), first layer
        (2, 6, 8, 1, 3, 3, 1, 1, True),
        (3, 4, 6, 3, 4, 3, 1, "same", True),  # several channels
        (2, 8, 8, 2, 3, 3, 2, 1, True),  # stride 2: 4x4 output
        (1, 8, 6, 2, 2, 3, 1, 0, True),  # padding 0: 6x4 output
        (2, 4, 6, 2, 3, 3, 1, 3, True),  # padding over K - 1: the input gradient is not a convolution
    ],
)
def test_conv2d_in_pool_order_is_the_same_convolution(n, h, w, c, filters, k, stride, pad, input_grad, rng):
    usual = randomise(built(Conv2D(filters, k, stride, pad), (h, w, c), rng), rng)
    pooled = usual.replica()
    usual.input_grad = pooled.input_grad = input_grad
    pooled.pool_order = True
    x = rng.standard_normal((n, h, w, c))
    out = usual.forward(x, training=True)
    out_po = pooled.forward(x, training=True)
    np.testing.assert_array_equal(to_pool_order(out).shape, out_po.shape)
    np.testing.assert_allclose(out_po, to_pool_order(out), rtol=1e-12, atol=1e-12)
    g = rng.standard_normal(out.shape)
    dx, dx_po = usual.backward(g), pooled.backward(to_pool_order(g))
    if input_grad:
        np.testing.assert_allclose(dx_po, dx, rtol=1e-12, atol=1e-12)  # the input's order is the usual one
    else:
        assert dx is dx_po is None
    for key in usual.params:
        np.testing.assert_allclose(pooled.grads[key], usual.grads[key], rtol=1e-12, atol=1e-12)
    # and its own backward against central differences
    pooled.input_grad = True
    errors = check_layer_gradients(pooled, x, rng)
    assert set(errors) == {"x", "W", "b"}


def test_conv2d_in_pool_order_needs_an_even_output(rng):
    layer = built(Conv2D(2, 3, padding="same"), (5, 6, 1), rng)
    layer.pool_order = True
    with pytest.raises(ValueError, match="even output size; got 5x6"):
        layer.forward(rng.standard_normal((1, 5, 6, 1)))


@pytest.mark.parametrize("shape", [(3, 6, 8, 4), (2, 2, 2, 1), (1, 28, 28, 16)])
def test_maxpool_in_pool_order_matches_the_loop_with_many_ties(shape, rng):
    x = rng.integers(0, 3, size=shape).astype(np.float64)  # three values: ties everywhere
    layer = MaxPool2D(2)
    layer.pool_order = True
    out = layer.forward(to_pool_order(x), training=True)
    grad = rng.standard_normal(out.shape)
    expected_out, expected_dx = naive_maxpool(x, grad, 2, 2)
    np.testing.assert_array_equal(out, expected_out)
    dx = layer.backward(grad)
    assert dx.shape == (4 * shape[0], shape[1] // 2, shape[2] // 2, shape[3])
    np.testing.assert_array_equal(dx, to_pool_order(expected_dx))  # each gradient value moved, not computed
    # and against central differences (distinct values: the maxima are unique)
    errors = check_layer_gradients(layer, to_pool_order(rng.standard_normal(shape)), rng)
    assert set(errors) == {"x"}


@pytest.mark.parametrize(
    "shape,k,s",
    [
        ((3, 6, 8, 4), 2, 2),  # divisible
        ((2, 5, 7, 3), 2, 2),  # partial windows
        ((2, 7, 7, 2), 3, 2),  # overlapping windows
        ((2, 8, 7, 2), 3, 3),  # tiling, partial windows
        ((1, 7, 8, 2), 2, 3),  # gaps between windows
        ((2, 2, 1, 3), 3, None),  # input smaller than the window
    ],
)
def test_avgpool_matches_a_loop_over_windows(shape, k, s, rng):
    x = rng.standard_normal(shape)
    layer = AvgPool2D(k, s)
    out = layer.forward(x, training=True)
    assert out.shape[1:] == layer.output_shape(shape[1:])
    grad = rng.standard_normal(out.shape)
    expected_out, expected_dx = naive_avgpool(x, grad, k, k if s is None else s)
    np.testing.assert_allclose(out, expected_out, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(layer.backward(grad), expected_dx, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("shape", [(2, 4, 5, 3), (1, 1, 1, 2), (3, 7, 2, 1)])
def test_global_avgpool_gradients_and_values(shape, rng):
    layer = built(GlobalAvgPool2D(), shape[1:], rng)
    x = rng.standard_normal(shape)
    out = layer.forward(x)
    assert out.shape == (shape[0], shape[3]) and layer.output_shape(shape[1:]) == (shape[3],)
    np.testing.assert_allclose(
        out, [[x[i, :, :, c].mean() for c in range(shape[3])] for i in range(shape[0])]
    )
    check_layer_gradients(layer, x, rng)


# -- elementwise, dense, normalisation --------------------------------------------


def test_relu_gradients(rng):
    x = rng.standard_normal((3, 4, 5, 2))
    x[np.abs(x) < 1e-3] = 0.5  # keep clear of the kink
    check_layer_gradients(ReLU(), x, rng)


@pytest.mark.parametrize("n,d_in,d_out", [(1, 3, 2), (5, 7, 4)])
def test_dense_gradients(n, d_in, d_out, rng):
    layer = built(Dense(d_out), (d_in,), rng)
    assert layer.params["W"].shape == (d_in, d_out)
    layer.params["b"][:] = rng.standard_normal(d_out)
    errors = check_layer_gradients(layer, rng.standard_normal((n, d_in)), rng)
    assert set(errors) == {"x", "W", "b"}


def test_dense_without_bias_gradients_and_refuses_images(rng):
    layer = built(Dense(3, bias=False), (5,), rng)
    assert set(layer.params) == {"W"}
    check_layer_gradients(layer, rng.standard_normal((4, 5)), rng)
    with pytest.raises(ValueError, match="flat inputs"):
        Dense(3).build((4, 4, 2), rng)


def test_flatten_gradients_and_shape(rng):
    x = rng.standard_normal((2, 3, 4, 5))
    layer = Flatten()
    assert layer.forward(x).shape == (2, 60)
    np.testing.assert_array_equal(layer.forward(x)[1], x[1].ravel())  # channels-last order
    check_layer_gradients(layer, x, rng)


@pytest.mark.parametrize("shape", [(6, 4), (3, 5, 4, 2), (1, 2, 2, 3)])
def test_batchnorm_gradients_in_training_mode(shape, rng):
    layer = built(BatchNorm(), shape[1:], rng)
    assert layer.params["gamma"].shape == layer.params["beta"].shape == (shape[-1],)
    layer.params["gamma"][:] = rng.uniform(0.5, 1.5, shape[-1])
    layer.params["beta"][:] = rng.standard_normal(shape[-1])
    check_layer_gradients(layer, rng.standard_normal(shape) * 2 + 1, rng)


def test_batchnorm_normalises_and_uses_running_statistics_for_prediction(rng):
    layer = built(BatchNorm(momentum=1.0), (3,), rng)
    x = rng.standard_normal((50, 3)) * 4 + 7
    out = layer.forward(x, training=True)
    np.testing.assert_allclose(out.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(out.std(axis=0), 1, rtol=1e-5)
    # momentum 1: running stats are this batch's (variance unbiased)
    np.testing.assert_allclose(layer.buffers["running_mean"], x.mean(axis=0))
    np.testing.assert_allclose(layer.buffers["running_var"], x.var(axis=0, ddof=1))
    # prediction: each row on its own gives the same answer as in a batch
    single = layer.forward(x[:1])
    np.testing.assert_allclose(single, layer.forward(x)[:1])


def test_dropout_is_identity_when_not_training_and_scales_when_training():
    layer = built(Dropout(0.25), (50,), np.random.default_rng(1))
    x = np.ones((400, 50))
    np.testing.assert_array_equal(layer.forward(x), x)
    out = layer.forward(x, training=True)
    kept = out != 0
    assert 0.7 < kept.mean() < 0.8
    np.testing.assert_allclose(out[kept], 1 / 0.75)
    # backward applies the same mask and scale
    g = np.full_like(x, 2.0)
    np.testing.assert_allclose(layer.backward(g), 2.0 * out)


def test_dropout_masks_come_from_the_generator_given_to_build():
    x = np.ones((20, 30))
    a = built(Dropout(0.5), (30,), np.random.default_rng(4))
    b = built(Dropout(0.5), (30,), np.random.default_rng(4))
    np.testing.assert_array_equal(a.forward(x, training=True), b.forward(x, training=True))


def test_dropout_gradient_with_a_fixed_mask(rng):
    layer = built(Dropout(0.5), (6,), np.random.default_rng(3))
    x = rng.standard_normal((4, 6))
    out = layer.forward(x, training=True)
    mask = layer._cache
    r = rng.standard_normal(out.shape)
    num = numerical_gradient(lambda: float(np.sum(x * mask * r)), x)
    assert rel_error(layer.backward(r), num) < 1e-6


def test_dropout_rejects_a_rate_of_one():
    with pytest.raises(ValueError, match="dropout rate"):
        Dropout(1.0)


def test_softmax_cross_entropy_gradient_with_and_without_weights(rng):
    logits = rng.standard_normal((6, 4))
    y = np.array([0, 3, 1, 1, 2, 0])
    for sw in (None, rng.uniform(0, 3, 6)):
        loss = SoftmaxCrossEntropy()
        loss.forward(logits, y, sw)
        analytic = loss.backward()
        num = numerical_gradient(lambda: loss.forward(logits, y, sw), logits)
        assert rel_error(analytic, num) < 1e-6


def test_label_smoothing_gradient_and_loss_against_the_smoothed_target(rng):
    logits = rng.standard_normal((6, 4))
    y = np.array([0, 3, 1, 1, 2, 0])
    eps = 0.2
    target = np.full((6, 4), eps / 4)
    target[np.arange(6), y] += 1 - eps
    for sw in (None, rng.uniform(0, 3, 6)):
        loss = SoftmaxCrossEntropy(label_smoothing=eps)
        value = loss.forward(logits, y, sw)
        analytic = loss.backward(scale=0.5)
        num = numerical_gradient(lambda: 0.5 * loss.forward(logits, y, sw), logits)
        assert rel_error(analytic, num) < 1e-6
        # the loss is the cross-entropy against the smoothed target, written out
        per_sample = -(target * (logits - np.log(np.exp(logits).sum(1, keepdims=True)))).sum(1)
        assert value == pytest.approx(np.average(per_sample, weights=sw), rel=1e-12)
    # its minimum is at finite logits: certainty (margin 50) costs more than a margin of 3
    onehot = (np.arange(4) == y[:, None]).astype(float)
    smoothed, plain = SoftmaxCrossEntropy(eps), SoftmaxCrossEntropy()
    assert smoothed.forward(50 * onehot, y) > smoothed.forward(3 * onehot, y)
    assert plain.forward(50 * onehot, y) < plain.forward(3 * onehot, y)
    with pytest.raises(ValueError, match="label_smoothing"):
        SoftmaxCrossEntropy(1.0)


def test_rescale_gradients_and_values(rng):
    layer = built(Rescale(2.0, 4.0), (3, 3, 1), rng)
    x = rng.standard_normal((2, 3, 3, 1))
    np.testing.assert_allclose(layer.forward(x), (x - 2) / 4)
    check_layer_gradients(layer, x, rng)


def test_bias_gradients(rng):
    layer = built(Bias(), (4, 4, 3), rng)
    layer.params["b"][:] = rng.standard_normal(3)
    x = rng.standard_normal((2, 4, 4, 3))
    np.testing.assert_allclose(layer.forward(x), x + layer.params["b"])
    check_layer_gradients(layer, x, rng)


def test_bias_after_pool_equals_conv_bias_before_relu_and_pool(rng):
    # the network's reordering: Conv(b) -> ReLU -> Pool == Conv -> Pool -> Bias(b) -> ReLU
    x = rng.standard_normal((2, 6, 6, 2))
    conv = randomise(built(Conv2D(3, 3, padding=1), (6, 6, 2), rng), rng)
    reference = MaxPool2D(2).forward(ReLU().forward(conv.forward(x)))
    conv_nb = built(Conv2D(3, 3, padding=1, bias=False), (6, 6, 2), rng)
    conv_nb.params["W"][:] = conv.params["W"]
    bias = built(Bias(), (3, 3, 3), rng)
    bias.params["b"][:] = conv.params["b"]
    reordered = ReLU().forward(bias.forward(MaxPool2D(2).forward(conv_nb.forward(x))))
    np.testing.assert_allclose(reordered, reference, rtol=1e-12)


# -- residual blocks --------------------------------------------------------------


def test_residual_without_projection_gradients(rng):
    c = 3
    # (no bias before batch norm: its gradient is zero, batch norm cancels it)
    block = Residual(
        [
            Conv2D(c, 3, padding="same", bias=False),
            BatchNorm(),
            ReLU(),
            Conv2D(c, 3, padding="same"),
        ]
    )
    assert block.build((5, 4, c), rng, np.float64) == (5, 4, c)
    assert block.projection is None
    randomise(block, rng)
    x = rng.standard_normal((3, 5, 4, c))
    # the function: the branch plus the input
    h = x
    for layer in block.layers:
        h = layer.forward(h)
    np.testing.assert_allclose(block.forward(x), h + x, rtol=1e-12)
    errors = check_layer_gradients(block, x, rng)
    assert set(errors) == {"x", "0.W", "1.gamma", "1.beta", "3.W", "3.b"}


@pytest.mark.parametrize(
    "input_shape,branch,projection_stride",
    [
        (
            (4, 5, 2),
            [Conv2D(4, 3, padding="same"), ReLU(), Conv2D(4, 3, padding="same")],
            1,
        ),  # channels change
        (
            (6, 4, 2),
            [Conv2D(3, 3, stride=2, padding="same", bias=False), BatchNorm(), ReLU()],
            2,
        ),  # stride 2
        (
            (6, 6, 3),
            [Conv2D(3, 3, stride=2, padding=1), ReLU(), Conv2D(3, 3, padding=1)],
            2,
        ),  # stride 2 only
        ((1, 1, 2), [Conv2D(3, 1, bias=False)], 1),  # 1x1 images
    ],
)
def test_residual_with_projection_gradients(input_shape, branch, projection_stride, rng):
    block = Residual(branch)
    out_shape = block.build(input_shape, rng, np.float64)
    proj = block.projection
    assert isinstance(proj, Conv2D)
    assert (proj.kernel_size, proj.stride, proj.bias, proj.filters) == (
        1,
        projection_stride,
        False,
        out_shape[-1],
    )
    assert proj.params["W"].shape == (1, 1, input_shape[-1], out_shape[-1])
    randomise(block, rng)
    x = rng.standard_normal((2, *input_shape))
    out = block.forward(x)
    assert out.shape == (2, *out_shape)
    # the function: the branch plus a strided 1x1 convolution of the input
    h = x
    for layer in block.layers:
        h = layer.forward(h)
    s = projection_stride
    shortcut = x[:, ::s, ::s] @ proj.params["W"][0, 0]
    np.testing.assert_allclose(out, h + shortcut, rtol=1e-12)
    errors = check_layer_gradients(block, x, rng)
    assert {"x", "0.W", "projection.W"} <= set(errors)


@pytest.mark.parametrize("size", [5, 7])
def test_residual_with_a_stride_2_branch_on_odd_sized_images(size, rng):
    # 28 -> 14 -> 7 -> 4: a stride-2 branch on odd sizes is the usual case
    # (a 1x1 convolution with stride 2 maps 7 pixels to 4, as the branch does)
    block = Residual([Conv2D(4, 3, stride=2, padding="same"), ReLU(), Conv2D(4, 3, padding="same")])
    out_shape = block.build((size, size, 2), rng, np.float64)
    assert out_shape == ((size + 1) // 2, (size + 1) // 2, 4)
    assert block.projection.stride == 2
    check_layer_gradients(block, rng.standard_normal((2, size, size, 2)), rng)


def test_residual_branch_that_no_1x1_convolution_can_match_is_rejected(rng):
    with pytest.raises(ValueError, match="residual branch"):
        Residual([Conv2D(2, 3)]).build((6, 6, 2), rng)  # 6x6 -> 4x4: no whole stride
    with pytest.raises(ValueError, match="residual branch"):
        Residual([Flatten()]).build((3, 3, 2), rng)


def test_residual_block_on_flat_features_that_changes_their_number_is_rejected_clearly(rng):
    block = Residual([Dense(4), ReLU(), Dense(4)])  # 4 -> 4 features: fine, no projection
    assert block.build((4,), rng, np.float64) == (4,) and block.projection is None
    check_layer_gradients(randomise(block, rng), rng.standard_normal((3, 4)), rng)
    with pytest.raises(ValueError, match="residual branch"):
        Residual([Dense(3)]).build((5,), rng)  # 5 -> 3 features: no 1x1 convolution for that


# -- every layer ------------------------------------------------------------------


def layer_zoo():
    """One (layer, input shape) of every kind, unbuilt."""
    return [
        (Rescale(1.0, 2.0), (5, 5, 2)),
        (Bias(), (5, 5, 2)),
        (Conv2D(3, 3, padding=1), (5, 5, 2)),
        (MaxPool2D(2), (5, 5, 2)),
        (AvgPool2D(3, 2), (5, 5, 2)),
        (GlobalAvgPool2D(), (5, 5, 2)),
        (ReLU(), (5, 5, 2)),
        (Flatten(), (5, 5, 2)),
        (Dense(4), (6,)),
        (Dropout(0.5), (6,)),
        (BatchNorm(), (5, 5, 2)),
        (Residual([Conv2D(3, 3, stride=2, padding="same"), BatchNorm(), ReLU()]), (6, 6, 2)),
    ]


def test_build_returns_the_output_shape_that_forward_produces(rng):
    for layer, shape in layer_zoo():
        out_shape = layer.build(shape, rng, np.float64)
        assert layer.built and layer.input_shape == shape
        out = layer.forward(rng.standard_normal((3, *shape)), training=True)
        assert out.shape == (3, *out_shape), layer
        assert layer.output_shape(shape) == out_shape, layer
    assert Conv2D(4, 3, stride=2, padding="same").build((7, 8, 3), rng) == (4, 4, 4)
    assert Dense(5).build((12,), rng) == (5,)
    assert AvgPool2D(2).build((5, 7, 3), rng) == (3, 4, 3)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layers_build_on_first_forward_in_the_input_dtype(dtype, rng):
    x = rng.standard_normal((2, 6, 6, 3)).astype(dtype)
    conv, bn = Conv2D(4, 3, padding="same"), BatchNorm()
    block = Residual([Conv2D(5, 3, stride=2, padding=1)])
    dense = Dense(2)
    assert not any(layer.built for layer in (conv, bn, block, dense))
    h = bn.forward(conv.forward(x))
    assert conv.params["W"].shape == (3, 3, 3, 4) and conv.params["W"].dtype == dtype
    assert bn.params["gamma"].shape == (4,)
    h = block.forward(h)
    assert h.shape == (2, 3, 3, 5)
    assert block.layers[0].params["W"].shape == (3, 3, 4, 5)
    assert block.projection.params["W"].shape == (1, 1, 4, 5)
    out = dense.forward(h.reshape(2, -1))
    assert dense.params["W"].shape == (45, 2) and out.dtype == dtype
    # fresh random weights: two layers built on first use differ
    other = Conv2D(4, 3, padding="same")
    other.forward(x)
    assert not np.array_equal(other.params["W"], conv.params["W"])


@pytest.mark.parametrize(
    "layer,input_shape,expected",
    [
        (Conv2D(4, 3), (8, 8, 3), "3 channels"),
        (BatchNorm(), (8, 8, 3), "3 channels"),
        (Bias(), (8, 8, 3), "3 channels"),
        (Residual([Conv2D(3, 3, padding=1)]), (8, 8, 3), "3 channels"),
        (Dense(4), (48,), "48 features"),
    ],
)
def test_a_layer_fed_channels_first_images_says_which_layout_it_expects(
    layer, input_shape, expected, rng
):
    layer.build(input_shape, rng, np.float64)
    nchw = (
        rng.standard_normal((2, 3, 8, 8))
        if len(input_shape) == 3
        else rng.standard_normal((2, 3, 4, 4))
    )
    with pytest.raises(ValueError, match=expected) as info:
        layer.forward(nchw)
    assert "channels-last" in str(info.value) or "features" in str(info.value)


def test_layers_do_not_modify_the_incoming_gradient(rng):
    x = rng.standard_normal((2, 4, 4, 2))
    layers = [
        Conv2D(3, 3, padding=1),
        MaxPool2D(2),
        AvgPool2D(3, 2),
        GlobalAvgPool2D(),
        ReLU(),
        Flatten(),
        BatchNorm(),
        Bias(),
        Rescale(1.0, 3.0),
        Residual([Conv2D(2, 3, padding=1), ReLU()]),
        Residual([Conv2D(3, 3, stride=2, padding=1)]),
    ]
    for layer in layers:
        randomise(built(layer, x.shape[1:], rng), rng)
        out = layer.forward(x, training=True)
        g = rng.standard_normal(out.shape)
        g_before = g.copy()
        layer.backward(g)
        np.testing.assert_array_equal(g, g_before, err_msg=repr(layer))


def test_he_initialisation_variance_and_zero_biases():
    layer = built(Conv2D(64, 3), (5, 5, 8), np.random.default_rng(0))
    w = layer.params["W"]
    assert w.shape == (3, 3, 8, 64)
    assert abs(w.var() - 2.0 / (8 * 9)) < 0.1 * 2.0 / (8 * 9)
    assert not layer.params["b"].any()
    dense = built(Dense(200), (500,), np.random.default_rng(0))
    assert abs(dense.params["W"].var() - 2.0 / 500) < 0.05 * 2.0 / 500


def test_conv2d_kernels_are_drawn_in_fkkc_order_for_comparable_seeds():
    # documented: a seed gives the kernels earlier (FKKC) versions drew, transposed to HWIO
    layer = built(Conv2D(4, 3), (5, 5, 2), np.random.default_rng(7))
    drawn = np.random.default_rng(7).standard_normal((4, 3, 3, 2)) * np.sqrt(2.0 / 18)
    np.testing.assert_allclose(layer.params["W"], drawn.transpose(1, 2, 3, 0), rtol=1e-15)


def test_float32_and_float64_layers_from_one_seed_start_from_the_same_weights():
    a = built(Conv2D(4, 3), (5, 5, 2), np.random.default_rng(3), np.float32)
    b = built(Conv2D(4, 3), (5, 5, 2), np.random.default_rng(3), np.float64)
    assert a.params["W"].dtype == np.float32 and b.params["W"].dtype == np.float64
    np.testing.assert_array_equal(a.params["W"], b.params["W"].astype(np.float32))


def test_float32_stays_float32_through_every_layer(rng):
    x = rng.standard_normal((2, 6, 6, 2)).astype(np.float32)
    layers = [
        Rescale(0.5, 2.0),
        Conv2D(3, 3, padding=1),
        BatchNorm(),
        Residual([Conv2D(3, 3, padding="same"), ReLU()]),
        Residual([Conv2D(4, 3, stride=2, padding="same")]),
        Bias(),
        AvgPool2D(2, 1),
        MaxPool2D(2),
        ReLU(),
        Flatten(),
        Dropout(0.5),
        Dense(4),
    ]
    h = x
    for layer in layers:
        layer.build(h.shape[1:], rng, np.float32)
        h = layer.forward(h, training=True)
        assert h.dtype == np.float32, layer
    assert GlobalAvgPool2D().forward(x).dtype == np.float32
    g = np.ones_like(h)
    for layer in reversed(layers):
        g = layer.backward(g)
        assert g.dtype == np.float32, layer
        for owner in [layer, *layer.sublayers().values()]:
            for name, grad in owner.grads.items():
                assert grad.dtype == np.float32, (layer, name)
                assert owner.params[name].dtype == np.float32


# -- configs ------------------------------------------------------------------------


def test_every_layer_type_round_trips_through_its_config():
    nested = Residual(
        [
            Conv2D(8, 3, stride=2, padding="same", bias=False),
            BatchNorm(momentum=0.2, eps=1e-3),
            ReLU(),
            Residual([Conv2D(8, 5, padding=2), Dropout(0.25)]),
        ]
    )
    layers = [
        Rescale(127.5, 64.0),
        Bias(),
        Conv2D(16, 5, stride=2, padding=1, bias=False),
        Conv2D(4, padding="same"),
        MaxPool2D(3, 2),
        MaxPool2D(),
        AvgPool2D(2),
        AvgPool2D(3, stride=1),
        GlobalAvgPool2D(),
        ReLU(),
        Flatten(),
        Dense(10, bias=False),
        Dropout(0.3),
        BatchNorm(momentum=0.05),
        nested,
    ]
    public = {name: getattr(skcnn.layers, name) for name in skcnn.layers.__all__}
    builtin = {
        n
        for n, c in public.items()
        if isinstance(c, type) and issubclass(c, Layer) and c is not Layer
    }
    assert {
        type(layer).__name__ for layer in layers
    } == builtin  # every type, so a new one is added here
    for layer in layers:
        config = layer.get_config()
        assert config["type"] == type(layer).__name__
        text = json.dumps(config)  # JSON-friendly
        copy = layer_from_config(json.loads(text))
        assert type(copy) is type(layer) and not copy.built
        assert copy.get_config() == config
        assert json.dumps(copy.get_config()) == text
        assert repr(copy) == repr(layer)
    # the nested block keeps its structure, and its copy builds like the original
    copy = layer_from_config(json.loads(json.dumps(nested.get_config())))
    inner = copy.layers[3]
    assert (
        isinstance(inner, Residual)
        and isinstance(inner.layers[1], Dropout)
        and inner.layers[1].rate == 0.25
    )
    assert copy.build((8, 8, 3), np.random.default_rng(0)) == nested.build(
        (8, 8, 3), np.random.default_rng(0)
    )
    np.testing.assert_array_equal(copy.projection.params["W"], nested.projection.params["W"])
    # a built layer's config is the same as before it was built
    assert nested.get_config() == copy.get_config()


def test_layer_from_config_rejects_unknown_types_and_arguments():
    with pytest.raises(ValueError, match="unknown layer type 'Conv3D'"):
        layer_from_config({"type": "Conv3D", "filters": 3})
    with pytest.raises(ValueError, match="Conv2D"):
        layer_from_config({"type": "Conv2D", "filters": 3, "dilation": 2})
    with pytest.raises(ValueError, match="unknown layer type"):
        layer_from_config({"filters": 3})


def test_a_new_layer_subclass_registers_itself_and_round_trips(rng):
    try:

        class TimesConstant(Layer):
            """y = factor * x: a layer a user might add."""

            def __init__(self, factor=2.0):
                super().__init__()
                self.factor = factor

            def forward(self, x, training=False):
                return x * self.factor

            def backward(self, grad):
                return grad * self.factor

        assert LAYERS["TimesConstant"] is TimesConstant
        layer = layer_from_config({"type": "TimesConstant", "factor": 3.0})
        assert isinstance(layer, TimesConstant) and layer.factor == 3.0
        assert layer.get_config() == {"type": "TimesConstant", "factor": 3.0}
        assert layer_from_config(json.loads(json.dumps(layer.get_config()))).factor == 3.0
        # usable inside a residual block, through configs too
        block = layer_from_config(Residual([TimesConstant(0.5)]).get_config())
        assert isinstance(block.layers[0], TimesConstant)
        x = rng.standard_normal((2, 3, 3, 1))
        np.testing.assert_allclose(block.forward(x), 1.5 * x)
        check_layer_gradients(block, x, rng)
    finally:
        LAYERS.pop("TimesConstant", None)
    # private helpers are not layer types
    assert not any(name.startswith("_") for name in LAYERS)
