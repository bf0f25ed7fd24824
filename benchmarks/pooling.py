"""2x2 max pooling of channels-last images: column pairs first, row pairs
first, or on a convolution's output written in pool order.

    python benchmarks/pooling.py
    python benchmarks/pooling.py --rounds 100

skcnn.functions.max_pool_2x2 takes the maximum of neighbouring columns first
(runs of only C values, several times slower per value for numpy than long
runs) and then of neighbouring rows (two contiguous runs of W/2*C values) on
the half-size result. The other order, rows first, would leave the slow
column step only half the data, but it breaks ties differently (the first
maximum going down each column, not in reading order): it is timed here to
show what the change would buy.

What skcnn does where a convolution feeds the pool (skcnn.network's
_set_pool_order) is the third way: the convolution writes its output in
pool order, each image's four quarter-images of the windows' top-left,
top-right, bottom-left and bottom-right pixels, so that the pool
(skcnn.functions.max_pool_pool_order) compares four long contiguous runs.
Its backward returns the gradient in pool order too; a convolution that
computes its input gradient pads it for the "full" correlation, a copy
that in pool order also puts the pixels back in place (pad_images with
pool_order), slower than the plain copy: "bwd + pad" times the backward and
that padding, both ways. The first convolution computes no input gradient,
so its pool's "fwd / bwd" is all the difference. The convolution's own
lowering costs the same in either order.

Forward (training, masks kept) and backward, in milliseconds, one thread, a
micro-batch of 50 images as each training thread runs it, medians of
interleaved rounds, at the pools of the origin network and the deep preset.
"""

import argparse
import statistics
import time

import numpy as np

from skcnn.functions import (
    max_pool_2x2,
    max_pool_2x2_backward,
    max_pool_pool_order,
    max_pool_pool_order_backward,
    pad_images,
)
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


def to_pool_order(x):
    """Images (N, H, W, C) as a convolution in pool order writes them, (4N, H/2, W/2, C)."""
    n, h, w, c = x.shape
    return np.ascontiguousarray(x.reshape(n, h // 2, 2, w // 2, 2, c).transpose(0, 2, 4, 1, 3, 5)).reshape(
        4 * n, h // 2, w // 2, c
    )


def backward_and_pad(g, state):
    """The pool's backward, its gradient then padded as conv2d_backward does (3x3 kernels)."""
    return pad_images(max_pool_2x2_backward(g, state), 1)


def pool_order_backward_and_pad(g, state):
    """The same in pool order: the padding copy also puts the pixels back in the usual order."""
    return pad_images(max_pool_pool_order_backward(g, state), 1, pool_order=True)


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
    print(
        f"{'pool input':>20}  {'columns first':>20}  {'rows first':>10}  {'pool order':>20}  "
        f"speed-up of rows first, pool order, pool order with padding"
    )
    print(f"{'':>20}  {'fwd / bwd / bwd+pad':>20}  {'fwd / bwd':>10}  {'fwd / bwd / bwd+pad':>20}")
    ways = {
        "c": (lambda x: max_pool_2x2(x, True), max_pool_2x2_backward),
        "r": (rows_first, rows_first_backward),
        "p": (lambda x: max_pool_pool_order(x, True), max_pool_pool_order_backward),
    }
    padded = {"c": backward_and_pad, "p": pool_order_backward_and_pad}
    with single_threaded_blas():
        for network, size, c in SHAPES:
            x = rng.standard_normal((args.batch, size, size, c), dtype=np.float32)
            inputs = {"c": x, "r": x, "p": to_pool_order(x)}
            g = rng.standard_normal((args.batch, size // 2, size // 2, c), dtype=np.float32)
            times = {key + part: [] for key in ("c", "r", "p") for part in "fb"}
            times.update(cp=[], pp=[])
            results = {}
            for _ in range(args.rounds):
                for key, (forward, backward) in ways.items():
                    t, (out, state) = timed(forward, inputs[key])
                    times[key + "f"].append(t)
                    t, dx = timed(backward, g, state)
                    times[key + "b"].append(t)
                    if key in padded:
                        t, dx_padded = timed(padded[key], g, state)
                        times[key + "p"].append(t)
                    results[key] = out, dx, dx_padded
            # random normal values have no ties: every way agrees exactly
            (out_c, dx_c, pad_c), (out_r, dx_r, _), (out_p, dx_p, pad_p) = (results[k] for k in "crp")
            assert np.array_equal(out_c, out_r) and np.array_equal(dx_c, dx_r) and np.array_equal(out_c, out_p)
            assert np.array_equal(pad_c, pad_p) and np.array_equal(dx_p, to_pool_order(dx_c))
            ms = {key: statistics.median(v) * 1e3 for key, v in times.items()}
            usual = ms["cf"] + ms["cb"]
            label = f"{network} {size}x{size}x{c}"
            print(f"{label:>20}  {ms['cf']:4.2f} / {ms['cb']:4.2f} / {ms['cp']:4.2f}  {ms['rf']:4.2f} / {ms['rb']:4.2f}  "
                  f"{ms['pf']:4.2f} / {ms['pb']:4.2f} / {ms['pp']:4.2f}  "
                  f"{usual / (ms['rf'] + ms['rb']):5.2f}x {usual / (ms['pf'] + ms['pb']):5.2f}x "
                  f"{(ms['cf'] + ms['cp']) / (ms['pf'] + ms['pp']):5.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
