"""Choose the learning rate with scikit-learn's GridSearchCV.

    python examples/grid_search_learning_rate.py
"""

import argparse

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV

from skcnn import CNNClassifier


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--n-jobs", type=int, default=2)
    args = parser.parse_args(argv)

    X, y = load_digits(return_X_y=True)
    search = GridSearchCV(
        CNNClassifier(max_iter=args.epochs, random_state=0),
        {"learning_rate_init": [1e-4, 1e-3, 1e-2, 1e-1]},
        cv=3,
        n_jobs=args.n_jobs,
    )
    search.fit(X.astype(np.float32), y)
    for rate, score in zip(search.cv_results_["param_learning_rate_init"], search.cv_results_["mean_test_score"]):
        print(f"learning_rate_init={rate:<8g} mean accuracy {score:.4f}")
    print(f"best: {search.best_params_}")


if __name__ == "__main__":
    main()
