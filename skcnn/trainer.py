"""The training loop: epochs of shuffled minibatches, stopping rules, history.

The stopping rules are scikit-learn's MLP rules, so the parameters mean the
same thing: training stops when the training loss (or, with early stopping,
the validation score) has not improved by ``tol`` for more than
``n_iter_no_change`` consecutive epochs.

Training never ends silently short of its goal, nor leaves a broken model:

* Ctrl-C (SIGINT) finishes the current batch, then stops with a warning.
* Divergence -- a non-finite loss or weight, or an epoch's mean loss more
  than ``DIVERGENCE_FACTOR`` times that of a uniform guess, ``log(n_classes)``
  -- restores the weights and the optimizer's state from the start of that
  epoch, then stops with a :class:`DivergenceWarning` saying what to change.
* Running out of epochs (``max_iter``) or of time (``max_time``) before the
  stopping rule fired gives scikit-learn's ``ConvergenceWarning``, as
  MLPClassifier does for epochs.

Every warning points at the user's line that called ``fit`` (:func:`warn_user`).
"""

import math
import os
import signal
import sys
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from .parallel import DataParallel, worker_pool

__all__ = [
    "History",
    "Trainer",
    "TrainingInterruptedWarning",
    "DivergenceWarning",
    "LEARNING_RATES",
    "DIVERGENCE_FACTOR",
    "warn_user",
    "scheduled_rate",
]

LEARNING_RATES = ("constant", "adaptive", "cosine")


def scheduled_rate(schedule, progress, lr_init, warmup=0.0):
    """The learning rate of the "constant" or "cosine" schedule with a warm-up.

    Parameters
    ----------
    schedule : {"constant", "cosine"}
        "cosine" decays the rate along a half cosine to 0 after the warm-up
        (Loshchilov & Hutter 2017, "SGDR: stochastic gradient descent with
        warm restarts", without the restarts).
    progress : float in [0, 1]
        Share of the fit's training done (epochs, counted in fractions).
    lr_init : float
        The peak rate.
    warmup : float in [0, 1)
        Share of the fit over which the rate first rises linearly from 0 to
        ``lr_init`` (Goyal et al. 2017, "Accurate, large minibatch SGD"):
        early steps, taken while batch norm's statistics and Adam's moment
        estimates are still poor, stay small. With "cosine" this is the
        shape of the one-cycle policy (Smith & Topin 2019, "Super-convergence").

    Returns
    -------
    float
    """
    rate = lr_init
    if schedule == "cosine":
        decay = (progress - warmup) / (1.0 - warmup) if warmup else progress
        rate = lr_init * 0.5 * (1.0 + math.cos(math.pi * min(max(decay, 0.0), 1.0)))
    if progress < warmup:
        rate *= progress / warmup
    return rate

#: An epoch whose mean loss (without the L2 penalty) exceeds this many times
#: the loss of a uniform guess, ``log(n_classes)``, has diverged. Healthy runs
#: start near ``log(n_classes)`` and go down: on digits the first epoch's
#: loss is 0.6x-2.6x it for every solver at a rate that trains well, and 10x
#: at Adam's 0.1, where training barely recovers; 19x and more (Adam at 0.2)
#: left every network dead, predicting one class.
DIVERGENCE_FACTOR = 10.0

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _estimator_frame(frame):
    """Is ``frame`` the estimator's own: in skcnn, or in scikit-learn's
    mixins, whose methods (``score``) the estimator inherits? (Looked up, not
    imported: the command line refuses bad flags before scikit-learn loads.)"""
    path = os.path.abspath(frame.f_code.co_filename)
    mixins = getattr(sys.modules.get("sklearn.base"), "__file__", None)
    return path.startswith(_PACKAGE_DIR) or (mixins is not None and path == os.path.abspath(mixins))


def warn_user(message, category):
    """``warnings.warn``, attributed to the first caller outside skcnn.

    The warning then names the user's line that called ``fit`` or
    ``score`` (a method the estimator inherits from scikit-learn's
    ``ClassifierMixin``), or ``GridSearchCV``'s when that called it,
    however deep inside skcnn it was raised and however the code in
    between is arranged.
    """
    frame, level = sys._getframe(1), 2  # level 2: warn_user's caller
    while frame is not None and _estimator_frame(frame):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)


