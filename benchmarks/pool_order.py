"""Whole fits and predictions with and without pool order, alternating in one process.

    python benchmarks/pool_order.py                               # origin network, 30,000 images
    python benchmarks/pool_order.py --architecture deep --n-train 6000 --rounds 4

Where a 2x2 max pool reads a convolution's output, skcnn has the
convolution write it in the order the pool reads it (skcnn.functions.conv2d,
``pool_order``; python benchmarks/pooling.py times the pools alone). This
script measures what that buys in a fit: one epoch of the preset on
--n-train Fashion-MNIST images (synthetic ones without them), then
predict_proba on the 10,000 test images, with pool order as skcnn plans it
and with it switched off, the two taking turns (the first of each pair
alternates) for --rounds rounds. It prints each turn and the medians.
Test accuracies differ a little between the two: the same function, but
its sums are added in another order, so training takes another path in the
last bits.
"""

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

from sklearn.exceptions import ConvergenceWarning

from skcnn import CNNClassifier, network

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import load_data

PLANNED = network._set_pool_order


def _usual_order(layers):
    """What skcnn did before pool order: every convolution and pool in the usual order."""
    for layer in layers:
        if hasattr(layer, "pool_order"):
            layer.pool_order = False


def _turn(planner, args, data):
    X_train, X_test, y_train, y_test = data
    network._set_pool_order = planner  # Network() calls it when built
    try:
        clf = CNNClassifier(architecture=args.architecture, max_iter=1, random_state=0)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # one epoch, on purpose
            clf.fit(X_train, y_train)
        fit = time.perf_counter() - start
        start = time.perf_counter()
        clf.predict_proba(X_test)
        predict = time.perf_counter() - start
        used = any(getattr(layer, "pool_order", False) for layer in clf.network_.layers)
        return len(X_train) / fit, len(X_test) / predict, clf.score(X_test, y_test), used
    finally:
        network._set_pool_order = PLANNED


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--architecture", default="origin", choices=["origin", "deep"])
    parser.add_argument("--n-train", type=int, default=30000)
    parser.add_argument("--rounds", type=int, default=6, help="turns of each way (medians reported)")
    args = parser.parse_args(argv)
    X_train, X_test, y_train, y_test, name = load_data(args.n_train, "auto")
    data = (X_train, X_test, y_train, y_test)
    ways = {"pool order": PLANNED, "usual order": _usual_order}
    results = {way: [] for way in ways}
    print(f"{args.architecture} network, {name}, {len(X_train)} images, one epoch a turn; predict_proba on {len(X_test)}")
    for r in range(args.rounds):
        for way in list(ways) if r % 2 == 0 else list(ways)[::-1]:
            train, infer, accuracy, used = _turn(ways[way], args, data)
            assert used == (way == "pool order")
            results[way].append((train, infer))
            print(f"  {way:>11}: train {train:8,.0f} images/s, predict {infer:8,.0f} images/s, test accuracy {accuracy:.2%}")
    medians = {way: [statistics.median(v[i] for v in rows) for i in (0, 1)] for way, rows in results.items()}
    for way, (train, infer) in medians.items():
        print(f"median {way:>11}: train {train:8,.0f} images/s, predict {infer:8,.0f} images/s")
    (t1, i1), (t0, i0) = medians["pool order"], medians["usual order"]
    print(f"pool order / usual order: train {t1 / t0:.2f}x, predict {i1 / i0:.2f}x")


if __name__ == "__main__":
    main()
