import copy
import os
import signal

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_digits

from skcnn import CNNClassifier
from skcnn.trainer import DivergenceWarning, Trainer, TrainingInterruptedWarning


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X.astype(np.float32) / 16, y


@pytest.fixture(scope="module")
def trained(digits):
    X, y = digits
    return CNNClassifier(max_iter=2, random_state=0).fit(X[:600], y[:600])


@pytest.fixture
def fitted(trained):
    """A fresh copy of one fitted model for each test (which may change it):
    copying is far cheaper than fitting again."""
    return copy.deepcopy(trained)


def rejected_without_change(clf, X_check, call, error=(ValueError, TypeError), match=None):
    """The call raises a clear error and the model predicts exactly as before."""
    before = clf.predict_proba(X_check)
    with pytest.raises(error, match=match):
        call()
    np.testing.assert_array_equal(clf.predict_proba(X_check), before)


BAD_X = {
    "nan": (lambda X: np.where(np.arange(X.size).reshape(X.shape) == 5, np.nan, X), "NaN"),
    "inf": (lambda X: np.where(np.arange(X.size).reshape(X.shape) == 5, np.inf, X), "infinity"),
    "empty": (lambda X: X[:0], "0 sample"),
    "1-D": (lambda X: X[0], "Expected 2D array"),
    "wrong features": (lambda X: X[:, :60], "features"),
    "strings": (lambda X: np.full(X.shape, "a", dtype=object), "could not convert"),
    "complex": (lambda X: X + 1j, "Complex data not supported"),
    "sparse": (lambda X: sp.csr_matrix(X), "dense data is required"),
    "5-D": (lambda X: X.reshape(len(X), 1, 1, 8, 8)[:, None], "2-D, 3-D"),
}


@pytest.mark.parametrize("case", sorted(BAD_X))
def test_bad_X_gets_a_clear_error_everywhere_and_changes_nothing(case, fitted, digits):
    X, y = digits
    make, match = BAD_X[case]
    bad = make(X[:50])
    for method in ("predict", "predict_proba", "predict_log_proba"):
        rejected_without_change(fitted, X[:20], lambda: getattr(fitted, method)(bad), match=match)
    n = bad.shape[0] if bad.ndim else 0
    if case != "1-D":
        labels = y[: max(n, 1)][:n] if n else y[:0]
        rejected_without_change(fitted, X[:20], lambda: fitted.score(bad, labels), match=match)
        if case != "wrong features":  # a new fit may have other features; partial_fit may not
            rejected_without_change(fitted, X[:20], lambda: fitted.fit(bad, labels), match=match)
        rejected_without_change(fitted, X[:20], lambda: fitted.partial_fit(bad, labels), match=match)


def test_wrong_image_shape_after_fitting(fitted, digits):
    X, _ = digits
    rejected_without_change(fitted, X[:20], lambda: fitted.predict(X[:5].reshape(5, 1, 4, 16)), match="images of shape")


def test_lists_readonly_and_fortran_arrays_are_accepted(fitted, digits):
    X, _ = digits
    expected = fitted.predict_proba(X[:30])
    ro = X[:30].copy()
    ro.setflags(write=False)
    np.testing.assert_allclose(fitted.predict_proba(ro), expected)
    np.testing.assert_allclose(fitted.predict_proba(np.asfortranarray(X[:30])), expected)
    np.testing.assert_allclose(fitted.predict_proba(X[:30].tolist()), expected, rtol=1e-6)
    clf = CNNClassifier(max_iter=1).fit(np.asfortranarray(ro), np.arange(30) % 3)
    assert clf.n_iter_ == 1


BAD_Y = {
    "nan": (lambda y: np.where(np.arange(len(y)) == 3, np.nan, y.astype(float)), "NaN"),
    "continuous": (lambda y: y + 0.5, "continuous"),
    "one class": (lambda y: np.zeros_like(y), "at least 2 classes"),
    "short": (lambda y: y[:-1], "inconsistent numbers of samples"),
    "2-D": (lambda y: np.c_[y, y], "y should be a 1d array|multilabel|multiclass-multioutput"),
}


@pytest.mark.parametrize("case", sorted(BAD_Y))
def test_bad_y_gets_a_clear_error_and_changes_nothing(case, fitted, digits):
    X, y = digits
    make, match = BAD_Y[case]
    rejected_without_change(fitted, X[:20], lambda: fitted.fit(X[:100], make(y[:100])), match=match)


