"""On a Dask cluster: GridSearchCV through Dask's joblib backend, training
block by block with dask-ml's Incremental, predicting with ParallelPostFit,
and what travels between processes."""

import pickle
import sys

import joblib
import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV

from skcnn import CNNClassifier
from skcnn.parallel import n_threads

pytest.importorskip("dask.distributed")


def search(n_jobs):
    return GridSearchCV(
        CNNClassifier(max_iter=3, random_state=0),
        {"learning_rate_init": [1e-4, 1e-3, 1e-2]},
        cv=3,
        n_jobs=n_jobs,
    )


def _worker_threads():
    from threadpoolctl import threadpool_info

    return n_threads(), min(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")


def test_grid_search_on_dask_matches_the_local_search(dask_client):
    X, y = load_digits(return_X_y=True)
    X = X.astype(np.float32)
    local = search(n_jobs=1).fit(X, y)
    with joblib.parallel_backend("dask"):
        remote = search(n_jobs=-1).fit(X, y)
    assert remote.best_params_ == local.best_params_
    for key in ("split0_test_score", "split1_test_score", "split2_test_score", "mean_test_score"):
        np.testing.assert_allclose(remote.cv_results_[key], local.cv_results_[key], atol=1e-6)
    assert local.cv_results_["mean_test_score"].max() > 0.8


def test_no_oversubscription_on_dask_workers(dask_client):
    # two single-threaded workers on two cores: skcnn and BLAS use one thread each
    for skcnn_threads, blas_threads in dask_client.run(_worker_threads).values():
        assert skcnn_threads == 1 and blas_threads == 1


def test_no_oversubscription_on_loky_workers():
    results = joblib.Parallel(n_jobs=2, backend="loky")(joblib.delayed(_worker_threads)() for _ in range(2))
    import os

    cores = os.cpu_count()
    for skcnn_threads, blas_threads in results:
        assert 2 * skcnn_threads <= max(cores, 2) and 2 * blas_threads <= max(cores, 2)


def test_pickled_model_is_its_parameters_plus_optimizer_state():
    X, y = load_digits(return_X_y=True)
    clf = CNNClassifier(max_iter=2, random_state=0).fit(X.astype(np.float32), y)
    arrays = clf.network_.params() + [b for layer in clf.network_.layers for b in layer.buffers.values()]
    essential = sum(a.nbytes for a in arrays) + sum(a.nbytes for a in clf._optimizer.state_arrays())
    size = len(pickle.dumps(clf))
    assert essential <= size <= 1.10 * essential, (size, essential)


@pytest.fixture(scope="module")
def incremental(dask_client, fashion_mnist, tmp_path_factory):
    """One pass of dask-ml's Incremental over 5,000 Fashion-MNIST images in
    10 blocks of 500, which the workers read from disk themselves."""
    dask = pytest.importorskip("dask")
    da = pytest.importorskip("dask.array")
    wrappers = pytest.importorskip("dask_ml.wrappers")
    X_train, _, y_train, _ = fashion_mnist
    folder = tmp_path_factory.mktemp("blocks")
    for i in range(10):
        np.save(folder / f"{i}.npy", X_train[500 * i : 500 * (i + 1)])
    load = dask.delayed(np.load)
    images = da.concatenate(
        [da.from_delayed(load(folder / f"{i}.npy"), (500, 1, 28, 28), np.float32) for i in range(10)]
    )  # (5000, 1, 28, 28), never in this process's memory
    # dask-ml's wrappers take 2-D blocks (see the README): rows of pixels,
    # block by block, with input_shape saying how to read them
    X = images.reshape(len(images), -1)
    assert X.chunks == ((500,) * 10, (784,))
    y = da.from_array(y_train[:5000], chunks=500)
    model = wrappers.Incremental(CNNClassifier(input_shape=(1, 28, 28), random_state=0), random_state=0)
    return model.fit(X, y, classes=np.arange(10))


def test_incremental_trains_block_by_block_through_partial_fit(incremental, fashion_mnist):
    _, X_test, _, y_test = fashion_mnist
    clf = incremental.estimator_
    assert clf.n_iter_ == 10 and clf.t_ == 5000  # one partial_fit call (one epoch) per block
    assert clf.score(X_test[:2000], y_test[:2000]) >= 0.7  # measured: 0.7885


def test_parallel_post_fit_predicts_as_predict(incremental, fashion_mnist):
    da = pytest.importorskip("dask.array")
    wrappers = pytest.importorskip("dask_ml.wrappers")
    X = fashion_mnist[1][:1000]
    clf = incremental.estimator_
    model = wrappers.ParallelPostFit(clf)
    blocks = da.from_array(X, chunks=(250, 1, 28, 28)).reshape(len(X), -1)
    np.testing.assert_array_equal(model.predict(blocks).compute(), clf.predict(X))
    np.testing.assert_allclose(model.predict_proba(blocks).compute(), clf.predict_proba(X), rtol=0, atol=1e-6)
