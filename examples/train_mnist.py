"""The origin project's run: the default CNN on the full 60,000 MNIST images,
Adam 1e-3, batches of 100, 5 epochs; test accuracy, saved parameters and a
picture of predictions.

    python examples/train_mnist.py                    # about 5 s per epoch on 2 cores
    python examples/train_mnist.py --n-train 2000 --epochs 1

MNIST comes from OpenML (downloaded once, then cached). Offline and uncached,
the script says so and runs on scikit-learn's bundled 8x8 digits instead.
"""

import argparse
import time

import matplotlib

matplotlib.use("Agg")

from skcnn import CNNClassifier  # noqa: E402
from skcnn.datasets import DatasetUnavailableError, load_digits_images, load_mnist  # noqa: E402
from skcnn.plotting import plot_predictions  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--n-train", type=int, default=None, help="use the first N training images")
    parser.add_argument("--data-home", default=None)
    parser.add_argument("--out", default="mnist_params.npz")
    parser.add_argument("--picture", default="prediction_results.png")
    args = parser.parse_args(argv)

    try:
        X_train, X_test, y_train, y_test = load_mnist(args.data_home, shape="images")
        name = "MNIST"
    except DatasetUnavailableError as exc:
        print(f"{exc}\n==> Using scikit-learn's bundled 8x8 digits instead.")
        X_train, X_test, y_train, y_test = load_digits_images()
        name = "digits"
    if args.n_train:
        X_train, y_train = X_train[: args.n_train], y_train[: args.n_train]

    clf = CNNClassifier(
        solver="adam", learning_rate_init=1e-3, batch_size=100, max_iter=args.epochs,
        n_iter_no_change=args.epochs, random_state=0, verbose=1,
    )  # fmt: skip
    start = time.perf_counter()
    clf.fit(X_train, y_train)
    print(f"{name}: {len(X_train)} images, {clf.n_iter_} epochs in {time.perf_counter() - start:.1f} s")
    print(f"test accuracy: {clf.score(X_test, y_test):.4f}")

    clf.save_params(args.out)  # reload with CNNClassifier().load_params(args.out)
    print(f"parameters saved to {args.out}")
    fig = plot_predictions(clf, X_test, y_test, n=10)
    fig.savefig(args.picture, dpi=100)
    print(f"predictions saved to {args.picture}")


if __name__ == "__main__":
    main()
