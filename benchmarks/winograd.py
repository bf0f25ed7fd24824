"""Winograd's F(2x2, 3x3) convolution in NumPy against skcnn's im2col, on one thread.

    python benchmarks/winograd.py
    python benchmarks/winograd.py --rounds 15

Why skcnn does not use Winograd's algorithm. Lavin & Gray (2016, "Fast
algorithms for convolutional neural networks") compute each 2x2 tile of a 3x3
convolution's output from a 4x4 tile of its input with 16 products instead of
36: the input tiles and the kernels are transformed (B^T d B, G g G^T), the
16 transformed components are multiplied channel by channel (16 GEMMs with
the channels as inner dimension), and the products transformed back (A^T m
A). The GEMMs then do 2.25x fewer multiply-adds than im2col's, which is how
the fast GPU and CPU libraries beat a plain GEMM on 3x3 convolutions.

In NumPy the transforms are elementwise passes over arrays larger than the
input (16 components for every 4 output pixels), each a separate numpy call
that runs at memory speed; this script times them, the GEMMs and the whole
against skcnn's conv2d (im2col, block by block) for the deep preset's
convolutions (a micro-batch of 50 images, as each training thread runs it),
checks the two agree (float64), and prints medians over rounds that
alternate the two. The layout used here is the fastest of the four tried: the
row and column transforms as subtractions and sums of whole pixel rows
(contiguous runs), computing some values twice rather than reading every
other pixel.
"""

import argparse
import time

import numpy as np
from threadpoolctl import threadpool_limits

from skcnn.functions import conv2d

#: (height = width, input channels, output channels): the deep preset's wide
#: convolutions and the origin network's second one.
SHAPES = [(28, 32, 32), (14, 32, 64), (14, 64, 64), (14, 16, 32)]
BATCH = 50

#: F(2x2, 3x3): kernel transform G (4x3); the input's B^T and the output's A^T
#: are written out as the sums and differences below.
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
#: Components are stored in the order (0, 3, 1, 2) along each axis, so that
#: components 0 and 3 (d0 - d2, d1 - d3) come from one subtraction of
#: neighbouring pixel pairs.
ORDER = [0, 3, 1, 2]


def kernel_transform(w):
    """G w G^T for HWIO kernels (3, 3, C, F): (4, 4, C, F), components in ORDER."""
    u = np.einsum("ai,ijcf,bj->abcf", G, w.astype(np.float64), G)[ORDER][:, ORDER]
    return np.ascontiguousarray(u.astype(w.dtype))


