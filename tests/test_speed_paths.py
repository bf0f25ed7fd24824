"""The paths users take: float64 and uint8 input (dtype policy), and every
core (thread count, results independent of it)."""

import contextlib
import pickle

import numpy as np
import pytest
from sklearn.datasets import load_digits

from skcnn import CNNClassifier, estimator, parallel
from skcnn.estimator import AUTO_FLOAT64_MAX_VALUES, _computation_dtype
from skcnn.trainer import DivergenceWarning


@pytest.fixture(scope="module")
def pixels():
    X, y = load_digits(return_X_y=True)
    return X[:300].astype(np.uint8), y[:300]  # pixel values 0..16


def test_auto_dtype_rule():
    small, large = np.zeros((10, 10)), np.zeros((AUTO_FLOAT64_MAX_VALUES // 100 + 1, 100))
    assert _computation_dtype(small, "auto") == np.float64
    assert _computation_dtype(large, "auto") == np.float32
    assert _computation_dtype(large.astype(np.float32), "auto") == np.float32
    for dtype in (np.uint8, np.int64, np.bool_, np.float16):
        assert _computation_dtype(np.zeros((3, 4), dtype=dtype), "auto") == np.float32, dtype
    assert _computation_dtype([[1.0, 2.0]], "auto") == np.float64  # a list: float64, as numpy reads it
    assert _computation_dtype(large, "float64") == np.float64
    assert _computation_dtype(small, "float32") == np.float32


def test_uint8_input_computes_in_float32_exactly_as_its_float32_values(pixels):
    X, y = pixels
    params = dict(max_iter=2, random_state=0, conv_filters=(4, 8), hidden_layer_sizes=(16,))
    as_uint8 = CNNClassifier(**params).fit(X, y)
    as_float32 = CNNClassifier(**params).fit(X.astype(np.float32), y)
    assert as_uint8.network_.dtype == np.float32
    assert as_uint8.loss_curve_ == as_float32.loss_curve_
    proba = as_uint8.predict_proba(X)
    assert proba.dtype == np.float64  # scikit-learn's convention for non-float32 input
    # the same float32 logits; only the softmax runs in float64
    np.testing.assert_allclose(proba, as_float32.predict_proba(X.astype(np.float32)), rtol=1e-5)
    np.testing.assert_array_equal(as_uint8.predict(X), as_float32.predict(X.astype(np.float32)))


def test_large_float64_input_computes_in_float32_and_returns_float64(pixels, monkeypatch):
    X, y = pixels
    X64 = X / 16.0
    monkeypatch.setattr(estimator, "AUTO_FLOAT64_MAX_VALUES", X64.size - 1)
    params = dict(max_iter=2, random_state=0, conv_filters=(4, 8), hidden_layer_sizes=(16,))
    auto = CNNClassifier(**params).fit(X64, y)
    as_float32 = CNNClassifier(**params).fit(X64.astype(np.float32), y)
    assert auto.network_.dtype == np.float32 and auto.loss_curve_ == as_float32.loss_curve_
    proba = auto.predict_proba(X64)
    assert proba.dtype == np.float64
    np.testing.assert_allclose(proba, as_float32.predict_proba(X64.astype(np.float32)), rtol=1e-6)
    forced = CNNClassifier(dtype="float64", **params).fit(X64, y)  # the user's choice wins
    assert forced.network_.dtype == np.float64


def test_partial_fit_streams_float64_batches_in_float32(pixels):
    # each call sees one batch (a few thousand values), not the stream's size
    X, y = pixels
    X64 = X / 16.0
    assert _computation_dtype(X64[:100], "auto", incremental=True) == np.float32
    params = dict(random_state=0, conv_filters=(4, 8), hidden_layer_sizes=(16,), shuffle=False)
    streamed, as_float32 = CNNClassifier(**params), CNNClassifier(**params)
    for start in range(0, len(X64), 100):
        batch = slice(start, start + 100)
        streamed.partial_fit(X64[batch], y[batch], classes=np.arange(10))
        as_float32.partial_fit(X64[batch].astype(np.float32), y[batch], classes=np.arange(10))
    assert streamed.network_.dtype == np.float32
    assert streamed.loss_curve_ == as_float32.loss_curve_  # the same float32 values: the same training
    proba = streamed.predict_proba(X64)
    assert proba.dtype == np.float64
    np.testing.assert_allclose(proba, as_float32.predict_proba(X64.astype(np.float32)), rtol=1e-5)
    # fit on the same batch keeps float64 (small data, exact), and dtype="float64" is obeyed
    assert CNNClassifier(max_iter=1, **params).fit(X64[:100], y[:100]).network_.dtype == np.float64
    forced = CNNClassifier(dtype="float64", **params).partial_fit(X64[:100], y[:100], classes=np.arange(10))
    assert forced.network_.dtype == np.float64


def test_partial_fit_reuses_its_training_replicas_and_trains_as_if_built_anew(pixels):
    # dropout streams, batch-norm statistics and the last, smaller batch: the
    # renewed replicas give the same training as replicas built for each call
    X, y = pixels
    X = X.astype(np.float32)
    params = dict(random_state=0, conv_filters=(4, 8), hidden_layer_sizes=(16,), batch_norm=True,
                  dropout=0.3, shuffle=False)  # fmt: skip
    reused, rebuilt = CNNClassifier(**params), CNNClassifier(**params)
    chunks = [slice(0, 100), slice(100, 200), slice(200, 237), slice(237, 300), slice(0, 100)]
    seen = []
    for chunk in chunks:
        reused.partial_fit(X[chunk], y[chunk], classes=np.arange(10))
        rebuilt.partial_fit(X[chunk], y[chunk], classes=np.arange(10))
        del rebuilt._parallel  # the next call builds its replicas anew
        seen.append(reused._parallel)
    assert seen[1] is seen[0] and seen[4] is not seen[2]  # kept while the batch size stays
    # a call that diverges is rolled back in the network, not in the replicas' batch-norm
    # statistics (their forward pass moved them): the next call must start from the network's
    for lr in (1e9, 1e-3):
        for model in (reused, rebuilt):
            with pytest.warns(DivergenceWarning) if lr > 1 else contextlib.nullcontext():
                model.set_params(learning_rate_init=lr).partial_fit(X[:200], y[:200])  # two steps
        del rebuilt._parallel
    assert reused.loss_curve_ == rebuilt.loss_curve_
    for (name, a), (_, b) in zip(reused.network_.named_arrays(), rebuilt.network_.named_arrays()):
        np.testing.assert_array_equal(a, b, err_msg=name)
    # not part of the model: a pickle leaves the replicas out, and goes on training the same
    copy = pickle.loads(pickle.dumps(reused))
    assert not hasattr(copy, "_parallel")
    reused.partial_fit(X[:100], y[:100])
    copy.partial_fit(X[:100], y[:100])
    np.testing.assert_array_equal(reused.predict_proba(X), copy.predict_proba(X))
    # fit starts over and lets them go
    assert not hasattr(reused.fit(X[:100], y[:100]), "_parallel")


def test_dtype_is_validated():
    with pytest.raises(ValueError, match="dtype must be 'auto', 'float32' or 'float64'"):
        CNNClassifier(dtype="float16").fit(np.zeros((4, 4)), [0, 1, 0, 1])


# -- every core ---------------------------------------------------------------------


def test_thread_count_follows_the_environment_variable(monkeypatch):
    monkeypatch.setenv(parallel.THREADS_ENV, "3")
    assert parallel.n_threads() == 3
    monkeypatch.setenv(parallel.THREADS_ENV, "0")
    with pytest.raises(ValueError, match="SKCNN_NUM_THREADS must be a whole number >= 1"):
        parallel.n_threads()
    monkeypatch.delenv(parallel.THREADS_ENV)
    cores = len(parallel.os.sched_getaffinity(0))
    assert 1 <= parallel.n_threads() <= cores


def _cgroup_tree(tmp_path, membership, files):
    """A fake /sys/fs/cgroup (``files``: relative path -> content) and /proc/self/cgroup."""
    root = tmp_path / "cgroup"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (tmp_path / "membership").write_text(membership)
    return dict(root=str(root), membership=str(tmp_path / "membership"))


@pytest.mark.parametrize(
    "membership, files, cpus",
    [
        # cgroup v2, the process in a nested cgroup with a quota of 1.5 CPUs (systemd CPUQuota=150%)
        ("0::/system.slice/job.service\n", {"system.slice/job.service/cpu.max": "150000 100000\n"}, 2),
        # a parent's smaller quota holds for its child
        ("0::/a/b\n", {"a/cpu.max": "100000 100000", "a/b/cpu.max": "400000 100000"}, 1),
        # no limit anywhere
        ("0::/a\n", {"a/cpu.max": "max 100000", "cpu.max": "max 100000"}, None),
        # a container with its own cgroup namespace: the process is at "/"
        ("0::/\n", {"cpu.max": "200000 100000"}, 2),
        # cgroup v1 (a Docker container without a namespace), cpu and cpuacct mounted together
        ("12:memory:/docker/x\n4:cpu,cpuacct:/docker/x\n",
         {"cpu,cpuacct/docker/x/cpu.cfs_quota_us": "300000", "cpu,cpuacct/docker/x/cpu.cfs_period_us": "100000"}, 3),
        ("4:cpu,cpuacct:/docker/x\n",
         {"cpu,cpuacct/docker/x/cpu.cfs_quota_us": "-1", "cpu,cpuacct/docker/x/cpu.cfs_period_us": "100000"}, None),
        # a hybrid system: v2's files under unified/
        ("0::/user.slice\n1:cpu:/\n", {"unified/user.slice/cpu.max": "50000 100000"}, 1),
        # nothing readable, or nonsense: no limit
        ("0::/a\n", {}, None),
        ("garbage", {"cpu.max": "lots 100000"}, None),
    ],
)  # fmt: skip
def test_thread_count_follows_the_cgroup_quota_of_the_process_own_cgroup(tmp_path, membership, files, cpus):
    assert parallel._cgroup_cpus(**_cgroup_tree(tmp_path, membership, files)) == cpus


def test_thread_count_takes_the_cgroup_quota(monkeypatch):
    monkeypatch.delenv(parallel.THREADS_ENV, raising=False)
    monkeypatch.setattr(parallel.os, "sched_getaffinity", lambda pid: set(range(64)))
    monkeypatch.setattr(parallel._BLAS, "outer_limit", lambda: 64)  # a 64-core host's BLAS
    monkeypatch.setattr(parallel, "_cgroup_cpus", lambda: 3)
    assert parallel.n_threads() == 3
    monkeypatch.setattr(parallel, "_cgroup_cpus", lambda: None)
    assert parallel.n_threads() == 64


def test_micro_batches_grow_with_the_batch_not_the_threads():
    np.testing.assert_array_equal(parallel.micro_batches(100), [0, 50, 100])
    np.testing.assert_array_equal(np.diff(parallel.micro_batches(400)), [50] * 8)
    for n in (150, 199, 1000):
        sizes = np.diff(parallel.micro_batches(n))
        assert sizes.min() >= parallel.MICRO_BATCH and sizes.max() < 2 * parallel.MICRO_BATCH


def test_optimizer_slices_follow_the_network_size_not_the_threads(monkeypatch):
    # a small network's step is one task (two threads on slices of it wait on the GIL)
    assert parallel.optimizer_parts(163_000) == 1
    assert parallel.optimizer_parts(870_000) == 870_000 // parallel.OPTIMIZER_PART_MIN > 1
    assert parallel.optimizer_parts(10**9) == parallel.OPTIMIZER_PARTS
    from skcnn.network import Network, PRESETS, preset_layers
    from skcnn.layers import Dense

    slices = {}
    for name in ("origin", "deep"):
        net = Network.from_layers(preset_layers(**PRESETS[name]) + [Dense(10)], (1, 28, 28), np.random.default_rng(0))
        for threads in ("1", "8"):
            monkeypatch.setenv(parallel.THREADS_ENV, threads)
            slices[name, threads] = parallel.DataParallel(net, 100, np.random.default_rng(0)).n_parts
    assert slices["origin", "1"] == slices["origin", "8"] == 1
    assert slices["deep", "1"] == slices["deep", "8"] > 1


def test_deep_preset_gives_identical_results_with_1_2_3_and_8_threads(pixels, monkeypatch):
    X, y = pixels
    # batches of 200: four micro-batches, more than some thread counts, fewer than others
    params = dict(architecture="deep", conv_filters=((4, 4), 8), hidden_layer_sizes=(16,), batch_size=200,
                  max_iter=2, random_state=0)  # fmt: skip
    results = {}
    for threads in (1, 2, 3, 8):
        monkeypatch.setenv(parallel.THREADS_ENV, str(threads))
        with parallel.record_threads() as seen:
            clf = CNNClassifier(**params).fit(X, y)
            proba = clf.predict_proba(X)
        # the threads really ran work (micro-batches, optimizer slices, prediction chunks)
        assert min(threads, 3) <= len(seen) <= threads, (threads, len(seen))
        results[threads] = clf.loss_curve_, proba
    for threads in (2, 3, 8):
        assert results[threads][0] == results[1][0]
        np.testing.assert_array_equal(results[threads][1], results[1][1])


def test_prediction_of_a_few_images_stays_in_the_calling_thread(monkeypatch):
    from skcnn import network
    from skcnn.layers import Dense
    from skcnn.network import PREDICT_MIN_CHUNK, PRESETS, Network, preset_layers

    monkeypatch.setenv(parallel.THREADS_ENV, "2")
    net = Network.from_layers(preset_layers(**PRESETS["origin"]) + [Dense(10)], (1, 28, 28), np.random.default_rng(0))
    x = np.random.default_rng(1).random((2 * PREDICT_MIN_CHUNK, 1, 28, 28), dtype=np.float32)
    chunks = []
    run_tasks = network.run_tasks

    def counted(pool, tasks):
        tasks = list(tasks)
        chunks.append(len(tasks))
        return run_tasks(pool, tasks)

    monkeypatch.setattr(network, "run_tasks", counted)
    for n in (1, 10, 2 * PREDICT_MIN_CHUNK - 1, 2 * PREDICT_MIN_CHUNK):
        logits = net.predict_logits(x[:n])
        # the same scores in one chunk or two (to float32 rounding: the BLAS blocks a product by its size)
        np.testing.assert_allclose(logits, net.forward(x[:n]), rtol=1e-5, atol=1e-5)
    # one chunk (run_tasks then works in the calling thread) below 2 x PREDICT_MIN_CHUNK images
    assert chunks == [1, 1, 1, 2]
