"""GridSearchCV of a CNN on a Dask cluster, through joblib's "dask" backend.

    pip install "skcnn[distributed]"
    python examples/distributed_search.py                              # a LocalCluster here
    python examples/distributed_search.py --scheduler tcp://host:8786  # an existing cluster

scikit-learn distributes the search's fits through joblib; Dask's backend
sends each fit to a worker process. Workers run one task at a time with BLAS
held to one thread (Dask's default for worker processes), and skcnn then runs
one thread too: workers x threads <= cores, no oversubscription.
"""

import argparse
import time

import joblib
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV

from skcnn import CNNClassifier


def make_search(epochs, n_jobs=-1):
    return GridSearchCV(
        CNNClassifier(max_iter=epochs, random_state=0),
        {"learning_rate_init": [3e-4, 1e-3, 3e-3]},
        cv=3,
        n_jobs=n_jobs,
    )


def main(argv=None):
    from dask.distributed import Client, LocalCluster

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scheduler", help="address of a running Dask scheduler")
    parser.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes")
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args(argv)

    X, y = load_digits(return_X_y=True)
    X = X.astype(np.float32)
    if args.scheduler:
        client = Client(args.scheduler)
    else:
        cluster = LocalCluster(
            n_workers=args.workers, threads_per_worker=1, processes=True,
            host="127.0.0.1", dashboard_address=None,
        )  # fmt: skip
        client = Client(cluster)
    try:
        print(f"Dask cluster: {len(client.scheduler_info()['workers'])} workers")
        search = make_search(args.epochs)
        start = time.perf_counter()
        with joblib.parallel_backend("dask"):
            search.fit(X, y)
        print(f"searched {len(search.cv_results_['params'])} settings x 3 folds in "
              f"{time.perf_counter() - start:.1f} s")  # fmt: skip
        for params, score in zip(search.cv_results_["params"], search.cv_results_["mean_test_score"]):
            print(f"{params}: mean accuracy {score:.4f}")
        print(f"best: {search.best_params_}")
    finally:
        client.close()
        if not args.scheduler:
            cluster.close()


if __name__ == "__main__":
    main()
