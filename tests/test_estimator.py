import json
import pickle
import subprocess
import sys
import warnings

import joblib
import numpy as np
import pytest
from sklearn.base import clone, is_classifier
from sklearn.datasets import make_blobs
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from skcnn import CNNClassifier


@parametrize_with_checks([CNNClassifier()])
def test_sklearn_conformance(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def fitted(digits_split):
    X_train, _, y_train, _ = digits_split
    return CNNClassifier(max_iter=5, random_state=0).fit(X_train, y_train)


def test_is_a_classifier_with_the_right_mixin_order():
    assert is_classifier(CNNClassifier())
    assert CNNClassifier.__mro__[1].__name__ == "ClassifierMixin"


def test_default_estimator_is_accurate_on_digits(digits_split):
    X_train, X_test, y_train, y_test = digits_split
    clf = CNNClassifier(random_state=0).fit(X_train, y_train)
    assert clf.score(X_test, y_test) >= 0.97
    assert clf.input_shape_ == (1, 8, 8)
    assert clf.n_iter_ <= 30 and len(clf.loss_curve_) == clf.n_iter_


def test_grid_search_over_the_learning_rate_picks_a_sensible_one(digits_split):
    X_train, _, y_train, _ = digits_split
    search = GridSearchCV(
        CNNClassifier(max_iter=8, random_state=0),
        {"learning_rate_init": [1e-5, 1e-3, 3.0]},
        cv=3,
        n_jobs=2,
    )
    search.fit(X_train, y_train)
    assert search.best_params_ == {"learning_rate_init": 1e-3}
    scores = search.cv_results_["mean_test_score"]
    assert scores[1] > 0.9 and scores[1] > scores[0] + 0.1 and scores[1] > scores[2] + 0.1


def test_pipeline_cross_val_score_and_clone(digits_split):
    X_train, _, y_train, _ = digits_split
    from skcnn.estimator import InputRangeWarning

    # clip: a pixel almost constant in the training folds would be scaled far
    # outside [0, 1] in the held-out one, which skcnn rightly warns about
    pipe = make_pipeline(MinMaxScaler(clip=True), CNNClassifier(max_iter=10, random_state=0))
    with warnings.catch_warnings():
        warnings.simplefilter("error", InputRangeWarning)
        scores = cross_val_score(pipe, X_train, y_train, cv=3, error_score="raise")
    assert scores.shape == (3,) and scores.min() > 0.8
    copy = clone(pipe)
    assert copy.get_params()["cnnclassifier__max_iter"] == 10
    assert not hasattr(copy[-1], "network_")


def test_joblib_round_trip_in_this_and_a_fresh_process(fitted, digits_split, tmp_path):
    _, X_test, _, _ = digits_split
    path = tmp_path / "model.joblib"
    joblib.dump(fitted, path)
    np.testing.assert_array_equal(joblib.load(path).predict_proba(X_test), fitted.predict_proba(X_test))
    np.save(tmp_path / "X.npy", X_test)
    code = (
        "import joblib, numpy as np, sys; "
        f"m = joblib.load({str(path)!r}); X = np.load({str(tmp_path / 'X.npy')!r}); "
        f"np.save({str(tmp_path / 'p.npy')!r}, m.predict_proba(X))"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    np.testing.assert_array_equal(np.load(tmp_path / "p.npy"), fitted.predict_proba(X_test))


def test_same_random_state_gives_bit_identical_fits(digits_split):
    X_train, X_test, y_train, _ = digits_split
    a = CNNClassifier(max_iter=2, random_state=3).fit(X_train, y_train)
    b = CNNClassifier(max_iter=2, random_state=3).fit(X_train, y_train)
    assert a.loss_curve_ == b.loss_curve_
    np.testing.assert_array_equal(a.predict_proba(X_test), b.predict_proba(X_test))
    c = CNNClassifier(max_iter=2, random_state=4).fit(X_train, y_train)
    assert a.loss_curve_ != c.loss_curve_


def test_partial_fit_trains_one_epoch_per_call(digits_split):
    X_train, X_test, y_train, y_test = digits_split
    clf = CNNClassifier(random_state=0)
    with pytest.raises(ValueError, match="classes must be passed"):
        clf.partial_fit(X_train, y_train)
    classes = np.arange(10)
    clf.partial_fit(X_train[:600], y_train[:600], classes=classes)
    assert (clf.n_iter_, clf.t_, len(clf.loss_curve_)) == (1, 600, 1)
    for _ in range(4):
        clf.partial_fit(X_train, y_train)
    assert (clf.n_iter_, clf.t_) == (5, 600 + 4 * len(y_train))
    assert clf.loss_curve_[-1] < clf.loss_curve_[0]
    assert clf.score(X_test, y_test) > 0.85
    # a later call may repeat classes, but they must be the same
    clf.partial_fit(X_train[:10], y_train[:10], classes=classes)
    with pytest.raises(ValueError, match="not the same"):
        clf.partial_fit(X_train[:10], y_train[:10], classes=np.arange(11))


def test_partial_fit_accepts_a_chunk_with_only_some_classes(digits_split):
    X_train, _, y_train, _ = digits_split
    clf = CNNClassifier(random_state=0)
    only_zeros = y_train == 0
    clf.partial_fit(X_train[only_zeros], y_train[only_zeros], classes=np.arange(10))
    assert list(clf.classes_) == list(range(10))
    assert clf.predict_proba(X_train[:3]).shape == (3, 10)


def test_warm_start_continues_training(digits_split):
    X_train, _, y_train, _ = digits_split
    clf = CNNClassifier(max_iter=2, warm_start=True, random_state=0).fit(X_train, y_train)
    first = clf.network_.params()[1].copy()
    clf.fit(X_train, y_train)
    assert clf.n_iter_ == 4 and len(clf.loss_curve_) == 4
    assert clf.loss_curve_[3] < clf.loss_curve_[0]
    assert not np.array_equal(first, clf.network_.params()[1])
    cold = CNNClassifier(max_iter=2, random_state=0).fit(X_train, y_train)
    cold.fit(X_train, y_train)
    assert cold.n_iter_ == 2  # without warm_start, fit starts over


def test_warm_start_after_a_pickle_round_trip_continues_exactly(digits_split):
    # unpickled weights are separate arrays again: fit packs them anew and
    # the optimizer state (saved in the packed layout) still fits them
    X_train, _, y_train, _ = digits_split
    clf = CNNClassifier(max_iter=1, warm_start=True, random_state=0).fit(X_train, y_train)
    copy = pickle.loads(pickle.dumps(clf))
    clf.fit(X_train, y_train)
    copy.fit(X_train, y_train)
    for a, b in zip(clf.network_.params(), copy.network_.params()):
        np.testing.assert_array_equal(a, b)


def test_images_in_3d_and_4d_and_flat_agree(digits_split):
    X_train, X_test, y_train, _ = digits_split
    flat = CNNClassifier(max_iter=2, random_state=0).fit(X_train, y_train)
    three = CNNClassifier(max_iter=2, random_state=0).fit(X_train.reshape(-1, 8, 8), y_train)
    four = CNNClassifier(max_iter=2, random_state=0).fit(X_train.reshape(-1, 1, 8, 8), y_train)
    assert flat.input_shape_ == three.input_shape_ == four.input_shape_ == (1, 8, 8)
    p = flat.predict_proba(X_test)
    np.testing.assert_array_equal(p, three.predict_proba(X_test.reshape(-1, 8, 8)))
    np.testing.assert_array_equal(p, four.predict_proba(X_test.reshape(-1, 1, 8, 8)))
    with pytest.raises(ValueError, match="images of shape"):
        four.predict(X_test.reshape(-1, 1, 4, 16))


def test_non_square_features_become_a_strip_unless_input_shape_says_otherwise():
    X, y = make_blobs(60, n_features=6, centers=2, random_state=0)
    assert CNNClassifier(max_iter=1).fit(X, y).input_shape_ == (1, 1, 6)
    assert CNNClassifier(max_iter=1, input_shape=(2, 3)).fit(X, y).input_shape_ == (1, 2, 3)
    assert CNNClassifier(max_iter=1, input_shape=(3, 1, 2)).fit(X, y).input_shape_ == (3, 1, 2)
    with pytest.raises(ValueError, match="input_shape"):
        CNNClassifier(input_shape=(2, 2)).fit(X, y)


@pytest.mark.parametrize("labels", [np.array(["cat", "dog"]), np.array([-1, 1]), np.array([3.0, 7.0])])
def test_any_labels_binary(labels):
    X, y = make_blobs(80, n_features=4, centers=2, random_state=1)
    y = labels[y]
    clf = CNNClassifier(random_state=0).fit(X, y)
    assert set(clf.predict(X)) <= set(labels)
    assert clf.predict_proba(X).shape == (80, 2)
    assert clf.score(X, y) > 0.9


def test_dataframe_records_feature_names():
    pd = pytest.importorskip("pandas")
    X, y = make_blobs(40, n_features=4, centers=2, random_state=0)
    df = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    clf = CNNClassifier(max_iter=2).fit(df, y)
    assert list(clf.feature_names_in_) == ["a", "b", "c", "d"]
    assert clf.predict(df).shape == (40,)


def test_dtype_follows_the_input():
    X, y = make_blobs(40, n_features=4, centers=2, random_state=0)
    c32 = CNNClassifier(max_iter=2).fit(X.astype(np.float32), y)
    assert c32.network_.dtype == np.float32
    assert all(p.dtype == np.float32 for p in c32.network_.params())
    assert c32.predict_proba(X.astype(np.float32)).dtype == np.float32
    assert c32.predict_proba(X).dtype == np.float64  # float64 input: float64 probabilities
    c64 = CNNClassifier(max_iter=2).fit(X, y)  # small float64 data: computed in float64
    assert c64.network_.dtype == np.float64 and c64.predict_proba(X).dtype == np.float64
    cint = CNNClassifier(max_iter=2).fit((X * 10).astype(int), y)
    assert cint.network_.dtype == np.float32  # integers: float32, exact for pixel values


def test_probabilities_sum_to_one_and_log_proba_matches(fitted, digits_split):
    _, X_test, _, _ = digits_split
    p = fitted.predict_proba(X_test)
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-5)
    np.testing.assert_allclose(np.exp(fitted.predict_log_proba(X_test)), p, rtol=1e-4, atol=1e-7)
    np.testing.assert_array_equal(fitted.predict(X_test), fitted.classes_[p.argmax(axis=1)])


def test_sample_weight_zero_equals_dropping_samples(digits_split):
    X_train, X_test, y_train, _ = digits_split
    X, y = X_train[:90], y_train[:90]  # one full batch
    w = np.ones(90)
    w[::3] = 0
    a = CNNClassifier(max_iter=3, random_state=0).fit(X, y, sample_weight=w)
    b = CNNClassifier(max_iter=3, random_state=0).fit(X[w > 0], y[w > 0])
    np.testing.assert_allclose(a.predict_proba(X_test), b.predict_proba(X_test), rtol=1e-4, atol=1e-6)


def test_early_stopping_keeps_the_best_epoch(digits_split):
    X_train, _, y_train, _ = digits_split
    clf = CNNClassifier(
        early_stopping=True, n_iter_no_change=2, max_iter=40, random_state=0
    ).fit(X_train, y_train)
    assert len(clf.validation_scores_) == clf.n_iter_
    assert clf.best_validation_score_ == max(clf.validation_scores_)
    assert clf.best_loss_ is None
    assert clf.n_iter_ < 40  # stopped on the rule


def test_verbose_prints_a_line_per_epoch_and_a_progress_bar(digits_split, capsys):
    X_train, _, y_train, _ = digits_split
    CNNClassifier(max_iter=2, verbose=2, early_stopping=True, random_state=0).fit(X_train, y_train)
    out, err = capsys.readouterr()
    lines = [line for line in out.splitlines() if line.startswith("Epoch")]
    assert len(lines) == 2
    assert "loss" in lines[0] and "validation score" in lines[0] and lines[0].endswith(" s")
    assert "%" not in err  # no progress bar: stderr is not a terminal here (test_cli.py has one)


def test_learning_rate_schedules_and_solvers_all_learn(digits_split):
    X_train, X_test, y_train, y_test = digits_split
    for kw in (
        dict(learning_rate="cosine"),
        dict(learning_rate="adaptive", n_iter_no_change=1, tol=0.5),
        dict(solver="sgd", learning_rate_init=0.05),
        dict(solver="momentum", learning_rate_init=0.01),
        dict(solver="nesterov", learning_rate_init=0.01),
        dict(solver="adagrad", learning_rate_init=0.01),
        dict(solver="rmsprop"),
        dict(alpha=1e-3, weight_decay=1e-2),
    ):
        clf = CNNClassifier(max_iter=10, random_state=0, **kw).fit(X_train, y_train)
        assert clf.score(X_test, y_test) > 0.85, kw


def test_architecture_presets_and_overrides():
    X, y = make_blobs(50, n_features=16, centers=3, random_state=0)
    deep = CNNClassifier(architecture="deep", max_iter=1, dropout=0.1).fit(X, y)
    kinds = [type(layer).__name__ for layer in deep.network_.layers]
    assert kinds.count("Conv2D") == 4 and "BatchNorm" in kinds and "Dropout" in kinds
    custom = CNNClassifier(conv_filters=((4, 4), 8), hidden_layer_sizes=(7,), max_iter=1).fit(X, y)
    assert [layer.params["W"].shape[-1] for layer in custom.network_.layers if type(layer).__name__ == "Conv2D"] == [4, 4, 8]


def test_fitted_model_carries_no_training_buffers(fitted):
    for layer in fitted.network_.layers:
        assert layer._cache is None and not layer.grads


def test_results_do_not_depend_on_the_number_of_threads(digits_split):
    from threadpoolctl import threadpool_limits

    from skcnn.parallel import n_threads

    X_train, X_test, y_train, _ = digits_split
    params = dict(architecture="deep", conv_filters=((4, 4), 8), max_iter=2, random_state=0)
    two = CNNClassifier(**params).fit(X_train, y_train)  # dropout and batch norm included
    with threadpool_limits(1, "blas"):
        assert n_threads() == 1
        one = CNNClassifier(**params).fit(X_train, y_train)
    assert one.loss_curve_ == two.loss_curve_
    np.testing.assert_array_equal(one.predict_proba(X_test), two.predict_proba(X_test))


def test_summary_is_a_table_of_the_fitted_network(fitted):
    summary = fitted.summary()
    layers = fitted.network_.layers
    assert [row.layer for row in summary.rows] == [repr(layer) for layer in layers]
    assert summary.rows[1].output_shape == (8, 8, 16)  # channels-last, as computed
    assert summary.rows[-1].output_shape == (10,)
    assert summary.total_params == sum(p.size for p in fitted.network_.params())
    text = repr(summary)
    assert text == str(summary) and len(text.splitlines()) == len(layers) + 5
    assert f"Total params: {summary.total_params:,}" in text
    assert f"Forward FLOPs per image: {summary.flops:,}" in text
    with pytest.raises(NotFittedError):
        CNNClassifier().summary()


# -- image layouts: channels-last, ambiguous shapes, flat rows of colour pictures ----


@pytest.fixture(scope="module")
def colour_images():
    """Small RGB pictures whose class is their colour (red or blue), not their brightness."""
    rng = np.random.default_rng(0)
    y = np.arange(120) % 2
    X = rng.uniform(0, 0.3, (120, 3, 10, 10)).astype(np.float32)
    X[y == 0, 0] += 0.6  # red
    X[y == 1, 2] += 0.6 * 0.299 / 0.114  # blue of the same luminance
    return np.clip(X, 0, 1), y


def test_channels_last_gives_the_same_model_as_channels_first(digits_split, colour_images):
    X_train, X_test, y_train, _ = digits_split
    for X, X_new, y in [
        (X_train.reshape(-1, 1, 8, 8), X_test.reshape(-1, 1, 8, 8), y_train),
        (colour_images[0][:90], colour_images[0][90:], colour_images[1][:90]),
    ]:
        first = CNNClassifier(max_iter=2, random_state=0).fit(X, y)
        last = CNNClassifier(max_iter=2, random_state=0).fit(X.transpose(0, 2, 3, 1), y)
        assert last.input_shape_ == first.input_shape_ == X.shape[1:]
        assert (first.data_format_, last.data_format_) == ("channels_first", "channels_last")
        assert last.loss_curve_ == pytest.approx(first.loss_curve_, rel=1e-5)
        np.testing.assert_allclose(
            last.predict_proba(X_new.transpose(0, 2, 3, 1)), first.predict_proba(X_new), rtol=1e-5, atol=1e-6
        )


def test_flat_rows_of_colour_pictures_as_planes_or_interleaved(colour_images):
    X, y = colour_images
    images = CNNClassifier(max_iter=2, random_state=0).fit(X, y)
    planes = CNNClassifier(max_iter=2, random_state=0, input_shape=(3, 10, 10)).fit(X.reshape(120, -1), y)
    interleaved = CNNClassifier(
        max_iter=2, random_state=0, input_shape=(3, 10, 10), data_format="channels_last"
    ).fit(X.transpose(0, 2, 3, 1).reshape(120, -1), y)
    p = images.predict_proba(X)
    np.testing.assert_allclose(planes.predict_proba(X.reshape(120, -1)), p, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        interleaved.predict_proba(X.transpose(0, 2, 3, 1).reshape(120, -1)), p, rtol=1e-5, atol=1e-6
    )
    assert images.score(X, y) > 0.9  # colour, not brightness, tells the classes apart
    # 3 x 32 x 32 features without an input_shape: read as a strip, and said so
    with pytest.warns(UserWarning, match=r"input_shape=\(3, 32, 32\)"):
        CNNClassifier(max_iter=1).fit(np.zeros((4, 3072)), [0, 1, 0, 1])


def test_ambiguous_shapes_are_refused_or_decided_by_the_parameters():
    y = np.arange(6) % 2
    for shape in [(6, 3, 4, 3), (6, 1, 8, 1), (6, 16, 8, 8)]:
        with pytest.raises(ValueError, match="ambiguous.*data_format"):
            CNNClassifier(max_iter=1).fit(np.zeros(shape), y)
    X = np.random.default_rng(0).random((6, 3, 4, 3))
    assert CNNClassifier(max_iter=1, input_shape=(3, 4, 3)).fit(X, y).data_format_ == "channels_first"
    by_shape = CNNClassifier(max_iter=1, input_shape=(3, 3, 4)).fit(X, y)
    assert (by_shape.input_shape_, by_shape.data_format_) == ((3, 3, 4), "channels_last")
    said = CNNClassifier(max_iter=1, data_format="channels_last").fit(X, y)
    assert (said.input_shape_, said.data_format_) == ((3, 3, 4), "channels_last")
    with pytest.raises(ValueError, match="does not match"):
        CNNClassifier(max_iter=1, input_shape=(4, 3, 3)).fit(X, y)
    # an input_shape written channels-last would be 32 channels of 32x3 pixels
    with pytest.raises(ValueError, match=r"input_shape=\(32, 32, 3\) is \(C, H, W\).*\(3, 32, 32\)"):
        CNNClassifier(input_shape=(32, 32, 3)).fit(np.zeros((2, 3072)), [0, 1])
    with pytest.raises(ValueError, match="data_format must be one of"):
        CNNClassifier(data_format="NHWC").fit(np.zeros((2, 4)), [0, 1])


def test_predicting_colour_images_in_the_other_layout_says_how_to_fix_it(colour_images, tmp_path):
    X, y = colour_images
    X_train, X_test, y_train = X[:80], X[80:], y[:80]
    first = CNNClassifier(max_iter=1, random_state=0).fit(X_train, y_train)
    last = CNNClassifier(max_iter=1, random_state=0).fit(X_train.transpose(0, 2, 3, 1), y_train)
    before = first.predict_proba(X_test)
    with pytest.raises(ValueError, match=r"channels-last.*channels-first.*X\.transpose\(0, 3, 1, 2\)"):
        first.predict(X_test.transpose(0, 2, 3, 1))
    with pytest.raises(ValueError, match=r"X\.transpose\(0, 2, 3, 1\)"):
        last.predict(X_test)
    with pytest.raises(ValueError, match=r"X\.transpose"):
        first.partial_fit(X_test[:10].transpose(0, 2, 3, 1), y[80:90])
    np.testing.assert_array_equal(first.predict_proba(X_test), before)  # the rejected calls changed nothing
    assert first.data_format_ == "channels_first"
    with pytest.raises(ValueError, match=r"batch axis: X\[np\.newaxis\]"):
        last.predict(X_test[0].transpose(1, 2, 0))  # one picture (H, W, C) without its batch axis
    # a parameter file keeps the layout
    last.save_params(tmp_path / "last.npz")
    loaded = CNNClassifier.from_params_file(tmp_path / "last.npz")
    assert loaded.data_format_ == "channels_last"
    np.testing.assert_array_equal(
        loaded.predict_proba(X_test.transpose(0, 2, 3, 1)), last.predict_proba(X_test.transpose(0, 2, 3, 1))
    )
    with pytest.raises(ValueError, match=r"X\.transpose\(0, 2, 3, 1\)"):
        loaded.predict(X_test)
    # one written before it was recorded reads a 4-D batch by its shape, either layout
    first.save_params(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as data:
        arrays = dict(data)
    meta = json.loads(str(arrays["__meta__"]))
    del meta["extra"]["data_format"]
    arrays["__meta__"] = np.array(json.dumps(meta))
    with open(tmp_path / "old.npz", "wb") as f:
        np.savez(f, **arrays)
    old = CNNClassifier.from_params_file(tmp_path / "old.npz")
    assert not hasattr(old, "data_format_")
    np.testing.assert_array_equal(old.predict_proba(X_test.transpose(0, 2, 3, 1)), before)
    np.testing.assert_array_equal(old.predict_proba(X_test), before)


def test_grey_images_are_read_in_either_layout(digits_split, tmp_path):
    """(n, 1, H, W) and (n, H, W, 1) hold the same pixels in the same order:
    a grey model reads both (and flat rows, and (n, H, W)), whichever it was
    fitted on, loaded from a file too."""
    X_train, X_test, y_train, _ = digits_split
    images = X_test.reshape(-1, 1, 8, 8)
    for fitted_on in [X_train, X_train.reshape(-1, 1, 8, 8), X_train.reshape(-1, 8, 8, 1)]:
        clf = CNNClassifier(max_iter=1, random_state=0).fit(fitted_on, y_train)
        clf.save_params(tmp_path / "grey.npz")
        loaded = CNNClassifier.from_params_file(tmp_path / "grey.npz")
        expected = clf.predict_proba(X_test)
        for model in (clf, loaded):
            for X in (images, images.transpose(0, 2, 3, 1), images[:, 0], X_test):
                np.testing.assert_array_equal(model.predict_proba(X), expected)
        with pytest.raises(ValueError, match=r"batch axis: X\[np\.newaxis\]"):
            clf.predict(images[0].transpose(1, 2, 0))  # one picture without its batch axis
        with pytest.raises(ValueError, match=r"8 rows of 8 features.*64.*batch axis: X\[np\.newaxis\]"):
            clf.predict(images[0, 0])  # one grey picture (H, W), read as H rows


def test_a_parameter_file_keeps_the_order_of_flat_rows(colour_images, tmp_path):
    X, y = colour_images
    rows = X.transpose(0, 2, 3, 1).reshape(len(X), -1)  # interleaved pixels
    clf = CNNClassifier(max_iter=1, random_state=0, input_shape=(3, 10, 10), data_format="channels_last").fit(rows, y)
    clf.save_params(tmp_path / "rows.npz")
    loaded = CNNClassifier.from_params_file(tmp_path / "rows.npz")
    np.testing.assert_array_equal(loaded.predict_proba(rows), clf.predict_proba(rows))


def test_fashion_mnist_channels_last_is_read_as_28x28_pictures():
    # it was read as 28 channels of 28x1 pictures (input_shape_ == (28, 28, 1))
    from skcnn.datasets import DEBIAN_FASHION_MNIST, load_idx

    path = DEBIAN_FASHION_MNIST / "t10k-images-idx3-ubyte.gz"
    if not path.exists():
        pytest.skip("Fashion-MNIST IDX files not installed")
    X = (load_idx(path)[:1100, None] / np.float32(255)).astype(np.float32)  # (n, 1, 28, 28)
    y = load_idx(DEBIAN_FASHION_MNIST / "t10k-labels-idx1-ubyte.gz")[:1100]
    first = CNNClassifier(max_iter=1, random_state=0).fit(X[:600], y[:600])
    last = CNNClassifier(max_iter=1, random_state=0).fit(X[:600].transpose(0, 2, 3, 1), y[:600])
    assert last.input_shape_ == (1, 28, 28)
    np.testing.assert_allclose(
        last.predict_proba(X[600:].transpose(0, 2, 3, 1)), first.predict_proba(X[600:]), rtol=1e-5, atol=1e-6
    )


@pytest.mark.filterwarnings("ignore::skcnn.trainer.DivergenceWarning")  # training on the wrong scale, at the end
def test_prediction_on_another_scale_than_training_warns(digits_split, tmp_path):
    from skcnn.estimator import InputRangeWarning

    X_train, X_test, y_train, y_test = digits_split  # pixel values 0-16
    scaled = CNNClassifier(max_iter=1, random_state=0).fit(X_train / 16, y_train)
    raw = CNNClassifier(max_iter=1, random_state=0).fit(X_train, y_train)
    assert scaled.input_range_ == (0.0, 1.0) and raw.input_range_ == (0.0, 16.0)
    with pytest.raises(InputRangeWarning, match=r"values lie in \[0, 16\].*trained on values in \[0, 1\].*X / 255"):
        with warnings.catch_warnings():
            warnings.simplefilter("error", InputRangeWarning)
            scaled.predict(X_test)  # raw pixels for a model trained on scaled ones
    with pytest.warns(InputRangeWarning, match=r"values lie in \[0, 1\].*trained on values in \[0, 16\]") as record:
        raw.predict_proba(X_test / 16)  # and the other way round
    assert record[0].filename == __file__  # the warning names the line that called predict_proba
    with pytest.warns(InputRangeWarning) as record:
        scaled.score(X_test, y_test)  # score, inherited from scikit-learn's ClassifierMixin
    assert record[0].filename == __file__  # this line, not the mixin's inside scikit-learn
    with warnings.catch_warnings():
        warnings.simplefilter("error", InputRangeWarning)
        scaled.predict(X_test / 16)
        scaled.predict(X_test / 32)  # darker pictures are data, not a scale error
        scaled.predict(np.zeros((1, 64)))  # a blank picture
        raw.predict(X_test)
        raw.predict(X_test[:1] * 0 + 3)  # a flat grey picture in range
    # a parameter file keeps the range; partial_fit widens it
    scaled.save_params(tmp_path / "m.npz")
    loaded = CNNClassifier.from_params_file(tmp_path / "m.npz")
    assert loaded.input_range_ == (0.0, 1.0)
    with pytest.warns(InputRangeWarning):
        loaded.predict(X_test)
    scaled.partial_fit(X_train[:50] / 12, y_train[:50])  # brighter, in range: widens it
    assert scaled.input_range_ == pytest.approx((0.0, 16 / 12))
    with pytest.warns(InputRangeWarning):  # new data on another scale than the first fit's
        scaled.partial_fit(X_train[:50] * 16, y_train[:50])


def test_test_time_flips_average_each_image_with_its_mirror_image(digits_split, tmp_path):
    X_train, X_test, y_train, y_test = digits_split
    clf = CNNClassifier(max_iter=2, random_state=0).fit(X_train, y_train)
    images = X_test.reshape(-1, 1, 8, 8)
    plain, mirrored = clf.predict_proba(images), clf.predict_proba(images[..., ::-1])
    flipping = clone(clf).set_params(test_time_flips=True)
    flipping.__dict__.update({k: v for k, v in clf.__dict__.items() if k.endswith("_")})  # the same fit
    expected = (plain + mirrored) / 2
    for X in (images, X_test, images.transpose(0, 2, 3, 1)):  # 4-D, flat rows, channels-last: W is mirrored
        np.testing.assert_allclose(flipping.predict_proba(X), expected, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(np.exp(flipping.predict_log_proba(images)), expected, rtol=1e-6, atol=1e-12)
    np.testing.assert_array_equal(flipping.predict(images), clf.classes_[expected.argmax(axis=1)])
    assert not np.allclose(expected, plain)  # digits are not symmetric: the mirror counts
    symmetric = np.concatenate([images[..., :4], images[..., 3::-1]], axis=3)
    np.testing.assert_allclose(flipping.predict_proba(symmetric), clf.predict_proba(symmetric), rtol=1e-6)
    # the saved model predicts with them too; ONNX export, one pass, refuses them
    flipping.save_params(tmp_path / "flips.npz")
    loaded = CNNClassifier.from_params_file(tmp_path / "flips.npz")
    assert loaded.test_time_flips is True
    np.testing.assert_array_equal(loaded.predict_proba(images), flipping.predict_proba(images))
    clf.save_params(tmp_path / "plain.npz")
    assert CNNClassifier.from_params_file(tmp_path / "plain.npz").test_time_flips is False
    pytest.importorskip("onnx")
    from skcnn.export import export_onnx

    with pytest.raises(ValueError, match=r"test_time_flips=True.*set_params\(test_time_flips=False\)"):
        export_onnx(flipping, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()
    with pytest.raises(ValueError, match="test_time_flips must be True or False; got 'yes'"):
        flipping.set_params(test_time_flips="yes").predict(images)


def test_test_time_shifts_average_over_the_four_moved_copies_and_their_mirrors(digits_split, tmp_path):
    from skcnn.augmentation import translate

    X_train, X_test, y_train, y_test = digits_split
    clf = CNNClassifier(max_iter=2, random_state=0).fit(X_train, y_train)
    images = X_test.reshape(-1, 1, 8, 8)
    moved = [images] + [translate(images, dy, dx) for dy, dx in [(2, 0), (-2, 0), (0, 2), (0, -2)]]
    for flips, views in [(False, moved), (True, moved + [m[..., ::-1] for m in moved])]:
        averaging = clone(clf).set_params(test_time_shifts=2, test_time_flips=flips)
        averaging.__dict__.update({k: v for k, v in clf.__dict__.items() if k.endswith("_")})  # the same fit
        expected = np.mean([clf.predict_proba(view) for view in views], axis=0)
        assert not np.allclose(expected, clf.predict_proba(images), atol=1e-3)  # the moved copies count
        for X in (images, X_test, images.transpose(0, 2, 3, 1)):  # every layout moves the same pixels
            np.testing.assert_allclose(averaging.predict_proba(X), expected, rtol=1e-6, atol=1e-12)
        np.testing.assert_allclose(np.exp(averaging.predict_log_proba(images)), expected, rtol=1e-6, atol=1e-12)
        np.testing.assert_array_equal(averaging.predict(images), clf.classes_[expected.argmax(axis=1)])
    # saved and loaded with the flips; ONNX export (one pass) refuses the shifts
    averaging.save_params(tmp_path / "tta.npz")
    loaded = CNNClassifier.from_params_file(tmp_path / "tta.npz")
    assert (loaded.test_time_shifts, loaded.test_time_flips) == (2, True)
    np.testing.assert_array_equal(loaded.predict_proba(images), averaging.predict_proba(images))
    clf.save_params(tmp_path / "plain.npz")
    assert CNNClassifier.from_params_file(tmp_path / "plain.npz").test_time_shifts == 0
    for bad in (-1, 1.5, "1", True):
        with pytest.raises(ValueError, match=f"test_time_shifts must be an int >= 0; got {bad!r}"):
            clone(averaging).set_params(test_time_shifts=bad).fit(X_train, y_train)
    # a shift of the image's size or more leaves copies of background only: refused, not averaged in
    before = averaging.predict_proba(images)
    for too_far in (8, 9, 100):
        with pytest.raises(ValueError, match=f"test_time_shifts={too_far} moves copies of 8x8 images.*below 8"):
            averaging.set_params(test_time_shifts=too_far).predict(images)
    largest = averaging.set_params(test_time_shifts=7).predict_proba(images)  # 7 of 8 rows out: still a pixel
    assert largest.shape == before.shape and not np.allclose(largest, before)
    averaging.set_params(test_time_shifts=2)
    pytest.importorskip("onnx")
    from skcnn.export import export_onnx

    shifting = averaging.set_params(test_time_flips=False)
    with pytest.raises(ValueError, match=r"test_time_shifts=2 .*set_params\(test_time_shifts=0\)"):
        export_onnx(shifting, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()
