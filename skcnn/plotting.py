"""Pictures of data, models and training (matplotlib).

Every function draws on the ``ax`` (or figure) it is given, or makes a new
figure, and returns what it drew on, so callers can adjust and save it.
"""

import numpy as np

__all__ = ["plot_predictions", "plot_learning_curve", "plot_confusion_matrix", "plot_filters", "plot_saliency"]


def _images(estimator, X):
    """X as ``estimator`` reads it, ready for ``imshow``.

    The estimator's own validation decides the layout (flat rows, channels
    first or last), so a picture shows what the model was given. Returns
    ``(n, H, W)`` for one channel (drawn in gray), ``(n, H, W, 3)`` scaled to
    [0, 1] for colour (the first three channels), else the first channel.
    """
    images = estimator._validate_input(X, reset=False)  # (n, C, H, W)
    if images.shape[1] < 3:
        return images[:, 0]
    rgb = np.asarray(images[:, :3].transpose(0, 2, 3, 1), dtype=np.float64)
    low, high = rgb.min(), rgb.max()
    return (rgb - low) / (high - low) if high > low else np.zeros_like(rgb)


def plot_predictions(estimator, X, y=None, n=10, ncols=5, fig=None, class_names=None):
    """A grid of images titled with the prediction (and the true label).

    Mistakes are titled in red. The origin project's prediction_results.png.

    Parameters
    ----------
    estimator : fitted CNNClassifier
    X : images or flat samples; the first ``n`` are shown
    y : true labels, optional
    n, ncols : int
    fig : matplotlib Figure, optional
    class_names : sequence of str, optional
        Names of ``estimator.classes_``, in that order, to title the images
        with (e.g. Fashion-MNIST's "T-shirt/top"); default: the labels.

    Returns
    -------
    fig : matplotlib Figure
    """
    import matplotlib.pyplot as plt

    name = _namer(estimator, class_names)
    n = min(n, len(X))
    X = X[:n]
    proba = estimator.predict_proba(X)
    pred = estimator.classes_[proba.argmax(axis=1)]
    images = _images(estimator, X)
    nrows = int(np.ceil(n / ncols))
    if fig is None:
        fig = plt.figure(figsize=(1.8 * ncols, 2.0 * nrows))
    for i in range(n):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        ax.imshow(images[i], cmap="gray_r")
        ax.set_xticks([])
        ax.set_yticks([])
        title = f"pred {name(pred[i])} ({proba[i].max():.0%})"
        wrong = y is not None and pred[i] != np.asarray(y)[i]
        if y is not None:
            title = f"true {name(np.asarray(y)[i])}\n" + title
        ax.set_title(title, fontsize=9, color="red" if wrong else "black")
    fig.tight_layout()
    return fig


def _namer(estimator, class_names):
    """label -> its name in ``class_names`` (given in the order of ``classes_``)."""
    if class_names is None:
        return str
    if len(class_names) != len(estimator.classes_):
        raise ValueError(
            f"class_names has {len(class_names)} names for {len(estimator.classes_)} classes"
        )
    names = dict(zip(estimator.classes_.tolist(), class_names))
    return lambda label: names.get(np.asarray(label).item(), str(label))