@pytest.mark.parametrize(
    "weights,match",
    [
        (np.ones(99), r"sample_weight.shape"),
        (-np.ones(100), "non-negative"),
        (np.zeros(100), "at least one non-zero"),
        (np.full(100, np.nan), "finite"),
        (np.array(["a"] * 100), "numeric"),
    ],
)
def test_bad_sample_weights(weights, match, fitted, digits):
    X, y = digits
    rejected_without_change(fitted, X[:20], lambda: fitted.fit(X[:100], y[:100], sample_weight=weights), match=match)
    rejected_without_change(fitted, X[:20], lambda: fitted.partial_fit(X[:100], y[:100], sample_weight=weights), match=match)


def test_partial_fit_rejects_labels_outside_classes(fitted, digits):
    X, y = digits
    rejected_without_change(fitted, X[:20], lambda: fitted.partial_fit(X[:10], np.full(10, 42)), match=r"not in classes_")
    # continuous targets too (later calls check y against classes_ alone)
    rejected_without_change(fitted, X[:20], lambda: fitted.partial_fit(X[:10], np.linspace(0, 1, 10)), match=r"not in classes_")


def test_input_shape_that_does_not_match_the_features(digits):
    X, y = digits
    with pytest.raises(ValueError, match="input_shape=.*holds 49 values"):
        CNNClassifier(input_shape=(7, 7)).fit(X[:50], y[:50])
    with pytest.raises(ValueError, match="does not match the shape of the images"):
        CNNClassifier(input_shape=(1, 4, 16)).fit(X[:50].reshape(50, 1, 8, 8), y[:50])


INVALID = {
    "architecture": ["vgg16", 3],
    "conv_filters": [[16, 32], 16, (0, 8), (16, "a"), ((),)],
    "kernel_size": [0, 2, 3.0, -1],
    "hidden_layer_sizes": [0, -5, (0,), "100", (1.5,), True, np.zeros((1, 1), dtype=int)],
    "batch_norm": ["yes", 1],
    "dropout": [1.0, -0.1, "half"],
    "input_shape": [(8,), (0, 8, 8), [8, 8]],
    "solver": ["lbfgs", None],
    "alpha": [-1.0, np.inf],
    "weight_decay": [-0.1],
    "batch_size": [0, -5, "big", 2.5],
    "learning_rate": ["invscaling", None],
    "learning_rate_init": [0.0, -1e-3, np.nan],
    "max_iter": [0, 1.5, -1],
    "shuffle": ["no"],
    "tol": [-1.0],
    "verbose": [-1, 0.5, "yes", None],
    "warm_start": [None],
    "momentum": [1.5, -0.1],
    "early_stopping": ["true"],
    "validation_fraction": [0.0, 1.0, 1.5],
    "beta_1": [1.0, -0.1],
    "beta_2": [1.0],
    "epsilon": [0.0],
    "n_iter_no_change": [0, 2.5],
    "augment": ["rotate", "", 3],
    "class_weight": ["balance", {0: -1.0}, {0: np.nan}, [1, 2], {0: "a"}],
    "label_smoothing": [1.0, -0.1, "0.1"],
    "warmup_fraction": [1.0, -0.5, np.nan],
    "max_time": [0, -1.0, np.inf, "60"],
    "ema_decay": [1.0, -0.1, None],
}


@pytest.mark.parametrize("name,value", [(k, v) for k, values in INVALID.items() for v in values])
def test_every_invalid_hyperparameter_is_named_at_fit(name, value, fitted, digits):
    X, y = digits
    fitted_params = fitted.get_params()
    fitted.set_params(**{name: value})
    try:
        rejected_without_change(fitted, X[:20], lambda: fitted.fit(X[:50], y[:50]), error=ValueError, match=name)
    finally:
        fitted.set_params(**fitted_params)


def test_divergence_keeps_finite_weights_and_says_what_to_change(digits):
    X, y = digits
    clf = CNNClassifier(solver="sgd", learning_rate_init=1e8, max_iter=5, random_state=0)
    with pytest.warns(DivergenceWarning, match="Lower learning_rate_init"):
        clf.fit(X[:300], y[:300])
    assert all(np.isfinite(p).all() for p in clf.network_.params())
    proba = clf.predict_proba(X[:50])
    assert np.isfinite(proba).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-6)


