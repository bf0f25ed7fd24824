"""A network: a stack of layers, planned and built from a list, plus its loss.

``Network.forward`` takes images the way users hold them, ``(N, C, H, W)``,
and turns them channels-last once at the entrance (free for one channel).

One way to build a network, whatever describes it: the presets ("origin",
"deep", "resnet") are functions that return a list of unbuilt layers, and a user's
``CNNClassifier(layers=[...])`` is such a list too. :func:`plan_layers` turns
the list into what runs (input scaling first, flattening where a dense layer
meets images, and the speed reorderings that keep the function), and
:meth:`Network.from_layers` builds it.
"""

from typing import NamedTuple
import copy
from functools import partial

import numpy as np

from .layers import (
    AvgPool2D,
    BatchNorm,
    Bias,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool2D,
    Layer,
    MaxPool2D,
    ReLU,
    Rescale,
    Residual,
    SoftmaxCrossEntropy,
    layer_from_config,
)
from .parallel import run_tasks, worker_pool

__all__ = [
    "PRESETS",
    "PRESET_FIELDS",
    "preset_layers",
    "plan_layers",
    "fold_batch_norm",
    "Network",
    "WeightAverage",
]

#: Named architectures, as the fields :func:`preset_layers` takes. "origin" is
#: the origin project's network. ``residual`` is the kind of stack, not a
#: field that the estimator's parameters override (:data:`PRESET_FIELDS`).
PRESETS = {
    "origin": dict(
        conv_filters=(16, 32), kernel_size=3, hidden_layer_sizes=(100,), batch_norm=False, dropout=0.0
    ),
    "deep": dict(
        conv_filters=((32, 32), (64, 64)),
        kernel_size=3,
        hidden_layer_sizes=(256,),
        batch_norm=True,
        dropout=0.3,
    ),
    # A small ResNet: a stem convolution and three stages of one residual
    # block each, at 28x28, 14x14 and 7x7 on 28x28 images, then global average
    # pooling. About 37M multiply-adds an image, twice the deep preset's; an
    # epoch took 1.1-2.3x the deep preset's on the shared 2-core machine
    # (issue #17's notes), so about 15-20 epochs fit in 30 idle minutes.
    "resnet": dict(
        conv_filters=(32, 64, 128),
        kernel_size=3,
        hidden_layer_sizes=(),
        batch_norm=True,
        dropout=0.0,
        residual=True,
    ),
}

#: The fields of a preset that the estimator's parameters of the same names override.
PRESET_FIELDS = ("conv_filters", "kernel_size", "hidden_layer_sizes", "batch_norm", "dropout")


def preset_layers(conv_filters, kernel_size, hidden_layer_sizes, batch_norm, dropout, residual=False):
    """The layer list of a VGG-style or ResNet-style stack, in textbook order, unbuilt.

    Parameters
    ----------
    conv_filters : tuple
        VGG-style (``residual=False``): one entry per block, an int (one
        convolution) or a tuple of ints (several). Each convolution is
        ``kernel_size`` x ``kernel_size`` with "same" padding, followed by
        batch norm (if ``batch_norm``) and ReLU; each block ends in a 2x2 max
        pool.

        ResNet-style (``residual=True``, He et al. 2016, "Deep residual
        learning for image recognition"): a stem convolution of the first
        width (batch norm, ReLU), then one stage per entry, an int (one
        residual block) or a tuple of ints (several). A block is
        conv-BN-ReLU-conv-BN plus its input, then ReLU; every stage after
        the first halves the image with a stride of 2 in its first
        convolution (the shortcut then a strided 1x1 projection). The
        stages end in global average pooling (Lin et al. 2014) instead of
        flattening.
    kernel_size : int
    hidden_layer_sizes : tuple of int
        Dense layers after the blocks, each followed by batch norm (if
        ``batch_norm``), ReLU and dropout (if ``dropout`` > 0).
    batch_norm : bool
    dropout : float
    residual : bool, default=False

    Returns
    -------
    list of Layer
        Without the output layer (the estimator appends ``Dense(n_classes)``).
    """
    def norm():
        return [BatchNorm()] if batch_norm else []

    def conv(filters, stride=1):  # no bias before batch norm: its shift plays that part
        return [Conv2D(filters, kernel_size, stride, padding="same", bias=not batch_norm)]

    layers = []
    if residual:
        stages = [(block,) if np.isscalar(block) else block for block in conv_filters]
        layers += conv(stages[0][0]) + norm() + [ReLU()]  # the stem
        for i, stage in enumerate(stages):
            for j, filters in enumerate(stage):
                stride = 2 if i > 0 and j == 0 else 1
                branch = conv(filters, stride) + norm() + [ReLU()] + conv(filters) + norm()
                layers += [Residual(branch), ReLU()]
        layers.append(GlobalAvgPool2D())
    else:
        for block in conv_filters:
            for filters in (block,) if np.isscalar(block) else block:
                layers += conv(filters) + norm() + [ReLU()]
            layers.append(MaxPool2D(2))
        layers.append(Flatten())
    for units in hidden_layer_sizes:
        layers += [Dense(units, bias=not batch_norm)]
        layers += [BatchNorm()] if batch_norm else []
        layers += [ReLU()]
        layers += [Dropout(dropout)] if dropout else []
    return layers


