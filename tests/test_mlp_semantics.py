"""Parameters shared with MLPClassifier mean what they mean there, and training
never fails silently (issue #13). Each test names the input that failed."""

import copy
import math
import os
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import recall_score
from sklearn.neural_network import MLPClassifier
from sklearn.utils.class_weight import compute_sample_weight
from threadpoolctl import threadpool_info, threadpool_limits

from skcnn import CNNClassifier
from skcnn.layers import BatchNorm
from skcnn.parallel import (
    MIN_MICRO_BATCH,
    micro_batches,
    n_threads,
    record_threads,
    run_tasks,
    single_threaded_blas,
    worker_pool,
)
from skcnn.trainer import DIVERGENCE_FACTOR, DivergenceWarning

@pytest.fixture(scope="module")
def fitted(digits_split):
    X_train, _, y_train, _ = digits_split
    return CNNClassifier(max_iter=2, random_state=0).fit(X_train[:400], y_train[:400])


def recorded(call):
    """Run ``call`` and return every warning it gave (none filtered out)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call()
    return caught


def only(caught, category):
    found = [w for w in caught if issubclass(w.category, category)]
    assert found, f"no {category.__name__} among {[str(w.message) for w in caught]}"
    return found


# -- 1. alpha ------------------------------------------------------------------


def weights(estimator):
    """The arrays alpha penalises: CNN weight matrices and kernels, MLP coefs_."""
    if isinstance(estimator, MLPClassifier):
        return [w.copy() for w in estimator.coefs_]
    return [p.copy() for name, p in estimator.network_.named_params() if name.endswith(".W")]


def decay_of_one_sgd_step(estimator, X, y, sample_weight, alpha):
    """One full-batch SGD step from the same weights with alpha and without:
    the difference is the step's weight decay. Returns (decay, W0) per array."""
    estimator.fit(X, y, sample_weight=sample_weight)  # warm_start: one epoch = one step
    w0 = weights(estimator)
    with_alpha, without = copy.deepcopy(estimator), copy.deepcopy(estimator)
    with_alpha.set_params(alpha=alpha).fit(X, y, sample_weight=sample_weight)
    without.fit(X, y, sample_weight=sample_weight)
    return [b - a for a, b in zip(weights(with_alpha), weights(without))], w0


@pytest.mark.parametrize("weighted", [False, True])
def test_alpha_decays_lr_alpha_w_over_the_batch_weight_like_mlp(digits_split, weighted):
    # skcnn added alpha * W (200x MLP's on a batch of 200 digits)
    X_train, _, y_train, _ = digits_split
    X, y = X_train[:200].astype(np.float64), y_train[:200]
    sw = np.linspace(0.5, 2.0, 200) if weighted else None
    n = 200 if sw is None else sw.sum()
    lr, alpha = 0.1, 3.0
    cnn = CNNClassifier(solver="sgd", learning_rate_init=lr, batch_size=200, max_iter=1, warm_start=True, random_state=0)
    mlp = MLPClassifier(
        hidden_layer_sizes=(20,), solver="sgd", momentum=0.0, learning_rate_init=lr, batch_size=200,
        max_iter=1, warm_start=True, shuffle=False, alpha=0.0, random_state=0,
    )  # fmt: skip
    for estimator in (cnn, mlp):
        decay, w0 = decay_of_one_sgd_step(estimator, X, y, sw, alpha)
        for d, w in zip(decay, w0):
            np.testing.assert_allclose(d, lr * alpha * w / n, rtol=1e-6, atol=1e-12)


def test_alpha_one_still_learns_digits(digits_split):
    # scored 0.556 (MLPClassifier(alpha=1.0): 0.97)
    X_train, X_test, y_train, y_test = digits_split
    clf = CNNClassifier(alpha=1.0, random_state=0).fit(X_train, y_train)
    assert clf.score(X_test, y_test) >= 0.9


def test_loss_curve_includes_the_l2_penalty(digits_split):
    # as MLP's loss_curve_: mean loss + 0.5 * alpha * ||W||^2 / n per batch
    X_train, _, y_train, _ = digits_split
    X, y = X_train[:150].astype(np.float64), y_train[:150]
    base = CNNClassifier(batch_size=150, max_iter=1, warm_start=True, random_state=0).fit(X, y)
    w0 = weights(base)
    with_alpha, without = copy.deepcopy(base), copy.deepcopy(base)
    with_alpha.set_params(alpha=2.0).fit(X, y)
    without.fit(X, y)
    penalty = 0.5 * 2.0 * sum(float(np.sum(w * w)) for w in w0) / 150
    assert with_alpha.loss_curve_[-1] - without.loss_curve_[-1] == pytest.approx(penalty, rel=1e-9)


