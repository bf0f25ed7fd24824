"""The accuracy techniques of issue #17: warm-up and cosine schedule, label
smoothing, an exponential moving average of the weights for prediction, and
the "resnet" preset, each as an estimator parameter."""

import math
import warnings

import joblib
import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning

from skcnn import CNNClassifier
from skcnn.layers import BatchNorm, Conv2D, Dense, MaxPool2D, ReLU
from skcnn.network import Network, WeightAverage
from skcnn.optimizers import Adam
from skcnn.trainer import Trainer, scheduled_rate


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X[:400].astype(np.float32), y[:400], X[1200:].astype(np.float32), y[1200:]


def small(**params):
    """A small stack that learns digits in a few epochs, with batch norm
    (whose running statistics the average must carry too)."""
    layers = [Conv2D(6, 3, padding="same", bias=False), BatchNorm(), ReLU(), MaxPool2D(2), Dense(32), ReLU()]
    params = {"layers": layers, "random_state": 0, "max_iter": 3, **params}
    return CNNClassifier(**params)


def fit_quietly(clf, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return clf.fit(*args, **kwargs)


# -- the learning-rate schedule --------------------------------------------------


def test_warmup_then_cosine_rate_curve():
    lr = 0.01
    assert scheduled_rate("cosine", 0.0, lr, warmup=0.2) == 0.0
    assert scheduled_rate("cosine", 0.1, lr, warmup=0.2) == pytest.approx(lr / 2)
    assert scheduled_rate("cosine", 0.2, lr, warmup=0.2) == pytest.approx(lr)  # the peak
    assert scheduled_rate("cosine", 0.6, lr, warmup=0.2) == pytest.approx(lr / 2)  # half-way down
    assert scheduled_rate("cosine", 1.0, lr, warmup=0.2) == pytest.approx(0.0, abs=1e-15)
    curve = [scheduled_rate("cosine", p, lr, warmup=0.2) for p in np.linspace(0, 1, 101)]
    peak = int(np.argmax(curve))
    assert peak == 20 and np.all(np.diff(curve[: peak + 1]) > 0) and np.all(np.diff(curve[peak:]) < 0)
    # without a warm-up: the cosine schedule as it always was
    for p in (0.0, 0.3, 0.75):
        assert scheduled_rate("cosine", p, lr) == lr * 0.5 * (1 + math.cos(math.pi * p))
    # constant: the warm-up, then flat
    assert scheduled_rate("constant", 0.05, lr, warmup=0.1) == pytest.approx(lr / 2)
    assert scheduled_rate("constant", 0.5, lr, warmup=0.1) == lr


class StepClock:
    """A clock that advances one second per optimizer step (Adam.parts is
    called once a step), so that a time budget is counted in steps; ``rates``
    records each step's learning rate."""

    def __init__(self, monkeypatch):
        self.now = 0.0
        self.rates = []
        original = Adam.parts

        def stepping(optimizer, *args, **kwargs):
            self.rates.append(optimizer.lr)
            self.now += 1.0
            return original(optimizer, *args, **kwargs)

        monkeypatch.setattr(Adam, "parts", stepping)
        monkeypatch.setattr(Trainer, "clock", staticmethod(lambda: self.now))


def test_each_training_step_takes_the_scheduled_rate(digits, monkeypatch):
    X, y, _, _ = digits
    rates = StepClock(monkeypatch).rates
    lr = 0.004
    clf = fit_quietly(
        small(learning_rate="cosine", warmup_fraction=0.5, learning_rate_init=lr, max_iter=2, batch_size=100),
        X, y,
    )  # fmt: skip
    # 4 steps an epoch, 8 in all: a warm-up step takes the rate at its end (never 0), then the cosine
    expected = [lr * k / 4 for k in (1, 2, 3, 4)] + [lr * 0.5 * (1 + math.cos(math.pi * k / 4)) for k in range(4)]
    np.testing.assert_allclose(rates, expected, rtol=1e-12)
    # partial_fit trains one epoch at the constant rate: no warm-up
    rates.clear()
    clf.partial_fit(X, y)
    assert rates == [lr] * 4


def test_max_time_drives_the_cosine_schedule_and_stops_training(digits, monkeypatch):
    X, y, _, _ = digits
    clock = StepClock(monkeypatch)
    lr = 0.004
    clf = small(learning_rate="cosine", learning_rate_init=lr, max_iter=100, max_time=6, batch_size=100)
    with pytest.warns(ConvergenceWarning, match=r"max_time=6 s ran out .* Raise max_time"):
        clf.fit(X, y)
    # 4 steps an epoch; the time share (k of 6 seconds) outpaces the epochs' (k of 400 steps):
    # the cosine reaches 0 as the 6 seconds run out, after the 6th step, in the second epoch
    expected = [lr * 0.5 * (1 + math.cos(math.pi * k / 6)) for k in range(6)]
    np.testing.assert_allclose(clock.rates, expected, rtol=1e-12)
    assert clf.n_iter_ == 2 and len(clf.loss_curve_) == 2 and clf.t_ == 600


def test_max_time_or_max_iter_whichever_runs_out_first(digits, monkeypatch):
    X, y, _, _ = digits
    clock = StepClock(monkeypatch)
    lr = 0.004
    # 2 epochs of 4 steps run out before 100 seconds: the epochs set the pace, as without max_time
    clf = small(learning_rate="cosine", learning_rate_init=lr, max_iter=2, max_time=100, batch_size=100)
    with pytest.warns(ConvergenceWarning, match=r"max_iter=2 epochs ran out"):
        clf.fit(X, y)
    np.testing.assert_allclose(clock.rates, [lr * 0.5 * (1 + math.cos(math.pi * k / 8)) for k in range(8)], rtol=1e-12)
    # a constant rate stays constant; the budget only stops training (3 steps: the first epoch's 4th never runs)
    clock.rates.clear()
    clf = small(learning_rate_init=lr, max_iter=100, max_time=3, batch_size=100)
    with pytest.warns(ConvergenceWarning, match="max_time=3 s"):
        clf.fit(X, y)
    assert clock.rates == [lr] * 3 and clf.n_iter_ == 1 and clf.t_ == 300


def test_max_time_on_the_real_clock_trains_at_least_one_batch(digits):
    X, y, X_test, _ = digits
    untrained = small(max_iter=1, max_time=1e-9, batch_size=100)
    with pytest.warns(ConvergenceWarning, match="max_time=1e-09 s ran out"):
        untrained.fit(X, y)
    assert untrained.n_iter_ == 1 and untrained.t_ == 100  # one batch: the budget was used up before it ended
    # partial_fit keeps to it too
    clf = small(max_time=1e-9, batch_size=100)
    clf.partial_fit(X, y, classes=np.unique(y))
    assert clf.t_ == 100
    # without a budget, the same parameters train whole epochs
    assert fit_quietly(small(max_iter=1, batch_size=100), X, y).t_ == 400


def test_max_time_is_validated(digits):
    X, y, _, _ = digits
    for bad in (0, -1.0, np.nan, np.inf, "60"):
        with pytest.raises(ValueError, match=r"max_time must be None or a finite float > 0"):
            small(max_time=bad).fit(X, y)


def test_warmup_with_the_adaptive_schedule_is_refused(digits):
    X, y, _, _ = digits
    with pytest.raises(ValueError, match="warmup_fraction works with"):
        small(learning_rate="adaptive", warmup_fraction=0.1).fit(X, y)
    with pytest.raises(ValueError, match="warmup_fraction must be a float in"):
        small(warmup_fraction=1.0).fit(X, y)


# -- label smoothing --------------------------------------------------------------


def test_label_smoothing_trains_towards_the_smoothed_target(digits):
    X, y, X_test, y_test = digits
    eps, k = 0.3, 10
    # the smallest possible loss: the entropy of the smoothed target
    top, rest = 1 - eps + eps / k, eps / k
    floor = -(top * math.log(top) + (k - 1) * rest * math.log(rest))
    plain = fit_quietly(small(max_iter=25, learning_rate_init=0.01), X, y)
    smoothed = fit_quietly(small(max_iter=25, learning_rate_init=0.01, label_smoothing=eps), X, y)
    assert min(plain.loss_curve_) < floor < min(smoothed.loss_curve_)  # both training threads smooth
    assert smoothed.score(X_test, y_test) > 0.6
    # less confident: the smoothed model's top probability stays near 1 - eps + eps / k
    assert smoothed.predict_proba(X_test).max(axis=1).mean() < plain.predict_proba(X_test).max(axis=1).mean()
    with pytest.raises(ValueError, match="label_smoothing must be a float in"):
        small(label_smoothing=-0.1).fit(X, y)


# -- the average of the weights ---------------------------------------------------------


def test_weight_average_follows_the_exponential_moving_average_by_hand():
    rng = np.random.default_rng(0)
    net = Network.from_layers([Dense(3), BatchNorm(), Dense(2)], (1, 1, 4), rng, np.float64)
    average = WeightAverage(net, decay=0.5)
    expected = net.state_dict()
    for t in range(4):
        for _, array in net.named_arrays():  # a "training step": params and buffers move
            array += rng.standard_normal(array.shape)
        d = min(0.5, (1 + t) / (10 + t))
        expected = {k: d * v + (1 - d) * net.state_dict()[k] for k, v in expected.items()}
        average.update(net)
    assert average.n_updates == 4
    got = average.network.state_dict()
    assert any("running_mean" in k for k in got)  # batch-norm statistics are averaged too
    for k in expected:
        np.testing.assert_allclose(got[k], expected[k], rtol=1e-12)
    # the average is its own copy: the trained network's arrays are not touched
    for (_, a), (_, b) in zip(average.network.named_arrays(), net.named_arrays(), strict=True):
        assert not np.shares_memory(a, b)


@pytest.fixture(scope="module")
def averaged(digits):
    X, y, _, _ = digits
    return fit_quietly(small(ema_decay=0.9, max_iter=6, learning_rate_init=0.01), X, y)


def test_prediction_uses_the_averaged_weights(averaged, digits):
    X, y, X_test, y_test = digits
    raw = averaged.network_.state_dict()
    avg = averaged.weight_average_.network.state_dict()
    assert raw.keys() == avg.keys()
    assert max(np.abs(raw[k] - avg[k]).max() for k in raw) > 1e-3  # the average is not the last step
    assert averaged.weight_average_.n_updates == 6 * 4  # 6 epochs of 4 steps
    want = averaged.weight_average_.network.predict_logits(averaged._validate_input(X_test, reset=False))
    np.testing.assert_allclose(averaged.predict_log_proba(X_test), want - np.log(np.exp(want).sum(1, keepdims=True)), atol=1e-5)
    raw_logits = averaged.network_.predict_logits(averaged._validate_input(X_test, reset=False))
    assert not np.allclose(raw_logits, want)
    assert averaged.score(X_test, y_test) > 0.7


def test_the_average_round_trips_through_parameter_files_and_joblib(averaged, digits, tmp_path):
    X, y, X_test, _ = digits
    path = tmp_path / "ema.npz"
    averaged.save_params(path)
    loaded = CNNClassifier.from_params_file(path)
    assert loaded.ema_decay == 0.9
    np.testing.assert_array_equal(loaded.predict_proba(X_test), averaged.predict_proba(X_test))
    assert loaded.weight_average_.n_updates == averaged.weight_average_.n_updates
    # load_params adopts the file's average whatever the estimator's ema_decay
    plain = small().load_params(path)
    np.testing.assert_array_equal(plain.predict(X_test), averaged.predict(X_test))
    joblib.dump(averaged, tmp_path / "ema.joblib")
    np.testing.assert_array_equal(joblib.load(tmp_path / "ema.joblib").predict_proba(X_test), averaged.predict_proba(X_test))
    # a model without an average writes no average
    no_average = fit_quietly(small(max_iter=1), X, y)
    no_average.save_params(tmp_path / "plain.npz")
    assert CNNClassifier.from_params_file(tmp_path / "plain.npz").weight_average_ is None


def test_a_file_with_a_damaged_average_is_refused(averaged, tmp_path):
    path = tmp_path / "ema.npz"
    averaged.save_params(path)
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    del arrays[next(k for k in arrays if k.startswith("average."))]
    np.savez(tmp_path / "damaged.npz", **arrays)
    with pytest.raises(ValueError, match="missing"):
        CNNClassifier.from_params_file(tmp_path / "damaged.npz")


def test_warm_start_and_partial_fit_continue_the_average_and_fit_restarts_it(digits):
    X, y, _, _ = digits
    clf = fit_quietly(small(ema_decay=0.9, max_iter=1, warm_start=True), X, y)
    first = clf.weight_average_
    assert first.n_updates == 4
    fit_quietly(clf, X, y)  # warm start: the same average goes on
    assert clf.weight_average_ is first and first.n_updates == 8
    clf.partial_fit(X, y)
    assert clf.weight_average_ is first and first.n_updates == 12
    clf.set_params(ema_decay=0.5).partial_fit(X, y)  # a new decay applies from now on
    assert clf.weight_average_.decay == 0.5 and clf.weight_average_.n_updates == 16
    assert first.decay == 0.9  # (a copy took the new decay, sharing the averaged network)
    assert clf.weight_average_.network is first.network
    clf.set_params(warm_start=False)
    fit_quietly(clf, X, y)  # a fresh fit: a fresh average
    assert clf.weight_average_.network is not first.network and clf.weight_average_.n_updates == 4
    clf.set_params(ema_decay=0.0, warm_start=True)
    fit_quietly(clf, X, y)  # switched off: prediction uses the trained weights again
    assert clf.weight_average_ is None
    # a rejected call changes nothing
    clf.set_params(ema_decay=0.9)
    fit_quietly(clf, X, y)
    before = clf.weight_average_
    with pytest.raises(ValueError):
        clf.partial_fit(X[:, :10], y)
    assert clf.weight_average_ is before and before.n_updates == 4
    with pytest.raises(ValueError, match="batch of one"):  # refused after the average was set up
        clf.set_params(ema_decay=0.5, batch_size=1).partial_fit(X, y)
    assert clf.weight_average_ is before and before.decay == 0.9 and before.n_updates == 4


def test_early_stopping_scores_and_keeps_the_average(digits):
    X, y, X_test, y_test = digits
    clf = fit_quietly(small(ema_decay=0.8, early_stopping=True, max_iter=6, n_iter_no_change=2), X, y)
    assert clf.weight_average_ is not None
    assert len(clf.validation_scores_) == clf.n_iter_
    assert clf.score(X_test, y_test) > 0.3


# -- the resnet preset ------------------------------------------------------------------


def test_resnet_preset_learns_and_reads_back_as_the_preset(digits, tmp_path):
    X, y, X_test, y_test = digits
    params = dict(conv_filters=(8, 16), max_iter=10, learning_rate_init=0.01, batch_size=50, random_state=0)
    clf = fit_quietly(CNNClassifier(architecture="resnet", **params), X, y)
    kinds = [type(layer).__name__ for layer in clf.network_.layers]
    assert kinds.count("Residual") == 2 and "GlobalAvgPool2D" in kinds and "Flatten" not in kinds
    assert clf.loss_curve_[-1] < 0.2 * clf.loss_curve_[0]
    assert clf.score(X_test, y_test) > 0.75
    full = fit_quietly(CNNClassifier(architecture="resnet", max_iter=1, random_state=0), X[:64], y[:64])
    full.save_params(tmp_path / "resnet.npz")
    loaded = CNNClassifier.from_params_file(tmp_path / "resnet.npz")
    assert loaded.architecture == "resnet" and loaded.layers is None
    np.testing.assert_array_equal(loaded.predict_proba(X_test), full.predict_proba(X_test))


# -- recipes ------------------------------------------------------------------------


def test_from_recipe_sets_every_parameter_of_the_recipe_and_defaults_elsewhere():
    from skcnn.estimator import RECIPES

    recipe = RECIPES["fashion-best"]
    clf = CNNClassifier.from_recipe("fashion-best")
    params, defaults = clf.get_params(), CNNClassifier().get_params()
    assert {name: params[name] for name in recipe} == recipe
    assert {k: v for k, v in params.items() if k not in recipe} == {k: v for k, v in defaults.items() if k not in recipe}
    # every value of the recipe differs from the default: none is a no-op
    assert all(defaults[name] != value for name, value in recipe.items())
    # the returned estimator holds the values as if typed out: clone keeps them
    from sklearn.base import clone

    assert clone(clf).get_params() == params


def test_from_recipe_params_override_the_recipe_and_the_dict_is_not_changed():
    from skcnn.estimator import RECIPES

    before = dict(RECIPES["fashion-best"])
    clf = CNNClassifier.from_recipe("fashion-best", max_iter=3, learning_rate_init=0.05, random_state=7)
    assert (clf.max_iter, clf.learning_rate_init, clf.random_state, clf.solver) == (3, 0.05, 7, "nesterov")
    clf.set_params(max_iter=4)
    assert RECIPES["fashion-best"] == before


@pytest.mark.parametrize("name", ["fashion", "Fashion-Best", "", None, 3])
def test_from_recipe_refuses_an_unknown_recipe_naming_the_known_ones(name):
    with pytest.raises(ValueError, match=r"name must be one of \['fashion-best'\]"):
        CNNClassifier.from_recipe(name)


def test_from_recipe_refuses_an_unknown_parameter():
    with pytest.raises(TypeError, match="learning_rate_int"):
        CNNClassifier.from_recipe("fashion-best", learning_rate_int=0.1)


def test_the_fashion_best_recipe_learns_and_its_file_predicts_with_its_test_time_settings(digits, tmp_path):
    X, y, X_test, y_test = digits
    clf = fit_quietly(
        CNNClassifier.from_recipe("fashion-best", max_iter=15, learning_rate_init=0.1, random_state=0), X, y
    )
    kinds = [type(layer).__name__ for layer in clf.network_.layers]
    assert kinds.count("Conv2D") == 4 and "BatchNorm" in kinds and "Dropout" in kinds  # the deep preset
    assert clf.score(X_test, y_test) > 0.8
    clf.save_params(tmp_path / "best.npz")
    loaded = CNNClassifier.from_params_file(tmp_path / "best.npz")
    assert (loaded.architecture, loaded.test_time_flips, loaded.test_time_shifts) == ("deep", True, 1)
    np.testing.assert_array_equal(loaded.predict_proba(X_test), clf.predict_proba(X_test))
    # and the ten test-time views are in use: one pass predicts differently
    one_pass = CNNClassifier.from_params_file(tmp_path / "best.npz", test_time_flips=False, test_time_shifts=0)
    assert not np.allclose(one_pass.predict_proba(X_test), clf.predict_proba(X_test))
