"""Peak memory of predict_proba on many images: bounded by the batch, not by n.

    python benchmarks/memory.py              # 200,000 images
    python benchmarks/memory.py --n 50000

Each measurement runs in a fresh process: it builds the input (float32,
784 values per image), fits a default model on 2,000 of the images, then
reads the peak RSS before and after predict_proba. The growth must stay
near the output (n x 10 floats) plus a constant for the batches, however
large n is.
"""

import argparse
import json
import resource
import subprocess
import sys

import numpy as np


def peak_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(n):
    from skcnn import CNNClassifier

    rng = np.random.default_rng(0)
    X = rng.random((n, 784), dtype=np.float32)
    y = rng.integers(0, 10, n)
    clf = CNNClassifier(max_iter=1, random_state=0).fit(X[:2000], y[:2000])
    clf.predict_proba(X[:2000])  # warm up: the batch buffers are now part of the peak
    before = peak_mib()
    proba = clf.predict_proba(X)
    after = peak_mib()
    return {
        "n_images": n,
        "input_mib": round(X.nbytes / 2**20, 1),
        "output_mib": round(proba.nbytes / 2**20, 1),
        "peak_before_mib": round(before, 1),
        "peak_growth_mib": round(after - before, 1),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=[20000, 200000])
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(measure(args.worker)))
        return
    print(f"{'images':>8} {'input MiB':>10} {'output MiB':>10} {'peak growth during predict_proba, MiB':>40}")
    for n in args.n:
        out = subprocess.run([sys.executable, __file__, "--worker", str(n)], capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{r['n_images']:8d} {r['input_mib']:10.1f} {r['output_mib']:10.1f} {r['peak_growth_mib']:40.1f}")


if __name__ == "__main__":
    main()