# -- 2. ConvergenceWarning -------------------------------------------------------


@pytest.mark.parametrize("early_stopping", [False, True])
def test_max_iter_reached_before_converging_warns_like_mlp(digits_split, early_stopping):
    X_train, _, y_train, _ = digits_split
    clf = CNNClassifier(max_iter=2, early_stopping=early_stopping, random_state=0)
    caught = recorded(lambda: clf.fit(X_train[:300], y_train[:300]))
    (warning,) = only(caught, ConvergenceWarning)
    assert "max_iter=2" in str(warning.message)
    assert warning.filename == __file__  # 7: points at the caller of fit


def test_no_convergence_warning_when_the_stopping_rule_fires_or_for_partial_fit(digits_split):
    X_train, _, y_train, _ = digits_split
    X, y = X_train[:300], y_train[:300]
    clf = CNNClassifier(max_iter=30, tol=10.0, n_iter_no_change=1, random_state=0)
    caught = recorded(lambda: clf.fit(X, y))
    assert clf.n_iter_ == 3  # stopped on the rule (no improvement of 10 in epochs 2 and 3)
    caught += recorded(lambda: clf.partial_fit(X, y))
    assert not [w for w in caught if issubclass(w.category, ConvergenceWarning)]


# -- 3. MLP-style values -------------------------------------------------------------


def test_verbose_accepts_bools_as_mlp_does(digits_split, capsys):
    X_train, _, y_train, _ = digits_split
    CNNClassifier(max_iter=1, verbose=False).fit(X_train[:100], y_train[:100])
    assert capsys.readouterr().out == ""
    CNNClassifier(max_iter=2, verbose=True).fit(X_train[:100], y_train[:100])
    out, err = capsys.readouterr()
    assert [line.startswith("Epoch") for line in out.splitlines()] == [True, True]
    assert err == ""  # True is 1: no progress bar


@pytest.mark.parametrize("sizes", [50, [50], np.array([50])])
def test_hidden_layer_sizes_accepts_an_int_and_array_likes_as_mlp_does(digits_split, sizes):
    X_train, X_test, y_train, _ = digits_split
    clf = CNNClassifier(hidden_layer_sizes=sizes, max_iter=1, random_state=0).fit(X_train[:100], y_train[:100])
    ref = CNNClassifier(hidden_layer_sizes=(50,), max_iter=1, random_state=0).fit(X_train[:100], y_train[:100])
    np.testing.assert_array_equal(clf.predict_proba(X_test), ref.predict_proba(X_test))


# -- 4. finite divergence ---------------------------------------------------------------


@pytest.mark.parametrize(
    "params", [dict(learning_rate_init=10.0), dict(solver="sgd", learning_rate_init=1000.0)]
)
def test_finite_divergence_is_caught_and_the_last_good_weights_kept(digits_split, params):
    # ended at a loss of ~1e8 (Adam) or ~460 (SGD) and 10% accuracy, silently
    X_train, X_test, y_train, _ = digits_split
    clf = CNNClassifier(max_iter=5, random_state=0, **params)

    def fit_and_predict():
        clf.fit(X_train[:300], y_train[:300])
        clf.predict_proba(X_test)

    caught = recorded(fit_and_predict)
    (warning,) = only(caught, DivergenceWarning)
    assert "learning_rate_init" in str(warning.message) and warning.filename == __file__
    assert "the model is untrained" in str(warning.message)  # said plainly when epoch 1 diverged
    assert not [w for w in caught if issubclass(w.category, (RuntimeWarning, ConvergenceWarning))]
    assert clf.n_iter_ == 0 and clf.loss_curve_ == []  # epoch 1 diverged: its start is kept
    assert clf._optimizer.t == 0  # and so is the optimizer's state
    assert max(float(np.abs(p).max()) for p in clf.network_.params()) < 10  # initial weights
    assert np.isfinite(clf.predict_proba(X_test)).all()


def test_the_divergence_rule_stays_quiet_on_healthy_training(digits_split):
    # the first epoch of a healthy run, aggressive but sound rates, early stopping
    X_train, _, y_train, _ = digits_split
    X, y = X_train[:600], y_train[:600]
    runs = [
        dict(),
        dict(solver="sgd", learning_rate_init=0.3),
        dict(learning_rate_init=0.03),
        dict(early_stopping=True, n_iter_no_change=2),
    ]
    for params in runs:
        clf = CNNClassifier(max_iter=3, random_state=0, **params)
        caught = recorded(lambda: clf.fit(X, y))
        assert not [w for w in caught if issubclass(w.category, DivergenceWarning)], params
        assert clf.n_iter_ >= 1 and clf.loss_curve_[0] < DIVERGENCE_FACTOR * math.log(10) / 2, params


