"""ONNX export: onnxruntime computes what predict_proba and predict compute."""

import copy
import sys

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.exceptions import NotFittedError

from skcnn import CNNClassifier
from skcnn import layers as L
from skcnn.export import _EXPORTERS, _residual, export_onnx
from skcnn.network import Network

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


class ResidualStandIn(L.Layer):
    """What the layer-list issue's Residual computes in prediction:
    ``branch(x) + x``, or ``branch(x) + projection(x)``. It stands in for it
    until that layer exists, so that the exporter's recursion is tested."""

    def __init__(self, layers, projection=None):
        super().__init__()
        self.layers, self.projection = layers, projection

    def forward(self, x, training=False):
        h = x
        for layer in self.layers:
            h = layer.forward(h)
        return h + (x if self.projection is None else self.projection.forward(x))

    def output_shape(self, input_shape):
        for layer in self.layers:
            input_shape = layer.output_shape(input_shape)
        return input_shape


@pytest.fixture(autouse=True)
def _register_residual(monkeypatch):
    monkeypatch.setitem(_EXPORTERS, ResidualStandIn, _residual)


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X.reshape(-1, 1, 8, 8).astype(np.float32), y


def randomise(layers, rng):
    """Non-trivial biases and batch-norm statistics, so that every array counts."""
    for layer in layers:
        for sub in [layer, *getattr(layer, "layers", []), getattr(layer, "projection", None)]:
            for name, v in getattr(sub, "params", {}).items():
                if v.ndim == 1:
                    v[...] = rng.normal(1.0 if name == "gamma" else 0.0, 0.3, v.shape)
            if isinstance(sub, L.BatchNorm):
                sub.buffers["running_mean"][...] = rng.normal(0, 0.5, sub.n_features)
                sub.buffers["running_var"][...] = rng.uniform(0.3, 3.0, sub.n_features)
    return layers


def custom_stack(rng):
    """Every layer type off the presets' paths: strides, no padding, 5x5 and
    1x1 kernels, overlapping and partial pooling windows, a pool larger than
    its input, batch norm on images and on vectors, dropout."""
    f32 = dict(rng=rng, dtype=np.float32)
    return [
        L.Conv2D(1, 6, 3, stride=1, padding=0, **f32),  # 8x8 -> 6x6
        L.MaxPool2D(3, stride=2),  # -> 3x3, the last window partial (negative values inside)
        L.Conv2D(6, 8, 3, stride=2, padding=1, bias=False, **f32),  # -> 2x2
        L.BatchNorm(8),
        L.ReLU(),
        L.MaxPool2D(3),  # a 3x3 window over a 2x2 input: -> 1x1
        L.Flatten(),
        L.Dense(8, 12, bias=False, **f32),
        L.BatchNorm(12),
        L.ReLU(),
        L.Dropout(0.5, rng=rng),
        L.Dense(12, 10, **f32),
    ]


def residual_stack(rng):
    f32 = dict(rng=rng, dtype=np.float32)
    return [
        L.Conv2D(1, 4, 3, padding=1, **f32),
        L.ReLU(),
        ResidualStandIn(
            [L.Conv2D(4, 4, 3, padding=1, bias=False, **f32), L.BatchNorm(4), L.ReLU(),
             L.Conv2D(4, 4, 5, padding=2, **f32)]
        ),  # fmt: skip
        L.ReLU(),
        L.MaxPool2D(2),
        ResidualStandIn([L.Conv2D(4, 6, 3, padding=1, **f32), L.ReLU()], projection=L.Conv2D(4, 6, 1, **f32)),
        L.MaxPool2D(2, stride=3),  # windows with gaps between them
        L.Flatten(),
        L.Dense(24, 10, **f32),
    ]


def with_stack(clf, stack):
    """``clf`` predicting with a hand-built stack behind its fitted input scaling."""
    clf = copy.deepcopy(clf)
    clf.network_ = Network([clf.network_.layers[0], *randomise(stack, np.random.default_rng(1))])
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
    return {
        "origin": (origin, X),
        "deep": (deep, X),
        "odd-rgb-strings": (rgb, X3),
        "int-labels-with-gaps": (gaps, X),
        "float64": (float64, X.astype(np.float64)),
        "custom": (with_stack(origin, custom_stack(np.random.default_rng(2))), X),
        "residual": (with_stack(origin, residual_stack(np.random.default_rng(3))), X),
    }


def run(path, X):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input"]
    assert [o.name for o in session.get_outputs()] == ["label", "probabilities"]
    return session.run(None, {"input": np.asarray(X, dtype=np.float32)})


@pytest.mark.parametrize(
    "name", ["origin", "deep", "odd-rgb-strings", "int-labels-with-gaps", "float64", "custom", "residual"]
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
    with pytest.raises(ValueError, match=r"Dense\(128, 100\) applied to images of shape \(2, 2, 32\)"):
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
