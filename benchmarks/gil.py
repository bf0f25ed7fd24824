"""Why the convolution weight gradients use np.dot and not the @ operator.

    python benchmarks/gil.py

skcnn trains on two threads, and a thread must hold Python's GIL whenever it
is not inside a NumPy call that releases it. For a matrix product with few
outputs and a long inner dimension, such as the first convolution's weight
gradient (16 x 9 outputs, 39,200-long sums for a micro-batch of 50 images),
NumPy's matmul keeps the GIL while BLAS runs; np.dot releases it. This script
times each product in one thread, in two threads at once, and the share of
the time a pure-Python thread can run meanwhile: a product that keeps the GIL
stalls every other thread for its whole length. A large product (the second
convolution's forward pass) is shown for comparison.
"""

import argparse
import sys
import threading
import time

import numpy as np
from threadpoolctl import threadpool_limits


def per_call_ms(product, calls):
    start = time.perf_counter()
    for _ in range(calls):
        product()
    return (time.perf_counter() - start) / calls * 1e3


def two_threads_ms(product, calls):
    times = []

    def run():
        times.append(per_call_ms(product, calls))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return max(times)


def python_share(product, calls):
    """Iterations a pure-Python thread completes while ``product`` runs in
    another, as a share of what it completes alone in the same time."""
    count, stop = [0], [False]

    def spin():
        while not stop[0]:
            count[0] += 1

    def measure(work):
        count[0], stop[0] = 0, False
        thread = threading.Thread(target=spin)
        thread.start()
        time.sleep(0.01)
        start_count, start = count[0], time.perf_counter()
        work()
        rate = (count[0] - start_count) / (time.perf_counter() - start)
        stop[0] = True
        thread.join()
        return rate

    alone = measure(lambda: time.sleep(calls * 1e-4))
    return measure(lambda: [product() for _ in range(calls)]) / alone


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args(argv)  # no options: --help shows the docstring
    sys.setswitchinterval(1e-5)  # let the spinning thread in as soon as the GIL is free
    rng = np.random.default_rng(0)
    grad = rng.standard_normal((50 * 28 * 28, 16)).astype(np.float32)  # conv1 output gradient
    cols = rng.standard_normal((9, 50 * 28 * 28)).astype(np.float32).T  # conv1 lowered input
    big_cols = rng.standard_normal((50 * 14 * 14, 144)).astype(np.float32)
    big_w = rng.standard_normal((144, 32)).astype(np.float32)
    products = {
        "conv1 dW, grad.T @ cols": lambda: grad.T @ cols,
        "conv1 dW, np.dot(grad.T, cols)": lambda: np.dot(grad.T, cols),
        "conv2 forward, cols @ W (large)": lambda: big_cols @ big_w,
    }
    print(f"{'product':34} {'one thread':>11} {'two threads':>12} {'Python runs':>12}")
    with threadpool_limits(limits=1, user_api="blas"):
        for name, product in products.items():
            per_call_ms(product, 20)  # warm up
            one = per_call_ms(product, 200)
            two = two_threads_ms(product, 200)
            share = python_share(product, 200)
            print(f"{name:34} {one:8.3f} ms {two:9.3f} ms {100 * share:10.0f}%")
    print("\n'two threads': each thread's time per product while both run; 'Python runs':")
    print("how much a pure-Python thread gets done meanwhile (100% = as much as alone).")


if __name__ == "__main__":
    main()
