import numpy as np
import pytest
from conftest import check_layer_gradients, rel_error

from skcnn.functions import numerical_gradient
from skcnn.layers import (
    BatchNorm,
    Bias,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    MaxPool2D,
    ReLU,
    Rescale,
    SoftmaxCrossEntropy,
)


@pytest.mark.parametrize(
    "n,h,w,c,filters,k,stride,pad",
    [
        (1, 5, 5, 1, 2, 3, 1, 1),  # batch of one
        (2, 7, 5, 3, 4, 3, 1, 0),  # odd sizes, padding 0, several channels
        (2, 7, 7, 2, 3, 3, 2, 1),  # stride 2
        (2, 4, 6, 2, 2, 3, 2, 2),  # padding 2, stride 2
        (3, 1, 1, 2, 3, 3, 1, 1),  # 1x1 input
        (2, 6, 6, 1, 2, 5, 1, 2),  # 5x5 kernel
    ],
)
def test_conv2d_gradients(n, h, w, c, filters, k, stride, pad, rng):
    layer = Conv2D(c, filters, k, stride, pad, rng=rng, dtype=np.float64)
    layer.params["b"][:] = rng.standard_normal(filters)
    check_layer_gradients(layer, rng.standard_normal((n, h, w, c)), rng)


def test_conv2d_without_input_gradient_still_fills_weight_gradients(rng):
    layer = Conv2D(2, 3, 3, padding=1, rng=rng, dtype=np.float64, input_grad=False)
    x = rng.standard_normal((2, 4, 4, 2))
    out = layer.forward(x, training=True)
    assert layer.backward(np.ones_like(out)) is None
    assert layer.grads["W"].shape == layer.params["W"].shape


@pytest.mark.parametrize(
    "n,h,w,c,pool,stride",
    [
        (2, 4, 4, 3, 2, None),  # divisible
        (1, 5, 7, 2, 2, None),  # not divisible: partial windows at the edge
        (2, 1, 1, 3, 2, None),  # 1x1 input, smaller than the window
        (2, 7, 7, 2, 3, 2),  # overlapping windows
        (1, 2, 3, 1, 3, None),  # input smaller than the window on one axis
    ],
)
def test_maxpool_gradients(n, h, w, c, pool, stride, rng):
    check_layer_gradients(MaxPool2D(pool, stride), rng.standard_normal((n, h, w, c)), rng)


def test_maxpool_shapes_and_values_on_awkward_inputs():
    x = np.arange(15, dtype=np.float64).reshape(1, 3, 5, 1)
    out = MaxPool2D(2).forward(x)
    # rows {0,1},{2}; columns {0,1},{2,3},{4}: partial windows are kept
    np.testing.assert_array_equal(out[0, :, :, 0], [[6, 8, 9], [11, 13, 14]])
    one = np.array([[[[-3.0]]]])
    np.testing.assert_array_equal(MaxPool2D(2).forward(one), one)


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


def test_relu_gradients(rng):
    x = rng.standard_normal((3, 4, 5, 2))
    x[np.abs(x) < 1e-3] = 0.5  # keep clear of the kink
    check_layer_gradients(ReLU(), x, rng)


@pytest.mark.parametrize("n,d_in,d_out", [(1, 3, 2), (5, 7, 4)])
def test_dense_gradients(n, d_in, d_out, rng):
    layer = Dense(d_in, d_out, rng=rng, dtype=np.float64)
    layer.params["b"][:] = rng.standard_normal(d_out)
    check_layer_gradients(layer, rng.standard_normal((n, d_in)), rng)


def test_flatten_gradients_and_shape(rng):
    x = rng.standard_normal((2, 3, 4, 5))
    layer = Flatten()
    assert layer.forward(x).shape == (2, 60)
    check_layer_gradients(layer, x, rng)


@pytest.mark.parametrize("shape", [(6, 4), (3, 5, 4, 2), (1, 2, 2, 3)])
def test_batchnorm_gradients_in_training_mode(shape, rng):
    layer = BatchNorm(shape[-1], dtype=np.float64)
    layer.params["gamma"][:] = rng.uniform(0.5, 1.5, shape[-1])
    layer.params["beta"][:] = rng.standard_normal(shape[-1])
    check_layer_gradients(layer, rng.standard_normal(shape) * 2 + 1, rng)


def test_batchnorm_normalises_and_uses_running_statistics_for_prediction(rng):
    layer = BatchNorm(3, momentum=1.0, dtype=np.float64)
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


def test_dropout_is_identity_when_not_training_and_scales_when_training(rng):
    layer = Dropout(0.25, rng=np.random.default_rng(1))
    x = np.ones((400, 50))
    np.testing.assert_array_equal(layer.forward(x), x)
    out = layer.forward(x, training=True)
    kept = out != 0
    assert 0.7 < kept.mean() < 0.8
    np.testing.assert_allclose(out[kept], 1 / 0.75)
    # backward applies the same mask and scale
    g = np.full_like(x, 2.0)
    np.testing.assert_allclose(layer.backward(g), 2.0 * out)