# -- 5. batch norm on tiny batches ------------------------------------------------------


def test_micro_batches_depend_on_the_batch_size_only_and_are_never_tiny():
    np.testing.assert_array_equal(micro_batches(100), [0, 50, 100])  # the default, unchanged
    np.testing.assert_array_equal(micro_batches(2), [0, 2])
    np.testing.assert_array_equal(micro_batches(2 * MIN_MICRO_BATCH - 1), [0, 2 * MIN_MICRO_BATCH - 1])
    np.testing.assert_array_equal(micro_batches(2 * MIN_MICRO_BATCH), [0, MIN_MICRO_BATCH, 2 * MIN_MICRO_BATCH])
    for n in range(1, 300):
        sizes = np.diff(micro_batches(n))
        assert sizes.sum() == n and (sizes.min() >= MIN_MICRO_BATCH or len(sizes) == 1)
    with threadpool_limits(1, "blas"):  # one thread: the same cut
        np.testing.assert_array_equal(micro_batches(100), [0, 50, 100])


def test_batch_norm_learns_with_batches_of_two(digits_split):
    # was split into two one-sample halves: loss stayed at ln 10, running var 6.6e-42
    X_train, X_test, y_train, y_test = digits_split
    clf = CNNClassifier(batch_norm=True, batch_size=2, max_iter=3, random_state=0).fit(X_train[:600], y_train[:600])
    assert clf.loss_curve_[-1] < 0.75 * math.log(10)
    assert clf.score(X_test, y_test) > 0.5  # without batch norm: ~0.88; chance: 0.1
    for layer in clf.network_.layers:
        if isinstance(layer, BatchNorm):
            assert layer.buffers["running_var"].min() > 1e-2


def test_batch_norm_refuses_batches_of_one_before_training(digits_split):
    X_train, _, y_train, _ = digits_split
    clf = CNNClassifier(batch_norm=True, batch_size=1, max_iter=1)
    with pytest.raises(ValueError, match="batch_size >= 2 or batch_norm=False"):
        clf.fit(X_train[:20], y_train[:20])
    assert not hasattr(clf, "network_")
    CNNClassifier(batch_size=1, max_iter=1).fit(X_train[:20], y_train[:20])  # fine without


def test_a_last_batch_of_one_sample_barely_moves_the_running_statistics(digits_split):
    # 129 samples in batches of 64: the last batch, one sample, has variance 0;
    # it used to pull running_var 10% of the way to 0, as much as a full batch
    X_train, _, y_train, _ = digits_split
    params = dict(hidden_layer_sizes=(10,), batch_norm=True, batch_size=64, shuffle=False, max_iter=1, random_state=0)
    full = CNNClassifier(**params).fit(X_train[:128], y_train[:128])
    plus_one = CNNClassifier(**params).fit(X_train[:129], y_train[:129])
    dense_bn = [i for i, layer in enumerate(full.network_.layers) if isinstance(layer, BatchNorm)][-1]
    before = full.network_.layers[dense_bn].buffers["running_var"]
    after = plus_one.network_.layers[dense_bn].buffers["running_var"]
    momentum = full.network_.layers[dense_bn].momentum
    # (rtol: the 129th sample also shifts the input scaling a little)
    np.testing.assert_allclose(after / before, 1 - momentum / 64, rtol=1e-3)  # not 1 - momentum


# -- 6. BLAS limits across threads --------------------------------------------------------


