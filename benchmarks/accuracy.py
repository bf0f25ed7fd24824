"""Test accuracy of skcnn configurations on Fashion-MNIST (and MNIST where reachable).

    python benchmarks/accuracy.py                       # every configuration
    python benchmarks/accuracy.py --config origin-5     # one of them
    python benchmarks/accuracy.py --n-train 2000 --max-epochs 1   # a smoke run

Fashion-MNIST comes from Debian's dataset-fashion-mnist package when installed
(/usr/share/datasets/fashion-mnist), else from OpenML. MNIST needs OpenML (or
its cache); when it cannot be fetched the script says so and skips it.
Prints configuration, epochs, wall time and test accuracy; --json for machines.
"""

import argparse
import json
import platform
import sys
import time

import numpy as np

from skcnn import CNNClassifier
from skcnn.datasets import DatasetUnavailableError, load_fashion_mnist, load_mnist

#: name -> CNNClassifier parameters. Epochs are max_iter; stopping rules off.
CONFIGS = {
    # the origin's run: default network, Adam 1e-3, batches of 100, 5 epochs
    "origin-5": dict(max_iter=5),
    # the deep preset with a cosine schedule and flips/shifts: about 15 minutes here
    "deep-15": dict(architecture="deep", max_iter=15, learning_rate="cosine", augment="shift+flip"),
    # the same, trained longer: about 25 minutes here
    "deep-25": dict(architecture="deep", max_iter=25, learning_rate="cosine", augment="shift+flip"),
}


def run(name, params, data, max_epochs=None):
    X_train, X_test, y_train, y_test = data
    params = dict(params)
    if max_epochs is not None:
        params["max_iter"] = min(params["max_iter"], max_epochs)
    clf = CNNClassifier(random_state=0, verbose=1, n_iter_no_change=params["max_iter"], **params)
    start = time.perf_counter()
    clf.fit(X_train, y_train)
    seconds = time.perf_counter() - start
    return {
        "config": name,
        "params": params,
        "epochs": clf.n_iter_,
        "train_seconds": round(seconds, 1),
        "test_accuracy": round(float(clf.score(X_test, y_test)), 4),
        "n_train": len(y_train),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", action="append", choices=sorted(CONFIGS), help="default: all")
    parser.add_argument("--dataset", action="append", choices=["fashion-mnist", "mnist"], help="default: both")
    parser.add_argument("--n-train", type=int, default=None, help="first N training images only")
    parser.add_argument("--max-epochs", type=int, default=None, help="cap every configuration's epochs")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    results = []
    for dataset in args.dataset or ["fashion-mnist", "mnist"]:
        try:
            data = (load_fashion_mnist if dataset == "fashion-mnist" else load_mnist)(shape="images")
        except DatasetUnavailableError as exc:
            print(f"{dataset}: not measured: {exc}", file=sys.stderr)
            continue
        if args.n_train:
            data = (data[0][: args.n_train], data[1], data[2][: args.n_train], data[3])
        for name in args.config or list(CONFIGS):
            print(f"== {dataset} / {name}", file=sys.stderr, flush=True)
            result = run(name, CONFIGS[name], data, args.max_epochs)
            result["dataset"] = dataset
            results.append(result)
            print(json.dumps(result), file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps({"machine": platform.processor() or platform.machine(), "results": results}, indent=2))
        return
    print(f"{'dataset':14} {'config':10} {'epochs':>6} {'train s':>8} {'test acc':>8}")
    for r in results:
        print(f"{r['dataset']:14} {r['config']:10} {r['epochs']:6d} {r['train_seconds']:8.1f} {r['test_accuracy']:8.4f}")
    print(f"numpy {np.__version__}, {platform.machine()}")


if __name__ == "__main__":
    main()
