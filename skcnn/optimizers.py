"""Optimizers: update rules that change parameter arrays in place.

Every optimizer has one method, ``step(params, grads, decay=None,
batch_weight=1.0)``: ``params`` and ``grads`` are equally long lists of arrays
(a dict of arrays works too, its values taken in order); ``decay`` says for
each array whether weight decay applies (by default all do; networks pass
True for weights only). ``parts(...)`` cuts the same step into independent
pieces that threads can run side by side (every rule here is elementwise).

Two kinds of weight decay, both off by default:

* ``alpha`` (L2 penalty, as scikit-learn MLP's ``alpha``): the loss is the
  mean over a batch of total sample weight ``batch_weight`` (its number of
  samples when unweighted) plus ``0.5 * alpha * ||p||^2 / batch_weight``, the
  penalty counted once per batch like one more sum over its samples. Its
  gradient, ``alpha * p / batch_weight``, is added to the gradient before the
  rule sees it (with batches of 100, a hundredth of ``alpha * p``).
* ``decoupled_weight_decay`` (as in AdamW): ``p -= lr * wd * p`` after the
  rule, independent of the gradient's scaling.

State (velocities, moment estimates) is created on the first step and kept
per position in the list, so the same list order must be passed every time.
"""

import inspect
from functools import partial

import numpy as np

__all__ = ["Optimizer", "SGD", "Momentum", "Nesterov", "AdaGrad", "RMSProp", "Adam", "make_optimizer"]


def _as_list(arrays):
    return list(arrays.values()) if isinstance(arrays, dict) else list(arrays)


#: Arrays smaller than this are not cut between parts: for them, the Python
#: overhead of another piece costs more than the arithmetic it would share.
MIN_SPLIT = 1 << 14


def _flat(a):
    """The elements of ``a`` as a 1-D view, so that writes reach ``a``."""
    if not a.flags.c_contiguous:
        raise ValueError("optimizers update parameters in place: they must be C-contiguous arrays")
    return a.reshape(-1)


