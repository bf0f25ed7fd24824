"""All of skcnn's multi-core machinery, in one place.

NumPy's elementwise work (pooling, ReLU, copies) runs on one core, and only
BLAS uses more. skcnn instead runs micro-batches of a training batch (and
chunks of a prediction) in threads of its own, each with a single-threaded
BLAS, so every part of the work is spread (NumPy releases the GIL inside its
loops).

* How many threads: :func:`n_threads` -- the cores this process may use
  (affinity mask, cgroup CPU quota) and the BLAS thread limit in force (so
  that nested parallelism, joblib or Dask workers that limit BLAS to one
  thread each, keeps skcnn to one thread too: workers x threads <= cores).
  ``SKCNN_NUM_THREADS`` overrides it.
* How the work is cut: :func:`micro_batches` depends on the batch size only,
  never on the threads, and the threads take the pieces from a queue
  (:func:`run_tasks`). Every matrix product runs on a single-threaded BLAS.
  So every result is the same to the bit with 1, 2, 3 or 16 threads.
* Which threads: the calling thread and helper threads made once and kept
  for the process (:func:`worker_pool`); the BLAS limit is held by the
  first call that enters and restored by the last that leaves.
* Data-parallel training: :class:`DataParallel` holds the network's
  replicas (one per micro-batch, sharing its weights), the packed weight and
  gradient buffers, and runs one step: gradients of the micro-batches side
  by side, their sum, the optimizer step cut into slices, the batch-norm
  statistics merged. ``partial_fit`` keeps it from call to call
  (:meth:`DataParallel.renew`).
"""

import itertools
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import lru_cache, partial

import numpy as np
import threadpoolctl
from threadpoolctl import ThreadpoolController

from .layers import Dropout, SoftmaxCrossEntropy

__all__ = [
    "n_threads",
    "worker_pool",
    "run_tasks",
    "record_threads",
    "single_threaded_blas",
    "micro_batches",
    "replicas",
    "pack_params",
    "packed_grads",
    "merge_buffers",
    "DataParallel",
]

#: Environment variable that sets the number of threads (overriding the
#: cores and the BLAS limit), as ``OMP_NUM_THREADS`` does for OpenMP.
THREADS_ENV = "SKCNN_NUM_THREADS"

#: Samples per micro-batch aimed at: large enough that the matrix products
#: and batch norm run at full speed (50 is what a batch of 100 always got).
MICRO_BATCH = 50

#: Fewest samples in a micro-batch. Batch norm normalises each micro-batch
#: with its own mean and variance, which carry no information for one sample
#: (a dense layer's variance is then 0) and little for a handful; so a batch
#: of fewer than 2 * MIN_MICRO_BATCH samples is not cut at all.
MIN_MICRO_BATCH = 16


