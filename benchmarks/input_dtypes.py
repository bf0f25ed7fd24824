"""predict_proba's speed on float32, float64 and uint8 input, interleaved in one process.

    python benchmarks/input_dtypes.py
    python benchmarks/input_dtypes.py --rounds 80

Predicting 10,000 images takes a few tenths of a second, so fresh-process
rounds of speed.py --dtype vary by up to 30% from one to the next. Here one
fitted origin network (one epoch on 5,000 Fashion-MNIST images, or synthetic
images without them) predicts the 10,000 test images as float32, float64
(``X / 255.0``) and uint8 pixels in turn, round after round; the medians
show the cost of each input type alone (float64 and uint8 are converted to
float32 once, then run the same code).
"""

import argparse
import statistics
import time
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from skcnn import CNNClassifier
from skcnn.datasets import DEBIAN_FASHION_MNIST, load_idx_dataset


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=40, help="interleaved rounds (median reported)")
    args = parser.parse_args(argv)
    if (DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte.gz").exists():
        X_train, X_test, y_train, _ = load_idx_dataset(DEBIAN_FASHION_MNIST, shape="images")
        data = "Fashion-MNIST"
    else:
        rng = np.random.default_rng(0)
        X_train, X_test = rng.random((5000, 28, 28), dtype=np.float32), rng.random((10000, 28, 28), dtype=np.float32)
        y_train, data = rng.integers(0, 10, 5000), "synthetic"
    clf = CNNClassifier(max_iter=1, random_state=0, verbose=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # one epoch, on purpose
        clf.fit(X_train[:5000], y_train[:5000])
    inputs = {"float32": X_test, "float64": X_test.astype(np.float64), "uint8": np.rint(X_test * 255).astype(np.uint8)}
    seconds = {name: [] for name in inputs}
    for _ in range(args.rounds):
        for name, X in inputs.items():
            start = time.perf_counter()
            clf.predict_proba(X)
            seconds[name].append(time.perf_counter() - start)
    base = statistics.median(seconds["float32"])
    print(f"predict_proba of {len(X_test):,} {data} test images, medians of {args.rounds} interleaved rounds")
    for name, times in seconds.items():
        median = statistics.median(times)
        print(f"{name:>8}: {median * 1e3:7.1f} ms  {len(X_test) / median:8.0f} images/s  {base / median:.3f}x float32")


if __name__ == "__main__":
    main()
