"""The fastest any implementation could train and predict with a preset on
this machine, if it did the network's multiply-adds at the CPU's float32 peak.

    python benchmarks/ceiling.py                        # origin and deep, two threads
    python benchmarks/ceiling.py --architecture deep --threads 2
    env -u OPENBLAS_CORETYPE python benchmarks/ceiling.py   # OpenBLAS's own choice of kernels

A bound, not a forecast: it sets the speed measured by benchmarks/speed.py
(skcnn's and PyTorch's) against the work the network needs, to tell a gap
that better code can close from one that only fewer multiply-adds (another
algorithm) can.

- Work per image, from the network's own FLOP count (``CNNClassifier.summary``,
  a multiply-add counts as 2): prediction is the forward pass; training adds
  the two gradient products of every convolution and dense layer (the
  kernel's and the input's), as large as its forward product each, except
  the first convolution's input gradient, which skcnn never computes. The
  elementwise layers (batch norm, ReLU, pooling) are left out: the bound
  is lower than any real cost.
- Peak: float32 GFLOPS of a large square matrix product
  (``--size`` x ``--size``), the best case of the BLAS numpy uses, on one
  thread, times ``--threads`` (the cores work independently). Medians of
  ``--rounds`` products.
"""

import argparse
import os
import time
import warnings

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from skcnn import CNNClassifier
from skcnn.layers import Conv2D, Dense


def peak_gflops(size, rounds):
    """Median float32 GFLOPS of a (size x size) @ (size x size) product on one thread."""
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((size, size)).astype(np.float32) for _ in range(2))
    out = np.empty_like(a)
    times = []
    with threadpool_limits(1, "blas"):
        np.matmul(a, b, out=out)  # warm up
        for _ in range(rounds):
            start = time.perf_counter()
            np.matmul(a, b, out=out)
            times.append(time.perf_counter() - start)
    return 2 * size**3 / float(np.median(times)) / 1e9


def work_per_image(architecture):
    """(forward FLOPs, training FLOPs) of one 28x28 grey image through the preset."""
    x = np.random.default_rng(0).random((20, 784), dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one epoch on noise: the network's shapes are all we need
        clf = CNNClassifier(architecture=architecture, max_iter=1, random_state=0).fit(x, np.arange(20) % 10)
    summary = clf.summary()
    forward = summary.flops
    gradients = 0
    for layer, row in zip(clf.network_.layers, summary.rows):
        if isinstance(layer, (Conv2D, Dense)):
            product = row.flops - int(np.prod(row.output_shape)) * ("b" in layer.params)  # the bias add is no product
            gradients += product * (2 if getattr(layer, "input_grad", True) else 1)
    return forward, forward + gradients


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--architecture", default="origin,deep", help="presets, comma-separated")
    parser.add_argument("--threads", type=int, default=2, help="cores the bound assumes (default 2)")
    parser.add_argument("--size", type=int, default=1024, help="side of the square product timed")
    parser.add_argument("--rounds", type=int, default=21, help="products timed (median reported)")
    args = parser.parse_args(argv)
    if args.threads < 1 or args.size < 64 or args.rounds < 1:
        parser.error("--threads and --rounds must be >= 1, --size >= 64")
    kernels = {i["internal_api"]: i.get("architecture") for i in threadpool_info() if i["user_api"] == "blas"}
    peak = peak_gflops(args.size, args.rounds)
    print(f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}, kernels: {kernels}")
    print(f"float32 peak: {peak:.1f} GFLOPS on one thread ({args.size}x{args.size} product), "
          f"{peak * args.threads:.1f} on {args.threads}")
    print(f"{'preset':>8} {'MFLOP/image fwd':>16} {'train':>8} {'bound infer img/s':>18} {'bound train img/s':>18}")
    for name in args.architecture.split(","):
        forward, training = work_per_image(name.strip())
        rate = peak * args.threads * 1e9
        print(f"{name:>8} {forward / 1e6:16.2f} {training / 1e6:8.2f} {rate / forward:18,.0f} {rate / training:18,.0f}")


if __name__ == "__main__":
    main()
