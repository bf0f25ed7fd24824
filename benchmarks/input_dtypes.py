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
import sys
import time
import warnings
from pathlib import Path

from sklearn.exceptions import ConvergenceWarning

from skcnn import CNNClassifier

# The same data and input types as speed.py --dtype: import the sibling script
# (its folder is on sys.path when run as a script, not when loaded by path).
sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import as_dtype, load_data


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=40, help="interleaved rounds (median reported)")
    args = parser.parse_args(argv)
    X_train, X_test, y_train, _, data = load_data(5000, "auto")
    clf = CNNClassifier(max_iter=1, random_state=0, verbose=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # one epoch, on purpose
        clf.fit(X_train, y_train)
    inputs = {dtype: as_dtype(X_test, dtype) for dtype in ("float32", "float64", "uint8")}
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
