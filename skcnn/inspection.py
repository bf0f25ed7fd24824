"""Looking inside a fitted network: saliency maps.

A saliency map (Simonyan, Vedaldi and Zisserman, "Deep Inside Convolutional
Networks: Visualising Image Classification Models and Saliency Maps", ICLR
workshop 2014) is the gradient of one class's score with respect to the input
pixels: how much each pixel, nudged, would move the score. It is computed here
by the engine's own backward pass, on the function ``predict`` computes.
"""

import numpy as np
from sklearn.utils.validation import check_is_fitted

from .layers import BatchNorm, Conv2D, Dropout, Layer, Residual
from .network import PREDICT_BATCH, Network
from .parallel import replicas

__all__ = ["saliency"]


class _FrozenBatchNorm(Layer):
    """Batch norm as prediction computes it, differentiable.

    With its running statistics batch norm is a fixed per-channel affine map,
    ``gamma * (x - mean) / sqrt(var + eps) + beta``: forward runs the layer's
    own prediction pass, backward multiplies by the slope. (Its training
    pass would normalise with the batch's statistics instead, a different
    function, and update the running ones.)
    """

    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x, training=False):
        return self.layer.forward(x, training=False)

    def backward(self, grad):
        gamma, var = self.layer.params["gamma"], self.layer.buffers["running_var"]
        return grad * (gamma / np.sqrt(var + var.dtype.type(self.layer.eps)))


def _prediction_layers(layers):
    """``layers`` (replicas) as prediction computes them, differentiable:
    dropout left out (the identity in prediction), batch norm frozen at its
    running statistics, inside residual blocks too."""
    out = []
    for layer in layers:
        if isinstance(layer, Dropout):
            continue
        if isinstance(layer, BatchNorm):
            layer = _FrozenBatchNorm(layer)
        elif isinstance(layer, Residual):
            layer.layers = _prediction_layers(layer.layers)  # the replica's own list
        out.append(layer)
    return out


def _differentiable(network):
    """A network computing ``network``'s prediction function whose training
    pass caches what backward needs, down to the input gradient.

    It is built from a replica (the same weight arrays, its own caches,
    gradients and copies of the buffers), so nothing done to it changes the
    model: dropout is left out, batch norm is frozen at its running
    statistics, and every convolution computes its input gradient (the
    network's first one skips it in training).
    """
    (replica,) = replicas(network, 1, np.random.default_rng(0))  # the generator only feeds dropout
    differentiable = Network(_prediction_layers(replica.layers), network.dtype)
    # after Network(), which switches the first convolution's input gradient off
    for _, layer in differentiable.named_layers():
        if isinstance(layer, Conv2D):
            layer.input_grad = True
    return differentiable


def _class_indices(classes, target, n):
    """Indices into ``classes`` of ``target``: one label or ``n`` labels."""
    target = np.asarray(target)
    if target.ndim == 0:
        target = np.full(n, target.item())
    if target.shape != (n,):
        raise ValueError(f"target must be one label or {n} labels (one per image); got shape {target.shape}")
    unknown = np.setdiff1d(target, classes)
    if len(unknown):
        raise ValueError(f"target holds labels {unknown.tolist()!r} that are not in classes_ {classes.tolist()!r}")
    return np.searchsorted(classes, target)


def saliency(estimator, X, target=None):
    """Gradient of a class score with respect to the input pixels.

    The score is the class's logit (the input to softmax), as in Simonyan et
    al. (2014): unlike the probability, it does not also rise by lowering the
    other classes' scores. The gradient is taken of the function ``predict``
    computes (batch norm with its running statistics, no dropout) by the
    network's own backward pass; the model is not changed.

    Parameters
    ----------
    estimator : fitted CNNClassifier
    X : array-like of shape (n_samples, n_features), (n, H, W) or (n, C, H, W)
        Images as ``predict`` takes them.
    target : label or array-like of shape (n_samples,), default=None
        The class whose score is differentiated, per image (a label from
        ``classes_``); one label for all images; None for each image's
        predicted class.

    Returns
    -------
    grad : ndarray of shape (n_samples, C, H, W)
        d score / d pixel, in the units of ``X`` as given (the network's input
        scaling is part of the function), in the network's dtype. Maps are
        usually shown as ``np.abs(grad).max(axis=1)``
        (:func:`skcnn.plotting.plot_saliency`).

    Raises
    ------
    ValueError
        For input ``predict`` would reject, or a target not in ``classes_``.

    References
    ----------
    K. Simonyan, A. Vedaldi, A. Zisserman. Deep Inside Convolutional Networks:
    Visualising Image Classification Models and Saliency Maps. ICLR 2014
    workshop, arXiv:1312.6034.
    """
    check_is_fitted(estimator)
    images = estimator._validate_input(X, reset=False)  # (n, C, H, W) in the network's dtype
    n = len(images)
    if target is None:
        indices = estimator._prediction_network().predict_logits(images).argmax(axis=1)
    else:
        indices = _class_indices(estimator.classes_, target, n)
    network = _differentiable(estimator._prediction_network())
    grad = np.empty(images.shape, dtype=network.dtype)
    for start in range(0, n, PREDICT_BATCH):  # memory bounded by the batch, as in predict
        rows = slice(start, start + PREDICT_BATCH)
        scores = network.forward(images[rows], training=True)
        g = np.zeros_like(scores)
        g[np.arange(len(g)), indices[rows]] = 1  # d score / d logits: one-hot
        for layer in reversed(network.layers):
            g = layer.backward(g)
        grad[rows] = g.transpose(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)
    return grad
