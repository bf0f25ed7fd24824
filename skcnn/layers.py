"""Layers: each one a small class with a forward and a backward pass.

The contract, for every layer:

* A layer is made without its input size, e.g. ``Conv2D(32, 3, padding="same")``.
  ``build(input_shape, rng, dtype)`` creates its arrays from one sample's
  shape, channels-last ``(H, W, C)`` for images or ``(features,)``, and
  returns the output shape; an unbuilt layer builds itself on its first
  ``forward`` (with fresh random weights).
* ``forward(x, training=False)`` returns the output. With ``training=True`` it
  also caches what ``backward`` needs (and dropout/batch norm act as in
  training); prediction caches nothing.
* ``backward(grad)`` takes dLoss/dOutput and returns dLoss/dInput. It never
  modifies ``grad``. Gradients of the learnable arrays land in ``self.grads``.
* ``params``: name -> learnable array; ``grads``: same names and shapes.
  ``buffers``: name -> state that is saved but not learned (running means).
* ``get_config()``: the constructor's arguments (JSON-friendly);
  :func:`layer_from_config` makes an unbuilt copy from it.

Images are channels-last, ``(N, H, W, C)`` (see :mod:`skcnn.functions`).
Weights are drawn from the ``numpy.random.Generator`` given to ``build``, in
float64 and then cast, so a float32 and a float64 network built from the same
seed start from the same weights.

A new layer type is one subclass here (it registers itself by class name, which
makes it usable in ``CNNClassifier(layers=...)`` and in parameter files) plus
its gradient check in ``tests/test_layers.py``.
"""

import copy
import inspect
from itertools import product

import numpy as np

from .functions import (
    column_sums,
    conv2d,
    conv2d_backward,
    conv2d_kernel_grad,
    conv_output_size,
    cross_entropy,
    log_softmax,
    max_pool_2x2,
    max_pool_2x2_backward,
    max_pool_pool_order,
    max_pool_pool_order_backward,
)

__all__ = [
    "Layer",
    "LAYERS",
    "layer_from_config",
    "Rescale",
    "Bias",
    "Conv2D",
    "MaxPool2D",
    "AvgPool2D",
    "GlobalAvgPool2D",
    "ReLU",
    "Dense",
    "Flatten",
    "Dropout",
    "BatchNorm",
    "Residual",
    "SoftmaxCrossEntropy",
]

#: Every layer type by class name (filled in as subclasses are defined).
LAYERS = {}


def he_normal(rng, shape, fan_in, dtype):
    """He initialisation (He et al. 2015, "Delving deep into rectifiers"):
    normal with variance 2 / fan_in, right for layers followed by ReLU."""
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(dtype)