def test_dropout_gradient_with_a_fixed_mask(rng):
    layer = Dropout(0.5, rng=np.random.default_rng(3))
    x = rng.standard_normal((4, 6))
    out = layer.forward(x, training=True)
    mask = layer._cache
    r = rng.standard_normal(out.shape)
    num = numerical_gradient(lambda: float(np.sum(x * mask * r)), x)
    assert rel_error(layer.backward(r), num) < 1e-6


def test_dropout_rejects_a_rate_of_one(rng):
    with pytest.raises(ValueError, match="dropout rate"):
        Dropout(1.0, rng=rng)


def test_softmax_cross_entropy_gradient_with_and_without_weights(rng):
    scores = rng.standard_normal((6, 4))
    y = np.array([0, 3, 1, 1, 2, 0])
    for sw in (None, rng.uniform(0, 3, 6)):
        loss = SoftmaxCrossEntropy()
        loss.forward(scores, y, sw)
        analytic = loss.backward()
        num = numerical_gradient(lambda: loss.forward(scores, y, sw), scores)
        assert rel_error(analytic, num) < 1e-6


def test_layers_do_not_modify_the_incoming_gradient(rng):
    x = rng.standard_normal((2, 4, 4, 2))
    for layer in (Conv2D(2, 3, 3, padding=1, rng=rng, dtype=np.float64), MaxPool2D(2), ReLU(), Flatten()):
        out = layer.forward(x, training=True)
        g = rng.standard_normal(out.shape)
        g_before = g.copy()
        layer.backward(g)
        np.testing.assert_array_equal(g, g_before)


def test_he_initialisation_variance_and_zero_biases():
    layer = Conv2D(8, 64, 3, rng=np.random.default_rng(0), dtype=np.float64)
    w = layer.params["W"]
    assert abs(w.var() - 2.0 / (8 * 9)) < 0.1 * 2.0 / (8 * 9)
    assert not layer.params["b"].any()
    dense = Dense(500, 200, rng=np.random.default_rng(0), dtype=np.float64)
    assert abs(dense.params["W"].var() - 2.0 / 500) < 0.05 * 2.0 / 500


def test_float32_stays_float32_through_every_layer(rng):
    x = rng.standard_normal((2, 6, 6, 2)).astype(np.float32)
    layers = [
        Conv2D(2, 3, 3, padding=1, rng=rng),
        BatchNorm(3),
        MaxPool2D(2),
        ReLU(),
        Flatten(),
        Dropout(0.5, rng=rng),
        Dense(27, 4, rng=rng),
    ]
    h = x
    for layer in layers:
        h = layer.forward(h, training=True)
        assert h.dtype == np.float32, layer
    g = np.ones_like(h)
    for layer in reversed(layers):
        g = layer.backward(g)
        assert g.dtype == np.float32, layer
        for name, grad in layer.grads.items():
            assert grad.dtype == np.float32, (layer, name)
            assert layer.params[name].dtype == np.float32


def test_rescale_gradients_and_values(rng):
    layer = Rescale(2.0, 4.0, dtype=np.float64)
    x = rng.standard_normal((2, 3, 3, 1))
    np.testing.assert_allclose(layer.forward(x), (x - 2) / 4)
    check_layer_gradients(layer, x, rng)


def test_bias_gradients(rng):
    layer = Bias(3, dtype=np.float64)
    layer.params["b"][:] = rng.standard_normal(3)
    check_layer_gradients(layer, rng.standard_normal((2, 4, 4, 3)), rng)


def test_bias_after_pool_equals_conv_bias_before_relu_and_pool(rng):
    # the network's reordering: Conv(b) -> ReLU -> Pool == Conv -> Pool -> Bias(b) -> ReLU
    x = rng.standard_normal((2, 6, 6, 2))
    conv = Conv2D(2, 3, 3, padding=1, rng=rng, dtype=np.float64)
    b = rng.standard_normal(3)
    conv.params["b"][:] = b
    reference = MaxPool2D(2).forward(ReLU().forward(conv.forward(x)))
    conv_nb = Conv2D(2, 3, 3, padding=1, rng=rng, dtype=np.float64, bias=False)
    conv_nb.params["W"][:] = conv.params["W"]
    bias = Bias(3, dtype=np.float64)
    bias.params["b"][:] = b
    reordered = ReLU().forward(bias.forward(MaxPool2D(2).forward(conv_nb.forward(x))))
    np.testing.assert_allclose(reordered, reference, rtol=1e-12)