class Optimizer:
    """Base class. Subclasses implement ``_update(p, g, state)``: one array
    ``p`` with its gradient ``g`` and its state tuple, all of the same shape
    (whole arrays, or matching slices of them)."""

    def __init__(self, lr=0.01, alpha=0.0, decoupled_weight_decay=0.0):
        self.lr = lr
        self.alpha = alpha
        self.decoupled_weight_decay = decoupled_weight_decay
        self.t = 0  # number of steps taken
        self.state = []  # one tuple of arrays per parameter, made on the first step

    def _init_state(self, p):
        return ()

    def step(self, params, grads, decay=None, batch_weight=1.0):
        """One update of every array in ``params``, in place.

        ``batch_weight`` is the total sample weight of the batch whose mean
        loss ``grads`` is the gradient of; the L2 term is divided by it.
        """
        for part in self.parts(params, grads, decay, n_parts=1, batch_weight=batch_weight):
            part()

    def parts(self, params, grads, decay=None, n_parts=2, batch_weight=1.0):
        """One step as ``n_parts`` functions that update disjoint slices of the
        parameters: call each once, in any order or in parallel threads; the
        result is that of :meth:`step` to the bit.

        Each entry of ``grads`` is an array, or a list of arrays whose sum is
        the gradient (of micro-batches, say): the sum is then taken inside
        the parts, so it is split between them too.
        """
        params, grads = _as_list(params), _as_list(grads)
        grads = [g if isinstance(g, (list, tuple)) else [g] for g in grads]
        if decay is None:
            decay = [True] * len(params)
        if not self.state:
            self.state = [self._init_state(p) for p in params]
        if len(self.state) != len(params) or any(s and s[0].shape != p.shape for p, s in zip(params, self.state)):
            raise ValueError("this optimizer's state belongs to other parameters")
        self.t += 1
        pieces = [[] for _ in range(n_parts)]
        for p, g, state, d in zip(params, grads, self.state, decay):
            if p.size >= MIN_SPLIT:
                cuts = [p.size * k // n_parts for k in range(1, n_parts)]
            else:
                cuts = [p.size] * (n_parts - 1)  # whole, to part 0
            bounds = [0, *cuts, p.size]
            p, g, state = _flat(p), [np.ravel(a) for a in g], [_flat(a) for a in state]
            for k, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
                if hi > lo:
                    pieces[k].append((p[lo:hi], [a[lo:hi] for a in g], tuple(a[lo:hi] for a in state), d))
        l2 = self.alpha / batch_weight
        return [partial(self._apply, piece, l2) for piece in pieces]

    def _apply(self, pieces, l2):
        for p, gs, state, d in pieces:
            g = gs[0] if len(gs) == 1 else sum(gs[1:], gs[0])
            if d and l2:
                g = g + p.dtype.type(l2) * p
            self._update(p, g, state)
            if d and self.decoupled_weight_decay:
                p -= p.dtype.type(self.lr * self.decoupled_weight_decay) * p

    def _update(self, p, g, state):
        raise NotImplementedError

    def state_arrays(self):
        """All state arrays, flat (for saving and for measuring size)."""
        return [a for s in self.state for a in s]

    def snapshot(self):
        """A copy of the state (step count and arrays), for :meth:`restore`."""
        return self.t, [tuple(a.copy() for a in s) for s in self.state]

    def restore(self, snapshot):
        """Go back to the state of a :meth:`snapshot` (after a diverged epoch)."""
        t, state = snapshot
        self.t, self.state = t, [tuple(a.copy() for a in s) for s in state]

    def __repr__(self):
        return f"{type(self).__name__}(lr={self.lr})"


class SGD(Optimizer):
    """p -= lr * g"""

    def _update(self, p, g, state):
        p -= p.dtype.type(self.lr) * g


class Momentum(Optimizer):
    """Heavy ball: v = momentum * v - lr * g;  p += v"""

    def __init__(self, lr=0.01, momentum=0.9, **kw):
        super().__init__(lr, **kw)
        self.momentum = momentum

    def _init_state(self, p):
        return (np.zeros_like(p),)

    def _update(self, p, g, state):
        (v,) = state
        v *= p.dtype.type(self.momentum)
        v -= p.dtype.type(self.lr) * g
        p += v


class Nesterov(Momentum):
    """Nesterov momentum: v = momentum * v - lr * g;  p += momentum * v - lr * g

    The look-ahead form used by scikit-learn's MLP and by PyTorch: the step
    applies the updated velocity once more, as if evaluated ahead.
    """

    def _update(self, p, g, state):
        (v,) = state
        mu, lr = p.dtype.type(self.momentum), p.dtype.type(self.lr)
        v *= mu
        v -= lr * g
        p += mu * v - lr * g


class AdaGrad(Optimizer):
    """G += g**2;  p -= lr * g / (sqrt(G) + eps)"""

    def __init__(self, lr=0.01, epsilon=1e-8, **kw):
        super().__init__(lr, **kw)
        self.epsilon = epsilon

    def _init_state(self, p):
        return (np.zeros_like(p),)

    def _update(self, p, g, state):
        (s,) = state
        s += g * g
        p -= p.dtype.type(self.lr) * g / (np.sqrt(s) + p.dtype.type(self.epsilon))


class RMSProp(AdaGrad):
    """s = rho * s + (1 - rho) * g**2;  p -= lr * g / (sqrt(s) + eps)"""

    def __init__(self, lr=0.001, rho=0.9, epsilon=1e-8, **kw):
        super().__init__(lr, epsilon, **kw)
        self.rho = rho

    def _update(self, p, g, state):
        (s,) = state
        s *= p.dtype.type(self.rho)
        s += p.dtype.type(1 - self.rho) * g * g
        p -= p.dtype.type(self.lr) * g / (np.sqrt(s) + p.dtype.type(self.epsilon))


class Adam(Optimizer):
    """Adam with bias correction (Kingma & Ba), in PyTorch's arrangement:

    m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g**2
    p -= lr / (1 - b1**t) * m / (sqrt(v / (1 - b2**t)) + eps)
    """

    def __init__(self, lr=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-8, **kw):
        super().__init__(lr, **kw)
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon

    def _init_state(self, p):
        return (np.zeros_like(p), np.zeros_like(p))

    def _update(self, p, g, state):
        m, v = state
        f = p.dtype.type
        b1, b2, t = self.beta_1, self.beta_2, self.t
        m *= f(b1)
        m += f(1 - b1) * g
        v *= f(b2)
        v += f(1 - b2) * (g * g)
        denom = np.sqrt(v)
        denom *= f(1.0 / np.sqrt(1 - b2**t))
        denom += f(self.epsilon)
        p -= f(self.lr / (1 - b1**t)) * m / denom


SOLVERS = {
    "sgd": SGD,
    "momentum": Momentum,
    "nesterov": Nesterov,
    "adagrad": AdaGrad,
    "rmsprop": RMSProp,
    "adam": Adam,
}


def make_optimizer(name, lr, **options):
    """Build the optimizer named ``name`` in :data:`SOLVERS`.

    ``options`` may hold every solver's settings (``momentum``, ``beta_1``,
    ``epsilon``, ``alpha``, ...): each solver takes those its
    constructor names and ignores the rest, so a new solver is one class and
    one entry in :data:`SOLVERS`.
    """
    if name not in SOLVERS:
        raise ValueError(f"unknown solver {name!r}; choose one of {sorted(SOLVERS)}")
    cls = SOLVERS[name]
    accepted = set()
    for klass in cls.__mro__:  # subclasses pass the base's options on through **kw
        if "__init__" in vars(klass):
            accepted |= set(inspect.signature(klass.__init__).parameters)
    return cls(lr, **{k: v for k, v in options.items() if k in accepted})