def blas_limits():
    return [info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"]


@pytest.fixture
def two_blas_threads():
    # (not set with threadpool_limits here: its thread would own the limits)
    before = blas_limits()
    if not before or max(before) < 2:
        pytest.skip("BLAS runs one thread here: a limit of 1 left behind would not show")
    yield before
    assert blas_limits() == before


def test_overlapping_calls_restore_the_blas_limits_in_any_order(two_blas_threads):
    # A enters, B enters, A leaves, B leaves: B used to restore A's limit of 1
    a_inside, b_inside, a_left = threading.Event(), threading.Event(), threading.Event()

    def a():
        with worker_pool():
            a_inside.set()
            assert b_inside.wait(10)
        a_left.set()

    def b():
        assert a_inside.wait(10)
        with worker_pool():
            b_inside.set()
            assert a_left.wait(10)
            assert set(blas_limits()) == {1}  # still held for B

    threads = [threading.Thread(target=a), threading.Thread(target=b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert a_left.is_set() and b_inside.is_set()
    assert blas_limits() == two_blas_threads


def test_concurrent_predict_and_fit_leave_the_blas_limits_as_they_were(fitted, digits_split, two_blas_threads):
    # predict_proba in two threads at once left BLAS at one thread in 9 trials of 10
    X_train, X_test, y_train, _ = digits_split
    X_big = np.repeat(X_test, 8, axis=0)

    def after_the_other_entered(call):
        deadline = time.monotonic() + 10
        while blas_limits() == two_blas_threads and time.monotonic() < deadline:
            time.sleep(0.0005)
        return call()

    for second in (
        lambda: fitted.predict_proba(np.r_[X_big, X_big]),  # enters later, leaves later
        lambda: CNNClassifier(max_iter=2, random_state=0).fit(X_train, y_train),
    ):
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(fitted.predict_proba, X_big)
            later = pool.submit(after_the_other_entered, second)
            first.result(), later.result()
        assert blas_limits() == two_blas_threads


def test_a_call_beside_another_still_uses_the_processes_threads(two_blas_threads, monkeypatch):
    monkeypatch.delenv("SKCNN_NUM_THREADS", raising=False)  # the count found, not the one set
    outside = n_threads()
    assert outside >= 2  # (the fixture skips machines where BLAS runs one thread)
    with single_threaded_blas():
        assert set(blas_limits()) == {1}
        assert n_threads() == outside
    assert blas_limits() == two_blas_threads


def test_the_users_own_limits_still_work_after_a_call_in_a_living_thread(two_blas_threads):
    # OpenBLAS's limit may be changed by one thread at a time (threadpoolctl >= 3.8
    # silently ignores the others): a thread that held it and is still alive must
    # not keep that right once skcnn is done with it
    done, finish = threading.Event(), threading.Event()

    def worker():
        with single_threaded_blas():
            assert set(blas_limits()) == {1}
        done.set()
        finish.wait(10)  # alive while the main thread sets its own limits

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        assert done.wait(10)
        assert blas_limits() == two_blas_threads
        with threadpool_limits(limits=1, user_api="blas"):
            assert set(blas_limits()) == {1}
    finally:
        finish.set()
        thread.join(10)
    assert blas_limits() == two_blas_threads


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_a_process_forked_during_a_call_gets_its_blas_threads_back(two_blas_threads, monkeypatch):
    monkeypatch.setenv("SKCNN_NUM_THREADS", "2")
    with worker_pool() as pool:  # the kept thread pool exists before the fork
        run_tasks(pool, [lambda: None, lambda: None])
    with single_threaded_blas():
        assert set(blas_limits()) == {1}
        pid = os.fork()
        if pid == 0:  # the child: report through the exit code, never return into pytest
            code = 1
            try:
                ok = blas_limits() == two_blas_threads
                with single_threaded_blas():  # a call of its own still lowers and restores
                    ok = ok and set(blas_limits()) == {1}
                with record_threads() as seen, worker_pool() as pool:  # and has helper threads of its own
                    run_tasks(pool, [lambda: time.sleep(0.2), lambda: time.sleep(0.2)])
                ok = ok and len(seen) == 2
                code = 0 if ok and blas_limits() == two_blas_threads else 1
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert set(blas_limits()) == {1}  # the parent's call still holds its limit
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_call_does_not_wait_for_helper_threads_busy_with_another_call(monkeypatch):
    # the helper threads are kept for the process and shared by all calls: a
    # helper that another call keeps busy is not waited for (the calling thread
    # does the work; the helper's turn is cancelled)
    monkeypatch.setenv("SKCNN_NUM_THREADS", "2")  # one helper thread
    release, blocking = threading.Event(), threading.Event()

    def busy():
        blocking.set()
        release.wait(30)

    def other_call():
        with worker_pool() as pool:
            run_tasks(pool, [busy, busy])  # one in the calling thread, one in the helper

    first = threading.Thread(target=other_call)
    first.start()
    try:
        assert blocking.wait(10)
        with worker_pool() as pool:
            results = []
            second = threading.Thread(target=lambda: results.extend(run_tasks(pool, [lambda: 1, lambda: 2])))
            second.start()
            second.join(10)
        assert not second.is_alive() and results == [1, 2]
    finally:
        release.set()
        first.join(10)


# -- 7. warnings point at the caller ------------------------------------------------------


def test_batch_size_larger_than_the_data_warns_at_the_caller(digits_split):
    X_train, _, y_train, _ = digits_split
    caught = recorded(lambda: CNNClassifier(batch_size=500, max_iter=1).fit(X_train[:50], y_train[:50]))
    (warning,) = [w for w in caught if "batch_size=500" in str(w.message)]
    assert warning.filename == __file__


# -- class_weight --------------------------------------------------------------------------


def test_class_weight_dict_equals_the_matching_sample_weights(digits_split):
    X_train, X_test, y_train, _ = digits_split
    X, y = X_train[:200], y_train[:200]
    class_weight = {c: 1.0 + c / 3 for c in range(10)}
    sw = np.linspace(0.5, 1.5, 200)
    by_class = CNNClassifier(class_weight=class_weight, max_iter=2, random_state=0).fit(X, y, sample_weight=sw)
    by_sample = CNNClassifier(max_iter=2, random_state=0).fit(X, y, sample_weight=sw * (1.0 + y / 3))
    np.testing.assert_array_equal(by_class.predict_proba(X_test), by_sample.predict_proba(X_test))
    np.testing.assert_array_equal(by_class.class_weight_, [class_weight[c] for c in range(10)])


def test_balanced_equals_compute_sample_weight_and_raises_a_rare_class_recall(digits_split):
    X_train, X_test, y_train, y_test = digits_split
    keep = np.r_[np.flatnonzero(y_train != 8)[:500], np.flatnonzero(y_train == 8)[:6]]  # 6 eights
    X, y = X_train[keep], y_train[keep]
    plain = CNNClassifier(max_iter=10, random_state=0).fit(X, y)
    balanced = CNNClassifier(class_weight="balanced", max_iter=10, random_state=0).fit(X, y)
    recall = [recall_score(y_test, m.predict(X_test), labels=[8], average=None)[0] for m in (plain, balanced)]
    assert recall[1] > recall[0] + 0.2
    np.testing.assert_allclose(balanced.class_weight_[8], len(y) / (10 * 6))
    by_sample = CNNClassifier(max_iter=10, random_state=0).fit(X, y, sample_weight=compute_sample_weight("balanced", y))
    np.testing.assert_array_equal(balanced.predict_proba(X_test[:50]), by_sample.predict_proba(X_test[:50]))


def test_class_weight_with_early_stopping_weighs_training_and_validation(digits_split):
    X_train, X_test, y_train, _ = digits_split
    X, y = X_train[:300], y_train[:300]
    class_weight = {0: 5.0, 1: 0.2}
    params = dict(early_stopping=True, max_iter=3, random_state=0)
    a = CNNClassifier(class_weight=class_weight, **params).fit(X, y)
    b = CNNClassifier(**params).fit(X, y, sample_weight=np.where(y == 0, 5.0, np.where(y == 1, 0.2, 1.0)))
    assert a.validation_scores_ == b.validation_scores_
    np.testing.assert_array_equal(a.predict_proba(X_test), b.predict_proba(X_test))


def test_class_weight_in_partial_fit_comes_from_the_first_call(digits_split):
    X_train, _, y_train, _ = digits_split
    classes = np.arange(10)
    first, second = slice(0, 300), slice(300, 400)
    clf = CNNClassifier(class_weight="balanced", random_state=0)
    clf.partial_fit(X_train[first], y_train[first], classes=classes)
    weights = compute_sample_weight("balanced", y_train[first])
    np.testing.assert_allclose(clf.class_weight_[y_train[first]], weights)
    kept = clf.class_weight_.copy()
    clf.partial_fit(X_train[second], y_train[second])
    np.testing.assert_array_equal(clf.class_weight_, kept)
    # equal to passing those weights as sample_weight on both calls
    ref = CNNClassifier(random_state=0)
    ref.partial_fit(X_train[first], y_train[first], classes=classes, sample_weight=kept[y_train[first]])
    ref.partial_fit(X_train[second], y_train[second], sample_weight=kept[y_train[second]])
    np.testing.assert_array_equal(clf.predict_proba(X_train[:50]), ref.predict_proba(X_train[:50]))
    # a class missing from the first call has no "balanced" weight
    only_zeros = y_train == 0
    with pytest.raises(ValueError, match="have no samples"):
        CNNClassifier(class_weight="balanced").partial_fit(X_train[only_zeros], y_train[only_zeros], classes=classes)


def test_partial_fit_refuses_early_stopping_as_mlp_does(digits_split):
    X_train, _, y_train, _ = digits_split
    with pytest.raises(ValueError, match="early_stopping"):
        CNNClassifier(early_stopping=True).partial_fit(X_train[:50], y_train[:50], classes=np.arange(10))
