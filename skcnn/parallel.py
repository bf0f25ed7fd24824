"""Keeping both cores busy: NumPy's elementwise work (pooling, ReLU, copies)
runs on one core, and only BLAS uses more. skcnn runs two halves of a batch in
two threads instead, each with a single-threaded BLAS, so every part of the
work is split (NumPy releases the GIL inside its loops). The halves are the
same with one thread, so results are too.

The number of threads follows the BLAS thread limit in force, so nested
parallelism (joblib workers, Dask workers) that limits BLAS to one thread per
worker also keeps skcnn to one thread: workers x threads <= cores.
"""

import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from threadpoolctl import threadpool_info, threadpool_limits

__all__ = ["n_threads", "worker_pool"]

#: Most threads skcnn uses (a batch is split in this many micro-batches).
MAX_THREADS = 2


def n_threads():
    """Threads to use now: min(MAX_THREADS, cores, BLAS's current thread limit)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    limits = [info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"]
    blas = min(limits) if limits else cores
    return max(1, min(MAX_THREADS, cores or 1, blas))


@contextmanager
def worker_pool():
    """Hold BLAS to one thread and give a thread pool, or None when one
    thread is all there is.

    Every matrix product then runs single-threaded however the work is
    spread, so results do not depend on the number of threads (OpenBLAS
    rounds edge rows differently when it splits a product between threads).
    """
    workers = n_threads()
    with threadpool_limits(limits=1, user_api="blas"):
        if workers == 1:
            yield None
        else:
            with ThreadPoolExecutor(workers) as pool:
                yield pool
