"""GridSearchCV through Dask's joblib backend, and what travels between processes."""

import pickle
import sys

import joblib
import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV

from skcnn import CNNClassifier
from skcnn.parallel import n_threads

distributed = pytest.importorskip("dask.distributed")


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


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    )
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


def test_grid_search_on_dask_matches_the_local_search(client):
    X, y = load_digits(return_X_y=True)
    X = X.astype(np.float32)
    local = search(n_jobs=1).fit(X, y)
    with joblib.parallel_backend("dask"):
        remote = search(n_jobs=-1).fit(X, y)
    assert remote.best_params_ == local.best_params_
    for key in ("split0_test_score", "split1_test_score", "split2_test_score", "mean_test_score"):
        np.testing.assert_allclose(remote.cv_results_[key], local.cv_results_[key], atol=1e-6)
    assert local.cv_results_["mean_test_score"].max() > 0.8


def test_no_oversubscription_on_dask_workers(client):
    # two single-threaded workers on two cores: skcnn and BLAS use one thread each
    for skcnn_threads, blas_threads in client.run(_worker_threads).values():
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
