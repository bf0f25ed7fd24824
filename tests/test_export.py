"""ONNX export: onnxruntime computes what predict_proba and predict compute."""

import copy
import sys

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.exceptions import NotFittedError

from skcnn import CNNClassifier
from skcnn import layers as L
from skcnn.export import _EXPORTERS, export_onnx

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X.reshape(-1, 1, 8, 8).astype(np.float32), y


def custom_stack():
    """Layers off the presets' paths: strides, no padding, 1x1 input to a
    dense layer, overlapping and partial pooling windows, a pool larger than
    its input, batch norm on images and on vectors, dropout."""
    return [
        L.Conv2D(6, 3),  # 8x8 -> 6x6
        L.MaxPool2D(3, stride=2),  # -> 3x3, the last window partial (negative values inside)
        L.Conv2D(8, 3, stride=2, padding=1, bias=False),  # -> 2x2
        L.BatchNorm(),
        L.ReLU(),
        L.MaxPool2D(3),  # a 3x3 window over a 2x2 input: -> 1x1
        L.Dense(12, bias=False),
        L.BatchNorm(),
        L.ReLU(),
        L.Dropout(0.5),
    ]


def residual_stack():
    """A block that keeps the shape, then a strided one with a projection
    shortcut (a 1x1 convolution, stride 2), ending in global average pooling."""
    return [
        L.Conv2D(4, 3, padding=1),
        L.ReLU(),
        L.Residual([L.Conv2D(4, 3, padding="same", bias=False), L.BatchNorm(), L.ReLU(), L.Dropout(0.2),
                    L.Conv2D(4, 5, padding="same")]),  # fmt: skip
        L.ReLU(),
        L.Residual([L.Conv2D(6, 3, stride=2, padding="same"), L.ReLU(), L.Conv2D(6, 3, padding=1)]),  # 8 -> 4
        L.ReLU(),
        L.MaxPool2D(2, stride=3),  # windows with gaps between them: 4x4 -> 2x2
        L.GlobalAvgPool2D(),
    ]


def avg_pool_stack():
    """Average pools whose edge windows are partial (averaged over the pixels
    they cover), overlapping, gapped and larger than the input."""
    return [
        L.Conv2D(5, 3, padding="same"),  # its bias moves after the pool
        L.AvgPool2D(3, stride=2),  # 8x8 -> 4x4, the last window 2 pixels wide
        L.ReLU(),
        L.Conv2D(6, 3, padding="same"),
        L.AvgPool2D(3),  # 4x4 -> 2x2, the last window 1 pixel wide
        L.ReLU(),
        L.AvgPool2D(2, stride=3),  # 2x2 -> 1x1
        L.Dense(9),
        L.ReLU(),
    ]


def randomised(clf, seed):
    """A copy of ``clf`` with non-trivial biases and batch-norm statistics
    (inside residual blocks too), so that every array counts."""
    clf = copy.deepcopy(clf)
    rng = np.random.default_rng(seed)
    for _, layer in clf.network_.named_layers():
        for name, v in layer.params.items():
            if v.ndim == 1:
                v[...] = rng.normal(1.0 if name == "gamma" else 0.0, 0.3, v.shape)
        if isinstance(layer, L.BatchNorm):
            mean, var = layer.buffers["running_mean"], layer.buffers["running_var"]
            mean[...] = rng.normal(0, 0.5, mean.shape)
            var[...] = rng.uniform(0.3, 3.0, var.shape)
    return clf


@pytest.fixture(scope="module")
def models(digits):
    """Fitted estimators by name, with the images they take."""
    X, y = digits
    train = slice(0, 600)
    fit = dict(max_iter=2, random_state=0)
    origin = CNNClassifier(**fit).fit(X[train], y[train])
    deep = CNNClassifier(
        architecture="deep", conv_filters=((4, 4), (8,)), hidden_layer_sizes=(16,), **fit
    ).fit(X[train], y[train])
    # odd sizes: partial pooling windows at the far edges, 3 channels, string labels with a gap
    X3 = np.concatenate([X[:, :, :7, :], X[:, :, 1:, :], X[:, :, :7, ::-1]], axis=1)  # (n, 3, 7, 8)
    words = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])
    rgb = CNNClassifier(conv_filters=(5, (6, 7)), kernel_size=5, hidden_layer_sizes=(9, 8), **fit)
    rgb.fit(X3[train], words[y[train]])
    gaps = CNNClassifier(batch_norm=True, dropout=0.2, **fit).fit(X[train], y[train] * 3 - 7)  # -7, -4, ..., 20
    float64 = CNNClassifier(**fit).fit(X[train].astype(np.float64), y[train])
    # prediction uses the weight average: the export must too
    averaged = CNNClassifier(architecture="resnet", conv_filters=(4, 8), ema_decay=0.9, **fit).fit(X[train], y[train])
    stacks = {"custom": custom_stack(), "residual": residual_stack(), "avg-pool": avg_pool_stack()}
    fitted = {
        name: randomised(CNNClassifier(layers=stack, **fit).fit(X[train], y[train]), seed)
        for seed, (name, stack) in enumerate(stacks.items())
    }
    return {
        "origin": (origin, X),
        "deep": (deep, X),
        "odd-rgb-strings": (rgb, X3),
        "int-labels-with-gaps": (gaps, X),
        "float64": (float64, X.astype(np.float64)),
        "resnet-averaged": (averaged, X),
        **{name: (clf, X) for name, clf in fitted.items()},
    }


