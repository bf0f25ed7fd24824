"""ONNX export: a fitted CNNClassifier as a model any ONNX runtime can run.

The exported graph takes what ``predict_proba`` takes, images ``(n, C, H, W)``
(float32), and computes every layer of the fitted network in order, input
scaling first, then softmax. It has two outputs: ``label``, the predicted
class labels (``classes_``, int64 or string), and ``probabilities``,
``(n, n_classes)`` float32 in the order of ``classes_``.

Each layer type has one small function in :data:`_EXPORTERS` that appends its
ONNX nodes; a layer without one cannot be exported, and says so. Our layers
compute channels-last ``(N, H, W, C)``, ONNX's convolutions and pools
channels-first ``(N, C, H, W)``: the graph stays channels-first, so the only
changes of layout are the kernels' (done once, on the constants) and a
transpose before ``Flatten``, which must flatten in our (H, W, C) order for the
dense weights to line up.

Needs the ``onnx`` package: ``pip install "skcnn[onnx]"``.
"""

from pathlib import Path

import numpy as np
from sklearn.utils.validation import check_is_fitted

from ._version import __version__
from .estimator import TEST_TIME_PARAMETERS
from .layers import (
    AvgPool2D,
    BatchNorm,
    Bias,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool2D,
    MaxPool2D,
    ReLU,
    Rescale,
    Residual,
)

__all__ = ["export_onnx", "OPSET"]

#: ONNX operator set of the exported models (2022; every runtime since
#: onnxruntime 1.13 runs it).
OPSET = 17

# -- what the exporters read from the layers ---------------------------------
# Every attribute of a layer the exporters use is read here, so that a change
# of the layers' layout is one edit in this block.


def _conv_kernel(conv):
    """The kernel in ONNX's layout, (filters, C_in, KH, KW)."""
    return conv.params["W"].transpose(3, 2, 0, 1)  # ours: HWIO, (KH, KW, C_in, filters)


def _conv_attributes(conv):
    k, s, p = conv.kernel_size, conv.stride, conv.pad  # pad: pixels on each side ("same" too)
    return dict(kernel_shape=[k, k], strides=[s, s], pads=[p, p, p, p])


def _pool_window(pool):
    """Window side and effective stride (the stride defaults to the window)."""
    return pool.pool_size, pool.step


def _residual_parts(block):
    """The branch's layers and the projection shortcut (a Conv2D, or None)."""
    return block.layers, block.projection


def _bias(layer):
    """The layer's bias vector, or None."""
    return layer.params.get("b")


