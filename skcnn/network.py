"""A network: a stack of layers built from a short description, plus its loss.

``Network.forward`` takes images the way users hold them, ``(N, C, H, W)``,
and turns them channels-last once at the entrance (free for one channel).
"""

import copy
from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy as np

from .layers import (
    BatchNorm,
    Bias,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    MaxPool2D,
    ReLU,
    Rescale,
    SoftmaxCrossEntropy,
)
from .parallel import worker_pool

__all__ = ["Architecture", "PRESETS", "Network"]

#: Named architectures. "origin" is the origin project's network.
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
}


@dataclass(frozen=True)
class Architecture:
    """What to build.

    Parameters
    ----------
    input_shape : (C, H, W)
    n_classes : int
    conv_filters : tuple
        One entry per conv block; a block is convolutions (3x3 "same" padding,
        each followed by ReLU, and by batch norm first if ``batch_norm``) and
        then a 2x2 max pool. An int entry is one convolution with that many
        filters; a tuple entry is several, e.g. ``((32, 32), (64, 64))``.
    kernel_size : int
        Odd kernel size of every convolution; padding is ``kernel_size // 2``.
    hidden_layer_sizes : tuple of int
        Dense layers after the conv blocks, each followed by ReLU (batch norm
        before it and dropout after it when enabled).
    batch_norm : bool
    dropout : float
        Dropout rate after each hidden dense layer.
    """

    input_shape: tuple
    n_classes: int
    conv_filters: tuple = PRESETS["origin"]["conv_filters"]
    kernel_size: int = 3
    hidden_layer_sizes: tuple = (100,)
    batch_norm: bool = False
    dropout: float = 0.0

    def __post_init__(self):
        # One canonical form, so that equal architectures compare equal:
        # (16, 32) and ((16,), (32,)) describe the same network.
        canonical = {
            "input_shape": tuple(int(v) for v in self.input_shape),
            "n_classes": int(self.n_classes),
            "conv_filters": tuple(
                (int(b),) if np.isscalar(b) else tuple(int(f) for f in b) for b in self.conv_filters
            ),
            "kernel_size": int(self.kernel_size),
            "hidden_layer_sizes": tuple(int(v) for v in self.hidden_layer_sizes),
            "batch_norm": bool(self.batch_norm),
            "dropout": float(self.dropout),
        }
        for name, value in canonical.items():
            object.__setattr__(self, name, value)

    def to_dict(self):
        """JSON-friendly description (tuples become lists)."""
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        d["conv_filters"] = [list(b) for b in self.conv_filters]
        d["hidden_layer_sizes"] = list(self.hidden_layer_sizes)
        return d

    @classmethod
    def from_dict(cls, d):
        return cls(**d)


def build_layers(arch, rng, dtype):
    """The layer list for ``arch``, weights drawn from ``rng``."""
    c, h, w = arch.input_shape
    shape = (h, w, c)  # channels-last, one sample
    k = arch.kernel_size
    layers = [Rescale(dtype=dtype)]  # identity until the estimator sets it from data

    def add(layer):
        nonlocal shape
        layers.append(layer)
        shape = layer.output_shape(shape)

    first = True
    for block in arch.conv_filters:
        for j, filters in enumerate(block):
            last = j == len(block) - 1
            add(
                Conv2D(
                    shape[-1], filters, k, padding=k // 2, rng=rng, dtype=dtype,
                    input_grad=not first, bias=not (arch.batch_norm or last),
                )
            )  # fmt: skip
            first = False
            if arch.batch_norm:
                add(BatchNorm(filters, dtype=dtype))
            if not last:
                add(ReLU())
        # The block ends Conv -> MaxPool -> Bias -> ReLU, the same function as
        # Conv (with bias) -> ReLU -> MaxPool: max commutes with adding a
        # per-channel constant and with ReLU, and after the pool both touch
        # 4x fewer values. (Batch norm's shift plays the bias's part.)
        add(MaxPool2D(2))
        if not arch.batch_norm:
            add(Bias(shape[-1], dtype=dtype))
        add(ReLU())
    add(Flatten())
    for units in arch.hidden_layer_sizes:
        add(Dense(shape[0], units, rng=rng, dtype=dtype, bias=not arch.batch_norm))
        if arch.batch_norm:
            add(BatchNorm(units, dtype=dtype))
        add(ReLU())
        if arch.dropout:
            add(Dropout(arch.dropout, rng=rng))
    add(Dense(shape[0], arch.n_classes, rng=rng, dtype=dtype))
    return layers