def _reorder_for_speed(layers):
    """The same function with less work: move ReLU and biases after pools.

    * ``ReLU, MaxPool2D`` -> ``MaxPool2D, ReLU``: ReLU is non-decreasing, so
      the maximum of rectified values is the rectified maximum.
    * ``Conv2D(bias), MaxPool2D or AvgPool2D`` -> ``Conv2D(no bias), pool,
      Bias``: adding one constant per channel commutes with a maximum and
      with an average.

    After a 2x2 pool both touch 4x fewer values. Batch norm between them
    (a per-channel scale that may be negative) stops the bias rule, as it
    should; its shift plays the bias's part anyway.
    """
    layers = list(layers)
    changed = True
    while changed:
        changed = False
        for i in range(len(layers) - 1):
            a, b = layers[i], layers[i + 1]
            if isinstance(a, ReLU) and isinstance(b, MaxPool2D):
                layers[i], layers[i + 1] = b, a
                changed = True
            elif isinstance(a, Conv2D) and a.bias and isinstance(b, (MaxPool2D, AvgPool2D)):
                a.bias = False
                layers.insert(i + 2, Bias())
                changed = True
    return layers


def plan_layers(layers, input_shape):
    """What runs for a layer list: fresh unbuilt copies, input scaling first,
    a Flatten wherever a Dense layer meets images, reordered for speed.

    The given layers are never touched (copies are made from their configs),
    so the same list can describe many networks.

    Parameters
    ----------
    layers : list of Layer
    input_shape : (H, W, C)
        One sample, channels-last.
    """
    planned = [Rescale()]  # identity until the estimator sets it from data
    shape = tuple(input_shape)
    for layer in layers:
        copy = layer_from_config(layer.get_config())
        if isinstance(copy, Dense) and len(shape) == 3:
            planned.append(Flatten())
            shape = (int(np.prod(shape)),)
        planned.append(copy)
        shape = copy.output_shape(shape)
    return _reorder_for_speed(planned)


def _params_of(layer):
    """The learnable arrays of a layer and of the layers inside it."""
    yield from layer.params.values()
    for sub in layer.sublayers().values():
        yield from _params_of(sub)


def _named_layers(layers):
    """(name, layer) for every layer, depth first: "3", then a residual
    block's "3.0", "3.1", ... and "3.projection"."""

    def walk(name, layer):
        yield name, layer
        for sub_name, sub in layer.sublayers().items():
            yield from walk(f"{name}.{sub_name}", sub)

    for i, layer in enumerate(layers):
        yield from walk(str(i), layer)