def plot_learning_curve(estimator, ax=None):
    """Training loss per epoch, and validation accuracy when recorded.

    Returns
    -------
    ax : matplotlib Axes (the loss axis)
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    epochs = np.arange(1, len(estimator.loss_curve_) + 1)
    ax.plot(epochs, estimator.loss_curve_, "o-", label="training loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    scores = getattr(estimator, "validation_scores_", None)
    if scores:
        ax2 = ax.twinx()
        ax2.plot(epochs[: len(scores)], scores, "s-", color="tab:orange", label="validation accuracy")
        ax2.set_ylabel("validation accuracy")
        ax2.legend(loc="center right")
    ax.legend(loc="upper right")
    return ax


def plot_confusion_matrix(estimator, X, y, ax=None, normalize=None, class_names=None, title=None):
    """Confusion matrix through scikit-learn's ConfusionMatrixDisplay.

    Parameters
    ----------
    estimator : fitted CNNClassifier
    X, y : test images and their true labels
    ax : matplotlib Axes, optional
    normalize : {"true", "pred", "all"} or None
        As in ``sklearn.metrics.confusion_matrix``.
    class_names : sequence of str, optional
        Names of ``estimator.classes_``, in that order, for the axes.
    title : str, optional
        Default: "Confusion matrix" (and how it is normalised).

    Returns
    -------
    ax : matplotlib Axes
    """
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 6))
    labels = None
    if class_names is not None:
        labels = [_namer(estimator, class_names)(c) for c in estimator.classes_]
    long_names = labels is not None and max(map(len, labels)) > 3
    ConfusionMatrixDisplay.from_estimator(
        estimator, X, y, labels=estimator.classes_, display_labels=labels, ax=ax,
        normalize=normalize, colorbar=False, xticks_rotation="vertical" if long_names else "horizontal",
    )  # fmt: skip
    if title is None:
        title = "Confusion matrix" + (f" (normalised: {normalize})" if normalize else "")
    ax.set_title(title)
    return ax


def plot_filters(estimator, fig=None):
    """The first convolution's kernels (first input channel), one per panel.

    Returns
    -------
    fig : matplotlib Figure
    """
    import matplotlib.pyplot as plt

    from .layers import Conv2D

    conv = next(layer for layer in estimator.network_.layers if isinstance(layer, Conv2D))
    kernels = conv.params["W"][:, :, 0].transpose(2, 0, 1)  # HWIO (K, K, C, F) -> (F, K, K), channel 0
    ncols = min(8, len(kernels))
    nrows = int(np.ceil(len(kernels) / ncols))
    if fig is None:
        fig = plt.figure(figsize=(1.2 * ncols, 1.2 * nrows))
    limit = float(np.abs(kernels).max()) or 1.0
    for i, kernel in enumerate(kernels):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        ax.imshow(kernel, cmap="RdBu_r", vmin=-limit, vmax=limit)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("first-layer filters")
    return fig


def plot_saliency(estimator, X, target=None, n=6, ncols=3, fig=None):
    """Images beside their saliency maps (Simonyan et al., 2014).

    Each image (in colour for RGB, as in :func:`plot_predictions`) is titled with
    the class whose score is differentiated; beside it, the largest absolute
    gradient over the channels at each pixel, scaled to the image's own
    maximum (brighter: a pixel that moves the score more).

    Parameters
    ----------
    estimator : fitted CNNClassifier
    X : images or flat samples; the first ``n`` are shown
    target : label or labels, optional
        As in :func:`skcnn.inspection.saliency`; None: the predicted classes.
    n : int
    ncols : int
        Image-and-map pairs per row.
    fig : matplotlib Figure, optional

    Returns
    -------
    fig : matplotlib Figure
    """
    import matplotlib.pyplot as plt

    from .inspection import saliency

    n = min(n, len(X))
    X = X[:n]
    if target is None:
        target = estimator.predict(X)
    target = np.broadcast_to(np.asarray(target), (n,))
    maps = np.abs(saliency(estimator, X, target)).max(axis=1)  # (n, H, W)
    images = _images(estimator, X)
    ncols = min(ncols, n)
    nrows = int(np.ceil(n / ncols))
    if fig is None:
        fig = plt.figure(figsize=(3.2 * ncols, 1.8 * nrows))
    for i in range(n):
        ax = fig.add_subplot(nrows, 2 * ncols, 2 * i + 1)
        ax.imshow(images[i], cmap="gray_r")
        ax.set_title(f"class {target[i]}", fontsize=9)
        ax = fig.add_subplot(nrows, 2 * ncols, 2 * i + 2)
        ax.imshow(maps[i], cmap="inferno", vmin=0, vmax=float(maps[i].max()) or 1.0)
        ax.set_title("saliency", fontsize=9)
    for ax in fig.axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig
