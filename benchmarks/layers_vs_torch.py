"""The deep preset's layers one at a time, skcnn against PyTorch, on one thread.

    python benchmarks/layers_vs_torch.py            # needs PyTorch (pip install torch==2.13.0)
    python benchmarks/layers_vs_torch.py --rounds 9

For each convolution shape of the deep preset (a micro-batch of 50 images,
as each training thread runs it) and for batch norm + ReLU after the widest
one: the forward pass, and forward + backward, in milliseconds, medians over
rounds that alternate the two frameworks; then, for the 32->32 convolution at
28x28, how skcnn's forward pass splits between lowering a block to im2col
rows and the block's GEMM. Both run on one thread (single-threaded BLAS and
``torch.set_num_threads(1)``): this is how each of skcnn's two training
threads runs its micro-batch. skcnn's side runs its layers (Conv2D without
bias, BatchNorm, ReLU) as training does, so the figures follow the code.
"""

import argparse
import time

import numpy as np
from threadpoolctl import threadpool_limits

from skcnn.functions import CONV_BLOCK_BYTES, _lower, _windows, pad_images
from skcnn.layers import BatchNorm, Conv2D, ReLU

#: (height = width, input channels, output channels) of the deep preset's convolutions.
SHAPES = [(28, 1, 32), (28, 32, 32), (14, 32, 64), (14, 64, 64)]
BATCH = 50


def median_ms(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e3


def conv_cases(torch, rng):
    for size, c, f in SHAPES:
        x = rng.random((BATCH, size, size, c), dtype=np.float32)
        w = rng.standard_normal((3, 3, c, f), dtype=np.float32)
        g = rng.standard_normal((BATCH, size, size, f), dtype=np.float32)
        first = c == 1  # the network's first layer: no input gradient
        layer = Conv2D(f, 3, padding=1, bias=False)  # as the deep preset's (batch norm follows)
        layer.build(x.shape[1:])
        layer.params["W"][...] = w
        layer.input_grad = not first

        def ours_forward(layer=layer, x=x):
            layer.forward(x)

        def ours_both(layer=layer, x=x, g=g):
            layer.forward(x, training=True)
            layer.backward(g)

        conv = torch.nn.Conv2d(c, f, 3, padding=1, bias=False)
        tx = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).requires_grad_(not first)
        tg = torch.from_numpy(np.ascontiguousarray(g.transpose(0, 3, 1, 2)))

        def torch_forward(conv=conv, tx=tx):
            with torch.no_grad():
                conv(tx)

        def torch_both(conv=conv, tx=tx, tg=tg):
            conv(tx).backward(tg)

        yield f"conv {c}->{f} at {size}x{size}", ours_forward, ours_both, torch_forward, torch_both


def norm_case(torch, rng, size=28, c=32):
    x = rng.standard_normal((BATCH, size, size, c), dtype=np.float32)
    g = rng.standard_normal(x.shape, dtype=np.float32)
    bn, relu = BatchNorm(), ReLU()
    bn.build(x.shape[1:])

    def ours_forward():
        relu.forward(bn.forward(x, training=True), training=True)

    def ours_both():
        ours_forward()
        bn.backward(relu.backward(g))

    tbn, trelu = torch.nn.BatchNorm2d(c), torch.nn.ReLU()
    tx = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).requires_grad_()
    tg = torch.from_numpy(np.ascontiguousarray(g.transpose(0, 3, 1, 2)))

    def torch_forward():
        with torch.no_grad():
            trelu(tbn(tx))

    def torch_both():
        trelu(tbn(tx)).backward(tg)

    return f"batch norm + ReLU, {size}x{size}x{c}", ours_forward, ours_both, torch_forward, torch_both


def lowering_split(rng, repeats, size=28, c=32, f=32):
    """Milliseconds a micro-batch spends lowering blocks and in their GEMMs."""
    x = rng.random((BATCH, size, size, c), dtype=np.float32)
    w2 = rng.standard_normal((9 * c, f), dtype=np.float32)
    win = _windows(np.ascontiguousarray(pad_images(x, 1)), 3, 3, 1)
    per_block = max(1, CONV_BLOCK_BYTES // (size * size * 9 * c * 4))
    block = win[:per_block]
    cols = _lower(block, 3)
    out = np.empty((len(cols), f), dtype=np.float32)
    blocks = BATCH / per_block
    lower = median_ms(lambda: _lower(block, 3, out=cols), repeats) * blocks
    gemm = median_ms(lambda: np.matmul(cols, w2, out=out), repeats) * blocks
    gflops = 2 * cols.shape[0] * cols.shape[1] * f * blocks / (gemm * 1e-3) / 1e9
    gbytes = cols.nbytes * blocks / (lower * 1e-3) / 1e9
    return lower, gemm, gflops, gbytes


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="turns each framework takes")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls a turn (the median counts)")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.repeats < 1:
        parser.error("--rounds and --repeats must be at least 1")
    try:
        import torch
    except ImportError:
        parser.error("needs PyTorch for the comparison: pip install torch==2.13.0")
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    cases = list(conv_cases(torch, rng)) + [norm_case(torch, rng)]
    print(f"one thread, micro-batch of {BATCH}, ms (medians of {args.rounds} alternating rounds)")
    print(f"{'':34} {'skcnn fwd':>10} {'torch fwd':>10} {'skcnn f+b':>10} {'torch f+b':>10}")
    with threadpool_limits(1):
        for name, *fns in cases:
            for fn in fns:  # warm-up
                fn()
            turns = [[] for _ in fns]
            for _ in range(args.rounds):
                for k, fn in enumerate(fns):
                    turns[k].append(median_ms(fn, args.repeats))
            ours_f, ours_b, torch_f, torch_b = (float(np.median(t)) for t in turns)
            print(f"{name:34} {ours_f:10.2f} {torch_f:10.2f} {ours_b:10.2f} {torch_b:10.2f}")
        lower, gemm, gflops, gbytes = lowering_split(rng, 20 * args.repeats)
    print(
        f"\nskcnn's conv 32->32 at 28x28, forward: lowering {lower:.2f} ms ({gbytes:.1f} GB/s copied), "
        f"GEMMs {gemm:.2f} ms ({gflops:.0f} GFLOPS), block by block"
    )


if __name__ == "__main__":
    main()