class Layer:
    """Base class: a layer without parameters.

    Subclasses override ``forward`` and ``backward``, and ``_build`` and
    ``output_shape`` when they hold arrays or change the shape.
    """

    #: Whether training changes ``buffers`` (batch norm's running statistics).
    trains_buffers = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__name__.startswith("_"):
            return
        known = LAYERS.get(cls.__name__)
        if known is not None and (known.__module__, known.__qualname__) != (cls.__module__, cls.__qualname__):
            # networks are rebuilt from configs by name: a second class of
            # the same name would silently replace the first everywhere
            raise TypeError(
                f"a layer type named {cls.__name__!r} exists already ({known.__module__}."
                f"{known.__qualname__}); give your layer class another name"
            )
        LAYERS[cls.__name__] = cls

    def __init__(self):
        self.params = {}
        self.grads = {}
        self.buffers = {}
        self.input_shape = None  # one sample's shape, set by build
        self._cache = None

    # -- construction ------------------------------------------------------------

    def _check_base_init(self):
        """A clear error for a subclass whose ``__init__`` skipped the base class's."""
        if "params" not in vars(self):
            raise TypeError(
                f"{type(self).__name__}.__init__ must call super().__init__(), which gives every "
                "layer its params, grads, buffers and input_shape"
            )

    @property
    def built(self):
        self._check_base_init()
        return self.input_shape is not None

    def build(self, input_shape, rng=None, dtype=np.float32):
        """Create the layer's arrays for inputs of one sample's ``input_shape``.

        Parameters
        ----------
        input_shape : tuple of int
            ``(H, W, C)`` for images (channels-last), ``(features,)`` after Flatten.
        rng : numpy.random.Generator, optional
            Source of the initial weights (and of dropout masks); a fresh
            unseeded one if None.
        dtype : float32 or float64

        Returns
        -------
        output_shape : tuple of int
        """
        self._check_base_init()
        shape = tuple(int(v) for v in input_shape)
        out = self.output_shape(shape)  # a clear error for a shape the layer cannot take, before building
        self.input_shape = shape
        self._build(shape, np.random.default_rng() if rng is None else rng, np.dtype(dtype))
        return out

    def _build(self, input_shape, rng, dtype):
        pass

    def _ensure_built(self, x):
        """Build on first use from the input's shape and dtype."""
        if not self.built:
            self.build(x.shape[1:], dtype=x.dtype if x.dtype in (np.float32, np.float64) else np.float32)

    def _check_channels(self, x):
        """A clear error for input of the wrong layout or size (not numpy's)."""
        want = self.input_shape[-1]
        if x.ndim != len(self.input_shape) + 1 or x.shape[-1] != want:
            layout = "(N, H, W, C), channels-last" if len(self.input_shape) == 3 else "(N, features)"
            what = "channel" if len(self.input_shape) == 3 else "feature"
            raise ValueError(
                f"{self!r} was built for inputs {layout}, with {want} {what}"
                f"{'' if want == 1 else 's'} in the last axis; "
                f"got an array of shape {x.shape}. Channels-first images (N, C, H, W) "
                "become channels-last with x.transpose(0, 2, 3, 1)."
            )

    def output_shape(self, input_shape):
        """Shape of one output sample given one input sample's shape."""
        return tuple(input_shape)

    def _image_shape(self, input_shape):
        """``(H, W, C)`` of one input image, or a clear error when the layer
        before gives flat features instead of images."""
        if len(input_shape) != 3:
            raise ValueError(
                f"{self!r} takes images (H, W, C), channels-last, but gets flat features of shape "
                f"{tuple(input_shape)}: a Flatten, Dense or GlobalAvgPool2D layer comes before it. "
                "Put the layers that take images before those."
            )
        return tuple(input_shape)

    def get_config(self):
        """The arguments that make an unbuilt copy of this layer, by name."""
        config = {"type": type(self).__name__}
        for name in inspect.signature(type(self).__init__).parameters:
            if name != "self":
                config[name] = getattr(self, name)
        return config

    def replica(self, rng=None):
        """A copy that shares this layer's learnable arrays but has its own
        caches, gradients and buffers (one per training thread)."""
        clone = copy.copy(self)  # shallow: clone.params is self.params
        clone._cache, clone.grads = None, {}
        clone.buffers = {k: v.copy() for k, v in self.buffers.items()}
        return clone

    def sublayers(self):
        """The layers inside this one by name (a residual block's), else none."""
        return {}

    # -- computation ---------------------------------------------------------------

    def forward(self, x, training=False):
        raise NotImplementedError

    def backward(self, grad):
        raise NotImplementedError

    def clear_cache(self):
        """Drop the arrays kept for ``backward``, the gradients and scratch space."""
        self._cache = None
        self.grads = {}
        for layer in self.sublayers().values():
            layer.clear_cache()

    def __repr__(self):
        config = self.get_config()
        del config["type"]
        defaults = {
            name: p.default
            for name, p in inspect.signature(type(self).__init__).parameters.items()
            if p.default is not inspect.Parameter.empty
        }
        args = [repr(v) if k not in defaults else f"{k}={v!r}" for k, v in config.items()
                if k not in defaults or defaults[k] != v]  # fmt: skip
        return f"{type(self).__name__}({', '.join(args)})"


def layer_from_config(config):
    """An unbuilt layer from :meth:`Layer.get_config`'s dict.

    Raises
    ------
    ValueError
        For an unknown layer type or arguments the type does not take.
    """
    config = dict(config)
    kind = config.pop("type", None)
    if kind not in LAYERS:
        raise ValueError(
            f"unknown layer type {kind!r}: import or define that layer class (a subclass of "
            f"skcnn.layers.Layer) before building or loading; known types: {sorted(LAYERS)}"
        )
    try:
        return LAYERS[kind](**config)
    except TypeError as exc:
        raise ValueError(f"bad arguments for {kind}: {exc}") from exc


