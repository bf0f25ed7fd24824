"""Layers: each one a small class with a forward and a backward pass.

The contract, for every layer:

* ``forward(x, training=False)`` returns the output. With ``training=True`` it
  also caches what ``backward`` needs (and dropout/batch norm act as in
  training); prediction caches nothing.
* ``backward(grad)`` takes dLoss/dOutput and returns dLoss/dInput. It never
  modifies ``grad``. Gradients of the learnable arrays land in ``self.grads``.
* ``params``: name -> learnable array; ``grads``: same names and shapes.
  ``buffers``: name -> state that is saved but not learned (running means).

Images are channels-last, ``(N, H, W, C)`` (see :mod:`skcnn.functions`).
Weights are drawn from the ``numpy.random.Generator`` passed in, in float64
and then cast, so a float32 and a float64 network built from the same seed
start from the same weights.
"""

from itertools import product

import numpy as np

from .functions import column_sums, conv_output_size, cross_entropy, im2col, log_softmax

__all__ = [
    "Layer",
    "Rescale",
    "Bias",
    "Conv2D",
    "MaxPool2D",
    "ReLU",
    "Dense",
    "Flatten",
    "Dropout",
    "BatchNorm",
    "SoftmaxCrossEntropy",
]


def he_normal(rng, shape, fan_in, dtype):
    """He initialisation: normal with variance 2 / fan_in."""
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(dtype)


class Layer:
    """Base class: a layer without parameters that passes gradients through."""

    #: Whether training changes ``buffers`` (batch norm's running statistics).
    trains_buffers = False

    def __init__(self):
        self.params = {}
        self.grads = {}
        self.buffers = {}
        self._cache = None
        self._workspace = {}  # scratch arrays reused between training steps

    def forward(self, x, training=False):
        raise NotImplementedError

    def backward(self, grad):
        raise NotImplementedError

    def output_shape(self, input_shape):
        """Shape of one output sample given one input sample's shape."""
        return input_shape

    def clear_cache(self):
        """Drop the arrays kept for ``backward``, the gradients and scratch space."""
        self._cache = None
        self.grads = {}
        self._workspace = {}

    def __repr__(self):
        return f"{type(self).__name__}()"


class Rescale(Layer):
    """``(x - shift) / scale`` with fixed (not learned) scalars.

    The first layer of every network: the estimator sets ``shift`` and
    ``scale`` from the training data, so raw pixels (0-255) and [0, 1] images
    train alike, and the scaling is saved and applied batch by batch with the
    rest of the network.
    """

    def __init__(self, shift=0.0, scale=1.0, *, dtype=np.float32):
        super().__init__()
        self.buffers = {
            "shift": np.array(shift, dtype=dtype),
            "scale": np.array(scale, dtype=dtype),
        }

    def forward(self, x, training=False):
        return (x - self.buffers["shift"]) / self.buffers["scale"]

    def backward(self, grad):
        return grad / self.buffers["scale"]

    def __repr__(self):
        return f"Rescale(shift={float(self.buffers['shift']):.4g}, scale={float(self.buffers['scale']):.4g})"


class Bias(Layer):
    """Adds a learned bias per channel (the last axis)."""

    def __init__(self, n_features, *, dtype=np.float32):
        super().__init__()
        self.n_features = n_features
        self.params = {"b": np.zeros(n_features, dtype=dtype)}

    def forward(self, x, training=False):
        b = self.params["b"]
        if x.ndim == 4:  # images: add a bias tiled over whole rows, so numpy's loop runs
            n, h, w, c = x.shape  # over W*C values instead of C (2x faster for C = 16)
            return (x.reshape(n * h, w * c) + np.tile(b, w)).reshape(x.shape)
        return x + b

    def backward(self, grad):
        self.grads["b"] = column_sums(grad)
        return grad

    def __repr__(self):
        return f"Bias({self.n_features})"


