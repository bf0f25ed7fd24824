"""Single-thread float32 matrix-product speed (GFLOPS) of the default network's
largest products, and of a large square one: the floor under a training step.

    python benchmarks/gemm.py                          # BLAS as the environment sets it
    env -u OPENBLAS_CORETYPE python benchmarks/gemm.py  # OpenBLAS's own choice of kernels

Shapes are those of one training thread's micro-batch of 50 images.
"""

import argparse
import os
import time

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits


def gflops(product, flop, calls=50):
    product()  # warm up
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        product()
        times.append(time.perf_counter() - start)
    ms = float(np.median(times)) * 1e3
    return ms, flop / ms / 1e6


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args(argv)  # no options: --help shows the docstring
    rng = np.random.default_rng(0)
    m = 50 * 14 * 14  # conv2 output pixels in a micro-batch
    cols = rng.standard_normal((m, 144)).astype(np.float32)  # lowered 3x3x16 windows
    w = rng.standard_normal((32, 144)).astype(np.float32)
    g = rng.standard_normal((m, 32)).astype(np.float32)
    a = rng.standard_normal((1024, 1024)).astype(np.float32)
    products = {
        "conv2 forward  (9800x144 @ 144x32)": (lambda: cols @ w.T, 2 * m * 144 * 32),
        "conv2 dW       (32x9800 @ 9800x144)": (lambda: np.dot(g.T, cols), 2 * m * 144 * 32),
        "conv2 dx, 9 x  (9800x32 @ 32x16)": (lambda: [g @ w[:, 16 * k : 16 * (k + 1)] for k in range(9)], 2 * m * 144 * 32),
        "square         (1024x1024 @ 1024x1024)": (lambda: a @ a, 2 * 1024**3),
    }
    kernels = {i["internal_api"]: i.get("architecture") for i in threadpool_info() if i["user_api"] == "blas"}
    print(f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}, kernels: {kernels}, one thread")
    with threadpool_limits(limits=1, user_api="blas"):
        for name, (product, flop) in products.items():
            ms, rate = gflops(product, flop)
            print(f"  {name:40} {ms:7.3f} ms  {rate:6.1f} GFLOPS")


if __name__ == "__main__":
    main()