class Rescale(Layer):
    """``(x - shift) / scale`` with fixed (not learned) scalars.

    The first layer of every network: the estimator sets ``shift`` and
    ``scale`` from the training data, so raw pixels (0-255) and [0, 1] images
    train alike, and the scaling is saved and applied batch by batch with the
    rest of the network.
    """

    def __init__(self, shift=0.0, scale=1.0):
        super().__init__()
        self.shift, self.scale = shift, scale

    def _build(self, input_shape, rng, dtype):
        self.buffers = {"shift": np.array(self.shift, dtype=dtype), "scale": np.array(self.scale, dtype=dtype)}

    def forward(self, x, training=False):
        self._ensure_built(x)
        return (x - self.buffers["shift"]) / self.buffers["scale"]

    def backward(self, grad):
        return grad / self.buffers["scale"]


class Bias(Layer):
    """Adds a learned bias per channel (the last axis).

    The network builder splits a convolution's bias off into this layer, after
    the pool that follows it (see :func:`skcnn.network.plan_layers`).
    """

    def _build(self, input_shape, rng, dtype):
        self.params = {"b": np.zeros(input_shape[-1], dtype=dtype)}

    def forward(self, x, training=False):
        self._ensure_built(x)
        self._check_channels(x)
        b = self.params["b"]
        if x.ndim == 4:  # images: add a bias tiled over whole rows, so numpy's loop runs
            n, h, w, c = x.shape  # over W*C values instead of C (2x faster for C = 16)
            return (x.reshape(n * h, w * c) + np.tile(b, w)).reshape(x.shape)
        return x + b

    def backward(self, grad):
        self.grads["b"] = column_sums(grad)
        return grad


class Conv2D(Layer):
    """2-D convolution (cross-correlation) lowered to matrix products (im2col),
    a block of images at a time (:func:`~skcnn.functions.conv2d`).

    Parameters
    ----------
    filters : int
        Output channels F.
    kernel_size : int
        Side K of the square kernel.
    stride : int, default=1
    padding : int or "same", default=0
        Zero padding on each side; "same" is ``kernel_size // 2`` (the output
        keeps the input's size at stride 1 for an odd kernel).
    bias : bool, default=True
        Whether to learn a bias per filter. Off before batch norm, whose shift
        plays its part.

    Shapes: input (N, H, W, C) -> output (N, OH, OW, F), channels-last, with
    ``OH = (H + 2 * padding - K) // stride + 1``. ``params["W"]`` is HWIO,
    ``(K, K, C, F)``: reshaped to ``(K*K*C, F)`` it is the matrix that the
    im2col rows (ordered ky, kx, channel) multiply, ``cols @ W``, the same
    convention as :class:`Dense`'s ``x @ W``. He-initialised with
    ``fan_in = K*K*C``.

    ``input_grad`` (an attribute, default True): the network's first layer
    needs no gradient w.r.t. its input (the images are not learned), which
    saves the most expensive part of its backward pass.

    ``pool_order`` (an attribute, default False): the network sets it, and
    the next :class:`MaxPool2D`'s, when a 2x2 max pool reads this layer's
    output (through per-channel layers only): the output pixels are then
    written in the order the pool reads them, as (4N, OH/2, OW/2, F), and
    the gradient comes back in that order (:func:`~skcnn.functions.conv2d`).
    """

    pool_order = False  # a class default: models pickled before it existed load with it

    def __init__(self, filters, kernel_size=3, stride=1, padding=0, bias=True):
        super().__init__()
        if padding != "same" and not (isinstance(padding, (int, np.integer)) and padding >= 0):
            raise ValueError(f"padding must be an int >= 0 or 'same'; got {padding!r}")
        self.filters, self.kernel_size, self.stride = int(filters), int(kernel_size), int(stride)
        self.padding, self.bias = padding if padding == "same" else int(padding), bool(bias)
        self.input_grad = True

    @property
    def pad(self):
        """Padding in pixels on each side."""
        return self.kernel_size // 2 if self.padding == "same" else self.padding

    def _build(self, input_shape, rng, dtype):
        c, f, k = input_shape[-1], self.filters, self.kernel_size
        # Drawn in (F, K, K, C) order and transposed to HWIO: a seed gives the
        # kernels that earlier versions of skcnn drew, so results stay comparable.
        w = he_normal(rng, (f, k, k, c), k * k * c, dtype)
        self.params = {"W": np.ascontiguousarray(w.transpose(1, 2, 3, 0))}
        if self.bias:
            self.params["b"] = np.zeros(f, dtype=dtype)

    def output_shape(self, input_shape):
        h, w, _ = self._image_shape(input_shape)
        k, s, p = self.kernel_size, self.stride, self.pad
        return (conv_output_size(h, k, s, p), conv_output_size(w, k, s, p), self.filters)

    def forward(self, x, training=False):
        self._ensure_built(x)
        self._check_channels(x)
        out = conv2d(x, self.params["W"], self.stride, self.pad, self.pool_order)  # im2col and GEMM, block by block
        if "b" in self.params:
            out += self.params["b"]
        if training:
            self._cache = x  # backward pairs it with the lowered output gradient (conv2d_backward)
        return out

    def backward(self, grad):
        x = self._cache
        k, s, p = self.kernel_size, self.stride, self.pad
        if "b" in self.params:
            self.grads["b"] = column_sums(grad)
        if not self.input_grad:
            self.grads["W"] = conv2d_kernel_grad(x, grad, k, k, s, p, self.pool_order)
            return None
        # one lowering for both
        self.grads["W"], grad_x = conv2d_backward(x, grad, self.params["W"], s, p, self.pool_order)
        return grad_x


