import numpy as np
import pytest
from conftest import rel_error
from sklearn.datasets import load_digits

from skcnn.functions import numerical_gradient
from skcnn.layers import BatchNorm, Conv2D, Dense, MaxPool2D, ReLU
from skcnn.network import PRESETS, Architecture, Network
from skcnn.optimizers import Adam


def make(arch_kwargs, input_shape, n_classes=3, seed=0, dtype=np.float64):
    arch = Architecture(input_shape=input_shape, n_classes=n_classes, **arch_kwargs)
    return Network.from_architecture(arch, np.random.default_rng(seed), dtype)


def check_network_gradients(net, x, y, sw=None):
    net.loss(x, y, sw)
    net.backward()
    analytic = [g.copy() for g in net.grads()]
    for (name, p), g in zip(net.named_params(), analytic):
        num = numerical_gradient(lambda: net.loss(x, y, sw), p)
        err = rel_error(g, num)
        assert err < 1e-6, f"{name}: relative error {err:.2e}"


def test_default_network_is_the_origin_network():
    net = make({}, (1, 28, 28), n_classes=10, dtype=np.float32)
    kinds = [type(layer).__name__ for layer in net.layers]
    assert kinds == [
        "Rescale", "Conv2D", "MaxPool2D", "Bias", "ReLU", "Conv2D", "MaxPool2D", "Bias", "ReLU", "Flatten",
        "Dense", "ReLU", "Dense",
    ]  # fmt: skip
    convs = [layer for layer in net.layers if isinstance(layer, Conv2D)]
    assert [c.params["W"].shape for c in convs] == [(16, 3, 3, 1), (32, 3, 3, 16)]
    assert all(c.padding == 1 and c.stride == 1 for c in convs)
    # each conv's bias sits after its pool (same function, 4x fewer additions)
    assert [layer.params["b"].shape for layer in net.layers if type(layer).__name__ == "Bias"] == [(16,), (32,)]
    dense = [layer for layer in net.layers if isinstance(layer, Dense)]
    assert [d.params["W"].shape for d in dense] == [(32 * 7 * 7, 100), (100, 10)]
    assert net.forward(np.zeros((2, 1, 28, 28))).shape == (2, 10)


@pytest.mark.parametrize(
    "input_shape,n",
    [((1, 8, 8), 3), ((2, 5, 7), 1), ((1, 1, 1), 2), ((1, 1, 6), 2)],
)
def test_default_network_gradient_end_to_end(input_shape, n, rng):
    net = make({}, input_shape)
    for p in net.params():  # non-zero biases so their gradients are exercised
        if p.ndim == 1:
            p[:] = rng.standard_normal(p.shape) * 0.1
    x = rng.standard_normal((n, *input_shape))
    y = rng.integers(0, 3, n)
    check_network_gradients(net, x, y, sw=rng.uniform(0.5, 2, n))


def test_deep_preset_gradient_end_to_end(rng):
    kw = dict(PRESETS["deep"], conv_filters=((3, 2), (4,)), hidden_layer_sizes=(5,), dropout=0.0)
    net = make(kw, (2, 6, 6))
    assert any(isinstance(layer, BatchNorm) for layer in net.layers)
    check_network_gradients(net, rng.standard_normal((4, 2, 6, 6)), np.array([0, 1, 2, 1]))


def test_float32_in_float32_everywhere(rng):
    net = make(dict(PRESETS["deep"], conv_filters=((4, 4), (8,))), (1, 8, 8), dtype=np.float32)
    x = rng.random((5, 1, 8, 8)).astype(np.float32)
    h = x.transpose(0, 2, 3, 1)
    for layer in net.layers:
        h = layer.forward(h, training=True)
        assert h.dtype == np.float32, layer
    net.loss(x, np.array([0, 1, 2, 0, 1]))
    net.backward()
    assert all(p.dtype == np.float32 for p in net.params())
    assert all(g.dtype == np.float32 for g in net.grads())
    assert net.predict_scores(x).dtype == np.float32
    # float64 input to a float32 network is computed in float32
    assert net.forward(x.astype(np.float64)).dtype == np.float32