def run(path, X):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input"]
    assert [o.name for o in session.get_outputs()] == ["label", "probabilities"]
    return session.run(None, {"input": np.asarray(X, dtype=np.float32)})


@pytest.mark.parametrize(
    "name",
    ["origin", "deep", "odd-rgb-strings", "int-labels-with-gaps", "float64", "resnet-averaged", "custom",
     "residual", "avg-pool"],
)
def test_onnxruntime_computes_predict_proba_and_predict(models, name, tmp_path):
    clf, X = models[name]
    X = X[1000:1300]
    model = export_onnx(clf, tmp_path / "model.onnx")
    assert model.opset_import[0].version == 17
    labels, proba = run(tmp_path / "model.onnx", X)
    expected = clf.predict_proba(X)
    assert proba.dtype == np.float32 and proba.shape == expected.shape
    np.testing.assert_allclose(proba, expected, rtol=0, atol=1e-5)
    # labels: the same classes_ entries (ArgMax -> Gather); near-ties may go either way
    top2 = np.sort(expected, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 1e-4
    assert clear.mean() > 0.95
    np.testing.assert_array_equal(labels[clear], clf.predict(X)[clear])
    assert labels.dtype.kind == ("O" if name == "odd-rgb-strings" else "i")


def test_the_averaged_model_predicts_with_other_weights_than_network_(models):
    clf, X = models["resnet-averaged"]
    raw = clf.network_.predict_logits(X[1000:1100])
    assert not np.allclose(raw, clf.weight_average_.network.predict_logits(X[1000:1100]))


def test_the_stacks_hold_what_they_are_meant_to_test(models):
    blocks = [layer for layer in models["residual"][0].network_.layers if isinstance(layer, L.Residual)]
    assert [b.projection is None for b in blocks] == [True, False] and blocks[1].projection.stride == 2
    rows = models["avg-pool"][0].summary().rows
    pooled = [r.output_shape[:2] for r in rows if r.layer.startswith("AvgPool2D")]
    assert pooled == [(4, 4), (2, 2), (1, 1)]  # 8 -> 4 (3, stride 2), 4 -> 2 (3), 2 -> 1 (2, stride 3)
    assert any(r.layer.startswith("GlobalAvgPool2D") for r in models["residual"][0].summary().rows)


def test_the_batch_size_is_free(models, tmp_path):
    clf, X = models["deep"]
    export_onnx(clf, tmp_path / "m.onnx")
    for n in (1, 7):
        _, proba = run(tmp_path / "m.onnx", X[:n])
        np.testing.assert_allclose(proba, clf.predict_proba(X[:n]), rtol=0, atol=1e-5)


def test_every_layer_type_has_an_exporter():
    kinds = [getattr(L, name) for name in L.__all__]
    layer_types = {k for k in kinds if isinstance(k, type) and issubclass(k, L.Layer) and k is not L.Layer}
    assert layer_types <= set(_EXPORTERS), sorted(k.__name__ for k in layer_types - set(_EXPORTERS))


class Swish(L.Layer):
    def forward(self, x, training=False):
        return x / (1 + np.exp(-x))


def test_a_layer_without_exporter_is_a_clear_error_and_nothing_is_written(models, tmp_path):
    clf, _ = models["origin"]
    clf = copy.deepcopy(clf)
    clf.network_.layers.insert(4, Swish())
    with pytest.raises(ValueError, match=r"cannot export a Swish layer to ONNX \(layer 4: Swish\(\)\).*Conv2D"):
        export_onnx(clf, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()
    clf = copy.deepcopy(models["origin"][0])
    clf.network_.layers = [layer for layer in clf.network_.layers if not isinstance(layer, L.Flatten)]
    with pytest.raises(ValueError, match=r"Dense\(100\) applied to images of shape \(2, 2, 32\)"):
        export_onnx(clf, tmp_path / "m.onnx")


def test_unfitted_estimator_and_unexportable_labels(models, tmp_path):
    with pytest.raises(NotFittedError):
        export_onnx(CNNClassifier(), tmp_path / "m.onnx")
    clf = copy.deepcopy(models["origin"][0])
    clf.classes_ = np.array([object()] * len(clf.classes_))
    with pytest.raises(ValueError, match="class labels of type object"):
        export_onnx(clf, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_missing_onnx_says_how_to_install_it(models, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now raises ImportError
    with pytest.raises(ImportError, match=r'pip install "skcnn\[onnx\]"'):
        export_onnx(models["origin"][0], tmp_path / "m.onnx")