def _pool_output_size(size, pool, stride):
    # Partial windows at the far edge are kept (every pixel is seen); a window
    # must start inside the input. An input smaller than the window gives 1.
    covering = -(-max(size - pool, 0) // stride) + 1
    return min(covering, (size - 1) // stride + 1)


class _Pool2D(Layer):
    """Windows of ``pool_size`` x ``pool_size`` moved by ``stride`` (default
    ``pool_size``). When the input is not divisible by the stride, the last
    window along an axis is partial and pools the pixels it covers, so no pixel
    is dropped; an input smaller than the window (even 1x1) yields one output
    pixel. Shapes: (N, H, W, C) -> (N, OH, OW, C)."""

    def __init__(self, pool_size=2, stride=None):
        super().__init__()
        for name, value in (("pool_size", pool_size), ("stride", stride)):
            if not (value is None and name == "stride") and not (
                isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1
            ):
                raise ValueError(
                    f"{name} must be an int >= 1 (windows are square, {name} x {name}); got {value!r}"
                )
        self.pool_size, self.stride = int(pool_size), None if stride is None else int(stride)

    @property
    def step(self):
        return self.pool_size if self.stride is None else self.stride

    def output_shape(self, input_shape):
        h, w, c = self._image_shape(input_shape)
        k, s = self.pool_size, self.step
        return (_pool_output_size(h, k, s), _pool_output_size(w, k, s), c)

    def _padded(self, x, fill):
        """The input padded with ``fill`` to whole windows, and the output size."""
        n, h, w, c = x.shape
        k, s = self.pool_size, self.step
        oh, ow, _ = self.output_shape(x.shape[1:])
        ph, pw = max((oh - 1) * s + k, h), max((ow - 1) * s + k, w)
        if (ph, pw) == (h, w):
            return x, oh, ow
        xp = np.full((n, ph, pw, c), fill, dtype=x.dtype)
        xp[:, :h, :w] = x
        return xp, oh, ow

    def _windows(self, xp, oh, ow):
        """One strided view per window offset: (N, OH, OW, C) each."""
        k, s = self.pool_size, self.step
        for ky, kx in product(range(k), range(k)):
            yield xp[:, ky : ky + (oh - 1) * s + 1 : s, kx : kx + (ow - 1) * s + 1 : s]


class MaxPool2D(_Pool2D):
    """Max pooling: each window's largest value; the gradient goes to the
    first maximum of each window in reading order.

    The usual 2x2 window with stride 2 takes a faster path with the same
    result (:func:`skcnn.functions.max_pool_2x2`); this class holds the
    general algorithm, an elementwise maximum over one strided view per window
    offset, far cheaper than a reduction over extra window axes.

    ``pool_order`` (an attribute, default False): set by the network when
    the input comes from a :class:`Conv2D` writing in pool order, (4N, H/2,
    W/2, C) (:func:`skcnn.functions.max_pool_pool_order`); the gradient
    goes back in that order.
    """

    pool_order = False  # a class default, as Conv2D's

    @property
    def _pairwise(self):
        """Whether windows are the usual 2x2 with stride 2 (the fast path)."""
        return self.pool_size == self.step == 2

    def forward(self, x, training=False):
        if self.pool_order:
            out, state = max_pool_pool_order(x, training)
            if training:
                self._cache = (state, None)
            return out
        h, w = x.shape[1:3]
        xp, oh, ow = self._padded(x, -np.inf)  # a partial window's maximum is over real pixels
        if self._pairwise:
            out, state = max_pool_2x2(xp, training)
        else:
            windows = self._windows(xp, oh, ow)
            out = next(windows).copy()
            for window in windows:
                np.maximum(out, window, out=out)
            state = (xp, out)
        if training:
            self._cache = (state, (h, w))
        return out

    def backward(self, grad):
        state, size = self._cache
        if self.pool_order:
            return max_pool_pool_order_backward(grad, state)
        h, w = size
        dx = max_pool_2x2_backward(grad, state) if self._pairwise else self._backward_windows(grad, *state)
        return dx[:, :h, :w]

    def _backward_windows(self, grad, xp, out):
        # Which pixel won is found again by comparison: no memory is spent on
        # an argmax in forward.
        oh, ow = out.shape[1:3]
        k, s = self.pool_size, self.step
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


class AvgPool2D(_Pool2D):
    """Average pooling: each window's mean over the pixels it covers (a
    partial edge window averages its real pixels only, no padding counted)."""

    def _counts(self, h, w, oh, ow, dtype):
        """How many real pixels each window covers, (OH, OW, 1)."""
        k, s = self.pool_size, self.step
        rows = np.minimum(np.arange(oh) * s + k, h) - np.arange(oh) * s
        cols = np.minimum(np.arange(ow) * s + k, w) - np.arange(ow) * s
        return np.outer(rows, cols).astype(dtype)[:, :, None]

    def forward(self, x, training=False):
        h, w = x.shape[1:3]
        xp, oh, ow = self._padded(x, 0.0)
        windows = self._windows(xp, oh, ow)
        out = next(windows).copy()
        for window in windows:
            out += window
        counts = self._counts(h, w, oh, ow, x.dtype)
        out /= counts
        if training:
            self._cache = (xp.shape, (h, w), counts)
        return out

    def backward(self, grad):
        shape, (h, w), counts = self._cache
        oh, ow = grad.shape[1:3]
        share = grad / counts  # each covered pixel gets its window's gradient / count
        dx = np.zeros(shape, dtype=grad.dtype)
        for dx_window in self._windows(dx, oh, ow):
            dx_window += share
        return dx[:, :h, :w]


class GlobalAvgPool2D(Layer):
    """The mean of each channel over the whole image: (N, H, W, C) -> (N, C).

    Replaces flattening before the classifier, with no weights and any input
    size (Lin et al. 2014, "Network in network").
    """

    def output_shape(self, input_shape):
        return (self._image_shape(input_shape)[-1],)

    def forward(self, x, training=False):
        if training:
            self._cache = x.shape
        return x.mean(axis=(1, 2))

    def backward(self, grad):
        n, h, w, c = self._cache
        return np.broadcast_to((grad / grad.dtype.type(h * w))[:, None, None, :], (n, h, w, c)).copy()


class ReLU(Layer):
    """max(x, 0), elementwise (Nair & Hinton 2010)."""

    def forward(self, x, training=False):
        # against a scalar of x's dtype: numpy 2 runs it 2x faster than
        # against an array of zeros (numpy 1 was the other way round)
        out = np.maximum(x, x.dtype.type(0))
        if training:
            self._cache = out > 0
        return out

    def backward(self, grad):
        return grad * self._cache  # bool mask; np.where(mask, grad, 0) is 5x slower


class Dense(Layer):
    """Fully connected layer: ``x @ W + b``.

    Parameters
    ----------
    units : int
        Output features.
    bias : bool, default=True
        Off before batch norm, as in :class:`Conv2D`.

    Shapes: input (N, in) -> output (N, units); ``W`` is ``(in, units)``,
    He-initialised with ``fan_in = in``. Images must be flattened first
    (the network builder inserts :class:`Flatten` where needed).
    """

    def __init__(self, units, bias=True):
        super().__init__()
        self.units, self.bias = int(units), bool(bias)

    def _build(self, input_shape, rng, dtype):
        if len(input_shape) != 1:
            raise ValueError(f"{self!r} takes flat inputs (N, features); got samples of shape {input_shape}")
        n_in = input_shape[0]
        self.params = {"W": he_normal(rng, (n_in, self.units), n_in, dtype)}
        if self.bias:
            self.params["b"] = np.zeros(self.units, dtype=dtype)

    def output_shape(self, input_shape):
        return (self.units,)

    def forward(self, x, training=False):
        self._ensure_built(x)
        self._check_channels(x)
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


class Flatten(Layer):
    """(N, H, W, C) -> (N, H*W*C), in channels-last order."""

    def output_shape(self, input_shape):
        return (int(np.prod(input_shape)),)

    def forward(self, x, training=False):
        if training:
            self._cache = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, grad):
        return grad.reshape(self._cache)


class Dropout(Layer):
    """Inverted dropout (Srivastava et al. 2014): zero a fraction ``rate`` of
    units while training.

    Kept units are scaled by ``1 / (1 - rate)`` so that prediction, where the
    layer is the identity, sees the same expected activation. Masks are drawn
    from the generator given to ``build`` (each training thread has its own).

    Raises
    ------
    ValueError
        If ``rate`` is not in [0, 1).
    """

    def __init__(self, rate=0.5):
        super().__init__()
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"dropout rate must be in [0, 1), got {rate!r}")
        self.rate = float(rate)
        self.rng = None

    def _build(self, input_shape, rng, dtype):
        self.rng = rng

    def replica(self, rng=None):
        clone = super().replica()
        clone.rng = rng
        return clone

    def forward(self, x, training=False):
        if not training or self.rate == 0.0:
            self._cache = None
            return x
        if self.rng is None:
            self.rng = np.random.default_rng()
        keep = self.rng.random(x.shape, dtype=x.dtype) >= self.rate
        mask = keep.astype(x.dtype) / x.dtype.type(1.0 - self.rate)
        self._cache = mask
        return x * mask

    def backward(self, grad):
        return grad if self._cache is None else grad * self._cache