def test_float64_network_computes_in_float64(rng):
    net = make({}, (1, 8, 8))
    assert net.predict_scores(rng.random((3, 1, 8, 8))).dtype == np.float64


def test_predict_scores_in_batches_equals_one_pass(rng):
    net = make({}, (1, 8, 8))
    x = rng.random((23, 1, 8, 8))
    np.testing.assert_allclose(net.predict_scores(x, batch_size=5), net.forward(x), rtol=1e-12)


def train_steps(net, x, y, steps, lr=1e-3):
    opt = Adam(lr)
    losses = []
    for _ in range(steps):
        losses.append(net.loss(x, y))
        net.backward()
        opt.step(net.params(), net.grads())
    return losses


def test_learning_is_real_random_labels_are_memorised():
    rng = np.random.default_rng(0)
    x = rng.random((64, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, 64)
    net = make({}, (1, 28, 28), n_classes=10, dtype=np.float32)
    losses = train_steps(net, x, y, 150)
    assert losses[0] > 1.5
    assert losses[-1] < 0.05
    assert (net.forward(x).argmax(axis=1) == y).all()


def test_same_seed_same_weights_and_losses():
    rng = np.random.default_rng(5)
    x = rng.random((16, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 3, 16)
    a, b = make({}, (1, 8, 8), dtype=np.float32), make({}, (1, 8, 8), dtype=np.float32)
    assert train_steps(a, x, y, 5) == train_steps(b, x, y, 5)
    for p, q in zip(a.params(), b.params()):
        np.testing.assert_array_equal(p, q)
    c = make({}, (1, 8, 8), seed=1, dtype=np.float32)
    assert not np.array_equal(a.params()[0], c.params()[0])


def test_engine_reaches_high_accuracy_on_digits():
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]  # (1797, 1, 8, 8)
    y = digits.target
    rng = np.random.default_rng(0)
    order = rng.permutation(len(y))
    train, test = order[:1300], order[1300:]
    net = make({}, (1, 8, 8), n_classes=10, dtype=np.float32)
    opt = Adam(1e-3)
    for _ in range(15):
        for batch in np.array_split(rng.permutation(train), 13):
            net.loss(x[batch], y[batch])
            net.backward()
            opt.step(net.params(), net.grads())
    accuracy = (net.predict_scores(x[test]).argmax(axis=1) == y[test]).mean()
    assert accuracy > 0.95


def test_state_dict_round_trip_and_clear_cache(rng):
    net = make(dict(PRESETS["deep"], conv_filters=((2,),), hidden_layer_sizes=(3,)), (1, 4, 4))
    state = net.state_dict()
    x = rng.random((4, 1, 4, 4))
    before = net.forward(x)
    net.loss(x, np.array([0, 1, 2, 0]))
    net.backward()
    Adam(0.1).step(net.params(), net.grads())
    assert not np.allclose(net.forward(x), before)
    net.load_state_dict(state)
    np.testing.assert_array_equal(net.forward(x), before)
    net.clear_cache()
    assert all(layer._cache is None and not layer.grads for layer in net.layers)


def test_architecture_dict_round_trip():
    arch = Architecture((1, 28, 28), 10, conv_filters=((32, 32), 64), hidden_layer_sizes=(50, 20))
    assert Architecture.from_dict(arch.to_dict()) == Architecture.from_dict(
        Architecture.from_dict(arch.to_dict()).to_dict()
    )
    assert Architecture.from_dict(arch.to_dict()).conv_filters == ((32, 32), (64,))


def test_layers_compose_by_hand(rng):
    # the engine is usable without Network: the README's low-level example
    conv = Conv2D(1, 4, 3, padding=1, rng=rng, dtype=np.float64)
    pool, relu = MaxPool2D(2), ReLU()
    x = rng.random((2, 6, 6, 1))
    out = relu.forward(pool.forward(conv.forward(x, True), True), True)
    assert out.shape == (2, 3, 3, 4)
    grad = conv.backward(pool.backward(relu.backward(np.ones_like(out))))
    assert grad.shape == x.shape


def test_pack_params_moves_weights_and_the_rest_into_two_buffers():
    net = make({"batch_norm": True, "hidden_layer_sizes": (5,)}, (1, 8, 8), dtype=np.float32)
    before = {name: p.copy() for name, p in net.named_params()}
    (weights, w_decay), (rest, r_decay) = net.pack_params()
    assert (w_decay, r_decay) == (True, False)
    named = dict(net.named_params())
    for name, p in named.items():  # same values, now views of the buffers
        np.testing.assert_array_equal(p, before[name])
        assert np.shares_memory(p, weights if name.endswith(".W") else rest)
    assert weights.size == sum(p.size for n, p in named.items() if n.endswith(".W"))
    assert rest.size == sum(p.size for n, p in named.items() if not n.endswith(".W"))
    # packing again keeps the buffers; writes to a buffer reach the layers
    again = net.pack_params()
    assert again[0][0] is weights and again[1][0] is rest
    weights[:] = 0
    assert all(not p.any() for n, p in net.named_params() if n.endswith(".W"))
    # gradients come out in the same layout
    x = np.random.default_rng(1).standard_normal((4, 1, 8, 8)).astype(np.float32)
    net.loss(x, np.array([0, 1, 2, 0]))
    net.backward()
    out = [np.empty_like(weights), np.empty_like(rest)]
    net.packed_grads(out)
    grads = dict(zip([n for n, _ in net.named_params()], net.grads()))
    expected_w = np.concatenate([g.ravel() for n, g in grads.items() if n.endswith(".W")])
    expected_r = np.concatenate([g.ravel() for n, g in grads.items() if not n.endswith(".W")])
    np.testing.assert_array_equal(out[0], expected_w)
    np.testing.assert_array_equal(out[1], expected_r)


@pytest.mark.parametrize(
    "kwargs,input_shape",
    [
        ({}, (1, 28, 28)),
        (PRESETS["deep"], (3, 16, 16)),
        (dict(conv_filters=(5, (6, 7)), kernel_size=5, hidden_layer_sizes=(9, 8)), (2, 7, 9)),
    ],
    ids=["origin", "deep", "odd"],
)
def test_summary_rows_follow_the_forward_pass(kwargs, input_shape, rng):
    net = make(kwargs, input_shape, dtype=np.float32)
    summary = net.summary(input_shape)
    assert len(summary.rows) == len(net.layers)
    assert summary.total_params == sum(p.size for p in net.params())
    h = rng.random((2, *input_shape), dtype=np.float32).transpose(0, 2, 3, 1)
    for layer, row in zip(net.layers, summary.rows):
        h = layer.forward(h)
        assert row.layer == repr(layer)
        assert row.output_shape == h.shape[1:]
        assert row.n_params == sum(p.size for p in layer.params.values())
    assert summary.flops == sum(row.flops for row in summary.rows) > 0


def test_summary_flops_of_the_origin_network():
    rows = make({}, (1, 28, 28), n_classes=10).summary((1, 28, 28)).rows
    # a multiply-add counts 2; the convolutions' biases are added after the pools
    convs = [r.flops for r in rows if r.layer.startswith("Conv2D")]
    assert convs == [2 * 28 * 28 * 16 * 9, 2 * 14 * 14 * 32 * 9 * 16]
    dense = [r.flops for r in rows if r.layer.startswith("Dense")]
    assert dense == [2 * 1568 * 100 + 100, 2 * 100 * 10 + 10]
    pools = [r.flops for r in rows if r.layer.startswith("MaxPool2D")]
    assert pools == [14 * 14 * 16 * 3, 7 * 7 * 32 * 3]  # three comparisons per 2x2 window


def test_every_layer_type_has_a_flop_count():
    from skcnn import layers as L
    from skcnn.network import _FLOPS

    kinds = [getattr(L, name) for name in L.__all__]
    layer_types = {k for k in kinds if isinstance(k, type) and issubclass(k, L.Layer) and k is not L.Layer}
    assert layer_types <= set(_FLOPS), sorted(k.__name__ for k in layer_types - set(_FLOPS))