class Conv2D(Layer):
    """2-D convolution (cross-correlation) lowered to one matrix product.

    Parameters
    ----------
    in_channels, filters : int
    kernel_size, stride, padding : int
    rng : numpy.random.Generator
    dtype : float32 or float64
    input_grad : bool, default=True
        Whether ``backward`` computes the gradient w.r.t. the input. The first
        layer of a network does not need it (the images are not learned), which
        saves the most expensive part of its backward pass.
    bias : bool, default=True
        Whether to learn a bias per filter. Off before batch norm, which
        subtracts the mean and so would cancel it.

    ``params["W"]`` has shape ``(filters, kernel, kernel, in_channels)``, the
    (ky, kx, channel) order of :func:`~skcnn.functions.im2col`'s columns.
    """

    def __init__(
        self,
        in_channels,
        filters,
        kernel_size=3,
        stride=1,
        padding=0,
        *,
        rng,
        dtype=np.float32,
        input_grad=True,
        bias=True,
    ):
        super().__init__()
        self.in_channels, self.filters = in_channels, filters
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.input_grad = input_grad
        k = kernel_size
        self.params = {"W": he_normal(rng, (filters, k, k, in_channels), in_channels * k * k, dtype)}
        if bias:
            self.params["b"] = np.zeros(filters, dtype=dtype)

    def output_shape(self, input_shape):
        h, w, _ = input_shape
        k, s, p = self.kernel_size, self.stride, self.padding
        return (conv_output_size(h, k, s, p), conv_output_size(w, k, s, p), self.filters)

    def forward(self, x, training=False):
        n = x.shape[0]
        k, s, p = self.kernel_size, self.stride, self.padding
        oh, ow, f = self.output_shape(x.shape[1:])
        # Training reuses last step's matrix: a fresh one of tens of MB costs
        # more in page faults than filling it does. (Prediction allocates,
        # so that threads can share the layer.)
        reuse = self._workspace.get("cols") if training else None
        if reuse is not None and reuse.shape != (n * oh * ow, k * k * x.shape[3]):
            reuse = None
        cols = im2col(x, k, k, s, p, out=reuse)  # (N*OH*OW, K*K*C)
        if training:
            self._workspace["cols"] = cols
        w = self.params["W"].reshape(f, -1)  # (F, K*K*C), a view
        out = cols @ w.T  # (N*OH*OW, F)
        if "b" in self.params:
            out += self.params["b"]
        if training:
            self._cache = (x.shape, cols)
        return out.reshape(n, oh, ow, f)

    def backward(self, grad):
        x_shape, cols = self._cache
        f, k = self.filters, self.kernel_size
        g = grad.reshape(-1, f)  # (N, OH, OW, F) -> (N*OH*OW, F)
        # np.dot, not @: numpy's matmul keeps the GIL while BLAS computes a
        # product with few outputs (here F x K*K*C, as few as 16 x 9 with a
        # huge inner dimension), which stalls the other training thread;
        # dot releases it.
        self.grads["W"] = np.dot(g.T, cols).reshape(self.params["W"].shape)
        if "b" in self.params:
            self.grads["b"] = column_sums(g)
        if not self.input_grad:
            return None
        # dx: each kernel offset (ky, kx) sent g @ W[:, ky, kx, :] to the input
        # pixels under it. Nine small GEMMs whose (M, C) results stay in cache,
        # each added into a strided slice: about 2x faster than one big GEMM
        # followed by a scatter-add of strided columns (col2im).
        n, h, w, c = x_shape
        s, p = self.stride, self.padding
        oh, ow = grad.shape[1:3]
        dx = np.zeros((n, h + 2 * p, w + 2 * p, c), dtype=grad.dtype)
        for ky in range(k):
            for kx in range(k):
                contribution = g @ self.params["W"][:, ky, kx, :]  # (N*OH*OW, C)
                dx[:, ky : ky + s * oh : s, kx : kx + s * ow : s] += contribution.reshape(n, oh, ow, c)
        return dx[:, p : p + h, p : p + w]

    def __repr__(self):
        return (
            f"Conv2D({self.in_channels}, {self.filters}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding})"
        )