class BatchNorm(Layer):
    """Batch normalisation (Ioffe & Szegedy 2015) over every axis but the last
    (channels of images, or features).

    Training normalises with the batch's mean and variance and updates running
    estimates (``momentum`` is the weight of the new batch); prediction uses
    the running estimates, so one image's output does not depend on the others.
    Shapes: any ``(N, ..., C)``, unchanged; ``gamma`` and ``beta`` are ``(C,)``.
    """

    trains_buffers = True

    def __init__(self, momentum=0.1, eps=1e-5):
        super().__init__()
        self.momentum, self.eps = float(momentum), float(eps)

    def _build(self, input_shape, rng, dtype):
        c = input_shape[-1]
        self.params = {"gamma": np.ones(c, dtype=dtype), "beta": np.zeros(c, dtype=dtype)}
        self.buffers = {"running_mean": np.zeros(c, dtype=dtype), "running_var": np.ones(c, dtype=dtype)}

    def forward(self, x, training=False):
        self._ensure_built(x)
        self._check_channels(x)
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


class Residual(Layer):
    """A residual block (He et al. 2016): ``y = F(x) + x``, ``F`` the given layers.

    When ``F`` changes the shape (more channels, or a stride), the shortcut is
    a 1x1 convolution without bias (the "projection" shortcut) with the stride
    that matches the sizes. Gradients flow through both paths and add up.

    Parameters
    ----------
    layers : list of Layer
        The residual branch F, unbuilt.
    """

    def __init__(self, layers):
        super().__init__()
        self.layers = [layer if isinstance(layer, Layer) else layer_from_config(layer) for layer in layers]
        self.projection = None

    def get_config(self):
        return {"type": "Residual", "layers": [layer.get_config() for layer in self.layers]}

    def __repr__(self):
        return f"Residual({self.layers!r})"

    def sublayers(self):
        named = {str(i): layer for i, layer in enumerate(self.layers)}
        if self.projection is not None:
            named["projection"] = self.projection
        return named

    def _build(self, input_shape, rng, dtype):
        shape = input_shape
        for layer in self.layers:
            shape = layer.build(shape, rng, dtype)
        if shape != input_shape:
            # the 1x1 convolution's stride that maps H x W onto the branch's OH x OW
            strides = [
                s for s in range(1, max(input_shape[:2]) + 1)
                if len(shape) == 3 == len(input_shape)
                and (conv_output_size(input_shape[0], 1, s), conv_output_size(input_shape[1], 1, s)) == shape[:2]
            ]  # fmt: skip
            if not strides:
                raise ValueError(
                    f"a residual branch must keep images (H, W, C) and shrink H and W by a whole "
                    f"stride; {input_shape} -> {shape} cannot be matched by a 1x1 convolution"
                )
            stride, c = strides[0], shape[-1]
            self.projection = Conv2D(c, 1, stride=stride, bias=False)
            self.projection.build(input_shape, rng, dtype)

    def output_shape(self, input_shape):
        shape = input_shape
        for layer in self.layers:
            shape = layer.output_shape(shape)
        return shape

    def replica(self, rng=None):
        clone = super().replica()
        clone.layers = [layer.replica(rng) for layer in self.layers]
        if self.projection is not None:
            clone.projection = self.projection.replica(rng)
        return clone

    def forward(self, x, training=False):
        self._ensure_built(x)
        h = x
        for layer in self.layers:
            h = layer.forward(h, training)
        shortcut = x if self.projection is None else self.projection.forward(x, training)
        return h + shortcut

    def backward(self, grad):
        g = grad
        for layer in reversed(self.layers):
            g = layer.backward(g)
        shortcut = grad if self.projection is None else self.projection.backward(grad)
        return g + shortcut