def micro_batches(n):
    """Bounds of the micro-batches that a batch of ``n`` samples is cut into.

    ``n // MICRO_BATCH`` near-equal parts, at least two (so that two cores
    share even a small batch) but none smaller than ``MIN_MICRO_BATCH``
    samples: a batch of 100 gives two micro-batches of 50, one of 400 eight,
    one of 31 or fewer stays whole. A function of ``n`` alone, never of the
    threads: results do not depend on how many run.

    Returns
    -------
    bounds : int ndarray of shape (n_parts + 1,)
        Micro-batch ``k`` is ``batch[bounds[k]:bounds[k + 1]]``.
    """
    parts = max(1, min(max(2, n // MICRO_BATCH), n // MIN_MICRO_BATCH))
    return np.linspace(0, n, parts + 1).astype(int)


_controller_lock = threading.Lock()
_controller = None


def _blas_controller():
    """threadpoolctl's controller of the loaded BLAS libraries, made once.

    Making one scans every library the process has loaded (a few
    milliseconds): paid on every epoch and every ``predict``, that was half
    the time of a small fit. The libraries NumPy calls are loaded with NumPy,
    before any of this runs; their thread limits are read live.
    """
    global _controller
    with _controller_lock:
        if _controller is None:
            _controller = ThreadpoolController().select(user_api="blas")
        return _controller


def _blas_limits():
    """The smallest thread limit among the loaded BLAS libraries, or None."""
    limits = [lib.num_threads for lib in _blas_controller().lib_controllers]
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
    and the last to leave restores them, under a lock, whatever the order
    and whichever threads they are.

    The limits are set with threadpoolctl's limiter, used as a plain object
    (``restore_original_limits``) rather than a ``with`` block, since the
    thread that restores may not be the one that lowered. Its rule that only
    one thread changes OpenBLAS's limit is cleared around each change
    (:func:`_claim_blas_control`), so neither skcnn nor the user's threads
    are left without control. Both changes are direct library calls, about
    10 us; the thread of skcnn's own that made them before cost 0.25 ms a
    call, a third of the time of a one-image ``predict``
    (``python benchmarks/latency.py``).
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._holders = 0
        self._outer = None  # the BLAS limit in force before the first holder
        self._limiter = None  # threadpoolctl's record of the limits to restore

    def _after_fork_in_child(self):
        """A process forked while a call held BLAS (or held the lock) runs
        none of its parent's calls: it gets a fresh lock, which the parent's
        other threads may have held at the fork and would never release
        here, and its BLAS limits back, which no call of its own would
        otherwise restore."""
        self._lock = threading.Lock()
        if self._holders:
            limiter, self._limiter, self._holders, self._outer = self._limiter, None, 0, None
            _claim_blas_control()
            try:
                limiter.restore_original_limits()
            finally:
                _claim_blas_control()

    @contextmanager
    def hold(self):
        with self._lock:
            if self._holders == 0:
                self._outer = _blas_limits()
                _claim_blas_control()
                try:
                    self._limiter = _blas_controller().limit(limits=1, user_api="blas")
                finally:
                    _claim_blas_control()
            self._holders += 1
        try:
            yield
        finally:
            with self._lock:
                self._holders -= 1
                if self._holders == 0:
                    _claim_blas_control()
                    try:
                        self._limiter.restore_original_limits()  # the limits are back when the last caller leaves
                    finally:
                        _claim_blas_control()
                        self._limiter = self._outer = None

    def outer_limit(self):
        """BLAS's thread limit as the process set it (not as skcnn lowered it)."""
        with self._lock:
            if self._holders:
                return self._outer
        return _blas_limits()


_BLAS = _SharedBlasLimit()


def _after_fork_in_child():
    """In a forked child: the locks, which its parent's other threads may
    have held at the fork, made anew; the thread pool forgotten (its threads
    are the parent's, and none runs here); the BLAS limits restored (see
    :meth:`_SharedBlasLimit._after_fork_in_child`)."""
    global _controller_lock, _pool_lock, _pool
    _controller_lock, _pool_lock = threading.Lock(), threading.Lock()
    _pool = None  # its threads are the parent's: none runs here
    _BLAS._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def single_threaded_blas():
    """Context manager: BLAS on one thread while any skcnn call needs it.

    Safe to enter from several threads at once; the limits in force before
    the first caller entered are back when the last one leaves.
    """
    return _BLAS.hold()


def _cgroup_membership(membership):
    """The process's cgroup path per hierarchy from ``membership`` (the
    format of /proc/self/cgroup): ``{"": path}`` for cgroup v2's unified
    hierarchy ("0::/path"), ``{"cpu": path}`` for v1's cpu controller
    ("4:cpu,cpuacct:/path")."""
    paths = {}
    try:
        with open(membership) as f:
            lines = f.read().splitlines()
    except OSError:
        return paths
    for line in lines:
        fields = line.split(":", 2)
        if len(fields) != 3:
            continue
        _, controllers, path = fields
        if controllers == "":
            paths[""] = path
        elif "cpu" in controllers.split(","):
            paths["cpu"] = path
    return paths


def _cpus_from_quota(quota, period):
    """CPUs a quota pays for, rounded up; None for no limit or an unreadable one."""
    try:
        quota, period = int(quota), int(period)
    except ValueError:  # "max": no limit
        return None
    return max(1, math.ceil(quota / period)) if quota > 0 and period > 0 else None


def _read_fields(path):
    """The whitespace-separated fields of a small file, none if it cannot be read."""
    try:
        with open(path) as f:
            return f.read().split()
    except OSError:
        return []


@lru_cache(maxsize=16)  # read once: dozens of files, ~0.1 ms, on every fit and predict otherwise
def _cgroup_cpus(root="/sys/fs/cgroup", membership="/proc/self/cgroup"):
    """CPUs the cgroup CPU quota allows (rounded up), or None without a quota.

    A container limited to 2 CPUs on a 64-core host sees 64 cores in its
    affinity mask, but gets 2 cores' worth of time: more threads only queue.
    The quota is looked up in the process's own cgroup (from ``membership``)
    and each of its ancestors, the smallest winning (a limit on a parent
    holds for its children): cgroup v2's ``cpu.max`` ("quota period" or
    "max period") in ``root`` or, on hybrid systems, ``root/unified``, and
    v1's ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (-1: none) under the
    cpu controller's mount. Inside a container with its own cgroup namespace
    the process's path is "/", so the files at the mount's top are read.
    Read once per process: a quota changed while it runs is not seen.
    """
    paths = _cgroup_membership(membership)
    v2 = [(os.path.join(root, "unified"), paths.get("", "/")), (root, paths.get("", "/"))]
    v1 = [(os.path.join(root, name), paths.get("cpu", "/")) for name in ("cpu", "cpu,cpuacct", "cpuacct,cpu")]
    limits = []
    for mounts, files in ((v2, ["cpu.max"]), (v1, ["cpu.cfs_quota_us", "cpu.cfs_period_us"])):
        for mount, path in mounts:
            if not os.path.isdir(mount):
                continue
            parts = [part for part in path.split("/") if part and part not in (".", "..")]
            for depth in range(len(parts), -1, -1):  # the process's own cgroup, then each parent
                folder = os.path.join(mount, *parts[:depth])
                fields = [field for name in files for field in _read_fields(os.path.join(folder, name))]
                if len(fields) == 2:
                    limits.append(_cpus_from_quota(*fields))
    limits = [limit for limit in limits if limit is not None]
    return min(limits) if limits else None


def _env_threads():
    """``SKCNN_NUM_THREADS`` as an int >= 1, None when unset; a clear error
    for anything else."""
    value = os.environ.get(THREADS_ENV, "").strip()
    if not value:
        return None
    try:
        threads = int(value)
    except ValueError:
        threads = 0
    if threads < 1:
        raise ValueError(f"{THREADS_ENV} must be a whole number >= 1; got {value!r}")
    return threads


def n_threads():
    """Threads to use now.

    ``SKCNN_NUM_THREADS`` if set; otherwise the fewest of the cores this
    process may run on (its affinity mask), the cores its cgroup CPU quota
    pays for, and the BLAS thread limit in force. The BLAS limit is the
    process's own, not the one skcnn holds while another call of it runs in
    a second thread.
    """
    threads = _env_threads()
    if threads is not None:
        return threads
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    limits = [cores or 1, _cgroup_cpus(), _BLAS.outer_limit()]
    return max(1, min(limit for limit in limits if limit is not None))


class _Helpers:
    """The threads that help the calling thread in :func:`run_tasks`: ``n``
    of a thread pool's threads."""

    def __init__(self, executor, n):
        self.executor, self.n = executor, n

    def submit(self, fn):
        return self.executor.submit(fn)


_pool_lock = threading.Lock()
_pool = None  # (ThreadPoolExecutor, its threads), kept for every call (see _executor)


def _executor(helpers):
    """A thread pool of at least ``helpers`` threads, made once and kept.

    A pool made for each call started new threads every call, and the
    first matrix product a thread makes has OpenBLAS set up its working
    memory for that thread, page by page: about 3 ms of a 13 ms step of the
    origin network, in every ``partial_fit`` call (and 0.1 ms in each
    ``predict`` call). Kept threads sleep between calls. Asked for more
    threads than it has, the pool is replaced by a larger one.
    """
    global _pool
    with _pool_lock:
        if _pool is None or _pool[1] < helpers:
            old, _pool = _pool, (ThreadPoolExecutor(helpers, thread_name_prefix="skcnn"), helpers)
            if old is not None:
                old[0].shutdown(wait=False)  # its threads end once idle
        return _pool[0]


@contextmanager
def worker_pool():
    """Hold BLAS to one thread and give the helper threads for
    :func:`run_tasks`, or None when one thread is all there is.

    Every matrix product then runs single-threaded however the work is
    spread, so results do not depend on the number of threads (OpenBLAS
    rounds edge rows differently when it splits a product between threads).
    There is one helper fewer than :func:`n_threads`: the calling thread
    works too.
    """
    workers = n_threads()
    with single_threaded_blas():
        yield None if workers == 1 else _Helpers(_executor(workers - 1), workers - 1)


_recording = []  # sets collecting the names of threads that ran tasks (record_threads)


@contextmanager
def record_threads():
    """Collect the names of the threads that run tasks of :func:`run_tasks`
    while inside (for tests and benchmarks: are the threads really used?).

    Names, not idents: the pool's threads are named "skcnn_0", "skcnn_1",
    ... (a larger pool that replaces a smaller one names them alike).
    """
    seen = set()
    _recording.append(seen)
    try:
        yield seen
    finally:
        _recording.remove(seen)


def run_tasks(pool, tasks):
    """Results of the calls ``tasks``, in order.

    The calling thread and the pool's threads take the tasks from one queue,
    the next one each as it becomes free, so a slow task never holds up the
    others. Which thread runs which task does not change any result.
    """
    tasks = list(tasks)
    results = [None] * len(tasks)
    queue = itertools.count()  # next() is atomic under the GIL: a shared queue of indices

    def work():
        for i in iter(queue.__next__, None):
            if i >= len(tasks):
                return
            for seen in _recording:
                seen.add(threading.current_thread().name)
            results[i] = tasks[i]()

    if pool is None or len(tasks) < 2:
        work()
        return results
    helpers = [pool.submit(work) for _ in range(min(pool.n, len(tasks) - 1))]
    try:
        work()
    finally:
        for future in helpers:
            # A helper not started yet (its thread busy with another call's
            # tasks) has nothing left to do: the tasks are all taken.
            if not future.cancel():
                future.result()  # re-raises a helper's exception
    return results


# -- data-parallel training ------------------------------------------------------


def replicas(network, n, rng):
    """``n`` networks that share ``network``'s weights (the same arrays) but
    have their own caches and gradients, their own dropout random stream
    (spawned from ``rng``) and their own copy of batch-norm statistics:
    each can train on a micro-batch in its own thread."""
    out = []
    for child in rng.spawn(n):
        layers = [layer.replica(child) for layer in network.layers]
        out.append(type(network)(layers, network.dtype, network.spec, network.input_shape))
        out[-1].loss_layer = SoftmaxCrossEntropy(network.loss_layer.label_smoothing)
    return out


def merge_buffers(network, copies, used):
    """Set every buffer that training changes (batch-norm running
    statistics) to its mean over the replicas in ``used``, in ``network``
    and in all ``copies``."""
    mine = network.named_layers()
    theirs = [r.named_layers() for r in copies]
    used_ids = {id(r) for r in used}
    for i, (_, layer) in enumerate(mine):
        if not layer.trains_buffers:
            continue
        for k, v in layer.buffers.items():
            values = [t[i][1].buffers[k] for r, t in zip(copies, theirs) if id(r) in used_ids]
            v[...] = sum(values[1:], values[0].copy()) / v.dtype.type(len(values))
            for t in theirs:
                t[i][1].buffers[k][...] = v


def pack_params(network):
    """Move the learnable arrays into two contiguous buffers, the weights
    and the rest, each layer keeping views of its part of them.

    Returns ``[(buffer, takes_weight_decay)]``. An optimizer step over two
    buffers is a few large numpy calls instead of a dozen small ones per
    layer. Arrays already packed stay where they are.
    """
    packed = []
    for group, decays in zip(network.param_groups(), (True, False)):
        if not group:
            continue
        arrays = [layer.params[k] for layer, k in group]
        base = arrays[0].base
        if base is not None and all(a.base is base for a in arrays) and base.size == sum(a.size for a in arrays):
            packed.append((base, decays))
            continue
        buffer = np.concatenate([a.reshape(-1) for a in arrays])
        offset = 0
        for layer, k in group:
            size, shape = layer.params[k].size, layer.params[k].shape
            layer.params[k] = buffer[offset : offset + size].reshape(shape)
            offset += size
        packed.append((buffer, decays))
    return packed


def packed_grads(network, out):
    """Write ``network``'s gradients into ``out``, buffers laid out as :func:`pack_params`'s."""
    groups = [group for group in network.param_groups() if group]
    for group, buffer in zip(groups, out):
        np.concatenate([layer.grads[k].reshape(-1) for layer, k in group], out=buffer)


#: Most slices the optimizer step is cut into. Its rules are elementwise, so
#: any cut gives the same result to the bit.
OPTIMIZER_PARTS = 8

#: Fewest weights in a slice of the optimizer step (:func:`optimizer_parts`).
#: Adam makes about ten numpy calls per slice; on slices smaller than this,
#: two threads calling at once wait on each other for the GIL longer than
#: the arithmetic takes (``python benchmarks/optimizer_step.py``): the origin
#: network's 163,000 weights took 0.76 ms a step in 8 slices over 2 threads,
#: 0.45 ms in one slice in one thread; the deep preset's 870,000 took 1.8 ms
#: in 4 slices over 2 threads, 3.5 ms in one.
OPTIMIZER_PART_MIN = 200_000


def optimizer_parts(n_weights):
    """How many slices an optimizer step over ``n_weights`` weights is cut
    into (each one a task for :func:`run_tasks`): one per
    :data:`OPTIMIZER_PART_MIN` weights, from 1 to :data:`OPTIMIZER_PARTS`.
    A function of the network's size alone, never of the threads."""
    return max(1, min(OPTIMIZER_PARTS, n_weights // OPTIMIZER_PART_MIN))


class DataParallel:
    """Training steps of ``network`` on batches of up to ``batch_size``
    samples, each cut into micro-batches (:func:`micro_batches`), one replica
    of the network per micro-batch.

    Parameters
    ----------
    network : Network
        Its learnable arrays are packed (:func:`pack_params`) and shared
        with the replicas.
    batch_size : int
        The full batch (the last one of an epoch may be smaller).
    rng : numpy.random.Generator
        The replicas' dropout streams are spawned from it.
    """

    def __init__(self, network, batch_size, rng):
        self.network = network
        self.batch_size = batch_size
        packed = pack_params(network)
        self.params = [buffer for buffer, _ in packed]
        self.decay = [decays for _, decays in packed]
        self.n_parts = optimizer_parts(sum(buffer.size for buffer in self.params))
        n = len(micro_batches(batch_size)) - 1
        self.replicas = replicas(network, n, rng)  # (sharing the packed weights)
        self.grads = [[np.empty_like(p) for p in self.params] for _ in range(n)]
        self._used = []

    def fits(self, network, batch_size):
        """Whether this can train ``network`` on batches of ``batch_size``
        again (:meth:`renew`): the same network, its learnable arrays still
        the packed buffers the replicas share, the same batch size."""
        if network is not self.network or batch_size != self.batch_size:
            return False
        packed = [buffer for buffer, _ in pack_params(network)]  # (arrays already packed stay put)
        return len(packed) == len(self.params) and all(a is b for a, b in zip(packed, self.params))

    def renew(self, rng):
        """Make ready for another run of steps, as a new ``DataParallel(network,
        batch_size, rng)`` would be, but keeping the replicas and the arrays
        their layers reuse from step to step.

        Each ``partial_fit`` call is one such run. Built anew every call, the
        replicas' arrays were allocated anew and filled page by page for the
        first time (the memory freed at the end of the last call having gone
        back to the system): the steps of a stream of ``partial_fit`` calls
        took 1.3x those of ``fit`` (a stream against ``fit``: ``python
        benchmarks/streaming.py``). Renewed: dropout streams spawned from
        ``rng`` as :func:`replicas` spawns them (so results do not change),
        and the network's batch-norm statistics and label smoothing copied
        into the replicas (a rolled-back epoch may have changed them).
        """
        mine = self.network.named_layers()
        for replica, child in zip(self.replicas, rng.spawn(len(self.replicas))):
            replica.loss_layer.label_smoothing = self.network.loss_layer.label_smoothing
            for (_, layer), (_, copy) in zip(mine, replica.named_layers()):
                if isinstance(copy, Dropout):  # its own stream in each replica
                    copy.rng = child
                for k, v in layer.buffers.items():
                    copy.buffers[k][...] = v
        self._used = []

    def gradient(self, x, y, sample_weight, pool):
        """Mean loss of a batch and its gradient, left in the gradient buffers.

        Each micro-batch's replica runs forward and backward (in the threads
        of ``pool``), scaling its gradient by its share of the batch's weight,
        so that their sum is the gradient of the whole batch's mean loss.

        Returns ``(loss, weight)``: the (weighted) mean loss and the batch's
        total sample weight.
        """
        bounds = micro_batches(len(y))
        work = []
        for replica, grads, a, b in zip(self.replicas, self.grads, bounds[:-1], bounds[1:]):
            sw_part = None if sample_weight is None else sample_weight[a:b]
            weight = (b - a) if sw_part is None else float(sw_part.sum())
            if weight > 0:
                work.append((replica, grads, x[a:b], y[a:b], sw_part, weight))
        total = sum(item[-1] for item in work)

        def run(item):
            replica, grads, x_part, y_part, sw_part, weight = item
            # numpy's error state is per thread: set it in each one. Overflow
            # is detected and reported (DivergenceWarning) by the trainer.
            with np.errstate(over="ignore", invalid="ignore"):
                loss = replica.loss(x_part, y_part, sw_part)
                replica.backward(scale=weight / total)
                packed_grads(replica, out=grads)
            return loss

        losses = run_tasks(pool, [partial(run, item) for item in work])
        self._used = [item for item in work]
        self._n_samples = len(y)
        return sum(l * item[-1] for l, item in zip(losses, work)) / total, total

    def penalty_squares(self):
        """Sum of squares of the weights that take weight decay."""
        return sum(float(np.dot(p, p)) for p, d in zip(self.params, self.decay) if d)

    def step(self, optimizer, batch_weight, pool):
        """Apply ``optimizer`` with the sum of the micro-batches' gradients
        (cut into slices run in the threads), then merge the replicas'
        batch-norm statistics into the network's."""
        grads = list(zip(*(item[1] for item in self._used)))  # per buffer: one per micro-batch
        parts = optimizer.parts(
            self.params, grads, self.decay, n_parts=self.n_parts, batch_weight=batch_weight
        )

        def guarded(part):
            with np.errstate(over="ignore", invalid="ignore"):
                part()

        run_tasks(pool, [partial(guarded, part) for part in parts])
        used = [item[0] for item in self._used]
        if self._n_samples < self.batch_size:
            self._damp_buffer_updates(used, self._n_samples / self.batch_size)
        merge_buffers(self.network, self.replicas, used)

    def _damp_buffer_updates(self, used, share):
        """Scale this step's change of the buffers that training updates
        (batch norm's running statistics) by ``share``, the batch's size over
        the full batch size: a last, smaller batch moves them in proportion
        to its size (as if with momentum ``share * momentum``), so that a
        batch of one or two samples cannot skew them."""
        theirs = [replica.named_layers() for replica in used]
        for i, (_, layer) in enumerate(self.network.named_layers()):  # inside residual blocks too
            if not layer.trains_buffers:
                continue
            for k, before in layer.buffers.items():  # the network's: as before the step
                for named in theirs:
                    after = named[i][1].buffers[k]
                    after -= before
                    after *= after.dtype.type(share)
                    after += before
