"""Keeping both cores busy: NumPy's elementwise work (pooling, ReLU, copies)
runs on one core, and only BLAS uses more. skcnn runs two halves of a batch in
two threads instead, each with a single-threaded BLAS, so every part of the
work is split (NumPy releases the GIL inside its loops). How a batch is cut
(:func:`micro_batches`) depends on its size only, never on the threads in
use, so results do not depend on them either.

The number of threads follows the BLAS thread limit in force, so nested
parallelism (joblib workers, Dask workers) that limits BLAS to one thread per
worker also keeps skcnn to one thread: workers x threads <= cores.
"""

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
import threadpoolctl
from threadpoolctl import threadpool_info, threadpool_limits

__all__ = ["n_threads", "worker_pool", "single_threaded_blas", "micro_batches"]

#: Most threads skcnn uses.
MAX_THREADS = 2

#: Most micro-batches a training batch is cut into (one network replica each).
MICRO_BATCHES = 2

#: Fewest samples in a micro-batch. Batch norm normalises each micro-batch
#: with its own mean and variance, which carry no information for one sample
#: (a dense layer's variance is then 0) and little for a handful; so a batch
#: of fewer than 2 * MIN_MICRO_BATCH samples is not cut at all.
MIN_MICRO_BATCH = 16


def micro_batches(n):
    """Bounds of the micro-batches that a batch of ``n`` samples is cut into.

    ``MICRO_BATCHES`` near-equal parts, but none smaller than
    ``MIN_MICRO_BATCH`` samples: a batch of 100 gives two micro-batches of
    50, one of 31 or fewer stays whole. A function of ``n`` alone.

    Returns
    -------
    bounds : int ndarray of shape (n_parts + 1,)
        Micro-batch ``k`` is ``batch[bounds[k]:bounds[k + 1]]``.
    """
    parts = max(1, min(MICRO_BATCHES, n // MIN_MICRO_BATCH))
    return np.linspace(0, n, parts + 1).astype(int)


def _blas_limits():
    """The smallest thread limit among the loaded BLAS libraries, or None."""
    limits = [info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"]
    return min(limits) if limits else None


def _claim_blas_control():
    """Let the calling thread change OpenBLAS's thread limit.

    OpenBLAS (pthreads build) has one process-wide limit, and threadpoolctl
    (3.8 and later) lets only one thread at a time change it -- the first to
    set a limit, until its ``with`` block ends -- and silently ignores the
    others. Clearing that claim (threadpoolctl's documented reset) lets skcnn
    hold BLAS to one thread even while another thread (say, the user's main
    thread inside ``threadpool_limits(4)``) holds it.
    """
    controller = getattr(threadpoolctl, "OpenBLASController", None)
    clear = getattr(controller, "clear_controlling_thread", None)
    if clear is not None:
        clear(force=True)


class _SharedBlasLimit:
    """One process-wide "BLAS on one thread", shared by concurrent callers.

    BLAS thread limits belong to the process, not to a thread. Had each call
    lowered them and put back what it found, two overlapping calls would
    leave them lowered for good (B finds A's 1, and restores it after A has
    restored the original). Here the first caller to enter lowers the limits
    and the last to leave restores them, under a lock, whatever the order.

    Both changes are made by one short-lived thread of skcnn's own, which
    holds ``threadpool_limits(1)`` from the first entry to the last exit:
    callers enter and leave from any threads, but threadpoolctl needs the
    thread that set a limit to be the one that restores it.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._holders = 0
        self._outer = None  # the BLAS limit in force before the first holder
        self._release = None  # set to end the limiting thread's hold
        self._thread = None

    def _limit(self, held, release, errors):
        try:
            _claim_blas_control()
            with threadpool_limits(limits=1, user_api="blas"):
                held.set()
                release.wait()
        except BaseException as exc:  # reported to the caller, never lost in this thread
            errors.append(exc)
        finally:
            held.set()

    @contextmanager
    def hold(self):
        with self._lock:
            if self._holders == 0:
                self._outer = _blas_limits()
                held, self._release, errors = threading.Event(), threading.Event(), []
                self._thread = threading.Thread(
                    target=self._limit, args=(held, self._release, errors), name="skcnn-blas-limit", daemon=True
                )
                self._thread.start()
                held.wait()
                if errors:
                    self._thread.join()
                    raise errors[0]
            self._holders += 1
        try:
            yield
        finally:
            with self._lock:
                self._holders -= 1
                if self._holders == 0:
                    self._release.set()
                    self._thread.join()  # the limits are back when the last caller leaves
                    self._thread = self._release = self._outer = None

    def outer_limit(self):
        """BLAS's thread limit as the process set it (not as skcnn lowered it)."""
        with self._lock:
            if self._holders:
                return self._outer
        return _blas_limits()


_BLAS = _SharedBlasLimit()


def single_threaded_blas():
    """Context manager: BLAS on one thread while any skcnn call needs it.

    Safe to enter from several threads at once; the limits in force before
    the first caller entered are back when the last one leaves.
    """
    return _BLAS.hold()


def n_threads():
    """Threads to use now: min(MAX_THREADS, cores, BLAS's thread limit).

    The BLAS limit is the process's own, not the one skcnn holds while
    another call of it runs in a second thread.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    blas = _BLAS.outer_limit()
    return max(1, min(MAX_THREADS, cores or 1, blas or cores or 1))


@contextmanager
def worker_pool():
    """Hold BLAS to one thread and give a thread pool, or None when one
    thread is all there is.

    Every matrix product then runs single-threaded however the work is
    spread, so results do not depend on the number of threads (OpenBLAS
    rounds edge rows differently when it splits a product between threads).
    """
    workers = n_threads()
    with single_threaded_blas():
        if workers == 1:
            yield None
        else:
            with ThreadPoolExecutor(workers) as pool:
                yield pool