def _pool_output_size(size, pool, stride):
    # Partial windows at the far edge are kept (every pixel is seen); a window
    # must start inside the input. An input smaller than the window gives 1.
    covering = -(-max(size - pool, 0) // stride) + 1
    return min(covering, (size - 1) // stride + 1)


class MaxPool2D(Layer):
    """Max pooling over ``pool_size`` x ``pool_size`` windows.

    Windows move by ``stride`` (default ``pool_size``). When the input is not
    divisible by the stride, the last window along an axis is partial and
    takes the maximum of the pixels it covers, so no pixel is dropped; an input
    smaller than the window (even 1x1) yields one output pixel, the maximum of
    the whole input. The gradient goes to the first maximum of each window.
    """

    def __init__(self, pool_size=2, stride=None):
        super().__init__()
        self.pool_size = pool_size
        self.stride = pool_size if stride is None else stride

    def output_shape(self, input_shape):
        h, w, c = input_shape
        k, s = self.pool_size, self.stride
        return (_pool_output_size(h, k, s), _pool_output_size(w, k, s), c)

    @property
    def _pairwise(self):
        """Whether windows are the usual 2x2 with stride 2 (the fast path)."""
        return self.pool_size == self.stride == 2

    def _windows(self, xp, oh, ow):
        """One strided view per window offset: (N, OH, OW, C) each."""
        k, s = self.pool_size, self.stride
        for ky, kx in product(range(k), range(k)):
            yield xp[:, ky : ky + (oh - 1) * s + 1 : s, kx : kx + (ow - 1) * s + 1 : s]

    def forward(self, x, training=False):
        n, h, w, c = x.shape
        k, s = self.pool_size, self.stride
        oh, ow, _ = self.output_shape(x.shape[1:])
        ph, pw = max((oh - 1) * s + k, h), max((ow - 1) * s + k, w)
        if (ph, pw) != (h, w):
            # -inf padding: a partial window's maximum is over real pixels only
            xp = np.full((n, ph, pw, c), -np.inf, dtype=x.dtype)
            xp[:, :h, :w] = x
        else:
            xp = x
        if self._pairwise:
            out, state = self._forward_2x2(xp, training)
        else:
            out = self._forward_windows(xp, oh, ow)
            state = (xp, out)
        if training:
            self._cache = (state, (h, w))
        return out

    def backward(self, grad):
        state, (h, w) = self._cache
        if self._pairwise:
            dx = self._backward_2x2(grad, *state)
        else:
            dx = self._backward_windows(grad, *state)
        return dx[:, :h, :w]

    # The usual 2x2 window with stride 2, as two pairwise maxima: first of
    # neighbouring columns, then of neighbouring rows (a reshape puts row
    # pairs side by side, so that half runs over long contiguous rows). The
    # two comparisons made on the way record where each maximum came from,
    # left before right and top before bottom: the first maximum in reading
    # order, as in the general case. Backward then only spreads the gradient
    # through those two masks, without touching the input again (about twice
    # as fast as finding the maxima anew while the input is out of cache).

    @staticmethod
    def _forward_2x2(xp, training):
        n, h, w, c = xp.shape
        cols = xp.reshape(n * h, w // 2, 2, c)  # column pairs
        left, right = cols[:, :, 0], cols[:, :, 1]
        m = np.maximum(left, right)
        rows = m.reshape(n * h // 2, 2, w // 2 * c)  # row pairs of the column maxima
        top, bottom = rows[:, 0], rows[:, 1]
        out = np.maximum(top, bottom).reshape(n, h // 2, w // 2, c)
        if not training:
            return out, None
        return out, (left >= right, top >= bottom, xp.shape)

    @staticmethod
    def _backward_2x2(grad, from_left, from_top, shape):
        n, h, w, c = shape
        g = grad.reshape(n * h // 2, w // 2 * c)
        g_rows = np.empty((n * h // 2, 2, w // 2 * c), dtype=grad.dtype)
        np.multiply(g, from_top, out=g_rows[:, 0])  # multiply by a bool mask: 5x faster than np.where
        np.subtract(g, g_rows[:, 0], out=g_rows[:, 1])  # the rest goes to the bottom row
        g_rows = g_rows.reshape(n * h, w // 2, c)
        dx = np.empty((n * h, w // 2, 2, c), dtype=grad.dtype)
        np.multiply(g_rows, from_left, out=dx[:, :, 0])
        np.subtract(g_rows, dx[:, :, 0], out=dx[:, :, 1])
        return dx.reshape(shape)

    # Any other window: an elementwise maximum over one strided view per
    # window offset, far cheaper than a reduction over extra window axes.

    def _forward_windows(self, xp, oh, ow):
        k = self.pool_size
        windows = self._windows(xp, oh, ow)
        first = next(windows)
        out = np.maximum(first, next(windows)) if k * k > 1 else first.copy()  # no copy pass
        for window in windows:
            np.maximum(out, window, out=out)
        return out

    def _backward_windows(self, grad, xp, out):
        # Which pixel won is found again by comparison: no memory is spent on
        # an argmax in forward.
        oh, ow = out.shape[1:3]
        k, s = self.pool_size, self.stride
        # With windows that tile the input exactly every input pixel is
        # written once below, so dx needs no zeroing.
        dx = (np.empty if s == k else np.zeros)(xp.shape, dtype=grad.dtype)
        taken = np.zeros(out.shape, dtype=bool)  # window already routed its gradient
        for window, dx_window in zip(self._windows(xp, oh, ow), self._windows(dx, oh, ow)):
            hit = window == out
            np.greater(hit, taken, out=hit)  # hit and not taken: ties go to the first maximum
            taken |= hit
            if s >= k:  # windows do not overlap: write in place
                np.multiply(hit, grad, out=dx_window)
            else:
                dx_window += hit * grad
        return dx

    def __repr__(self):
        return f"MaxPool2D(pool_size={self.pool_size}, stride={self.stride})"


class ReLU(Layer):
    """max(x, 0)."""

    def forward(self, x, training=False):
        # numpy vectorises maximum for two arrays, not for an array and a
        # scalar: against an array of zeros it is about 2.4x faster.
        out = np.maximum(x, np.zeros_like(x))
        if training:
            self._cache = out > 0
        return out

    def backward(self, grad):
        return grad * self._cache  # bool mask; np.where(mask, grad, 0) is 5x slower


class Dense(Layer):
    """Fully connected layer: ``x @ W + b`` with ``W`` of shape (in, out).

    ``bias=False`` drops ``b`` (used before batch norm, as in :class:`Conv2D`).
    """

    def __init__(self, in_features, out_features, *, rng, dtype=np.float32, bias=True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.params = {"W": he_normal(rng, (in_features, out_features), in_features, dtype)}
        if bias:
            self.params["b"] = np.zeros(out_features, dtype=dtype)

    def output_shape(self, input_shape):
        return (self.out_features,)

    def forward(self, x, training=False):
        if training:
            self._cache = x
        out = x @ self.params["W"]
        if "b" in self.params:
            out += self.params["b"]
        return out

    def backward(self, grad):
        x = self._cache
        self.grads["W"] = x.T @ grad
        if "b" in self.params:
            self.grads["b"] = column_sums(grad)
        return grad @ self.params["W"].T

    def __repr__(self):
        return f"Dense({self.in_features}, {self.out_features})"


class Flatten(Layer):
    """(N, H, W, C) -> (N, H*W*C)."""

    def output_shape(self, input_shape):
        return (int(np.prod(input_shape)),)

    def forward(self, x, training=False):
        if training:
            self._cache = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, grad):
        return grad.reshape(self._cache)


class Dropout(Layer):
    """Inverted dropout: zero a fraction ``rate`` of units while training.

    Kept units are scaled by ``1 / (1 - rate)`` so that prediction, where the
    layer is the identity, sees the same expected activation.
    """

    def __init__(self, rate, *, rng):
        super().__init__()
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"dropout rate must be in [0, 1), got {rate!r}")
        self.rate = rate
        self.rng = rng

    def forward(self, x, training=False):
        if not training or self.rate == 0.0:
            self._cache = None
            return x
        keep = self.rng.random(x.shape, dtype=x.dtype) >= self.rate
        mask = keep.astype(x.dtype) / x.dtype.type(1.0 - self.rate)
        self._cache = mask
        return x * mask

    def backward(self, grad):
        return grad if self._cache is None else grad * self._cache

    def __repr__(self):
        return f"Dropout({self.rate})"


class BatchNorm(Layer):
    """Batch normalisation over every axis but the last (channels or units).

    Training normalises with the batch's mean and variance and updates running
    estimates (``momentum`` is the weight of the new batch); prediction uses
    the running estimates, so one image's output does not depend on the others.
    """

    trains_buffers = True

    def __init__(self, n_features, momentum=0.1, eps=1e-5, *, dtype=np.float32):
        super().__init__()
        self.n_features, self.momentum, self.eps = n_features, momentum, eps
        self.params = {
            "gamma": np.ones(n_features, dtype=dtype),
            "beta": np.zeros(n_features, dtype=dtype),
        }
        self.buffers = {
            "running_mean": np.zeros(n_features, dtype=dtype),
            "running_var": np.ones(n_features, dtype=dtype),
        }

    def forward(self, x, training=False):
        x2 = x.reshape(-1, x.shape[-1])  # (N, ..., C) -> (M, C), a view
        m = len(x2)
        gamma, beta = self.params["gamma"], self.params["beta"]
        if training:
            # Column sums as matrix-vector products: BLAS does them far faster
            # than numpy's reductions over leading axes.
            ones = np.full(m, 1.0 / m, dtype=x.dtype)
            mean = np.dot(ones, x2)  # (np.dot: see column_sums)
            centered = x2 - mean
            var = np.dot(ones, np.square(centered))
            mom = self.momentum
            rm, rv = self.buffers["running_mean"], self.buffers["running_var"]
            rm *= 1 - mom
            rm += mom * mean
            rv *= 1 - mom
            rv += mom * var * (m / max(m - 1, 1))  # unbiased estimate for prediction
        else:
            mean, var = self.buffers["running_mean"], self.buffers["running_var"]
            centered = x2 - mean
        inv_std = 1.0 / np.sqrt(var + x.dtype.type(self.eps))
        if training:
            xhat = centered * inv_std
            self._cache = (xhat, inv_std)
            out = xhat * gamma
        else:
            out = centered
            out *= gamma * inv_std
        out += beta
        return out.reshape(x.shape)

    def backward(self, grad):
        xhat, inv_std = self._cache
        g = grad.reshape(-1, grad.shape[-1])
        m = len(g)
        dbeta = column_sums(g)
        dgamma = column_sums(g * xhat)
        self.grads["gamma"], self.grads["beta"] = dgamma, dbeta
        # d/dx of gamma * (x - mean) / std, with mean and std functions of the
        # batch: gamma/std * (g - mean(g) - xhat * mean(g * xhat))
        dx = xhat * (dgamma / m)
        np.subtract(g, dx, out=dx)
        dx -= dbeta / m
        dx *= self.params["gamma"] * inv_std
        return dx.reshape(grad.shape)

    def __repr__(self):
        return f"BatchNorm({self.n_features})"


class SoftmaxCrossEntropy:
    """Softmax followed by cross-entropy, fused: the gradient is ``p - onehot``.

    ``forward(scores, y, sample_weight=None)`` returns the (weighted) mean loss
    as a Python float; ``backward(scale=1.0)`` returns dLoss/dScores times
    ``scale`` (a micro-batch's share of its batch, so that the gradients of the
    micro-batches add up to the batch's).
    """

    def forward(self, scores, y, sample_weight=None):
        logp = log_softmax(scores)
        n = len(y)
        if sample_weight is None:
            w = np.full(n, 1.0 / n, dtype=scores.dtype)
        else:
            w = (sample_weight / sample_weight.sum()).astype(scores.dtype)
        self._cache = (logp, y, w)
        return cross_entropy(logp, y, sample_weight)

    def backward(self, scale=1.0):
        logp, y, w = self._cache
        grad = np.exp(logp)  # the probabilities
        grad[np.arange(len(y)), y] -= 1
        grad *= (w * w.dtype.type(scale))[:, None]
        return grad

    def clear_cache(self):
        self._cache = None
