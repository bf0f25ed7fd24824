import json

import numpy as np
import pytest
from conftest import rel_error
from sklearn.datasets import load_digits
from threadpoolctl import threadpool_limits

from skcnn.functions import numerical_gradient, pool_order_to_images
from skcnn.layers import (
    AvgPool2D,
    BatchNorm,
    Bias,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool2D,
    MaxPool2D,
    ReLU,
    Rescale,
    Residual,
    layer_from_config,
)
from skcnn.network import PRESETS, Network, fold_batch_norm, layer_flops, plan_layers, preset_layers
from skcnn.optimizers import Adam
from skcnn.parallel import merge_buffers, pack_params, packed_grads, replicas


@pytest.fixture(autouse=True, scope="module")
def one_blas_thread():
    """Matrix products on one BLAS thread, as skcnn always runs them
    (skcnn.parallel.worker_pool): many tiny products on a busy machine are
    many times slower with more."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield


#: The origin network's structure with few weights, for checks that perturb every one.
SMALL = dict(conv_filters=(3, 4), hidden_layer_sizes=(5,))


def make(arch_kwargs=None, input_shape=(1, 8, 8), n_classes=3, seed=0, dtype=np.float64):
    """A preset network: the origin preset's fields updated by ``arch_kwargs``,
    plus the output layer."""
    layers = preset_layers(**dict(PRESETS["origin"], **(arch_kwargs or {}))) + [Dense(n_classes)]
    return Network.from_layers(layers, input_shape, np.random.default_rng(seed), dtype)


def residual_layers(n_classes=3):
    """A small residual network: pools of both kinds, a block that keeps the
    shape, a strided block with a projection, global average pooling."""
    return [
        Conv2D(3, 3, padding="same"),
        AvgPool2D(3, 2),  # overlapping, partial windows at the edge
        ReLU(),
        Residual(
            [
                Conv2D(3, 3, padding="same", bias=False),
                BatchNorm(),
                ReLU(),
                Conv2D(3, 3, padding="same"),
            ]
        ),
        Residual([Conv2D(4, 3, stride=2, padding="same"), ReLU()]),
        GlobalAvgPool2D(),
        Dense(n_classes),
    ]


def make_residual(input_shape=(2, 8, 8), seed=0, dtype=np.float64):
    return Network.from_layers(residual_layers(), input_shape, np.random.default_rng(seed), dtype)


def randomise(net, rng, scale=0.1):
    """Non-zero biases and shifts, scales away from one, so that their
    gradients and the places they run are exercised."""
    for name, p in net.named_params():
        if p.ndim == 1:
            p[:] = rng.standard_normal(p.shape) * scale + (1.0 if name.endswith("gamma") else 0.0)
    return net


def check_network_gradients(net, x, y, sw=None, entries=None, rng=None):
    """Compare every parameter gradient of the loss with central differences
    (of ``entries`` random entries per array when given, else of all)."""
    net.loss(x, y, sw)
    net.backward()
    analytic = [g.copy() for g in net.grads()]
    assert len(analytic) == len(net.named_params()) > 0
    for (name, p), g in zip(net.named_params(), analytic, strict=True):
        if entries is None or p.size <= entries:
            num = numerical_gradient(lambda: net.loss(x, y, sw), p)
        else:
            picked = rng.choice(p.size, entries, replace=False)
            num, g = np.empty(entries), g.reshape(-1)[picked]
            flat = p.reshape(-1)  # a view
            for j, i in enumerate(picked):
                old = flat[i]
                flat[i] = old + 1e-6
                plus = net.loss(x, y, sw)
                flat[i] = old - 1e-6
                minus = net.loss(x, y, sw)
                flat[i] = old
                num[j] = (plus - minus) / 2e-6
        err = rel_error(g, num)
        assert err < 1e-6, f"{name}: relative error {err:.2e}"


def kinds(layers):
    return [type(layer).__name__ for layer in layers]


# -- presets and planning ---------------------------------------------------------


def test_default_network_is_the_origin_network():
    net = make(input_shape=(1, 28, 28), n_classes=10, dtype=np.float32)
    assert kinds(net.layers) == [
        "Rescale",
        "Conv2D", "MaxPool2D", "Bias", "ReLU",
        "Conv2D", "MaxPool2D", "Bias", "ReLU",
        "Flatten", "Dense", "ReLU", "Dense",
    ]  # fmt: skip
    convs = [layer for layer in net.layers if isinstance(layer, Conv2D)]
    assert [c.params["W"].shape for c in convs] == [(3, 3, 1, 16), (3, 3, 16, 32)]  # HWIO
    assert all(c.padding == "same" and c.pad == 1 and c.stride == 1 for c in convs)
    # the images are not learned: the first convolution skips its input gradient
    assert [c.input_grad for c in convs] == [False, True]
    # each conv's bias sits after its pool (same function, 4x fewer additions)
    assert all("b" not in c.params for c in convs)
    assert [layer.params["b"].shape for layer in net.layers if isinstance(layer, Bias)] == [
        (16,),
        (32,),
    ]
    dense = [layer for layer in net.layers if isinstance(layer, Dense)]
    assert [d.params["W"].shape for d in dense] == [(32 * 7 * 7, 100), (100, 10)]
    assert net.forward(np.zeros((2, 1, 28, 28))).shape == (2, 10)
    assert net.input_shape == (1, 28, 28) and net.dtype == np.float32
    # the spec is the list it was planned from, not what runs
    assert net.spec == [
        layer.get_config() for layer in preset_layers(**PRESETS["origin"]) + [Dense(10)]
    ]


def test_preset_layers_are_the_textbook_order_unbuilt():
    origin = preset_layers(**PRESETS["origin"])
    assert kinds(origin) == [
        "Conv2D",
        "ReLU",
        "MaxPool2D",
        "Conv2D",
        "ReLU",
        "MaxPool2D",
        "Flatten",
        "Dense",
        "ReLU",
    ]
    assert [
        (c.filters, c.kernel_size, c.padding, c.bias) for c in origin if isinstance(c, Conv2D)
    ] == [
        (16, 3, "same", True),
        (32, 3, "same", True),
    ]
    assert not any(layer.built for layer in origin)
    deep = preset_layers(**PRESETS["deep"])
    block = ["Conv2D", "BatchNorm", "ReLU", "Conv2D", "BatchNorm", "ReLU", "MaxPool2D"]
    assert kinds(deep) == block * 2 + ["Flatten", "Dense", "BatchNorm", "ReLU", "Dropout"]
    # no bias before batch norm: its shift plays that part
    assert not any(layer.bias for layer in deep if isinstance(layer, (Conv2D, Dense)))
    assert [c.filters for c in deep if isinstance(c, Conv2D)] == [32, 32, 64, 64]
    assert [d.rate for d in deep if isinstance(d, Dropout)] == [0.3]


def test_plan_layers_inserts_flatten_where_a_dense_layer_meets_images():
    planned = plan_layers([Conv2D(2, 3), ReLU(), Dense(4), ReLU(), Dense(3)], (5, 5, 1))
    assert kinds(planned) == ["Rescale", "Conv2D", "ReLU", "Flatten", "Dense", "ReLU", "Dense"]
    # none where the data are flat already
    assert "Flatten" not in kinds(
        plan_layers([Conv2D(2, 3), GlobalAvgPool2D(), Dense(3)], (5, 5, 1))
    )
    assert kinds(plan_layers([Flatten(), Dense(3)], (5, 5, 1))) == ["Rescale", "Flatten", "Dense"]
    # after a residual block too
    assert kinds(plan_layers([Residual([Conv2D(2, 3, padding=1)]), Dense(3)], (4, 4, 1)))[-2:] == [
        "Flatten",
        "Dense",
    ]
    # and the network runs: the Dense layer sees 3*3*2 features
    net = Network.from_layers([Conv2D(2, 3), Dense(3)], (1, 5, 5), np.random.default_rng(0))
    assert net.layers[3].params["W"].shape == (18, 3)
    assert net.forward(np.ones((2, 1, 5, 5))).shape == (2, 3)


def test_plan_layers_never_touches_the_given_layers():
    layers = [Conv2D(3, 3, padding="same"), ReLU(), MaxPool2D(2), Dense(2)]
    before = [layer.get_config() for layer in layers]
    planned = plan_layers(layers, (4, 4, 1))
    assert [layer.get_config() for layer in layers] == before  # the conv keeps its bias
    assert not any(layer.built for layer in layers)
    assert not any(p is q for p in planned for q in layers)
    # the same list describes two networks with their own weights
    a = Network.from_layers(layers, (1, 4, 4), np.random.default_rng(0))
    b = Network.from_layers(layers, (1, 4, 4), np.random.default_rng(0))
    assert a.params()[0] is not b.params()[0]
    np.testing.assert_array_equal(a.params()[0], b.params()[0])


def textbook_forward(layers, x, training):
    """Run ``layers`` one by one on channels-last ``x``, flattening before a
    Dense layer that meets images, with nothing moved."""
    for layer in layers:
        if isinstance(layer, Dense) and x.ndim == 4:
            x = x.reshape(len(x), -1)
        x = layer.forward(x, training)
    return x


PLAN_STACKS = {
    "origin": (preset_layers(**dict(PRESETS["origin"], **SMALL)) + [Dense(3)], (2, 7, 9)),
    "batch_norm": (
        preset_layers(
            **dict(
                PRESETS["deep"], conv_filters=((3, 2), (4,)), hidden_layer_sizes=(5,), dropout=0.0
            )
        )
        + [Dense(3)],
        (1, 9, 6),
    ),
    "avgpool": (
        [
            Conv2D(3, 3, padding="same"),
            AvgPool2D(3, 2),
            ReLU(),
            Conv2D(4, 3),
            ReLU(),
            MaxPool2D(2, 1),
            Conv2D(4, 1),  # its bias must stay before batch norm
            BatchNorm(),
            ReLU(),
            AvgPool2D(2),  # ReLU must stay before an average
            Dense(5),
            ReLU(),
            Dense(3),
        ],
        (2, 11, 10),
    ),
}


@pytest.mark.parametrize("stack", sorted(PLAN_STACKS))
def test_planned_network_computes_the_textbook_order_function(stack, rng):
    layers, (c, h, w) = PLAN_STACKS[stack]
    net = Network.from_layers(layers, (c, h, w), rng, np.float64)
    # the plan did move something, so the comparison below means something
    planned, given = kinds(net.layers), kinds(layers)
    assert ("ReLU", "MaxPool2D") in zip(given, given[1:])
    assert ("ReLU", "MaxPool2D") not in zip(planned, planned[1:])
    assert ("Bias" in planned) == (stack != "batch_norm")
    if stack == "avgpool":  # and kept what must stay
        assert ("ReLU", "AvgPool2D") in zip(planned, planned[1:])
        assert [c.bias for c in net.layers if isinstance(c, Conv2D)] == [False, False, True]
    # the textbook network, built layer by layer, random weights and statistics
    textbook = [layer_from_config(layer.get_config()) for layer in layers]
    shape = (h, w, c)
    for layer in textbook:
        if isinstance(layer, Dense) and len(shape) == 3:
            shape = (int(np.prod(shape)),)
        shape = layer.build(shape, rng, np.float64)
        for k, p in layer.params.items():
            p[...] = rng.standard_normal(p.shape) * 0.5 + (1.0 if k == "gamma" else 0.0)
        if "running_var" in layer.buffers:
            layer.buffers["running_mean"][...] = rng.standard_normal(shape[-1])
            layer.buffers["running_var"][...] = rng.uniform(0.5, 2.0, shape[-1])
    # the same arrays, in the same order, for the planned network
    mine = [v for layer in textbook for v in [*layer.params.values(), *layer.buffers.values()]]
    theirs = [
        v for layer in net.layers[1:] for v in [*layer.params.values(), *layer.buffers.values()]
    ]
    assert [v.shape for v in mine] == [v.shape for v in theirs]
    for a, b in zip(mine, theirs, strict=True):
        b[...] = a
    x = rng.standard_normal((4, c, h, w))
    for training in (False, True):
        expected = textbook_forward(textbook, x.transpose(0, 2, 3, 1), training)
        np.testing.assert_allclose(net.forward(x, training), expected, rtol=1e-12, atol=1e-12)


def pool_orders(net):
    return [(kind, layer.pool_order) for layer in net.layers if (kind := type(layer).__name__) in ("Conv2D", "MaxPool2D")]


@pytest.mark.parametrize(
    "layers,input_shape,expected",
    [
        # the origin network: both convolutions write in the order their pools read
        (preset_layers(**PRESETS["origin"]) + [Dense(3)], (1, 28, 28), [True] * 4),
        # a 3x3 output is not cut into 2x2 windows: the second pair keeps the usual order
        (preset_layers(**PRESETS["origin"]) + [Dense(3)], (1, 6, 6), [True, True, False, False]),
        # the deep preset: the convolution before each pool, through batch norm and ReLU
        (
            preset_layers(**dict(PRESETS["deep"], conv_filters=((3, 2), (4, 4)), dropout=0.0)) + [Dense(3)],
            (2, 8, 8),
            [False, True, True, False, True, True],
        ),
        # only a 2x2 max pool with stride 2, only through per-channel layers
        ([Conv2D(2, 3, padding="same"), Dropout(0.0), MaxPool2D(2), Dense(3)], (1, 6, 6), [False, False]),
        ([Conv2D(2, 3, padding="same"), MaxPool2D(3, 2), Dense(3)], (1, 6, 6), [False, False]),
        ([Conv2D(2, 3, padding="same"), MaxPool2D(2, 1), Dense(3)], (1, 6, 6), [False, False]),
        ([Conv2D(2, 3, padding="same"), ReLU(), AvgPool2D(2), Dense(3)], (1, 6, 6), [False]),
        ([Conv2D(2, 3, padding="same"), Conv2D(2, 3), MaxPool2D(2), Dense(3)], (1, 6, 6), [False, True, True]),
    ],
    ids=["origin", "origin-6x6", "deep", "dropout", "3x3-pool", "stride-1-pool", "avgpool", "two-convs"],
)
def test_pool_order_where_a_2x2_max_pool_reads_a_convolution(layers, input_shape, expected, rng):
    net = Network.from_layers(layers, input_shape, rng, np.float64)
    assert [on for _, on in pool_orders(net)] == expected
    # the same function and gradients as in the usual order
    randomise(net, rng)
    x, y = rng.standard_normal((3, *input_shape)), np.array([0, 2, 1])
    loss = net.loss(x, y)
    net.backward()
    grads = [g.copy() for g in net.grads()]
    for layer in net.layers:
        if isinstance(layer, (Conv2D, MaxPool2D)):
            layer.pool_order = False
    assert net.loss(x, y) == pytest.approx(loss, rel=1e-12)
    net.backward()
    for a, b in zip(grads, net.grads(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_pool_order_is_planned_again_for_replicas_and_a_network_of_other_layers(rng):
    net = make(input_shape=(1, 8, 8))
    (replica,) = replicas(net, 1, rng)
    assert pool_orders(replica) == pool_orders(net) == [("Conv2D", True), ("MaxPool2D", True)] * 2
    # a layer in between that is not per-channel switches it off in the new network
    layers = replica.layers
    mixed = Network([*layers[:2], Dropout(0.0), *layers[2:]], np.float64)
    assert [on for _, on in pool_orders(mixed)] == [False, False, True, True]


def test_from_layers_takes_configs_and_its_spec_rebuilds_the_same_network(rng):
    net = make_residual()
    spec = json.loads(json.dumps(net.spec))  # what a parameter file holds
    assert spec == [layer.get_config() for layer in residual_layers()]
    again = Network.from_layers(spec, (2, 8, 8), np.random.default_rng(0), np.float64)
    assert repr(again) == repr(net)
    assert again.spec == net.spec
    state, other = net.state_dict(), again.state_dict()
    assert state.keys() == other.keys()
    for k in state:
        np.testing.assert_array_equal(state[k], other[k])
    x = rng.standard_normal((3, 2, 8, 8))
    np.testing.assert_array_equal(again.forward(x), net.forward(x))


# -- gradients --------------------------------------------------------------------


@pytest.mark.parametrize(
    "input_shape,n",
    [((1, 8, 8), 3), ((2, 5, 7), 1), ((1, 1, 1), 2), ((1, 1, 6), 2)],
)
def test_origin_network_gradient_end_to_end(input_shape, n, rng):
    net = randomise(make(SMALL, input_shape), rng)
    x = rng.standard_normal((n, *input_shape))
    y = rng.integers(0, 3, n)
    check_network_gradients(net, x, y, sw=rng.uniform(0.5, 2, n))


def test_default_network_gradient_end_to_end_at_full_width(rng):
    # every entry is checked at SMALL widths above; here a sample of each array
    net = randomise(make(input_shape=(1, 8, 8)), rng)
    assert [p.shape for p in net.params()][0] == (3, 3, 1, 16)
    x = rng.standard_normal((3, 1, 8, 8))
    check_network_gradients(
        net, x, np.array([0, 2, 1]), sw=rng.uniform(0.5, 2, 3), entries=12, rng=rng
    )


def test_deep_preset_gradient_end_to_end(rng):
    kw = dict(PRESETS["deep"], conv_filters=((3, 2), (4,)), hidden_layer_sizes=(5,), dropout=0.0)
    net = randomise(make(kw, (2, 6, 6)), rng)
    assert any(isinstance(layer, BatchNorm) for layer in net.layers)
    check_network_gradients(net, rng.standard_normal((4, 2, 6, 6)), np.array([0, 1, 2, 1]))


def test_residual_network_gradient_end_to_end(rng):
    net = randomise(make_residual(), rng)
    assert kinds(net.layers) == [
        "Rescale", "Conv2D", "AvgPool2D", "Bias", "ReLU", "Residual", "Residual",
        "GlobalAvgPool2D", "Dense",
    ]  # fmt: skip
    assert net.layers[6].projection is not None and net.layers[5].projection is None
    n = 4
    check_network_gradients(
        net, rng.standard_normal((n, 2, 8, 8)), np.array([0, 1, 2, 1]), sw=rng.uniform(0.5, 2, n)
    )


# -- dtypes and prediction ------------------------------------------------------------


def test_float32_in_float32_everywhere(rng):
    for net in (
        make(dict(PRESETS["deep"], conv_filters=((4, 4), (8,))), (1, 8, 8), dtype=np.float32),
        make_residual((1, 8, 8), dtype=np.float32),
    ):
        x = rng.random((5, 1, 8, 8)).astype(np.float32)
        h = x.transpose(0, 2, 3, 1)
        for layer in net.layers:
            h = layer.forward(h, training=True)
            assert h.dtype == np.float32, layer
        net.loss(x, np.array([0, 1, 2, 0, 1]))
        net.backward()
        assert all(p.dtype == np.float32 for p in net.params())
        assert all(g.dtype == np.float32 for g in net.grads())
        assert all(v.dtype == np.float32 for v in net.state_dict().values())
        assert net.predict_logits(x).dtype == np.float32
        # float64 input to a float32 network is computed in float32
        assert net.forward(x.astype(np.float64)).dtype == np.float32


def test_float64_network_computes_in_float64(rng):
    net = make()
    assert net.predict_logits(rng.random((3, 1, 8, 8))).dtype == np.float64


def test_float32_and_float64_networks_from_one_seed_start_from_the_same_weights():
    a, b = make_residual(dtype=np.float32), make_residual(dtype=np.float64)
    for (name, p), (_, q) in zip(a.named_params(), b.named_params(), strict=True):
        np.testing.assert_array_equal(p, q.astype(np.float32), err_msg=name)


def test_predict_logits_in_batches_equals_one_pass(rng):
    for net in (make(), make_residual((1, 8, 8))):
        x = rng.random((23, 1, 8, 8))
        np.testing.assert_allclose(net.predict_logits(x, batch_size=5), net.forward(x), rtol=1e-12)


# -- learning ---------------------------------------------------------------------------


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
    x = rng.random((64, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 10, 64)
    net = make(n_classes=10, dtype=np.float32)
    losses = train_steps(net, x, y, 80, lr=3e-3)
    assert losses[0] > 1.5
    assert losses[-1] < 0.05
    assert (net.forward(x).argmax(axis=1) == y).all()


def test_same_seed_same_weights_and_losses():
    rng = np.random.default_rng(5)
    x = rng.random((16, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 3, 16)
    a, b = make(dtype=np.float32), make(dtype=np.float32)
    assert train_steps(a, x, y, 5) == train_steps(b, x, y, 5)
    for p, q in zip(a.params(), b.params(), strict=True):
        np.testing.assert_array_equal(p, q)
    c = make(seed=1, dtype=np.float32)
    assert not np.array_equal(a.params()[0], c.params()[0])


def test_engine_reaches_high_accuracy_on_digits():
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]  # (1797, 1, 8, 8)
    y = digits.target
    rng = np.random.default_rng(0)
    order = rng.permutation(len(y))
    train, test = order[:1300], order[1300:]
    net = make(n_classes=10, dtype=np.float32)
    opt = Adam(1e-3)
    for _ in range(15):
        for batch in np.array_split(rng.permutation(train), 13):
            net.loss(x[batch], y[batch])
            net.backward()
            opt.step(net.params(), net.grads())
    accuracy = (net.predict_logits(x[test]).argmax(axis=1) == y[test]).mean()
    assert accuracy > 0.95


# -- parameters, names, replicas ---------------------------------------------------------


def test_names_reach_inside_residual_blocks():
    net = make_residual()
    assert [name for name, _ in net.named_params()] == [
        "1.W", "3.b",
        "5.0.W", "5.1.gamma", "5.1.beta", "5.3.W", "5.3.b",
        "6.0.W", "6.0.b", "6.projection.W",
        "8.W", "8.b",
    ]  # fmt: skip
    named = dict(net.named_layers())
    assert isinstance(named["5"], Residual) and named["5.1"] is net.layers[5].layers[1]
    assert named["6.projection"] is net.layers[6].projection
    state = net.state_dict()
    assert {
        "5.1.running_mean",
        "5.1.running_var",
        "0.shift",
        "0.scale",
        "6.projection.W",
    } <= state.keys()
    net.loss(np.zeros((2, 2, 8, 8)), np.array([0, 1]))
    net.backward()
    assert [g.shape for g in net.grads()] == [p.shape for p in net.params()]


@pytest.mark.parametrize("which", ["deep", "residual"])
def test_state_dict_round_trip_and_clear_cache(which, rng):
    if which == "deep":
        net = make(dict(PRESETS["deep"], conv_filters=((2,),), hidden_layer_sizes=(3,)), (1, 4, 4))
    else:
        net = make_residual((1, 4, 4))
    state = net.state_dict()
    x = rng.random((4, 1, 4, 4))
    before = net.forward(x)
    net.loss(x, np.array([0, 1, 2, 0]))
    net.backward()
    Adam(0.1).step(net.params(), net.grads())
    assert not np.allclose(net.forward(x), before)
    assert any(
        not np.array_equal(v, state[k]) for k, v in net.state_dict().items() if "running" in k
    )
    net.load_state_dict(state)
    np.testing.assert_array_equal(net.forward(x), before)
    net.clear_cache()
    assert all(layer._cache is None and not layer.grads for _, layer in net.named_layers())


def test_layers_compose_by_hand(rng):
    # the engine is usable without Network: layers build on first use
    conv, pool, relu = Conv2D(4, 3, padding=1), MaxPool2D(2), ReLU()
    x = rng.random((2, 6, 6, 1))
    out = relu.forward(pool.forward(conv.forward(x, True), True), True)
    assert out.shape == (2, 3, 3, 4)
    assert conv.params["W"].shape == (3, 3, 1, 4) and conv.params["W"].dtype == np.float64
    grad = conv.backward(pool.backward(relu.backward(np.ones_like(out))))
    assert grad.shape == x.shape


def test_replicas_share_weights_and_keep_their_own_state_inside_residual_blocks(rng):
    net = make_residual(dtype=np.float32)
    a, b = replicas(net, 2, np.random.default_rng(1))
    for (name, p), (_, pa), (_, pb) in zip(
        net.named_params(), a.named_params(), b.named_params(), strict=True
    ):
        assert p is pa and p is pb, name
    xa, xb = rng.random((3, 2, 8, 8)), rng.random((3, 2, 8, 8)) * 3
    ya = np.array([0, 1, 2])
    a.loss(xa, ya)
    b.loss(xb, ya)
    a.backward()
    b.backward()
    # own gradients, own batch-norm statistics (inside the block)
    assert not any(np.array_equal(ga, gb) for ga, gb in zip(a.grads(), b.grads(), strict=True))
    mean = "5.1.running_mean"
    sa, sb, s0 = a.state_dict()[mean], b.state_dict()[mean], net.state_dict()[mean]
    assert not np.allclose(sa, sb) and not s0.any()
    merge_buffers(net, [a, b], used=[a, b])
    for r in (net, a, b):
        np.testing.assert_allclose(r.state_dict()[mean], (sa + sb) / 2, rtol=1e-6)
    # only the replicas that trained count
    a.loss(xa, ya)
    sa = a.state_dict()[mean]
    merge_buffers(net, [a, b], used=[a])
    np.testing.assert_array_equal(net.state_dict()[mean], sa)
    np.testing.assert_array_equal(b.state_dict()[mean], sa)


@pytest.mark.parametrize("which", ["batch_norm", "residual"])
def test_pack_params_moves_weights_and_the_rest_into_two_buffers(which):
    if which == "batch_norm":
        net = make({"batch_norm": True, "hidden_layer_sizes": (5,)}, dtype=np.float32)
    else:
        net = make_residual(dtype=np.float32)
    before = {name: p.copy() for name, p in net.named_params()}
    (weights, w_decay), (rest, r_decay) = pack_params(net)
    assert (w_decay, r_decay) == (True, False)
    named = dict(net.named_params())
    for name, p in named.items():  # same values, now views of the buffers
        np.testing.assert_array_equal(p, before[name])
        assert np.shares_memory(p, weights if name.endswith(".W") else rest)
    assert weights.size == sum(p.size for n, p in named.items() if n.endswith(".W"))
    assert rest.size == sum(p.size for n, p in named.items() if not n.endswith(".W"))
    # packing again keeps the buffers; writes to a buffer reach the layers
    again = pack_params(net)
    assert again[0][0] is weights and again[1][0] is rest
    weights[:] = 0
    assert all(not p.any() for n, p in net.named_params() if n.endswith(".W"))
    # gradients come out in the same layout
    x = np.random.default_rng(1).standard_normal((4, net.input_shape[0], 8, 8)).astype(np.float32)
    net.loss(x, np.array([0, 1, 2, 0]))
    net.backward()
    out = [np.empty_like(weights), np.empty_like(rest)]
    packed_grads(net, out)
    grads = dict(zip([n for n, _ in net.named_params()], net.grads(), strict=True))
    expected_w = np.concatenate([g.ravel() for n, g in grads.items() if n.endswith(".W")])
    expected_r = np.concatenate([g.ravel() for n, g in grads.items() if not n.endswith(".W")])
    np.testing.assert_array_equal(out[0], expected_w)
    np.testing.assert_array_equal(out[1], expected_r)
    # replicas made after packing share the packed arrays
    (replica,) = replicas(net, 1, np.random.default_rng(0))
    assert all(np.shares_memory(p, weights) for n, p in replica.named_params() if n.endswith(".W"))


def test_rescale_is_planned_first_and_scales_the_input(rng):
    net = make()
    assert isinstance(net.layers[0], Rescale)
    x = rng.random((3, 1, 8, 8))
    before = net.forward(x)
    net.layers[0].buffers["shift"][...] = 2.0
    net.layers[0].buffers["scale"][...] = 4.0
    np.testing.assert_allclose(net.forward(4 * x + 2), before, rtol=1e-10)


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
    in_pool_order = False  # from a convolution writing in pool order to its pool
    for layer, row in zip(net.layers, summary.rows):
        h = layer.forward(h)
        if isinstance(layer, (Conv2D, MaxPool2D)):
            in_pool_order = isinstance(layer, Conv2D) and layer.pool_order
        images = pool_order_to_images(h) if in_pool_order else h
        assert row.layer == repr(layer)
        assert row.output_shape == images.shape[1:]
        assert row.n_params == sum(p.size for p in layer.params.values())
    assert summary.flops == sum(row.flops for row in summary.rows) > 0


def test_summary_of_a_residual_network_counts_inside_the_blocks(rng):
    net = make_residual(input_shape=(2, 8, 8))
    summary = net.summary()  # the network's own input shape
    assert len(summary.rows) == len(net.layers)
    assert summary.total_params == sum(p.size for p in net.params())
    h = rng.random((2, 8, 8, 2))
    for layer, row in zip(net.layers, summary.rows):
        h_in, h = h, layer.forward(h)
        assert row.output_shape == h.shape[1:]
        if isinstance(layer, Residual):
            branch_params = sum(p.size for sub in layer.layers for p in sub.params.values())
            projection = layer.projection
            extra = 0 if projection is None else projection.params["W"].size
            assert row.n_params == branch_params + extra > 0
            # branch, projection (a 1x1 convolution without bias) and the add
            shape, flops = h_in.shape[1:], 0
            for sub in layer.layers:
                flops += layer_flops(sub, shape, sub.output_shape(shape))
                shape = sub.output_shape(shape)
            if projection is not None:
                flops += 2 * h[0].size * h_in.shape[-1]
            assert row.flops == flops + h[0].size
    pools = {type(layer).__name__: row.flops for layer, row in zip(net.layers, summary.rows)}
    assert pools["AvgPool2D"] == 4 * 4 * 3 * 9  # 8x8 -> 4x4, 3 channels: 9 values per window
    assert pools["GlobalAvgPool2D"] == 2 * 2 * 4  # 2x2 images (after the strided block) of 4 channels


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
def test_resnet_preset_gradient_end_to_end_with_label_smoothing(rng):
    kw = dict(PRESETS["resnet"], conv_filters=(2, (3, 3)))
    net = randomise(make(kw, (1, 6, 6)), rng)  # randomise: no zero gammas, every path live
    assert kinds(net.layers)[1:] == [
        "Conv2D", "BatchNorm", "ReLU", "Residual", "ReLU", "Residual", "ReLU", "Residual", "ReLU",
        "GlobalAvgPool2D", "Dense",
    ]  # fmt: skip
    # the second stage halves the image (projection), its second block keeps it
    assert net.layers[4].projection is None and net.layers[6].projection is not None
    assert net.layers[8].projection is None
    net.loss_layer.label_smoothing = 0.1
    check_network_gradients(net, rng.standard_normal((4, 1, 6, 6)), np.array([0, 1, 2, 1]))


def test_resnet_preset_layers():
    layers = preset_layers(**PRESETS["resnet"])
    blocks = [layer for layer in layers if isinstance(layer, Residual)]
    assert [b.layers[0].filters for b in blocks] == [32, 64, 128]
    assert [b.layers[0].stride for b in blocks] == [1, 2, 2]
    assert [type(b.layers[-1]).__name__ for b in blocks] == ["BatchNorm"] * 3  # then the sum, then ReLU
    net = Network.from_layers(layers + [Dense(10)], (1, 28, 28), np.random.default_rng(0))
    assert net.layers[-1].input_shape == (128,)  # global average pooling, then the output layer
    assert [layer.output_shape(layer.input_shape) for layer in net.layers if isinstance(layer, Residual)] == [
        (28, 28, 32), (14, 14, 64), (7, 7, 128)
    ]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_prediction_folds_batch_norm_into_the_layer_before_and_computes_the_same(dtype):
    net = make(dict(PRESETS["deep"], conv_filters=((3, 4), 5), hidden_layer_sizes=(6,)), (2, 8, 8), dtype=dtype)
    rng = np.random.default_rng(3)
    for _, layer in net.named_layers():  # trained-looking statistics and affine maps
        if isinstance(layer, BatchNorm):
            for arrays in (layer.params, layer.buffers):
                for k, v in arrays.items():
                    v[...] = rng.uniform(0.5, 2.0, v.shape) * (rng.choice([-1, 1], v.shape) if k != "running_var" else 1)
    folded = fold_batch_norm(net.layers)
    assert not any(isinstance(layer, BatchNorm) for layer in folded)
    assert len(folded) == len(net.layers) - sum(isinstance(layer, BatchNorm) for layer in net.layers)
    x = rng.random((5, 2, 8, 8)).astype(dtype)
    before = {name: p.copy() for name, p in net.named_params()}
    expected = net.forward(x)  # the oracle: every layer as written
    np.testing.assert_allclose(net.predict_logits(x), expected, rtol=1e-4 if dtype == np.float32 else 1e-12)
    for name, p in net.named_params():  # the network's own arrays are untouched
        np.testing.assert_array_equal(p, before[name])


def test_a_network_pickled_before_pool_order_existed_still_predicts(rng):
    import pickle

    net = randomise(make(input_shape=(1, 8, 8)), rng)
    x = rng.standard_normal((3, 1, 8, 8))
    expected = net.forward(x)
    old = pickle.loads(pickle.dumps(net))
    for layer in old.layers:
        layer.__dict__.pop("pool_order", None)  # as an object of that version holds no such attribute
    assert [on for _, on in pool_orders(old)] == [False] * 4  # the class default: the usual order
    np.testing.assert_allclose(old.forward(x), expected, rtol=1e-12, atol=1e-12)
