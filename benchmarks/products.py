"""How much of skcnn's time goes to matrix products, and how fast it could be
if nothing else cost anything.

    python benchmarks/products.py                          # deep preset, against PyTorch if installed
    python benchmarks/products.py --architecture origin --rounds 5
    env -u OPENBLAS_CORETYPE python benchmarks/products.py   # OpenBLAS's own choice of kernels

skcnn computes its convolutions and dense layers as BLAS products (im2col,
then GEMM). This script times every ``np.matmul`` and ``np.dot`` call made
in ``skcnn.functions`` and ``skcnn.layers`` (the convolutions' products, both
gradient products, batch norm's and the bias gradients' column sums) while
skcnn trains an epoch (batches of 100) and predicts, on the thread count it
uses (``SKCNN_NUM_THREADS`` sets it), and prints:

- the share of the threads' time spent in those products;
- "products only": the speed skcnn would reach if everything else (the
  im2col copies, batch norm's elementwise passes, ReLU, pooling, dropout,
  the dense layers' ``@``, the optimizer, Python) took no time at all and
  the products spread perfectly over the threads: images / (product
  seconds summed over threads / threads). An upper bound of what any change
  outside the products can reach; only fewer or faster products (another
  algorithm, another BLAS) can go beyond it;
- with PyTorch installed, PyTorch's speed on the same network in the same
  run (rounds alternate) and both ratios.

Random images (only the shapes matter for speed), 28x28 grey; medians of
``--rounds``.
"""

import argparse
import os
import statistics
import sys
import threading
import time
import types
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


class ProductTimer:
    """Wraps ``np.matmul`` and ``np.dot`` as seen by skcnn's modules, adding
    each call's duration to its thread's total."""

    def __init__(self, modules):
        self.modules = modules
        self.totals = {}  # thread id -> seconds
        self._lock = threading.Lock()

    def _timed(self, product):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            result = product(*args, **kwargs)
            elapsed = time.perf_counter() - start
            ident = threading.get_ident()
            with self._lock:
                self.totals[ident] = self.totals.get(ident, 0.0) + elapsed
            return result

        return timed

    def __enter__(self):
        proxy = types.ModuleType("numpy_with_timed_products")
        proxy.__getattr__ = lambda name: getattr(np, name)
        proxy.matmul, proxy.dot = self._timed(np.matmul), self._timed(np.dot)
        for module in self.modules:
            module.np = proxy
        return self

    def __exit__(self, *exc):
        for module in self.modules:
            module.np = np

    def seconds(self):
        with self._lock:
            return sum(self.totals.values())


def time_skcnn(clf, X, y, X_test, threads):
    """(train s, product s in training, predict s, product s in prediction)."""
    from skcnn import functions, layers

    with ProductTimer([functions, layers]) as timer:
        start = time.perf_counter()
        clf.partial_fit(X, y)
        train = time.perf_counter() - start
        train_products = timer.seconds()
        timer.totals.clear()
        start = time.perf_counter()
        clf.predict_proba(X_test)
        predict = time.perf_counter() - start
        predict_products = timer.seconds()
    return train, train_products, predict, predict_products


def time_torch(model, X, y, X_test):
    import torch
    from speed import TORCH_INFER_CHUNKS, torch_train_pass

    train = torch_train_pass(model, X, y)
    model.eval()
    xtest = torch.from_numpy(X_test.reshape(-1, 1, 28, 28))
    best = float("inf")
    with torch.no_grad():
        for chunk in TORCH_INFER_CHUNKS:  # PyTorch gets its fastest chunk size, as in speed.py
            start = time.perf_counter()
            torch.cat([model(xtest[s : s + chunk]).softmax(1) for s in range(0, len(xtest), chunk)])
            best = min(best, time.perf_counter() - start)
    return train, best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--architecture", default="deep", choices=["origin", "deep"])
    parser.add_argument("--n-train", type=int, default=3000, help="images of the epoch timed")
    parser.add_argument("--n-test", type=int, default=10000, help="images predicted")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-torch", action="store_true", help="skip PyTorch even if installed")
    args = parser.parse_args(argv)
    if args.n_train < 100 or args.n_test < 1 or args.rounds < 1:
        parser.error("--n-train must be >= 100, --n-test and --rounds >= 1")

    from threadpoolctl import threadpool_info

    from skcnn import CNNClassifier
    from skcnn.parallel import n_threads

    rng = np.random.default_rng(0)
    X = rng.random((args.n_train, 784), dtype=np.float32)
    y = np.arange(args.n_train) % 10
    X_test = rng.random((args.n_test, 784), dtype=np.float32)
    threads = n_threads()
    clf = CNNClassifier(architecture=args.architecture, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.partial_fit(X[:200], y[:200], classes=np.arange(10))  # built and warmed up

    torch_model = None
    if not args.no_torch:
        try:
            import torch
            from speed import torch_model as build_torch_model
        except ImportError:
            print("(PyTorch is not installed: skcnn's figures only)")
        else:
            torch.set_num_threads(threads)
            torch.manual_seed(0)
            torch_model = build_torch_model(args.architecture)
            time_torch(torch_model, X[:200], y[:200], X_test[:200])  # warm up

    rows = {"skcnn": [], "torch": []}
    for _ in range(args.rounds):
        rows["skcnn"].append(time_skcnn(clf, X, y, X_test, threads))
        if torch_model is not None:
            rows["torch"].append(time_torch(torch_model, X, y, X_test))

    kernels = {i["internal_api"]: i.get("architecture") for i in threadpool_info() if i["user_api"] == "blas"}
    print(f"{args.architecture} preset, {threads} threads, OPENBLAS_CORETYPE="
          f"{os.environ.get('OPENBLAS_CORETYPE', '(unset)')}, kernels {kernels}; medians of {args.rounds} rounds")
    train, train_products, predict, predict_products = (statistics.median(c) for c in zip(*rows["skcnn"]))
    torch_train = torch_predict = None
    if rows["torch"]:
        torch_train, torch_predict = (statistics.median(c) for c in zip(*rows["torch"]))
    print(f"{'':10} {'skcnn img/s':>12} {'in products':>12} {'products only':>14} "
          f"{'PyTorch img/s':>14} {'skcnn/PyTorch':>14} {'products only/PyTorch':>22}")
    for name, n, wall, products, other in (
        ("training", args.n_train, train, train_products, torch_train),
        ("predict", args.n_test, predict, predict_products, torch_predict),
    ):
        speed, bound = n / wall, n / (products / threads)
        line = f"{name:10} {speed:12,.0f} {products / (threads * wall):12.0%} {bound:14,.0f}"
        if other is not None:
            line += f" {n / other:14,.0f} {other / wall:13.2f}x {other * bound / n:21.2f}x"
        print(line)


if __name__ == "__main__":
    main()
