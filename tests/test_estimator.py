import pickle
import subprocess
import sys

import joblib
import numpy as np
import pytest
from sklearn.base import clone, is_classifier
from sklearn.datasets import load_digits, make_blobs
from sklearn.model_selection import GridSearchCV, cross_val_score, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from skcnn import CNNClassifier


@parametrize_with_checks([CNNClassifier()])
def test_sklearn_conformance(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return train_test_split(X.astype(np.float32), y, test_size=0.25, random_state=0, stratify=y)


@pytest.fixture(scope="module")
def fitted(digits):
    X_train, _, y_train, _ = digits
    return CNNClassifier(max_iter=5, random_state=0).fit(X_train, y_train)


def test_is_a_classifier_with_the_right_mixin_order():
    assert is_classifier(CNNClassifier())
    assert CNNClassifier.__mro__[1].__name__ == "ClassifierMixin"


def test_default_estimator_is_accurate_on_digits(digits):
    X_train, X_test, y_train, y_test = digits
    clf = CNNClassifier(random_state=0).fit(X_train, y_train)
    assert clf.score(X_test, y_test) >= 0.97
    assert clf.input_shape_ == (1, 8, 8)
    assert clf.n_iter_ <= 30 and len(clf.loss_curve_) == clf.n_iter_


def test_grid_search_over_the_learning_rate_picks_a_sensible_one(digits):
    X_train, _, y_train, _ = digits
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


def test_pipeline_cross_val_score_and_clone(digits):
    X_train, _, y_train, _ = digits
    pipe = make_pipeline(MinMaxScaler(), CNNClassifier(max_iter=10, random_state=0))
    scores = cross_val_score(pipe, X_train, y_train, cv=3)
    assert scores.shape == (3,) and scores.min() > 0.8
    copy = clone(pipe)
    assert copy.get_params()["cnnclassifier__max_iter"] == 10
    assert not hasattr(copy[-1], "network_")


def test_joblib_round_trip_in_this_and_a_fresh_process(fitted, digits, tmp_path):
    _, X_test, _, _ = digits
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


def test_same_random_state_gives_bit_identical_fits(digits):
    X_train, X_test, y_train, _ = digits
    a = CNNClassifier(max_iter=2, random_state=3).fit(X_train, y_train)
    b = CNNClassifier(max_iter=2, random_state=3).fit(X_train, y_train)
    assert a.loss_curve_ == b.loss_curve_
    np.testing.assert_array_equal(a.predict_proba(X_test), b.predict_proba(X_test))
    c = CNNClassifier(max_iter=2, random_state=4).fit(X_train, y_train)
    assert a.loss_curve_ != c.loss_curve_


def test_partial_fit_trains_one_epoch_per_call(digits):
    X_train, X_test, y_train, y_test = digits
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


def test_partial_fit_accepts_a_chunk_with_only_some_classes(digits):
    X_train, _, y_train, _ = digits
    clf = CNNClassifier(random_state=0)
    only_zeros = y_train == 0
    clf.partial_fit(X_train[only_zeros], y_train[only_zeros], classes=np.arange(10))
    assert list(clf.classes_) == list(range(10))
    assert clf.predict_proba(X_train[:3]).shape == (3, 10)


def test_warm_start_continues_training(digits):
    X_train, _, y_train, _ = digits
    clf = CNNClassifier(max_iter=2, warm_start=True, random_state=0).fit(X_train, y_train)
    first = clf.network_.params()[1].copy()
    clf.fit(X_train, y_train)
    assert clf.n_iter_ == 4 and len(clf.loss_curve_) == 4
    assert clf.loss_curve_[3] < clf.loss_curve_[0]
    assert not np.array_equal(first, clf.network_.params()[1])
    cold = CNNClassifier(max_iter=2, random_state=0).fit(X_train, y_train)
    cold.fit(X_train, y_train)
    assert cold.n_iter_ == 2  # without warm_start, fit starts over


def test_warm_start_after_a_pickle_round_trip_continues_exactly(digits):
    # unpickled weights are separate arrays again: fit packs them anew and
    # the optimizer state (saved in the packed layout) still fits them
    X_train, _, y_train, _ = digits
    clf = CNNClassifier(max_iter=1, warm_start=True, random_state=0).fit(X_train, y_train)
    copy = pickle.loads(pickle.dumps(clf))
    clf.fit(X_train, y_train)
    copy.fit(X_train, y_train)
    for a, b in zip(clf.network_.params(), copy.network_.params()):
        np.testing.assert_array_equal(a, b)


def test_images_in_3d_and_4d_and_flat_agree(digits):
    X_train, X_test, y_train, _ = digits
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


def test_probabilities_sum_to_one_and_log_proba_matches(fitted, digits):
    _, X_test, _, _ = digits
    p = fitted.predict_proba(X_test)
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-5)
    np.testing.assert_allclose(np.exp(fitted.predict_log_proba(X_test)), p, rtol=1e-4, atol=1e-7)
    np.testing.assert_array_equal(fitted.predict(X_test), fitted.classes_[p.argmax(axis=1)])


def test_sample_weight_zero_equals_dropping_samples(digits):
    X_train, X_test, y_train, _ = digits
    X, y = X_train[:90], y_train[:90]  # one full batch
    w = np.ones(90)
    w[::3] = 0
    a = CNNClassifier(max_iter=3, random_state=0).fit(X, y, sample_weight=w)
    b = CNNClassifier(max_iter=3, random_state=0).fit(X[w > 0], y[w > 0])
    np.testing.assert_allclose(a.predict_proba(X_test), b.predict_proba(X_test), rtol=1e-4, atol=1e-6)


def test_early_stopping_keeps_the_best_epoch(digits):
    X_train, _, y_train, _ = digits
    clf = CNNClassifier(
        early_stopping=True, n_iter_no_change=2, max_iter=40, random_state=0
    ).fit(X_train, y_train)
    assert len(clf.validation_scores_) == clf.n_iter_
    assert clf.best_validation_score_ == max(clf.validation_scores_)
    assert clf.best_loss_ is None
    assert clf.n_iter_ < 40  # stopped on the rule


def test_verbose_prints_a_line_per_epoch_and_a_progress_bar(digits, capsys):
    X_train, _, y_train, _ = digits
    CNNClassifier(max_iter=2, verbose=2, early_stopping=True, random_state=0).fit(X_train, y_train)
    out, err = capsys.readouterr()
    lines = [line for line in out.splitlines() if line.startswith("Epoch")]
    assert len(lines) == 2
    assert "loss" in lines[0] and "validation score" in lines[0] and lines[0].endswith(" s")
    assert "%" not in err  # no progress bar: stderr is not a terminal here (test_cli.py has one)


def test_learning_rate_schedules_and_solvers_all_learn(digits):
    X_train, X_test, y_train, y_test = digits
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


def test_results_do_not_depend_on_the_number_of_threads(digits):
    from threadpoolctl import threadpool_limits

    from skcnn.parallel import n_threads

    X_train, X_test, y_train, _ = digits
    params = dict(architecture="deep", conv_filters=((4, 4), 8), max_iter=2, random_state=0)
    two = CNNClassifier(**params).fit(X_train, y_train)  # dropout and batch norm included
    with threadpool_limits(1, "blas"):
        assert n_threads() == 1
        one = CNNClassifier(**params).fit(X_train, y_train)
    assert one.loss_curve_ == two.loss_curve_
    np.testing.assert_array_equal(one.predict_proba(X_test), two.predict_proba(X_test))