#: Images scored at once in prediction. Small batches keep every intermediate
#: array in cache: 64 at a time predicts about 1.5x faster than 512 here.
PREDICT_BATCH = 64


class Network:
    """A stack of layers with a softmax cross-entropy loss on top.

    Parameters
    ----------
    layers : list of Layer
    dtype : float32 or float64
        Everything is computed in this dtype; inputs are cast to it.
    """

    def __init__(self, layers, dtype=np.float32):
        self.layers = layers
        self.dtype = np.dtype(dtype)
        self.loss_layer = SoftmaxCrossEntropy()

    @classmethod
    def from_architecture(cls, arch, rng, dtype=np.float32):
        return cls(build_layers(arch, rng, dtype), dtype)

    # -- computation ---------------------------------------------------------

    def forward(self, x, training=False):
        """Class scores (logits) of images ``x`` of shape (N, C, H, W)."""
        x = np.asarray(x).astype(self.dtype, copy=False)
        x = x.transpose(0, 2, 3, 1)  # (N, C, H, W) -> (N, H, W, C), a view
        for layer in self.layers:
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
        for layer in reversed(self.layers):
            grad = layer.backward(grad)
            if grad is None:  # the first conv skips its input gradient
                break
        return grad

    def predict_scores(self, x, batch_size=PREDICT_BATCH):
        """Logits for ``x``, computed ``batch_size`` images at a time: every
        intermediate array is bounded by the batch, so memory does not grow
        with ``len(x)``. Batches run two at a time on two cores (prediction
        caches nothing, so they can share this network)."""
        n = len(x)
        out = None
        # At least two chunks, so that both cores work on a small input too;
        # the chunks depend on n only, never on the number of threads.
        batch_size = max(1, min(batch_size, -(-n // 2)))

        def run(start):
            return start, self.forward(x[start : start + batch_size])

        starts = range(0, n, batch_size)
        with worker_pool() as pool:
            for start, scores in map(run, starts) if pool is None else pool.map(run, starts):
                if out is None:
                    out = np.empty((n, scores.shape[1]), dtype=scores.dtype)
                out[start : start + len(scores)] = scores
        return out

    def replicas(self, n, rng):
        """``n`` networks that share this one's weights (the same arrays) but
        have their own caches and gradients, their own dropout random stream
        (spawned from ``rng``) and their own copy of batch-norm statistics:
        each can train on a micro-batch in its own thread."""
        out = []
        for child in rng.spawn(n):
            layers = []
            for layer in self.layers:
                clone = copy.copy(layer)  # shallow: clone.params is layer.params
                clone._cache, clone.grads, clone._workspace = None, {}, {}
                clone.buffers = {k: v.copy() for k, v in layer.buffers.items()}
                if isinstance(clone, Dropout):
                    clone.rng = child
                layers.append(clone)
            out.append(Network(layers, self.dtype))
        return out

    def merge_buffers(self, replicas, used):
        """Set every buffer that training changes (batch-norm running
        statistics) to its mean over the replicas in ``used``, here and in all
        ``replicas``."""
        for i, layer in enumerate(self.layers):
            if not layer.trains_buffers:
                continue
            for k, v in layer.buffers.items():
                copies = [r.layers[i].buffers[k] for r in used]
                v[...] = sum(copies[1:], copies[0].copy()) / v.dtype.type(len(copies))
                for r in replicas:
                    r.layers[i].buffers[k][...] = v

    # -- parameters ----------------------------------------------------------

    def named_params(self):
        """[(name, array)] for every learnable array, e.g. ("0.W", W)."""
        return [(f"{i}.{k}", v) for i, layer in enumerate(self.layers) for k, v in layer.params.items()]

    def params(self):
        return [v for layer in self.layers for v in layer.params.values()]

    def grads(self):
        return [layer.grads[k] for layer in self.layers for k in layer.params]

    def _param_groups(self):
        """(layer, name) of the weights, which take weight decay, then of the
        other learnable arrays (biases, batch-norm scales and shifts)."""
        keys = [(layer, k) for layer in self.layers for k in layer.params]
        return [[(l, k) for l, k in keys if k == "W"], [(l, k) for l, k in keys if k != "W"]]

    def pack_params(self):
        """Move the learnable arrays into two contiguous buffers, the weights
        and the rest, each layer keeping views of its part of them.

        Returns ``[(buffer, takes_weight_decay)]``. An optimizer step over two
        buffers is a few large numpy calls instead of a dozen small ones per
        layer. Arrays already packed stay where they are.
        """
        packed = []
        for group, decays in zip(self._param_groups(), (True, False)):
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

    def packed_grads(self, out):
        """Write the gradients into ``out``, buffers laid out as :meth:`pack_params`'s."""
        groups = [group for group in self._param_groups() if group]
        for group, buffer in zip(groups, out):
            np.concatenate([layer.grads[k].reshape(-1) for layer, k in group], out=buffer)

    def state_dict(self):
        """Copies of every learnable array and buffer, by name."""
        state = {}
        for i, layer in enumerate(self.layers):
            for k, v in {**layer.params, **layer.buffers}.items():
                state[f"{i}.{k}"] = v.copy()
        return state

    def load_state_dict(self, state):
        """Copy arrays from ``state`` into the network (shapes must match)."""
        for i, layer in enumerate(self.layers):
            for k, v in {**layer.params, **layer.buffers}.items():
                v[...] = state[f"{i}.{k}"]

    def clear_cache(self):
        """Drop activations and gradients kept from the last training step."""
        for layer in self.layers:
            layer.clear_cache()
        self.loss_layer.clear_cache()

    def __repr__(self):
        inner = ",\n  ".join(repr(layer) for layer in self.layers)
        return f"Network([\n  {inner}\n], dtype={self.dtype.name})"

    # -- summary -------------------------------------------------------------

    def summary(self, input_shape):
        """Each layer's output shape, parameter count and forward FLOPs.

        Parameters
        ----------
        input_shape : (C, H, W)
            One input image.

        Returns
        -------
        Summary
            Its rows follow :attr:`layers` (the executed list); printed, it is
            a table.
        """
        c, h, w = input_shape
        shape = (h, w, c)  # channels-last, as the layers compute
        rows = []
        for layer in self.layers:
            out = layer.output_shape(shape)
            n_params = sum(int(v.size) for v in layer.params.values())
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
        self.flops = sum(r.flops for r in self.rows)

    def __str__(self):
        header = ("Layer", "Output shape", "Params", "FLOPs")
        cells = [header] + [
            (r.layer, str(r.output_shape), f"{r.n_params:,}", f"{r.flops:,}") for r in self.rows
        ]
        widths = [max(len(row[i]) for row in cells) for i in range(4)]

        def line(row):  # text columns to the left, numbers to the right
            cells = zip(row, widths)
            return "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(cells))

        rule = "=" * len(line(header))
        return "\n".join([
            line(header), rule, *map(line, cells[1:]), rule,
            f"Total params: {self.total_params:,}",
            f"Forward FLOPs per image: {self.flops:,} (a multiply-add counts as 2; softmax not counted)",
        ])  # fmt: skip

    __repr__ = __str__


def _size(shape):
    return int(np.prod(shape))


def _conv_flops(layer, shape, out):
    k = layer.kernel_size
    return 2 * _size(out) * k * k * shape[-1] + (_size(out) if "b" in layer.params else 0)


def _dense_flops(layer, shape, out):
    return 2 * shape[0] * out[0] + (out[0] if "b" in layer.params else 0)


#: FLOPs of one image through a layer, as skcnn's prediction computes it:
#: ``f(layer, input_shape, output_shape)``, shapes of one sample, channels-last.
#: A comparison (max, ReLU) counts as one operation.
_FLOPS = {
    Rescale: lambda layer, shape, out: 2 * _size(shape),  # subtract, divide
    Conv2D: _conv_flops,
    MaxPool2D: lambda layer, shape, out: _size(out) * (layer.pool_size**2 - 1),  # comparisons
    Bias: lambda layer, shape, out: _size(out),
    ReLU: lambda layer, shape, out: _size(out),
    Dense: _dense_flops,
    Flatten: lambda layer, shape, out: 0,
    Dropout: lambda layer, shape, out: 0,  # the identity in prediction
    BatchNorm: lambda layer, shape, out: 3 * _size(out),  # subtract the mean, scale, shift
}


def layer_flops(layer, input_shape, output_shape):
    """Forward FLOPs of one sample through ``layer`` (see :data:`_FLOPS`)."""
    try:
        count = _FLOPS[type(layer)]
    except KeyError:
        name = type(layer).__name__
        raise ValueError(f"no FLOP count for {name} layers; add one to skcnn.network._FLOPS") from None
    return int(count(layer, input_shape, output_shape))
