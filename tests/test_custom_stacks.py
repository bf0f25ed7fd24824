"""CNNClassifier(layers=[...]): any stack of layers, as a scikit-learn parameter."""

import joblib
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV, train_test_split

from skcnn import CNNClassifier
from skcnn.layers import (
    AvgPool2D,
    BatchNorm,
    Conv2D,
    Dense,
    Flatten,
    GlobalAvgPool2D,
    MaxPool2D,
    ReLU,
    Residual,
)


def residual_stack():
    return [
        Conv2D(16, 3, padding="same", bias=False), BatchNorm(), ReLU(),
        Residual([Conv2D(16, 3, padding="same", bias=False), BatchNorm(), ReLU(),
                  Conv2D(16, 3, padding="same", bias=False), BatchNorm()]),
        ReLU(),
        Residual([Conv2D(32, 3, stride=2, padding="same", bias=False), BatchNorm()]),  # projection
        ReLU(), GlobalAvgPool2D(), Dense(32), ReLU(),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return train_test_split(X.astype(np.float32), y, test_size=0.25, random_state=0)


@pytest.fixture(scope="module")
def fitted(digits):
    X_train, _, y_train, _ = digits
    stack = residual_stack()
    clf = CNNClassifier(layers=stack, max_iter=15, random_state=0).fit(X_train, y_train)
    return clf, stack


def test_a_residual_stack_with_global_average_pooling_learns_digits(fitted, digits):
    clf, _ = fitted
    _, X_test, _, y_test = digits
    assert clf.score(X_test, y_test) >= 0.85
    kinds = [type(layer).__name__ for layer in clf.network_.layers]
    assert kinds.count("Residual") == 2 and kinds[-1] == "Dense"
    assert clf.network_.layers[-1].units == 10  # the output layer was appended
    assert clf.network_.layers[kinds.index("Residual", kinds.index("Residual") + 1)].projection is not None


def test_the_users_layers_stay_unbuilt_and_unchanged(fitted):
    clf, stack = fitted
    assert clf.layers is stack
    for layer in stack:
        assert not layer.built and not layer.params and layer.input_shape is None
    assert [layer.get_config() for layer in stack] == [layer.get_config() for layer in residual_stack()]
    fitted_layers = {id(layer) for _, layer in clf.network_.named_layers()}
    assert not fitted_layers & {id(layer) for layer in stack}


def test_clone_keeps_the_stack_and_refits_identically(fitted, digits):
    clf, stack = fitted
    X_train, X_test, y_train, _ = digits
    copy = clone(clf)
    assert [layer.get_config() for layer in copy.layers] == [layer.get_config() for layer in stack]
    assert not hasattr(copy, "network_")
    copy.set_params(max_iter=2)
    twice = [clone(copy).fit(X_train[:300], y_train[:300]).predict_proba(X_test) for _ in range(2)]
    np.testing.assert_array_equal(twice[0], twice[1])


def test_parameter_file_and_joblib_round_trips_predict_identically(fitted, digits, tmp_path):
    clf, _ = fitted
    _, X_test, _, _ = digits
    expected = clf.predict_proba(X_test)
    clf.save_params(tmp_path / "m.npz")
    loaded = CNNClassifier.from_params_file(tmp_path / "m.npz")
    np.testing.assert_array_equal(loaded.predict_proba(X_test), expected)
    assert [layer.get_config() for layer in loaded.layers] == [layer.get_config() for layer in clf.layers]
    # load_params into an estimator with the same stack works; another stack is refused
    again = CNNClassifier(layers=residual_stack()).load_params(tmp_path / "m.npz")
    np.testing.assert_array_equal(again.predict_proba(X_test), expected)
    with pytest.raises(ValueError, match="holds the layers"):
        CNNClassifier(layers=[Conv2D(8, 3), ReLU()]).load_params(tmp_path / "m.npz")
    joblib.dump(clf, tmp_path / "m.joblib")
    np.testing.assert_array_equal(joblib.load(tmp_path / "m.joblib").predict_proba(X_test), expected)


def test_grid_search_over_two_stacks(digits):
    X_train, _, y_train, _ = digits
    small = [Conv2D(4, 3, padding="same"), ReLU(), MaxPool2D(2)]
    pooled = [Conv2D(8, 3, padding="same"), ReLU(), AvgPool2D(2), Dense(16), ReLU()]
    search = GridSearchCV(
        CNNClassifier(max_iter=10, learning_rate_init=0.01, random_state=0), {"layers": [small, pooled]}, cv=2
    ).fit(X_train[:400], y_train[:400])
    assert len(search.cv_results_["params"]) == 2
    assert search.best_params_["layers"] in (small, pooled)
    for stack in (small, pooled):
        assert all(not layer.built for layer in stack)
    assert search.best_estimator_.score(X_train[400:800], y_train[400:800]) > 0.8


def test_warm_start_goes_on_with_the_same_custom_network(digits):
    X_train, _, y_train, _ = digits
    clf = CNNClassifier(layers=[Conv2D(4, 3), ReLU()], max_iter=2, warm_start=True, random_state=0)
    clf.fit(X_train[:200], y_train[:200])
    network = clf.network_
    clf.fit(X_train[:200], y_train[:200])
    assert clf.network_ is network and clf.n_iter_ == 4


def test_layers_and_preset_fields_are_exclusive(digits):
    X_train, _, y_train, _ = digits
    with pytest.raises(ValueError, match="layers describes the whole stack"):
        CNNClassifier(layers=[ReLU()], conv_filters=(8,)).fit(X_train[:50], y_train[:50])
    with pytest.raises(ValueError, match="layers must be None or a list of layers"):
        CNNClassifier(layers=["Conv2D"]).fit(X_train[:50], y_train[:50])


def test_a_preset_saved_to_a_file_reads_back_as_that_preset(digits, tmp_path):
    X_train, _, y_train, _ = digits
    clf = CNNClassifier(architecture="deep", max_iter=1, random_state=0).fit(X_train[:100], y_train[:100])
    clf.save_params(tmp_path / "deep.npz")
    loaded = CNNClassifier.from_params_file(tmp_path / "deep.npz")
    assert loaded.architecture == "deep" and loaded.layers is None
    np.testing.assert_array_equal(loaded.predict(X_train[:100]), clf.predict(X_train[:100]))


def test_a_layer_class_reusing_a_built_in_name_is_refused():
    from skcnn.layers import Layer

    with pytest.raises(TypeError, match="a layer type named 'Dense' exists already"):

        class Dense(Layer):  # noqa: F811 (on purpose: the name of a built-in)
            pass


def test_pool_sizes_must_be_square_ints():
    for bad in ((3, 2), 0, 1.5, True):
        with pytest.raises(ValueError, match="windows are square"):
            AvgPool2D(bad)
    with pytest.raises(ValueError, match="stride must be an int"):
        MaxPool2D(2, stride=0)


def test_a_file_with_an_unknown_layer_type_says_what_to_import(digits, tmp_path):
    import json

    X_train, _, y_train, _ = digits
    clf = CNNClassifier(layers=[Conv2D(4, 3), ReLU()], max_iter=1, random_state=0)
    clf.fit(X_train[:100], y_train[:100]).save_params(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as f:
        arrays = {k: f[k] for k in f.files}
    meta = json.loads(str(arrays["__meta__"]))
    meta["layers"][1]["type"] = "Scale"  # a user's layer this process never defined
    arrays["__meta__"] = np.array(json.dumps(meta))
    np.savez(tmp_path / "scale.npz", **arrays)
    with pytest.raises(ValueError, match="unknown layer type 'Scale': import or define"):
        CNNClassifier.from_params_file(tmp_path / "scale.npz")


def test_summary_of_a_stack_with_a_users_layer_marks_its_flops_unknown(digits):
    from skcnn.layers import Layer

    class Doubling(Layer):  # a user's layer: no FLOP count known to skcnn
        def forward(self, x, training=False):
            return 2 * x

        def backward(self, grad):
            return 2 * grad

    X_train, _, y_train, _ = digits
    clf = CNNClassifier(layers=[Conv2D(4, 3), Doubling(), ReLU()], max_iter=1, random_state=0)
    summary = clf.fit(X_train[:100], y_train[:100]).summary()
    row = next(r for r in summary.rows if r.layer == "Doubling()")
    assert row.flops is None and "Doubling()" in summary.uncounted
    assert summary.flops == sum(r.flops for r in summary.rows if r.flops is not None) > 0
    assert "not counted: Doubling()" in str(summary)
    from skcnn.layers import LAYERS

    del LAYERS["Doubling"]  # keep the registry as other tests expect it


@pytest.mark.parametrize(
    "stack",
    [
        [GlobalAvgPool2D(), Conv2D(8, 3)],
        [Dense(16), Conv2D(8, 3)],
        [Flatten(), MaxPool2D(2)],
        [Conv2D(4, 3), GlobalAvgPool2D(), GlobalAvgPool2D()],
    ],
)
def test_a_layer_that_takes_images_after_flat_features_is_refused_clearly(stack):
    X, y = load_digits(return_X_y=True)
    fitted = CNNClassifier(max_iter=1, random_state=0).fit(X[:60], y[:60])
    before = fitted.predict_proba(X[:10])
    with pytest.raises(ValueError, match=r"takes images \(H, W, C\).*flat features of shape") as info:
        fitted.set_params(layers=stack).fit(X[:60], y[:60])
    assert "Put the layers that take images before those" in str(info.value)
    assert all(not layer.built for layer in stack)  # the user's layers stay unbuilt
    np.testing.assert_array_equal(fitted.predict_proba(X[:10]), before)  # the fitted model is kept


def test_a_layer_class_that_skips_the_base_init_is_told_so():
    class ForgetsSuperInit(ReLU):
        def __init__(self, slope=0.0):
            self.slope = slope  # no super().__init__()

    X, y = load_digits(return_X_y=True)
    with pytest.raises(TypeError, match=r"ForgetsSuperInit.__init__ must call super\(\).__init__\(\)"):
        CNNClassifier(layers=[ForgetsSuperInit()], max_iter=1).fit(X[:30], y[:30])
