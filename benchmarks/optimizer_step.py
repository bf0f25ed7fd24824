"""Time of one Adam step cut into slices, run in one thread or spread over two.

    python benchmarks/optimizer_step.py
    python benchmarks/optimizer_step.py --sizes 163000,870000 --rounds 50

Training sums the micro-batches' gradients and applies the optimizer in
slices (skcnn.parallel.optimizer_parts): each slice is a task that a thread
takes. On a slice of a few ten thousand weights the ~10 numpy calls of an
Adam update are so short that two threads calling at once wait on each other
for Python's GIL longer than the arithmetic takes; from a few hundred
thousand up, two threads win. This script times both ways for networks of
the given sizes (163,000 is the origin network, 870,000 the "deep" preset),
medians over interleaved rounds, and prints how many slices skcnn chooses.
"""

import argparse
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from skcnn.optimizers import Adam
from skcnn.parallel import optimizer_parts, run_tasks, single_threaded_blas


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="163000,400000,870000", help="weights per network, comma-separated")
    parser.add_argument("--rounds", type=int, default=30, help="interleaved rounds (median reported)")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    ways = [("1 slice, 1 thread", 1, False), ("2 slices, 2 threads", 2, True), ("4 slices, 2 threads", 4, True),
            ("8 slices, 2 threads", 8, True)]
    print("ms per Adam step (float32, gradients of two micro-batches summed), medians of", args.rounds, "rounds")
    print(f"{'weights':>9}  " + "  ".join(f"{name:>19}" for name, _, _ in ways) + "  skcnn's slices")
    with single_threaded_blas(), ThreadPoolExecutor(1) as pool:
        for size in (int(s) for s in args.sizes.split(",")):
            params = [rng.standard_normal(size).astype(np.float32)]
            grads = [[rng.standard_normal(size).astype(np.float32) for _ in range(2)]]
            adam = Adam(1e-3)
            times = {name: [] for name, _, _ in ways}
            for _ in range(max(1, args.rounds)):
                for name, parts, threaded in ways:
                    start = time.perf_counter()
                    run_tasks(pool if threaded else None, adam.parts(params, grads, n_parts=parts))
                    times[name].append(time.perf_counter() - start)
            cells = "  ".join(f"{np.median(times[name]) * 1e3:19.3f}" for name, _, _ in ways)
            print(f"{size:9,}  {cells}  {optimizer_parts(size):14}")


if __name__ == "__main__":
    main()
