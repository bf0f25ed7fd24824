"""What two training threads cost each other: one micro-batch's forward and
backward pass alone, in two threads of one process, and in two processes.

    python benchmarks/threads_vs_processes.py
    python benchmarks/threads_vs_processes.py --architecture deep --steps 40

skcnn trains on two threads, each running a replica of the network on its
own micro-batch of 50 images (skcnn.parallel). Side by side they are slower
than alone. Two causes are possible: the hardware the cores share (memory
bus, last-level cache) or Python's GIL, which a thread holds between numpy
calls. Two processes share the hardware but not the GIL; two threads share
both. So: if two processes run as fast as one alone and two threads do
not, the difference is the GIL (and numpy's own locking), not the memory.

Each way runs in fresh processes: ``--steps`` forward + backward passes of
a replica of the preset (single-threaded BLAS, as in training) after
``--warm-up`` seconds of untimed ones. It prints the median milliseconds a
pass per worker and the minor page faults a pass (fresh memory pages the
allocator hands numpy, a few microseconds each on a virtual machine; none
once the allocator has settled as it has in a fit, see ``_worker``).
"""

import argparse
import multiprocessing
import resource
import threading
import time
import warnings

import numpy as np
from threadpoolctl import threadpool_limits

BATCH = 50

#: (name, processes, threads per process); each way runs in fresh processes.
WAYS = [("alone", 1, 1), ("two threads, one process", 1, 2), ("two processes", 2, 1)]


def _replicas(architecture, n):
    """``n`` replicas of a freshly fitted preset and one micro-batch of
    Fashion-MNIST-shaped images each (random pixels: the work is the same)."""
    from skcnn import CNNClassifier
    from skcnn.parallel import replicas

    rng = np.random.default_rng(0)
    x = rng.random((200, 1, 28, 28), dtype=np.float32)
    y = np.arange(200) % 10
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one epoch: only the weights' shapes matter
        clf = CNNClassifier(architecture=architecture, max_iter=1, random_state=0).fit(x, y)
    nets = replicas(clf.network_, n, rng)
    return [(net, x[i * BATCH : (i + 1) * BATCH], y[i * BATCH : (i + 1) * BATCH]) for i, net in enumerate(nets)]


def _passes(item, steps, warm_up):
    """(median ms of one forward + backward pass of ``item = (net, x, y)``,
    minor page faults of the process during the timed passes)."""
    net, x, y = item
    times = []
    with threadpool_limits(1, "blas"):
        end_of_warm_up = time.perf_counter() + warm_up  # seconds of untimed passes
        while time.perf_counter() < end_of_warm_up:
            net.loss(x, y)
            net.backward()
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(steps):
            start = time.perf_counter()
            net.loss(x, y)
            net.backward()
            times.append(time.perf_counter() - start)
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    return float(np.median(times)) * 1e3, faults


def _worker(architecture, steps, warm_up, n_threads, barrier, results):
    """One process: ``n_threads`` threads, each timing its own replica."""
    # A fit frees large arrays (validated copies of the data) before it trains; after
    # that glibc's allocator serves numpy's temporaries from its heap instead of fresh
    # pages (its mmap threshold rises to the largest freed block, at most 32 MiB).
    # Freeing a 30 MiB block does the same here, so that the passes run as in a fit.
    ballast = np.ones(30 << 20, dtype=np.uint8)
    del ballast
    items = _replicas(architecture, n_threads)
    out = [None] * n_threads

    def thread(i):
        out[i] = _passes(items[i], steps, warm_up)

    threads = [threading.Thread(target=thread, args=(i,)) for i in range(n_threads)]
    barrier.wait()  # the processes of one way start together
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results.put([ms for ms, _ in out] + [out[0][1] / (steps * n_threads)])  # (faults are per process)


def _run(architecture, steps, warm_up, n_processes, n_threads):
    """Per-pass ms of every thread of every process, and page faults a pass."""
    context = multiprocessing.get_context("spawn")  # fresh interpreters: nothing shared with this one
    barrier, queue = context.Barrier(n_processes), context.Queue()
    procs = [context.Process(target=_worker, args=(architecture, steps, warm_up, n_threads, barrier, queue))
             for _ in range(n_processes)]  # fmt: skip
    for p in procs:
        p.start()
    results = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    return [ms for r in results for ms in r[:-1]], float(np.mean([r[-1] for r in results]))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--architecture", default="origin", help="the preset (default: origin)")
    parser.add_argument("--steps", type=int, default=100, help="passes timed per worker (median reported)")
    parser.add_argument("--warm-up", type=float, default=2.0, metavar="SECONDS",
                        help="untimed passes first, for this long (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warm_up < 0:
        parser.error("--steps must be >= 1 and --warm-up >= 0")
    print(f"{args.architecture} preset, forward + backward of a micro-batch of {BATCH}, one-thread BLAS, "
          f"medians of {args.steps} passes, each way in fresh processes")  # fmt: skip
    alone = None
    for name, n_processes, n_threads in WAYS:
        times, faults = _run(args.architecture, args.steps, args.warm_up, n_processes, n_threads)
        alone = alone or times[0]
        print(f"  {name:<26} {', '.join(f'{t:6.2f}' for t in times):>16} ms   "
              f"{np.mean(times) / alone:.2f}x alone   {faults:5.0f} page faults a pass")  # fmt: skip


if __name__ == "__main__":
    main()
