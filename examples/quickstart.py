"""Quickstart: train the origin CNN on scikit-learn's bundled digits, offline, in seconds.

    python examples/quickstart.py
"""

import argparse
import time

from sklearn.datasets import load_digits
from sklearn.metrics import classification_report
from sklearn.model_selection import train_test_split

from skcnn import CNNClassifier


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args(argv)

    X, y = load_digits(return_X_y=True)  # 1,797 8x8 images, flattened to 64 features
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)

    clf = CNNClassifier(max_iter=args.epochs, random_state=0, verbose=1)
    start = time.perf_counter()
    clf.fit(X_train, y_train)  # 64 features -> one 8x8 channel
    print(f"trained {clf.n_iter_} epochs in {time.perf_counter() - start:.1f} s")
    print(f"test accuracy: {clf.score(X_test, y_test):.4f}")
    print(classification_report(y_test, clf.predict(X_test), digits=3))


if __name__ == "__main__":
    main()