class _Graph:
    """Nodes and constants of the graph being built, with fresh tensor names."""

    def __init__(self, onnx):
        self.onnx = onnx
        self.nodes, self.constants = [], []
        self._count = 0

    def _name(self, hint):
        self._count += 1
        return f"{hint}_{self._count}"

    def const(self, value, hint):
        """A constant tensor; floating values are stored as float32."""
        value = np.asarray(value)
        if value.dtype.kind == "f":
            value = value.astype(np.float32)
        name = self._name(hint)
        self.constants.append(self.onnx.numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def add(self, op, inputs, output=None, **attributes):
        """Append one node; returns the name of its output."""
        output = output or self._name(op.lower())
        self.nodes.append(self.onnx.helper.make_node(op, inputs, [output], **attributes))
        return output


# -- one function per layer type ----------------------------------------------
# Each takes the graph, the layer, the name of its input tensor and the shape of
# one input sample as our layers see it (channels-last: (H, W, C) for images,
# (features,) for vectors), and returns the name of its output tensor.


def _rescale(g, layer, x, shape):
    shifted = g.add("Sub", [x, g.const(layer.buffers["shift"], "shift")])
    return g.add("Div", [shifted, g.const(layer.buffers["scale"], "scale")])


def _conv(g, layer, x, shape):
    inputs = [x, g.const(_conv_kernel(layer), "conv_W")]
    if _bias(layer) is not None:
        inputs.append(g.const(_bias(layer), "conv_b"))
    return g.add("Conv", inputs, **_conv_attributes(layer))


def _pool_pads(layer, shape):
    """ONNX pads ``[top, left, bottom, right]`` that give our partial edge
    windows: the far edges padded by what the last window sticks out."""
    k, s = _pool_window(layer)
    (h, w, _), (oh, ow, _) = shape, layer.output_shape(shape)
    return [0, 0, max((oh - 1) * s + k - h, 0), max((ow - 1) * s + k - w, 0)]


def _max_pool(g, layer, x, shape):
    # Our partial windows take the maximum of the pixels they cover; ONNX's
    # max pool leaves padding out of the maximum: the same function.
    k, s = _pool_window(layer)
    return g.add("MaxPool", [x], kernel_shape=[k, k], strides=[s, s], pads=_pool_pads(layer, shape))


def _avg_pool(g, layer, x, shape):
    # Our partial windows average the pixels they cover; count_include_pad=0
    # makes ONNX divide by the pixels covered too, not by k*k.
    k, s = _pool_window(layer)
    pads = _pool_pads(layer, shape)
    return g.add("AveragePool", [x], kernel_shape=[k, k], strides=[s, s], pads=pads, count_include_pad=0)


def _global_avg_pool(g, layer, x, shape):
    pooled = g.add("GlobalAveragePool", [x])  # (N, C, 1, 1)
    return g.add("Flatten", [pooled], axis=1)  # (N, C), as ours


def _bias_layer(g, layer, x, shape):
    b = _bias(layer)
    if len(shape) == 3:  # images are channels-first in the graph: (C, 1, 1) broadcasts
        b = b.reshape(-1, 1, 1)
    return g.add("Add", [x, g.const(b, "bias")])


def _relu(g, layer, x, shape):
    return g.add("Relu", [x])


def _identity(g, layer, x, shape):  # dropout: the identity in prediction
    return x


def _flatten(g, layer, x, shape):
    if len(shape) != 3:
        return x
    # (N, C, H, W) -> (N, H, W, C) first: our Flatten orders features (h, w, c)
    nhwc = g.add("Transpose", [x], perm=[0, 2, 3, 1])
    return g.add("Flatten", [nhwc], axis=1)


def _dense(g, layer, x, shape):
    if len(shape) != 1:
        raise ValueError(f"cannot export {layer!r} applied to images of shape {shape}: put a Flatten before it")
    w = g.const(layer.params["W"], "dense_W")  # (in, out), as Gemm and MatMul want
    if _bias(layer) is None:
        return g.add("MatMul", [x, w])
    return g.add("Gemm", [x, w, g.const(_bias(layer), "dense_b")])


def _batch_norm(g, layer, x, shape):
    # prediction's batch norm, with the running statistics; ONNX's operator
    # normalises axis 1, which is the channels of (N, C, H, W) and of (N, C)
    inputs = [
        x,
        g.const(layer.params["gamma"], "bn_gamma"),
        g.const(layer.params["beta"], "bn_beta"),
        g.const(layer.buffers["running_mean"], "bn_mean"),
        g.const(layer.buffers["running_var"], "bn_var"),
    ]
    return g.add("BatchNormalization", inputs, epsilon=float(layer.eps))


def _residual(g, layer, x, shape):
    """A residual block: ``branch(x) + x``, or ``branch(x) + projection(x)``
    with a 1x1 convolution; nothing follows the add inside the block."""
    branch_layers, projection = _residual_parts(layer)
    branch, _ = _export_stack(g, branch_layers, x, shape)
    skip = x if projection is None else _conv(g, projection, x, shape)
    return g.add("Add", [branch, skip])


#: Layer class -> the function that appends its nodes (exact classes: a
#: subclass may compute something else, so it needs its own entry).
_EXPORTERS = {
    Rescale: _rescale,
    Conv2D: _conv,
    MaxPool2D: _max_pool,
    AvgPool2D: _avg_pool,
    GlobalAvgPool2D: _global_avg_pool,
    Bias: _bias_layer,
    ReLU: _relu,
    Dropout: _identity,
    Flatten: _flatten,
    Dense: _dense,
    BatchNorm: _batch_norm,
    Residual: _residual,
}


def _export_stack(g, layers, x, shape):
    """Append the nodes of ``layers`` applied to tensor ``x``; returns the
    output tensor's name and one output sample's (channels-last) shape."""
    for i, layer in enumerate(layers):
        exporter = _EXPORTERS.get(type(layer))
        if exporter is None:
            raise ValueError(
                f"cannot export a {type(layer).__name__} layer to ONNX (layer {i}: {layer!r}); "
                f"layers that can be exported: {', '.join(sorted(c.__name__ for c in _EXPORTERS))}"
            )
        x = exporter(g, layer, x, shape)
        shape = layer.output_shape(shape)
    return x, shape


def _labels_tensor(onnx, classes, name):
    """``classes_`` as a constant tensor: int64, float64, bool or string."""
    classes = np.asarray(classes)
    kind = classes.dtype.kind
    if kind in "iu":
        if kind == "u" and classes.max() > np.iinfo(np.int64).max:
            raise ValueError("cannot export class labels above 2**63 - 1 (ONNX labels are int64)")
        return onnx.numpy_helper.from_array(classes.astype(np.int64), name)
    if kind in "fb":
        return onnx.numpy_helper.from_array(classes, name)
    if kind in "US" or (kind == "O" and all(isinstance(c, str) for c in classes)):
        values = [str(c).encode("utf-8") for c in classes]
        return onnx.helper.make_tensor(name, onnx.TensorProto.STRING, [len(values)], values)
    raise ValueError(
        f"cannot export class labels of type {classes.dtype} to ONNX: use integer, "
        "float, bool or string labels"
    )


def export_onnx(estimator, path):
    """Write a fitted :class:`~skcnn.CNNClassifier` as an ONNX model.

    Parameters
    ----------
    estimator : fitted CNNClassifier
    path : str or path-like
        File to write (conventionally ``*.onnx``).

    Returns
    -------
    model : onnx.ModelProto
        The model written (opset :data:`OPSET`), checked by ``onnx.checker``.

    Raises
    ------
    ImportError
        When the ``onnx`` package is missing (``pip install "skcnn[onnx]"``).
    ValueError
        For a layer type or class labels that cannot be exported, or an
        estimator with ``test_time_flips=True`` or ``test_time_shifts`` > 0; nothing is
        written then.
    sklearn.exceptions.NotFittedError
        For an estimator that is not fitted.

    Notes
    -----
    The model's input ``input`` is ``(n, C, H, W)`` float32 with ``n`` free;
    scale it as you would for ``predict`` (the model applies the fitted input
    standardisation itself). Its outputs are ``label`` (``(n,)``, int64 for
    integer classes, string for string classes) and ``probabilities``
    (``(n, n_classes)`` float32). Weights are stored as float32, also for a
    network trained in float64.

    Examples
    --------
    With ``clf`` fitted on images ``X`` of shape (n, C, H, W)::

        import onnxruntime as ort
        export_onnx(clf, "model.onnx")
        session = ort.InferenceSession("model.onnx")
        labels, proba = session.run(None, {"input": X.astype("float32")})
    """
    try:
        import onnx
        import onnx.numpy_helper  # noqa: F401  (a submodule: not loaded by "import onnx" everywhere)
    except ImportError as exc:
        raise ImportError(
            'export_onnx needs the onnx package: pip install "skcnn[onnx]" (or pip install onnx)'
        ) from exc
    check_is_fitted(estimator)
    # test-time augmentation averages several passes; the exported graph holds one
    averaged = {
        name: one_pass
        for name, one_pass in TEST_TIME_PARAMETERS.items()
        if getattr(estimator, name, one_pass) != one_pass
    }
    if averaged:
        given = " and ".join(f"{name}={getattr(estimator, name)!r}" for name in averaged)
        reset = ", ".join(f"{name}={one_pass!r}" for name, one_pass in averaged.items())
        raise ValueError(
            f"export_onnx writes one pass of the network, but this estimator predicts with {given} "
            "(the mean over several passes: mirror images, shifted copies): its ONNX model would "
            f"predict differently. Call estimator.set_params({reset}) to export the network alone."
        )
    c, h, w = estimator.input_shape_
    g = _Graph(onnx)
    scores, _ = _export_stack(g, estimator._prediction_network().layers, "input", (h, w, c))
    g.add("Softmax", [scores], output="probabilities", axis=1)
    index = g.add("ArgMax", [scores], axis=1, keepdims=0)  # first maximum on ties, as numpy
    g.constants.append(_labels_tensor(onnx, estimator.classes_, "classes"))
    g.add("Gather", ["classes", index], output="label", axis=0)

    label = g.constants[-1].data_type
    graph = onnx.helper.make_graph(
        g.nodes,
        "skcnn",
        inputs=[onnx.helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["n", c, h, w])],
        outputs=[
            onnx.helper.make_tensor_value_info("label", label, ["n"]),
            onnx.helper.make_tensor_value_info(
                "probabilities", onnx.TensorProto.FLOAT, ["n", len(estimator.classes_)]
            ),
        ],
        initializer=g.constants,
    )
    opsets = [onnx.helper.make_opsetid("", OPSET)]
    model = onnx.helper.make_model(
        graph,
        opset_imports=opsets,
        producer_name="skcnn",
        producer_version=__version__,
        doc_string=f"{type(estimator).__name__} exported by skcnn {__version__}",
    )
    # the oldest IR version the opset allows, so that older runtimes load it
    model.ir_version = onnx.helper.find_min_ir_version_for(opsets)
    onnx.checker.check_model(model, full_check=True)
    Path(path).write_bytes(model.SerializeToString())
    return model