def fold_batch_norm(layers):
    """Prediction's version of ``layers``: each Conv2D or Dense directly
    followed by a BatchNorm becomes one layer of the same type, the batch
    norm's affine map folded into its weights and bias (with running
    statistics, ``s = gamma / sqrt(var + eps)``: ``W' = W * s`` per output
    channel, ``b' = (b - mean) * s + beta``). The same function, without a
    pass over the activations for each batch norm. The layers given are
    never changed; the folded ones are copies (replicas with new arrays).
    """
    out = []
    for i, layer in enumerate(layers):
        prev = layers[i - 1] if i else None
        if isinstance(layer, BatchNorm) and type(prev) in (Conv2D, Dense) and out[-1] is prev:
            f = layer.params["gamma"].dtype.type
            scale = layer.params["gamma"] / np.sqrt(layer.buffers["running_var"] + f(layer.eps))
            bias = prev.params.get("b", f(0)) - layer.buffers["running_mean"]
            folded = prev.replica()
            folded.params = {"W": prev.params["W"] * scale, "b": bias * scale + layer.params["beta"]}
            out[-1] = folded
        else:
            out.append(layer)
    return out


#: Layers that compute each channel of each pixel on its own (or with
#: statistics over all pixels): they give the same result in any pixel order.
_PER_CHANNEL = (Bias, ReLU, BatchNorm)


def _set_pool_order(layers):
    """Switch on ``pool_order`` for each Conv2D whose output a 2x2 max pool
    with stride 2 reads, through per-channel layers only, and for that pool
    (off for all others): the convolution then writes its output in the
    order the pool reads it (:func:`skcnn.functions.conv2d`), which makes the
    pool about twice as fast (``python benchmarks/pooling.py``). The function
    computed does not change."""
    for layer in layers:
        if isinstance(layer, (Conv2D, MaxPool2D)):
            layer.pool_order = False
    for i, layer in enumerate(layers):
        if type(layer) is not Conv2D or not layer.built:
            continue
        j = i + 1
        while j < len(layers) and type(layers[j]) in _PER_CHANNEL:
            j += 1
        pool = layers[j] if j < len(layers) else None
        oh, ow, _ = layer.output_shape(layer.input_shape)
        if type(pool) is MaxPool2D and pool.pool_size == pool.step == 2 and oh % 2 == 0 and ow % 2 == 0:
            layer.pool_order = pool.pool_order = True


#: Images scored at once in prediction. Small batches keep every intermediate
#: array in cache: 64 at a time predicts about 1.5x faster than 512 here.
PREDICT_BATCH = 64

#: Fewest images in a chunk of a prediction spread over threads. Below it the
#: pool thread's start and the turns the two threads take at the GIL cost more
#: than the second core saves: ten images took 1.4-1.7 ms in two chunks of
#: five, against PyTorch's 0.8-0.9 (``python benchmarks/latency.py``).
PREDICT_MIN_CHUNK = 16


class Network:
    """A built stack of layers with a softmax cross-entropy loss on top.

    Parameters
    ----------
    layers : list of Layer
        Built, in the order they run.
    dtype : float32 or float64
        Everything is computed in this dtype; inputs are cast to it.
    spec : list of dict, optional
        The configs of the layer list this network was planned from (saved
        in parameter files, which rebuild the network from it).
    input_shape : (C, H, W), optional
        One input image.
    """

    def __init__(self, layers, dtype=np.float32, spec=None, input_shape=None):
        self.layers = layers
        self.dtype = np.dtype(dtype)
        self.spec = spec
        self.input_shape = None if input_shape is None else tuple(input_shape)
        self.loss_layer = SoftmaxCrossEntropy()
        # Backward stops at the first layer with learnable arrays: nothing
        # before it learns. A convolution there skips its input gradient.
        learned = [i for i, layer in enumerate(layers) if any(True for _ in _params_of(layer))]
        self._first_learned = learned[0] if learned else len(layers)
        if learned and isinstance(layers[self._first_learned], Conv2D):
            layers[self._first_learned].input_grad = False
        _set_pool_order(layers)

    @classmethod
    def from_layers(cls, layers, input_shape, rng, dtype=np.float32):
        """Plan and build the network for a list of (unbuilt) layers.

        Parameters
        ----------
        layers : list of Layer or of config dicts
            Including the output layer. Never modified.
        input_shape : (C, H, W)
        rng : numpy.random.Generator
            Initial weights (and dropout masks) are drawn from it, layer by layer.
        dtype : float32 or float64
        """
        layers = [layer if isinstance(layer, Layer) else layer_from_config(layer) for layer in layers]
        c, h, w = input_shape
        planned = plan_layers(layers, (h, w, c))
        shape = (h, w, c)
        for layer in planned:
            shape = layer.build(shape, rng, dtype)
        spec = [layer.get_config() for layer in layers]
        return cls(planned, dtype, spec=spec, input_shape=input_shape)

    # -- computation ---------------------------------------------------------

    def forward(self, x, training=False, layers=None):
        """Logits (N, n_classes) of images ``x`` of shape (N, C, H, W)
        (through ``layers`` instead of this network's, if given)."""
        x = np.asarray(x).astype(self.dtype, copy=False)
        x = x.transpose(0, 2, 3, 1)  # (N, C, H, W) -> (N, H, W, C), a view
        for layer in self.layers if layers is None else layers:
            x = layer.forward(x, training)
        return x

    def loss(self, x, y, sample_weight=None):
        """Forward in training mode; returns the mean loss and keeps what
        :meth:`backward` needs. ``y`` holds class indices 0..n_classes-1."""
        return self.loss_layer.forward(self.forward(x, training=True), y, sample_weight)

    def backward(self, scale=1.0):
        """Backpropagate the last :meth:`loss`; fills every layer's ``grads``
        with the gradient of the loss times ``scale``."""
        grad = self.loss_layer.backward(scale)
        for layer in reversed(self.layers[self._first_learned :]):
            grad = layer.backward(grad)
        return grad

    def predict_logits(self, x, batch_size=PREDICT_BATCH):
        """Logits for ``x``, computed ``batch_size`` images at a time: every
        intermediate array is bounded by the batch, so memory does not grow
        with ``len(x)``. The chunks are spread over all threads
        (:func:`~skcnn.parallel.run_tasks`; prediction caches nothing, so
        they can share this network)."""
        n = len(x)
        out = None
        # At least two chunks, so that two cores work on a small input too,
        # but one for fewer than 2 x PREDICT_MIN_CHUNK images (see there). The
        # chunks depend on n only, never on the number of threads.
        chunks = 1 if n < 2 * PREDICT_MIN_CHUNK else 2
        batch_size = max(1, min(batch_size, -(-n // chunks)))
        layers = fold_batch_norm(self.layers)  # one pass fewer per batch norm

        def run(start):
            return self.forward(x[start : start + batch_size], layers=layers)

        starts = range(0, n, batch_size)
        with worker_pool() as pool:
            results = run_tasks(pool, [partial(run, start) for start in starts])
        for start, scores in zip(starts, results):
            if out is None:
                out = np.empty((n, scores.shape[1]), dtype=scores.dtype)
            out[start : start + len(scores)] = scores
        return out

    def named_layers(self):
        """(name, layer) for every layer, inside residual blocks too."""
        return list(_named_layers(self.layers))

    # -- parameters ----------------------------------------------------------

    def named_params(self):
        """[(name, array)] for every learnable array, e.g. ("1.W", W)."""
        return [(f"{name}.{k}", v) for name, layer in self.named_layers() for k, v in layer.params.items()]

    def params(self):
        return [v for _, v in self.named_params()]

    def grads(self):
        return [layer.grads[k] for _, layer in self.named_layers() for k in layer.params]

    def param_groups(self):
        """(layer, name) of the weights, which take weight decay, then of the
        other learnable arrays (biases, batch-norm scales and shifts)."""
        keys = [(layer, k) for _, layer in self.named_layers() for k in layer.params]
        return [[(l, k) for l, k in keys if k == "W"], [(l, k) for l, k in keys if k != "W"]]

    def named_arrays(self):
        """[(name, array)] for every learnable array and buffer ("1.W",
        "2.running_mean"): the arrays themselves, not copies."""
        return [
            (f"{name}.{k}", v)
            for name, layer in self.named_layers()
            for k, v in {**layer.params, **layer.buffers}.items()
        ]

    def state_dict(self):
        """Copies of every learnable array and buffer, by name ("1.W")."""
        return {name: v.copy() for name, v in self.named_arrays()}

    def load_state_dict(self, state):
        """Copy arrays from ``state`` into the network (shapes must match)."""
        for name, v in self.named_arrays():
            v[...] = state[name]

    def clear_cache(self):
        """Drop activations and gradients kept from the last training step."""
        for layer in self.layers:
            layer.clear_cache()
        self.loss_layer.clear_cache()

    def __repr__(self):
        inner = ",\n  ".join(repr(layer) for layer in self.layers)
        return f"Network([\n  {inner}\n], dtype={self.dtype.name})"

    # -- summary -------------------------------------------------------------

    def summary(self, input_shape=None):
        """Each layer's output shape, parameter count and forward FLOPs.

        Parameters
        ----------
        input_shape : (C, H, W), optional
            One input image; default :attr:`input_shape`.

        Returns
        -------
        Summary
            Its rows follow :attr:`layers` (the executed list); printed, it is
            a table. A residual block is one row, counting the parameters and
            FLOPs of its branch, its projection and the add.
        """
        c, h, w = self.input_shape if input_shape is None else input_shape
        shape = (h, w, c)  # channels-last, as the layers compute
        rows = []
        for layer in self.layers:
            out = layer.output_shape(shape)
            n_params = sum(int(v.size) for v in _params_of(layer))  # a residual block's too
            rows.append(LayerSummary(repr(layer), out, n_params, layer_flops(layer, shape, out)))
            shape = out
        return Summary(rows)


class LayerSummary(NamedTuple):
    """One row of :class:`Summary`."""

    layer: str  # the layer's repr
    output_shape: tuple  # one sample, channels-last
    n_params: int
    flops: int  # per image


class Summary:
    """A network's layers, output shapes, parameters and FLOPs, as a table.

    ``rows`` holds one :class:`LayerSummary` per layer; ``total_params`` and
    ``flops`` (forward, per image) are their totals. ``str()`` and ``repr()``
    give the table.
    """

    def __init__(self, rows):
        self.rows = list(rows)
        self.total_params = sum(r.n_params for r in self.rows)
        # a layer type without a FLOP count (a user's own) shows "?" and is left out
        self.flops = sum(r.flops for r in self.rows if r.flops is not None)
        self.uncounted = [r.layer for r in self.rows if r.flops is None]

    def __str__(self):
        header = ("Layer", "Output shape", "Params", "FLOPs")
        cells = [header] + [
            (r.layer, str(r.output_shape), f"{r.n_params:,}", "?" if r.flops is None else f"{r.flops:,}")
            for r in self.rows
        ]
        widths = [max(len(row[i]) for row in cells) for i in range(4)]

        def line(row):  # text columns to the left, numbers to the right
            cells = zip(row, widths)
            return "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(cells))

        rule = "=" * len(line(header))
        return "\n".join([
            line(header), rule, *map(line, cells[1:]), rule,
            f"Total params: {self.total_params:,}",
            f"Forward FLOPs per image: {self.flops:,} (a multiply-add counts as 2; softmax not counted"
            + (f"; not counted: {', '.join(self.uncounted)})" if self.uncounted else ")"),
        ])  # fmt: skip

    __repr__ = __str__


def _size(shape):
    return int(np.prod(shape))


def _conv_flops(layer, shape, out):
    k = layer.kernel_size
    return 2 * _size(out) * k * k * shape[-1] + (_size(out) if "b" in layer.params else 0)


def _dense_flops(layer, shape, out):
    return 2 * shape[0] * out[0] + (out[0] if "b" in layer.params else 0)


def _residual_flops(layer, shape, out):
    """The branch's layers, the projection (if any) and the add."""
    h, parts = shape, []
    for sub in layer.layers:
        h_out = sub.output_shape(h)
        parts.append(layer_flops(sub, h, h_out))
        h = h_out
    if layer.projection is not None:
        parts.append(layer_flops(layer.projection, shape, out))
    if None in parts:  # a layer type without a count inside the block
        return None
    return sum(parts) + _size(out)


#: FLOPs of one image through a layer, as skcnn's prediction computes it:
#: ``f(layer, input_shape, output_shape)``, shapes of one sample, channels-last.
#: A comparison (max, ReLU) counts as one operation; pools count every
#: position of a window, as the code computes them (partial edge windows on
#: padding too).
_FLOPS = {
    Rescale: lambda layer, shape, out: 2 * _size(shape),  # subtract, divide
    Conv2D: _conv_flops,
    MaxPool2D: lambda layer, shape, out: _size(out) * (layer.pool_size**2 - 1),  # comparisons
    AvgPool2D: lambda layer, shape, out: _size(out) * layer.pool_size**2,  # k*k - 1 adds, a divide
    GlobalAvgPool2D: lambda layer, shape, out: _size(shape),  # H*W - 1 adds and a divide per channel
    Bias: lambda layer, shape, out: _size(out),
    ReLU: lambda layer, shape, out: _size(out),
    Dense: _dense_flops,
    Flatten: lambda layer, shape, out: 0,
    Dropout: lambda layer, shape, out: 0,  # the identity in prediction
    BatchNorm: lambda layer, shape, out: 3 * _size(out),  # subtract the mean, scale, shift
    Residual: _residual_flops,
}


def layer_flops(layer, input_shape, output_shape):
    """Forward FLOPs of one sample through ``layer`` (see :data:`_FLOPS`)."""
    count = _FLOPS.get(type(layer))
    if count is None:  # a layer type of the user's: unknown, shown as "?"
        return None
    flops = count(layer, input_shape, output_shape)
    return None if flops is None else int(flops)

class WeightAverage:
    """An exponential moving average of a network's weights, for prediction.

    After each optimizer step, every learnable array *and* every buffer
    (batch norm's running statistics, so that they match the averaged
    weights as well as they can without another pass over the data) moves
    towards the trained network's: ``avg += (1 - d) * (live - avg)``. The
    averaged weights sit in a flatter, better-generalising point than the
    last step's (Polyak & Juditsky 1992, "Acceleration of stochastic
    approximation by averaging"; the running average of the parameters that
    Szegedy et al. 2016, "Rethinking the Inception architecture", evaluate).

    The decay warms up, ``d = min(decay, (1 + t) / (10 + t))`` after ``t``
    updates, so that the average forgets its starting point (the initial
    weights) within a short fit too.

    Parameters
    ----------
    network : Network
        The network being trained; the average starts as a copy of it.
    decay : float in (0, 1)
        The weight of the old average at each step: the average spans
        about ``1 / (1 - decay)`` steps.

    Attributes
    ----------
    network : Network
        A network of the same layers holding the averaged arrays; predict
        with it.
    n_updates : int
        Steps averaged so far.
    """

    def __init__(self, network, decay):
        network.clear_cache()
        self.network = copy.deepcopy(network)
        self.decay = float(decay)
        self.n_updates = 0

    def update(self, live):
        """One step of the average towards the arrays of ``live`` (the
        trained network, of the same layers)."""
        d = min(self.decay, (1.0 + self.n_updates) / (10.0 + self.n_updates))
        self.n_updates += 1
        for (_, avg), (_, now) in zip(self.network.named_arrays(), live.named_arrays()):
            avg += avg.dtype.type(1.0 - d) * (now - avg)

    def state(self):
        """A copy of the average (arrays by name, and the update count)."""
        return self.network.state_dict(), self.n_updates

    def load_state(self, state):
        """Go back to a :meth:`state`."""
        arrays, self.n_updates = state
        self.network.load_state_dict(arrays)