class TrainingInterruptedWarning(UserWarning):
    """Training was stopped by the user (Ctrl-C); the model is usable."""


class DivergenceWarning(UserWarning):
    """Training diverged (non-finite values, or a loss far above a uniform
    guess's); the weights from before the diverging epoch were kept."""


class _Diverged(Exception):
    pass


@dataclass
class History:
    """The training record, kept across ``fit`` calls with ``warm_start`` and
    across ``partial_fit`` calls. Its one owner is the estimator (as
    ``history_``); a :class:`Trainer` appends to it, and everything else
    (``loss_curve_``, plots, parameter files) reads it.

    Attributes
    ----------
    loss_curve : list of float
        Mean training loss of each completed epoch.
    validation_scores : list of float
        Validation accuracy of each epoch (with early stopping).
    best_loss, best_validation_score : float
        Best values seen so far (inf and -inf before the first epoch).
    n_iter : int
        Completed epochs.
    t : int
        Training samples seen.
    no_improvement : int
        Consecutive epochs without an improvement of ``tol`` (stopping rule).
    """

    loss_curve: list = field(default_factory=list)
    validation_scores: list = field(default_factory=list)
    best_loss: float = math.inf
    best_validation_score: float = -math.inf
    n_iter: int = 0
    t: int = 0
    no_improvement: int = 0


@contextmanager
def _interrupt_flag():
    """Turn Ctrl-C into a flag the loop checks after each batch.

    Only the main thread may install signal handlers; elsewhere (a worker
    thread) the flag stays False and a KeyboardInterrupt is caught instead.
    """
    flag = {"set": False}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        flag["set"] = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def _all_finite(arrays):
    return all(np.isfinite(a).all() for a in arrays)


class _ProgressBar:
    """An epoch's progress on stderr, redrawn in place and erased at the end
    of the epoch, so that each epoch leaves one line (its summary). Drawn
    only when stderr is a terminal: a log file gets no carriage returns."""

    WIDTH = 30
    INTERVAL = 0.2  # seconds between redraws

    def __init__(self):
        self.stream = sys.stderr
        self.on = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last_draw = time.perf_counter()
        self._length = 0

    def update(self, done, loss):
        """Redraw (at most every INTERVAL seconds); ``done`` is a fraction in [0, 1]."""
        if not self.on or time.perf_counter() - self._last_draw < self.INTERVAL:
            return
        self._last_draw = time.perf_counter()
        text = f"  [{'#' * int(self.WIDTH * done):<{self.WIDTH}}] {100 * done:5.1f}%  loss {loss:.4f}"
        self.stream.write("\r" + text.ljust(self._length))
        self.stream.flush()
        self._length = len(text)

    def erase(self):
        if self._length:
            self.stream.write("\r" + " " * self._length + "\r")
            self.stream.flush()
            self._length = 0


