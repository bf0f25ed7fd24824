"""2x2 max pooling of channels-last images: column pairs first, or row pairs first.

    python benchmarks/pooling.py
    python benchmarks/pooling.py --rounds 100

skcnn.functions.max_pool_2x2 takes the maximum of neighbouring columns first
(runs of only C values, several times slower per value for numpy than long
runs) and then of neighbouring rows (two contiguous runs of W/2*C values) on
the half-size result. The other order, rows first, would leave the slow
column step only half the data, but it breaks ties differently (the first
maximum going down each column, not in reading order): it is timed here to
show what the change would buy. Forward (training, masks kept) and backward,
in milliseconds, one thread, a micro-batch of 50 images as each training
thread runs it, medians of interleaved rounds, at the pools of the origin
network and the deep preset.
"""

import argparse
import statistics
import time

import numpy as np

from skcnn.functions import max_pool_2x2, max_pool_2x2_backward
from skcnn.parallel import single_threaded_blas

#: (height = width, channels) entering each 2x2 pool of the origin network and the deep preset.
SHAPES = [("origin", 28, 16), ("origin", 14, 32), ("deep", 28, 32), ("deep", 14, 64)]


def rows_first(x):
    """The other order: row pairs of the full array, then column pairs."""
    n, h, w, c = x.shape
    rows = x.reshape(n * h // 2, 2, w * c)
    top, bottom = rows[:, 0], rows[:, 1]
    cols = np.maximum(top, bottom).reshape(n * h // 2, w // 2, 2, c)
    left, right = cols[:, :, 0], cols[:, :, 1]
    out = np.maximum(left, right).reshape(n, h // 2, w // 2, c)
    return out, (top >= bottom, left >= right, x.shape)


def rows_first_backward(grad, state):
    from_top, from_left, (n, h, w, c) = state
    g = grad.reshape(n * h // 2, w // 2, c)
    g_cols = np.empty((n * h // 2, w // 2, 2, c), dtype=grad.dtype)
    np.multiply(g, from_left, out=g_cols[:, :, 0])
    np.subtract(g, g_cols[:, :, 0], out=g_cols[:, :, 1])
    g_cols = g_cols.reshape(n * h // 2, w * c)
    dx = np.empty((n * h // 2, 2, w * c), dtype=grad.dtype)
    np.multiply(g_cols, from_top, out=dx[:, 0])
    np.subtract(g_cols, dx[:, 0], out=dx[:, 1])
    return dx.reshape(n, h, w, c)


def timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=30, help="interleaved rounds (median reported)")
    parser.add_argument("--batch", type=int, default=50, help="images per micro-batch")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    print(f"ms per 2x2 max pool (float32, {args.batch} images, one thread), medians of {args.rounds} rounds")
    print(f"{'pool input':>24}  {'columns first fwd / bwd':>23}  {'rows first fwd / bwd':>20}  rows first's speed-up (fwd + bwd)")
    with single_threaded_blas():
        for network, size, c in SHAPES:
            x = rng.standard_normal((args.batch, size, size, c), dtype=np.float32)
            g = rng.standard_normal((args.batch, size // 2, size // 2, c), dtype=np.float32)
            times = {key: [] for key in ("cf", "cb", "rf", "rb")}
            for _ in range(args.rounds):
                t, (out_c, state) = timed(max_pool_2x2, x, True)
                times["cf"].append(t)
                t, dx_c = timed(max_pool_2x2_backward, g, state)
                times["cb"].append(t)
                t, (out_r, state) = timed(rows_first, x)
                times["rf"].append(t)
                t, dx_r = timed(rows_first_backward, g, state)
                times["rb"].append(t)
            # random normal values have no ties: both orders agree exactly
            assert np.array_equal(out_c, out_r) and np.array_equal(dx_c, dx_r)
            ms = {key: statistics.median(v) * 1e3 for key, v in times.items()}
            label = f"{network} {size}x{size}x{c}"
            print(f"{label:>24}  {ms['cf']:11.2f} / {ms['cb']:5.2f}  {ms['rf']:11.2f} / {ms['rb']:4.2f}  "
                  f"{(ms['cf'] + ms['cb']) / (ms['rf'] + ms['rb']):8.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