def winograd_conv3x3(x, w, pad=1, block_bytes=1 << 20, timings=None):
    """Stride-1 3x3 convolution of channels-last images x (N, H, W, C) with
    HWIO kernels w (3, 3, C, F), as skcnn's conv2d computes it. ``timings``
    (a dict) collects seconds spent in the input transform, the GEMMs and the
    output transform."""
    timings = {} if timings is None else timings
    n, h, width, c = x.shape
    f = w.shape[-1]
    oh, ow = h + 2 * pad - 2, width + 2 * pad - 2
    th, tw = -(-oh // 2), -(-ow // 2)  # tiles per column and per row
    hp, wp = 2 * th + 2, 2 * tw + 2
    xp = np.zeros((n, hp, wp, c), x.dtype)
    xp[:, pad : pad + h, pad : pad + width] = x
    u = kernel_transform(w)
    y = np.empty((n, th, 2, tw, 2, f), x.dtype)
    block = min(n, max(1, block_bytes // (16 * th * tw * max(c, f) * x.itemsize)))
    t_rows = np.empty((4, block, th, wp, c), x.dtype)
    pair_diff, sums, diffs = (np.empty((4, block, th, 2 * tw, c), x.dtype) for _ in range(3))
    m = np.empty((4, 4, block * th * tw, f), x.dtype)
    p = np.empty((2, 4, block * th * tw, f), x.dtype)
    tmp = np.empty((block, th, tw, f), x.dtype)
    for start in range(0, n, block):
        b = min(block, n - start)
        if b < block:
            t_rows, pair_diff, sums, diffs, tmp = (a[:, :b] for a in (t_rows, pair_diff, sums, diffs)) + (tmp[:b],)
            m, p = m[:, :, : b * th * tw], p[:, :, : b * th * tw]
        clock = time.perf_counter()
        # B^T along the rows: tile i reads rows 2i..2i+3 (row pairs i and i+1)
        rows = xp[start : start + b].reshape(b, th + 1, 2, wp, c)
        np.subtract(rows[:, :th], rows[:, 1:], out=t_rows[0:2].transpose(1, 2, 0, 3, 4))  # d0-d2, d1-d3
        np.add(rows[:, :th, 1], rows[:, 1:, 0], out=t_rows[2])  # d1+d2
        np.subtract(rows[:, 1:, 0], rows[:, :th, 1], out=t_rows[3])  # d2-d1
        # B^T along the columns, on whole rows: the even pixels of sums and diffs are the tiles'
        np.subtract(t_rows[..., : 2 * tw, :], t_rows[..., 2:, :], out=pair_diff)
        np.add(t_rows[..., 1 : 2 * tw + 1, :], t_rows[..., 2:, :], out=sums)
        np.subtract(t_rows[..., 2:, :], t_rows[..., 1 : 2 * tw + 1, :], out=diffs)
        timings["input transform"] = timings.get("input transform", 0) + time.perf_counter() - clock
        clock = time.perf_counter()
        tiles = b * th * tw
        np.matmul(pair_diff.reshape(4, tiles, 2, c).transpose(0, 2, 1, 3), u[:, 0:2], out=m[:, 0:2])
        np.matmul(sums.reshape(4, tiles, 2, c)[:, :, 0], u[:, 2], out=m[:, 2])
        np.matmul(diffs.reshape(4, tiles, 2, c)[:, :, 0], u[:, 3], out=m[:, 3])
        timings["16 GEMMs"] = timings.get("16 GEMMs", 0) + time.perf_counter() - clock
        clock = time.perf_counter()
        # A^T = [[1, 1, 1, 0], [0, 1, -1, -1]] along rows, then columns (slots hold m0, m3, m1, m2)
        np.add(m[2], m[3], out=p[0])
        np.subtract(m[2], m[3], out=p[1])
        p[0] += m[0]
        p[1] -= m[1]
        out = y[start : start + b]
        for r in range(2):
            q = p[r].reshape(4, b, th, tw, f)
            np.add(q[2], q[3], out=tmp)
            np.add(tmp, q[0], out=out[:, :, r, :, 0])
            np.subtract(q[2], q[3], out=tmp)
            np.subtract(tmp, q[1], out=out[:, :, r, :, 1])
        timings["output transform"] = timings.get("output transform", 0) + time.perf_counter() - clock
    return y.reshape(n, 2 * th, 2 * tw, f)[:, :oh, :ow]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=9, help="alternating rounds (medians reported)")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    print(f"one thread, float32, batch of {BATCH}, medians of {args.rounds} alternating rounds, ms")
    print(f"{'conv':>14} {'im2col':>8} {'winograd':>9} {'speed-up':>9}   winograd's parts (input, GEMMs, output)")
    with threadpool_limits(1, "blas"):
        for size, c, f in SHAPES:
            x = rng.standard_normal((BATCH, size, size, c))
            w = rng.standard_normal((3, 3, c, f)) * 0.1
            error = np.abs(winograd_conv3x3(x, w) - conv2d(x, w, 1, 1)).max()
            assert error < 1e-10, f"Winograd and im2col disagree by {error}"
            x, w = x.astype(np.float32), w.astype(np.float32)
            im2col, winograd, parts = [], [], []
            for _ in range(max(1, args.rounds)):
                start = time.perf_counter()
                conv2d(x, w, 1, 1)
                im2col.append(time.perf_counter() - start)
                timings = {}
                start = time.perf_counter()
                winograd_conv3x3(x, w, timings=timings)
                winograd.append(time.perf_counter() - start)
                parts.append(list(timings.values()))
            a, b = np.median(im2col) * 1e3, np.median(winograd) * 1e3
            split = ", ".join(f"{t:.2f}" for t in np.median(parts, axis=0) * 1e3)
            print(f"{size:>2}x{size:<2} {c:>3}->{f:<3} {a:8.2f} {b:9.2f} {a / b:8.2f}x   {split}")


if __name__ == "__main__":
    main()
