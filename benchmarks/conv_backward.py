"""A convolution's backward pass: one lowering for both gradients, or two.

    python benchmarks/conv_backward.py
    python benchmarks/conv_backward.py --rounds 30

At stride 1 the input gradient is a convolution of the output gradient with
the kernels turned 180 degrees, so it lowers the (padded) output gradient to
im2col rows. The kernel gradient needs, for each input pixel, the output
gradient at every kernel offset: the same rows. skcnn.functions.conv2d_backward
multiplies each lowered block twice (input gradient and kernel gradient)
instead of lowering the input once more for the kernel gradient as
conv2d_kernel_grad does alone. This script times both ways on the deep
preset's convolutions and the origin network's second one, one thread, a
micro-batch of 50 as each training thread runs it, medians of interleaved
rounds.
"""

import argparse
import statistics
import time

import numpy as np

from skcnn.functions import conv2d_backward, conv2d_input_grad, conv2d_kernel_grad
from skcnn.parallel import single_threaded_blas

#: (height = width, input channels, output channels): the deep preset's
#: 3x3 convolutions that compute an input gradient, and the origin's second.
SHAPES = [(28, 32, 32), (14, 32, 64), (14, 64, 64), (14, 16, 32)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds (median reported)")
    parser.add_argument("--batch", type=int, default=50, help="images per micro-batch")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    print(f"ms per backward pass of a 3x3 convolution (float32, stride 1, padding 1, {args.batch} images, "
          f"one thread), medians of {args.rounds} rounds")  # fmt: skip
    print(f"{'layer':>22}  {'two functions':>13}  {'conv2d_backward':>15}  speed-up")
    with single_threaded_blas():
        for size, c, f in SHAPES:
            x = rng.standard_normal((args.batch, size, size, c), dtype=np.float32)
            w = rng.standard_normal((3, 3, c, f), dtype=np.float32)
            g = rng.standard_normal((args.batch, size, size, f), dtype=np.float32)
            separate, fused = [], []
            for _ in range(args.rounds):
                start = time.perf_counter()
                conv2d_kernel_grad(x, g, 3, 3, 1, 1)
                conv2d_input_grad(g, w, x.shape, 1, 1)
                separate.append(time.perf_counter() - start)
                start = time.perf_counter()
                conv2d_backward(x, g, w, 1, 1)
                fused.append(time.perf_counter() - start)
            a, b = statistics.median(separate) * 1e3, statistics.median(fused) * 1e3
            print(f"{f'{c}->{f} at {size}x{size}':>22}  {a:13.2f}  {b:15.2f}  {a / b:7.2f}x")


if __name__ == "__main__":
    main()