@pytest.mark.parametrize("scale", [255.0, 1e4])
def test_unscaled_input_trains_without_overflow(scale, digits):
    X, y = digits
    Xs = (X * scale).astype(np.float32)
    clf = CNNClassifier(max_iter=15, random_state=0).fit(Xs[:1300], y[:1300])
    assert np.isfinite(clf.loss_curve_).all()
    assert clf.score(Xs[1300:], y[1300:]) > 0.9


def interrupt_on_call(monkeypatch, n, *, real_signal=False):
    """Make the n-th training step raise KeyboardInterrupt (or send SIGINT)."""
    original = Trainer._step
    calls = {"n": 0}

    def step(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            if real_signal:
                os.kill(os.getpid(), signal.SIGINT)  # handled: finish this batch, then stop
            else:
                raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "_step", step)
    return calls


@pytest.mark.parametrize("real_signal", [False, True])
def test_ctrl_c_during_fit_leaves_a_usable_model(real_signal, digits, monkeypatch):
    X, y = digits
    calls = interrupt_on_call(monkeypatch, 20, real_signal=real_signal)
    clf = CNNClassifier(max_iter=5, batch_size=50, random_state=0)
    with pytest.warns(TrainingInterruptedWarning) as record:
        clf.fit(X[:1000], y[:1000])
    assert record[0].filename == __file__  # the warning points at the line that called fit
    assert calls["n"] == 20  # stopped at (raise) or right after (signal) the 20th step
    assert clf.n_iter_ == 0 and clf.loss_curve_ == []  # the first epoch did not finish
    proba = clf.predict_proba(X[:100])
    assert np.isfinite(proba).all()
    assert clf.score(X[1000:], y[1000:]) > 0.3  # 20 steps of training are there (chance: 0.1)


def test_ctrl_c_during_partial_fit_leaves_a_usable_model(fitted, digits, monkeypatch):
    X, y = digits
    interrupt_on_call(monkeypatch, 2)
    with pytest.warns(TrainingInterruptedWarning):
        fitted.partial_fit(X[:600], y[:600])
    assert fitted.n_iter_ == 2
    assert np.isfinite(fitted.predict_proba(X[:50])).all()
    monkeypatch.undo()
    fitted.partial_fit(X[:600], y[:600])  # and training goes on afterwards
    assert fitted.n_iter_ == 3


def test_the_sigint_handler_is_restored_after_fit(digits):
    X, y = digits
    before = signal.getsignal(signal.SIGINT)
    CNNClassifier(max_iter=1).fit(X[:100], y[:100])
    assert signal.getsignal(signal.SIGINT) is before


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(4, 30),
    channels=st.integers(1, 3),
    height=st.integers(1, 9),
    width=st.integers(1, 9),
    n_classes=st.integers(2, 4),
    string_labels=st.booleans(),
    solver=st.sampled_from(["adam", "sgd", "rmsprop", "nesterov"]),
    batch_size=st.one_of(st.just("auto"), st.integers(1, 40)),
    conv_filters=st.sampled_from([(2,), (3, 4), ((2, 2),), ()]),
    batch_norm=st.booleans(),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**16),
)
def test_property_fit_and_predict_on_random_valid_problems(
    n, channels, height, width, n_classes, string_labels, solver, batch_size, conv_filters, batch_norm, dtype, seed
):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, channels, height, width)).astype(dtype)
    y = np.arange(n) % n_classes
    if string_labels:
        y = np.array(["a", "b", "c", "d"])[y]
    params = dict(
        solver=solver, batch_size=batch_size, conv_filters=conv_filters, batch_norm=batch_norm,
        hidden_layer_sizes=(5,), max_iter=2, random_state=seed,
        data_format="channels_first",  # shapes such as (n, 1, 8, 3) say nothing about their layout
    )  # fmt: skip
    if batch_norm and (batch_size == 1 or (batch_size == "auto" and n == 1)):
        with pytest.raises(ValueError, match="batch_size >= 2 or batch_norm=False"):
            CNNClassifier(**params).fit(X, y)  # batch norm on one sample: refused
        return
    first = CNNClassifier(**params).fit(X, y)
    proba = first.predict_proba(X)
    assert proba.shape == (n, n_classes) and proba.dtype == dtype
    assert np.isfinite(proba).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-5)
    assert set(first.predict(X)) <= set(y)
    second = CNNClassifier(**params).fit(X, y)
    np.testing.assert_array_equal(second.predict_proba(X), proba)