class Trainer:
    """Minibatch training of a :class:`~skcnn.network.Network`.

    A trainer lives for one ``fit`` or ``partial_fit`` call; what outlasts
    the call is the network, the optimizer (its state) and the history.

    Parameters
    ----------
    network : Network
    optimizer : Optimizer
        Its ``lr`` is the initial learning rate; schedules change it in place.
    history : History
        The record to extend (a new one for a fresh fit).
    batch_size : int
    shuffle : bool
        Reshuffle the samples every epoch (without replacement; the last,
        smaller batch is kept, and moves batch norm's running statistics in
        proportion to its size).
    tol, n_iter_no_change : float, int
        Stopping rule, as in scikit-learn's MLP.
    early_stopping : bool
        Judge progress by the validation score passed to :meth:`fit` and
        restore the weights of the best epoch at the end.
    learning_rate : {"constant", "adaptive", "cosine"}
        "adaptive" divides the rate by 5 whenever the stopping rule fires,
        and stops once the rate is at most 1e-6 (as MLP's); "cosine" decays it along
        a half cosine to 0 over the epochs of one :meth:`fit` call.
    warmup_fraction : float in [0, 1)
        Share of the epochs of one :meth:`fit` call over which the rate rises
        linearly to its initial value, with "constant" and "cosine" (see
        :func:`scheduled_rate`); each step takes the rate at its end.
    max_time : float or None
        Seconds one :meth:`fit` call may train, counted from ``start_time``:
        training stops after the batch during which they run out (the last
        epoch is then partial). The schedules' progress is the larger of the
        share of the epochs done and the share of this time used, so a
        cosine schedule reaches 0 when the time runs out, however many
        epochs that takes on this machine.
    start_time : float or None
        A reading of :attr:`clock` that ``max_time`` counts from (the
        estimator's: its validation of the data counts too); None, the start
        of :meth:`fit`.
    average : skcnn.network.WeightAverage or None
        Updated after every step; with early stopping, the validation score
        is the average's, and the average is restored with the best epoch.
    augment : callable or None
        ``augment(x_batch, rng)`` returns a transformed copy of a training
        batch of images (N, C, H, W). Never used for prediction.
    verbose : int
        1: a line per epoch; 2: also a progress bar on stderr (on a terminal
        only, redrawn in place and erased before the epoch's line).
    n_classes : int
        Classes the network scores (for the divergence rule).
    parallel : DataParallel, optional
        The training threads' set-up of an earlier run on the same network
        (``partial_fit``'s last call), renewed rather than built again when
        it still fits (:meth:`~skcnn.parallel.DataParallel.renew`); the one
        used is left in ``self.parallel``.
    """

    def __init__(
        self,
        network,
        optimizer,
        history,
        *,
        batch_size,
        shuffle=True,
        tol=1e-4,
        n_iter_no_change=10,
        early_stopping=False,
        learning_rate="constant",
        warmup_fraction=0.0,
        max_time=None,
        start_time=None,
        average=None,
        augment=None,
        verbose=0,
        n_classes,
        parallel=None,
    ):
        self.network = network
        self.parallel = parallel
        self.optimizer = optimizer
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.early_stopping = early_stopping
        self.learning_rate = learning_rate
        self.warmup_fraction = warmup_fraction
        self.max_time = max_time
        self.start_time = start_time
        self.average = average
        self.augment = augment
        self.verbose = verbose
        self.n_classes = n_classes
        self.history = history
        self.lr_init = optimizer.lr
        self._best_state = None  # weights of the best epoch (early stopping)

    #: The clock ``max_time`` is measured on (seconds; tests replace it).
    clock = staticmethod(time.perf_counter)

    def _time_used(self):
        """The share of ``max_time`` used so far (0 without a budget)."""
        if self.max_time is None:
            return 0.0
        return (self.clock() - self.start_time) / self.max_time

    # -- one epoch -----------------------------------------------------------

    def _step(self, xb, yb, swb, parallel, pool):
        """Loss and gradient of one batch, then one optimizer step.

        The data-parallel work (micro-batches on replicas in threads, the
        optimizer step cut into slices) is :class:`~skcnn.parallel.DataParallel`'s;
        results do not depend on the number of threads.

        Returns ``(data_loss, penalty, weight)``: the batch's (weighted) mean
        loss, the L2 penalty ``0.5 * alpha * ||W||^2 / weight`` (of the
        weights before the step) and the batch's total sample weight.
        """
        loss, total = parallel.gradient(xb, yb, swb, pool)
        if not math.isfinite(loss):
            raise _Diverged(f"the loss became {loss}")
        penalty = 0.0
        if self.optimizer.alpha:
            penalty = 0.5 * self.optimizer.alpha * parallel.penalty_squares() / total
        parallel.step(self.optimizer, total, pool)
        return loss, penalty, total

    def _epoch(self, x, y, sw, rng, interrupted, schedule, parallel, pool):
        """One pass over the data; returns the epoch's (weighted) mean loss,
        L2 penalty included. Raises ``_Diverged`` (see :meth:`_check_divergence`)."""
        n = len(y)
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        starts = range(0, n, self.batch_size)
        total_loss = total_penalty = total_weight = 0.0
        bar = _ProgressBar() if self.verbose >= 2 else None
        for b, start in enumerate(starts):
            idx = order[start : start + self.batch_size]
            swb = None if sw is None else sw[idx]
            if swb is None or swb.any():  # zero-weight samples carry no information
                xb = x[idx]
                if self.augment is not None:
                    xb = self.augment(xb, rng)
                if schedule is not None:
                    self.optimizer.lr = schedule(b / len(starts), 1 / len(starts))
                loss, penalty, weight = self._step(xb, y[idx], swb, parallel, pool)
                if self.average is not None:
                    self.average.update(self.network)
                total_loss += loss * weight
                total_penalty += penalty * weight
                total_weight += weight
            self.history.t += len(idx)
            if bar is not None:
                bar.update((b + 1) / len(starts), total_loss / max(total_weight, 1e-300))
            if interrupted["set"] or self._time_used() >= 1.0:
                break
        if bar is not None:
            bar.erase()  # the epoch's line (or a warning) takes its place
        if not total_weight:
            return float("nan")
        self._check_divergence(total_loss / total_weight)
        return (total_loss + total_penalty) / total_weight

    def _check_divergence(self, data_loss):
        """Raise ``_Diverged`` if the weights are no longer finite, or the
        epoch's mean data loss is over ``DIVERGENCE_FACTOR`` times that of a
        uniform guess (finite divergence: steps too large throw the weights
        far off, and usually leave every ReLU dead)."""
        if not _all_finite(self.network.params()):
            raise _Diverged("the weights became non-finite")
        uniform = math.log(self.n_classes)
        if data_loss > DIVERGENCE_FACTOR * uniform:
            raise _Diverged(
                f"its mean loss, {data_loss:.4g}, is over {DIVERGENCE_FACTOR:g} times the loss "
                f"of a uniform guess, log({self.n_classes}) = {uniform:.4g}"
            )

    # -- the loop --------------------------------------------------------------

    def fit(self, x, y, sample_weight, rng, max_epochs, validation=None, warn_max_epochs=False):
        """Train for up to ``max_epochs`` epochs.

        Parameters
        ----------
        x : ndarray (N, C, H, W); y : int ndarray (N,) of class indices
        sample_weight : ndarray (N,) or None
        rng : numpy.random.Generator
        max_epochs : int
        validation : (x_val, y_val, sw_val) or None
            Scored (weighted accuracy) after every epoch.
        warn_max_epochs : bool
            Give a ``ConvergenceWarning`` when all ``max_epochs`` epochs ran
            without the stopping rule firing (``fit``, not ``partial_fit``).

        Returns
        -------
        reason : str
            Why training stopped: "max_iter", "max_time", "converged",
            "interrupted" or "diverged".
        """
        reason = "max_iter"
        if self.start_time is None:
            self.start_time = self.clock()
        parallel = self.parallel
        if parallel is not None and parallel.fits(self.network, self.batch_size):
            parallel.renew(rng)  # the last partial_fit call's, its arrays kept
        else:
            parallel = self.parallel = DataParallel(self.network, self.batch_size, rng)
        # (errstate: the optimizer's overflow is reported as divergence, below)
        with _interrupt_flag() as interrupted, np.errstate(over="ignore", invalid="ignore"):
            for epoch in range(max_epochs):
                schedule = self._schedule(epoch, max_epochs)
                snapshot = self.network.state_dict(), self.optimizer.snapshot(), self._average_state()
                start = time.perf_counter()
                try:
                    with worker_pool() as pool:
                        loss = self._epoch(
                            x, y, sample_weight, rng, interrupted, schedule, parallel, pool
                        )
                except KeyboardInterrupt:  # raised outside the signal handler's reach
                    interrupted["set"] = True
                    loss = None
                except _Diverged as exc:
                    self.network.load_state_dict(snapshot[0])
                    self.optimizer.restore(snapshot[1])
                    if self.average is not None:
                        self.average.load_state(snapshot[2])
                    warn_user(
                        f"Training diverged in epoch {self.history.n_iter + 1} ({exc}); the weights "
                        "from the start of that epoch were kept"
                        + (" (the initial ones: the model is untrained)" if self.history.n_iter == 0 else "")
                        + f". Lower learning_rate_init (it was {self.lr_init:g}), e.g. 10 times.",
                        DivergenceWarning,
                    )
                    reason = "diverged"
                    break
                if interrupted["set"]:
                    warn_user(
                        f"Training interrupted during epoch {self.history.n_iter + 1}; the model keeps "
                        "the weights after the last completed batch.",
                        TrainingInterruptedWarning,
                    )
                    reason = "interrupted"
                    break
                history = self.history
                history.n_iter += 1
                history.loss_curve.append(loss)
                message = f"Epoch {history.n_iter}: loss {loss:.6f}"
                if validation is not None:
                    score = self._score(*validation)
                    history.validation_scores.append(score)
                    message += f", validation score {score:.6f}"
                if self.verbose:
                    print(f"{message}, {time.perf_counter() - start:.2f} s", flush=True)
                if self._update_stopping(validation is not None):
                    reason = "converged"
                    break
                if self._time_used() >= 1.0:
                    reason = "max_time"
                    if self.verbose:
                        print(f"max_time={self.max_time:g} s used up: training stopped.", flush=True)
                    break
        if reason in ("max_iter", "max_time") and warn_max_epochs:
            # imported here: scikit-learn takes seconds to import, and the
            # command line checks its flags (importing this module) before that
            from sklearn.exceptions import ConvergenceWarning

            what = "validation score" if self.early_stopping else "training loss"
            # the reason is the name of the parameter that ended training
            budget = f"max_iter={max_epochs} epochs" if reason == "max_iter" else f"max_time={self.max_time:g} s"
            warn_user(
                f"{budget} ran out before the stopping rule fired (the {what} "
                f"still improved by more than tol={self.tol:g} within n_iter_no_change="
                f"{self.n_iter_no_change} epochs): training has not converged. Raise "
                f"{reason} to train longer.",
                ConvergenceWarning,
            )
        if self.early_stopping and self._best_state is not None:
            self.network.load_state_dict(self._best_state[0])
            if self.average is not None:
                self.average.load_state(self._best_state[1])
        self.network.clear_cache()
        return reason

    def _schedule(self, epoch, max_epochs):
        """The rate at a point of the epoch (its share done, and one step's
        share), or None when the rate is left alone."""
        warmup = self.warmup_fraction if self.learning_rate != "adaptive" else 0.0
        if self.learning_rate != "cosine" and not warmup:
            return None
        lr0 = self.lr_init

        def rate(fraction_of_epoch, step):
            progress = (epoch + fraction_of_epoch) / max_epochs
            if progress < warmup:  # a warm-up step takes the rate at its end, never 0
                progress = (epoch + fraction_of_epoch + step) / max_epochs
            # with max_time, whichever budget is used up faster sets the pace
            progress = min(max(progress, self._time_used()), 1.0)
            return scheduled_rate(self.learning_rate, progress, lr0, warmup)

        return rate

    def _average_state(self):
        return None if self.average is None else self.average.state()

    def _score(self, x, y, sw):
        network = self.network if self.average is None else self.average.network
        pred = network.predict_logits(x).argmax(axis=1)
        return float(np.average(pred == y, weights=sw))

    def _update_stopping(self, validating):
        """MLP's rule; returns True when training should stop."""
        h = self.history
        if validating and self.early_stopping:
            score = h.validation_scores[-1]
            if score < h.best_validation_score + self.tol:
                h.no_improvement += 1
            else:
                h.no_improvement = 0
            if score > h.best_validation_score:
                h.best_validation_score = score
                self._best_state = self.network.state_dict(), self._average_state()
        else:
            loss = h.loss_curve[-1]
            if loss > h.best_loss - self.tol:
                h.no_improvement += 1
            else:
                h.no_improvement = 0
            h.best_loss = min(h.best_loss, loss)
        if h.no_improvement <= self.n_iter_no_change:
            return False
        if self.learning_rate == "adaptive" and self.optimizer.lr > 1e-6:
            self.optimizer.lr /= 5
            h.no_improvement = 0
            if self.verbose:
                print(f"Learning rate lowered to {self.optimizer.lr:g}", flush=True)
            return False
        if self.verbose:
            what = "Validation score" if self.early_stopping else "Training loss"
            print(
                f"{what} did not improve more than tol={self.tol} for "
                f"{self.n_iter_no_change} consecutive epoch{'s' * (self.n_iter_no_change != 1)}. Stopping.",
                flush=True,
            )
        return True