class SoftmaxCrossEntropy:
    """Softmax followed by cross-entropy, fused: the gradient is ``p - target``.

    ``forward(logits, y, sample_weight=None)`` returns the (weighted) mean loss
    as a Python float; ``backward(scale=1.0)`` returns dLoss/dLogits times
    ``scale`` (a micro-batch's share of its batch, so that the gradients of the
    micro-batches add up to the batch's).

    Parameters
    ----------
    label_smoothing : float in [0, 1), default=0.0
        The target is ``(1 - label_smoothing) * onehot + label_smoothing / K``
        for K classes instead of the one-hot label (Szegedy et al. 2016,
        "Rethinking the Inception architecture for computer vision"): the
        network is no longer pushed towards infinite logits. 0 is plain
        cross-entropy. Training only; prediction never uses the loss.
    """

    def __init__(self, label_smoothing=0.0):
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
        self.label_smoothing = float(label_smoothing)
        self._cache = None

    def forward(self, logits, y, sample_weight=None):
        logp = log_softmax(logits)
        n = len(y)
        if sample_weight is None:
            w = np.full(n, 1.0 / n, dtype=logits.dtype)
        else:
            w = (sample_weight / sample_weight.sum()).astype(logits.dtype)
        self._cache = (logp, y, w)
        return cross_entropy(logp, y, sample_weight, self.label_smoothing)

    def backward(self, scale=1.0):
        logp, y, w = self._cache
        grad = np.exp(logp)  # the probabilities
        eps = self.label_smoothing
        if eps:  # minus the smoothed target: eps / K everywhere, 1 - eps more at the label
            grad -= grad.dtype.type(eps / grad.shape[1])
            grad[np.arange(len(y)), y] -= grad.dtype.type(1 - eps)
        else:
            grad[np.arange(len(y)), y] -= 1
        grad *= (w * w.dtype.type(scale))[:, None]
        return grad

    def clear_cache(self):
        self._cache = None
