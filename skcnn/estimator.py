"""CNNClassifier: the network, the optimizer and the trainer behind scikit-learn's API."""

import copy
import math
import numbers
import warnings
from contextlib import contextmanager

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from .augmentation import Augmenter, translate
from .functions import log_softmax, softmax
from ._version import __version__
from .images import CHANNEL_COUNTS, guess_data_format
from .layers import BatchNorm, Dense, Layer, layer_from_config
from .network import PRESET_FIELDS, PRESETS, Network, WeightAverage, preset_layers
from .optimizers import SOLVERS, make_optimizer
from .persistence import ParameterFileError, load_network, save_network
from .trainer import LEARNING_RATES, History, Trainer, warn_user

__all__ = ["CNNClassifier", "InputRangeWarning"]

_NO_Y = object()  # _validate_input without y (None is a y, and an invalid one)


class InputRangeWarning(UserWarning):
    """``predict``'s input is on another scale than ``fit``'s (e.g. pixels
    0-255 for a model trained on ``X / 255``): its predictions would be
    meaningless."""


def _value_range(X):
    """(min, max) of X's values as floats; (inf, -inf) for an empty X, which
    widens no range and which :meth:`CNNClassifier._check_input_range` skips."""
    return (float(X.min()), float(X.max())) if X.size else (np.inf, -np.inf)


#: batch_size="auto" trains on min(AUTO_BATCH, n_samples) samples per step.
AUTO_BATCH = 100

#: Values of the data_format parameter.
DATA_FORMATS = ("auto", "channels_first", "channels_last")

#: dtype="auto" keeps float64 input in float64 up to this many values
#: (n_samples x n_features) and computes in float32 above. Below it an
#: epoch in float64 takes a fraction of a second (the default network
#: trains on about 3.5 million float64 pixel values per second on two
#: cores), so exactness costs nothing noticeable -- and scikit-learn's
#: equivalence checks (sample weights vs repeated samples, invariance to
#: row order and batching, rtol 1e-7) run on such data. Above it float32 is
#: about twice as fast, and its rounding (1e-7 relative) is far below what
#: training noise moves. load_digits (115,000 values) stays float64,
#: Fashion-MNIST (47 million) runs in float32.
AUTO_FLOAT64_MAX_VALUES = 1_000_000


@contextmanager
def _unchanged_on_error(estimator):
    """Restore the estimator's attributes if the body raises.

    A rejected call (bad data, bad parameters) must leave a fitted model
    exactly as it was; validation sets attributes such as n_features_in_
    before it fails, so every public call that changes state runs in here.
    """
    saved = dict(estimator.__dict__)
    try:
        yield
    except BaseException:
        estimator.__dict__.clear()
        estimator.__dict__.update(saved)
        raise


def _is_int(x):
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _is_real(x):
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _is_bool(x):
    return isinstance(x, (bool, np.bool_))


def _positive_ints(value):
    return isinstance(value, tuple) and all(_is_int(v) and v > 0 for v in value)


def _layer_sizes(value):
    """MLPClassifier's hidden_layer_sizes: an int (one layer) or an array-like of ints."""
    if _is_int(value):
        return value > 0
    if isinstance(value, np.ndarray) and value.ndim == 1:
        value = value.tolist()
    return isinstance(value, (tuple, list)) and all(_is_int(v) and v > 0 for v in value)


def _class_weight(value):
    if value is None or (isinstance(value, str) and value == "balanced"):
        return True
    return isinstance(value, dict) and all(_is_real(w) and np.isfinite(w) and w >= 0 for w in value.values())


def _finite(low, high=np.inf, *, closed=(True, True)):
    """A check that a real number lies in [low, high] (or the open ends)."""

    def valid(x):
        if not (_is_real(x) and np.isfinite(x)):
            return False
        above = x >= low if closed[0] else x > low
        below = x <= high if closed[1] else x < high
        return above and below

    return valid


#: Named training recipes for :meth:`CNNClassifier.from_recipe`: complete
#: parameter sets, each measured with ``benchmarks/accuracy.py --config NAME``
#: (the README's accuracy section). Keys are estimator parameters.
RECIPES = {
    # Issue #17's best on Fashion-MNIST in 30 minutes on two cores (94.81-95.01%
    # from the saved model over seven trainings, README): the deep preset
    # trained with Nesterov momentum 0.9 from 0.2 on a cosine schedule, weight
    # decay 5e-4, random shifts and flips, predicting with test-time flips and
    # 1-pixel shifts.
    "fashion-best": dict(
        architecture="deep",
        max_iter=25,
        solver="nesterov",
        learning_rate_init=0.2,
        weight_decay=5e-4,
        learning_rate="cosine",
        augment="shift+flip",
        test_time_flips=True,
        test_time_shifts=1,
    ),
}


#: Every hyperparameter's check and the allowed values its error message
#: names: ``{name} must be {allowed}; got {value!r}``.
_CONSTRAINTS = {
    "architecture": (lambda v: isinstance(v, str) and v in PRESETS, f"one of {sorted(PRESETS)}"),
    "layers": (
        lambda v: v is None or (isinstance(v, (list, tuple)) and all(isinstance(l, Layer) for l in v)),
        "None or a list of layers from skcnn.layers, e.g. [Conv2D(16, 3), ReLU(), MaxPool2D(2)]",
    ),
    "conv_filters": (
        lambda v: v is None
        or (isinstance(v, tuple) and all((_is_int(b) and b > 0) or (_positive_ints(b) and b) for b in v)),
        "None or a tuple of positive ints or of tuples of positive ints, e.g. (16, 32)",
    ),
    "kernel_size": (lambda v: v is None or (_is_int(v) and v > 0 and v % 2 == 1), "None or an odd positive int"),
    "hidden_layer_sizes": (
        lambda v: v is None or _layer_sizes(v),
        "None, a positive int or a tuple of positive ints, e.g. 100 or (100, 50)",
    ),
    "batch_norm": (lambda v: v is None or _is_bool(v), "None, True or False"),
    "dropout": (lambda v: v is None or _finite(0, 1, closed=(True, False))(v), "None or a float in [0, 1)"),
    "input_shape": (
        lambda v: v is None or (_positive_ints(v) and len(v) in (2, 3)),
        "None or a tuple (C, H, W) or (H, W) of positive ints",
    ),
    "data_format": (lambda v: isinstance(v, str) and v in DATA_FORMATS, f"one of {list(DATA_FORMATS)}"),
    "solver": (lambda v: isinstance(v, str) and v in SOLVERS, f"one of {sorted(SOLVERS)}"),
    "alpha": (_finite(0), "a finite float >= 0"),
    "weight_decay": (_finite(0), "a finite float >= 0"),
    "tol": (_finite(0), "a finite float >= 0"),
    "learning_rate_init": (_finite(0, closed=(False, True)), "a finite float > 0"),
    "epsilon": (_finite(0, closed=(False, True)), "a finite float > 0"),
    "batch_size": (
        lambda v: v == "auto" if isinstance(v, str) else (_is_int(v) and v >= 1),
        "'auto' or an int >= 1",
    ),
    "learning_rate": (lambda v: isinstance(v, str) and v in LEARNING_RATES, f"one of {list(LEARNING_RATES)}"),
    "max_iter": (lambda v: _is_int(v) and v >= 1, "an int >= 1"),
    "max_time": (lambda v: v is None or _finite(0, closed=(False, True))(v), "None or a finite float > 0"),
    "n_iter_no_change": (lambda v: _is_int(v) and v >= 1, "an int >= 1"),
    "verbose": (lambda v: _is_bool(v) or (_is_int(v) and v >= 0), "False, True or an int >= 0"),
    "shuffle": (_is_bool, "True or False"),
    "warm_start": (_is_bool, "True or False"),
    "early_stopping": (_is_bool, "True or False"),
    "momentum": (_finite(0, 1), "a float in [0, 1]"),
    "validation_fraction": (_finite(0, 1, closed=(False, False)), "a float in (0, 1)"),
    "beta_1": (_finite(0, 1, closed=(True, False)), "a float in [0, 1)"),
    "beta_2": (_finite(0, 1, closed=(True, False)), "a float in [0, 1)"),
    "label_smoothing": (_finite(0, 1, closed=(True, False)), "a float in [0, 1)"),
    "warmup_fraction": (_finite(0, 1, closed=(True, False)), "a float in [0, 1)"),
    "ema_decay": (_finite(0, 1, closed=(True, False)), "a float in [0, 1)"),
    "test_time_flips": (_is_bool, "True or False"),
    "test_time_shifts": (lambda v: _is_int(v) and v >= 0, "an int >= 0"),
    "class_weight": (
        _class_weight,
        "None, 'balanced' or a dict {class label: weight >= 0}",
    ),
    "dtype": (
        lambda v: isinstance(v, str) and v in ("auto", "float32", "float64"),
        "'auto', 'float32' or 'float64'",
    ),
}

#: The parameters prediction reads (test-time augmentation), each with its
#: value for one pass: another value is saved in parameter files and restored
#: by ``from_params_file``; ``skcnn.export.export_onnx`` (one pass) refuses it.
TEST_TIME_PARAMETERS = {"test_time_flips": False, "test_time_shifts": 0}


def _computation_dtype(X, dtype, incremental=False):
    """The dtype a network fitted on ``X`` computes in, for the ``dtype``
    parameter ("auto", "float32" or "float64"); decided before validation,
    so that ``X`` is converted once, straight to it.

    "auto": integer and boolean input in float32 (exact for pixel values,
    and for every integer up to 2**24); float32 and float16 input in
    float32; float64 (and any other) input in float64 up to
    ``AUTO_FLOAT64_MAX_VALUES`` values, in float32 above (the rule's
    reasons are at the constant). For the first call of ``partial_fit``
    (``incremental``) float64 input is computed in float32 whatever its
    size: that call sees one piece of the data, usually a batch of about a
    hundred samples, and the network keeps the dtype it chooses for every
    later piece, so the size rule would train a stream of any length in
    float64 at about two thirds of float32's speed.
    """
    if dtype != "auto":
        return np.dtype(dtype)
    if hasattr(X, "dtypes") and not hasattr(X, "dtype"):  # a DataFrame
        try:
            kind = np.result_type(*X.dtypes)
        except TypeError:
            kind = np.float64
    else:
        if not hasattr(X, "dtype") or not hasattr(X, "shape"):  # a list, or another array-like
            X = np.asarray(X)
        kind = X.dtype
    kind, n_values = np.dtype(kind), math.prod(X.shape)
    if kind.kind in "biu" or (kind.kind == "f" and kind.itemsize <= 4):  # float32 holds them exactly
        return np.dtype(np.float32)
    return np.dtype(np.float64 if n_values <= AUTO_FLOAT64_MAX_VALUES and not incremental else np.float32)


class CNNClassifier(ClassifierMixin, BaseEstimator):
    """Convolutional neural network classifier, written from scratch in NumPy.

    The default network is the origin project's: Conv(16, 3x3) - ReLU -
    MaxPool 2x2 - Conv(32, 3x3) - ReLU - MaxPool 2x2 - Dense(100) - ReLU -
    Dense(n_classes) with softmax cross-entropy, He initialisation, Adam.
    Parameters shared with :class:`~sklearn.neural_network.MLPClassifier`
    have its names and meanings, so one can replace the other; where a
    parameter differs, its entry below says how and why ("MLP:").

    Parameters
    ----------
    architecture : {"origin", "deep", "resnet"}, default="origin"
        Preset network. "deep" is two 3x3 convolutions per block
        ((32, 32), (64, 64)) with batch norm, Dense(256) and dropout 0.3.
        "resnet" is a small ResNet (He et al., 2016): a 3x3 stem convolution,
        three stages of one residual block each, widths (32, 64, 128), the
        last two halving the image, batch norm, global average pooling and
        no hidden dense layer; ``conv_filters`` then gives the stages'
        widths (a tuple entry: several blocks), e.g. ``(16, 32, 64)`` for a
        4x cheaper one. The five parameters after ``layers`` override single
        fields of the preset.
    layers : list of Layer or None, default=None
        Any stack instead of a preset: unbuilt layers from
        :mod:`skcnn.layers`, e.g. ``[Conv2D(32, 3, padding="same"),
        BatchNorm(), ReLU(), MaxPool2D(2), GlobalAvgPool2D(), Dense(64),
        ReLU()]``. The output layer ``Dense(n_classes)`` is appended, and a
        ``Flatten`` is inserted where a dense layer meets images. The list is
        never built or changed: ``fit`` builds copies, so the same list can be
        used by many estimators (``clone``, ``GridSearchCV``). Exclusive with
        the preset fields below.
    conv_filters : tuple or None, default=None
        Filters of each conv block; an entry is an int (one convolution) or a
        tuple of ints (several), each block ending in a 2x2 max pool, e.g.
        ``(16, 32)`` or ``((32, 32), (64, 64))``. None: the preset's.
    kernel_size : int or None, default=None
        Odd size of every convolution kernel ("same" padding). None: 3.
    hidden_layer_sizes : int, array-like of int, or None, default=None
        Units of each hidden dense layer (ReLU), as in MLPClassifier: an int
        is one layer. None: the preset's ((100,) for "origin", MLP's
        default). MLP: these are all its layers; here they follow the conv
        blocks.
    batch_norm : bool or None, default=None
        Batch normalisation after every convolution and hidden dense layer
        (Ioffe & Szegedy, 2015). It needs batches of 2 samples or more
        (batch_size=1 is refused before training).
    dropout : float or None, default=None
        Dropout rate after each hidden dense layer, in [0, 1).
    input_shape : tuple or None, default=None
        ``(C, H, W)`` or ``(H, W)`` of one image, channels first whatever
        ``data_format`` is (it becomes ``input_shape_``). None infers it:
        3-D ``(n, H, W)`` and 4-D arrays carry their shape; a 2-D ``X`` with
        a perfect-square number of features is one square channel; any other
        is a 1 x n_features strip. Given, it also decides a 4-D shape that
        ``data_format="auto"`` cannot (see below).
    data_format : {"auto", "channels_first", "channels_last"}, default="auto"
        How ``X`` holds an image's channels: 4-D ``(n, C, H, W)`` or
        ``(n, H, W, C)`` (Keras, PIL, imageio, OpenCV), and flat rows as
        channel planes or as interleaved pixels (``X.reshape(n, -1)`` of
        either). "auto" reads the channel axis of a 4-D ``X`` off its
        shape: the one of axes 1 and 3 that has 1 to 4 entries (grey, grey +
        alpha, RGB, RGBA). When both or neither have (``(n, 3, 4, 3)``,
        ``(n, 1, 8, 1)``, ``(n, 16, 8, 8)``), ``input_shape`` decides, or
        ``fit`` refuses the shape and asks for ``data_format``. Flat rows are
        channel planes under "auto". Either way the network sees the same
        images: a channels-last ``X`` gives the same model and predictions
        as the same images channels-first. The layout ``fit`` saw is kept
        in ``data_format_``, and later calls with colour images must use it
        (grey ones may use either: the pixels are in the same order).
    solver : {"adam", "sgd", "momentum", "nesterov", "adagrad", "rmsprop"}, default="adam"
        The update rule. "adam" is MLP's (Kingma & Ba, 2015). MLP: its "sgd"
        uses ``momentum`` with Nesterov's form (nesterovs_momentum=True),
        which is "nesterov" here; "sgd" here is plain SGD, and "momentum" is
        heavy-ball momentum. "lbfgs" (full-batch) is not offered: a CNN's
        data rarely fits one batch.
    alpha : float, default=0.0
        Strength of the L2 penalty, as in MLPClassifier: each batch's loss is
        its (sample-weighted) mean plus ``0.5 * alpha * ||W||^2 / n``, ``n``
        the batch's samples (its total sample weight, when weighted), for
        every weight matrix and kernel (not biases, batch-norm scales and
        shifts); one SGD step shrinks a weight by ``lr * alpha * W / n``.
        ``loss_curve_`` includes the penalty. MLP: default 1e-4; here 0, the
        origin network's, which had no penalty.
    weight_decay : float, default=0.0
        Decoupled weight decay (AdamW, Loshchilov & Hutter, 2019): after each
        step, weights shrink by ``learning_rate * weight_decay`` of
        themselves, whatever the batch.
    batch_size : int or "auto", default="auto"
        Samples per step, as in MLPClassifier; larger values are clipped to
        the training samples with a warning, as there. MLP: "auto" is
        ``min(200, n_samples)``; here ``min(100, n_samples)``, the origin's
        batches of 100 on real data, and one full batch on tiny data sets,
        where full-batch steps make sample weights behave exactly like
        repeated samples. Each batch is cut into micro-batches of about 50
        samples (two at least, unless it has fewer than 32 samples), which
        run on all cores (:func:`skcnn.parallel.micro_batches`); the cut
        depends on the batch size only, so results do not depend on the
        number of threads.
    learning_rate : {"constant", "adaptive", "cosine"}, default="constant"
        Schedule. "constant" and "adaptive" are MLP's: "adaptive" divides the
        rate by 5 each time the stopping rule fires (``tol``,
        ``n_iter_no_change``), and stops once the rate is at most 1e-6.
        "cosine" decays it along a half cosine to 0 over ``max_iter`` epochs
        (Loshchilov & Hutter, 2017). MLP: its schedules act on "sgd" only;
        here on every solver. Its "invscaling" is not offered.
    warmup_fraction : float in [0, 1), default=0.0
        Share of the ``max_iter`` epochs of each ``fit`` over which the rate
        first rises linearly from 0 to ``learning_rate_init`` (Goyal et al.,
        2017), with "constant" and "cosine" (then the cosine decay takes the
        rest of the epochs: warm-up plus cosine is the one-cycle shape of
        Smith & Topin, 2019). Not with "adaptive", nor in ``partial_fit``
        (one epoch at a constant rate). MLP has none.
    learning_rate_init : float, default=0.001
        The initial step size, as in MLPClassifier. A rate at which training
        diverges is caught (see Warns in :meth:`fit`).
    max_iter : int, default=30
        Most epochs (passes over the data) per ``fit``, as in MLPClassifier;
        training stops earlier once the stopping rule fires (``tol``,
        ``n_iter_no_change``), and a ``ConvergenceWarning`` says when
        ``max_iter`` ended it first. MLP: default 200; here 30, which small
        data sets such as ``load_digits`` need with batches of 100 at Adam's
        1e-3; on 60,000 MNIST images 5 to 10 suffice.
    max_time : float or None, default=None
        Most seconds of wall time per ``fit`` (and ``partial_fit``) call,
        counted from the call's start: training stops after the batch during
        which they run out (the last epoch may then be partial; it counts in
        ``n_iter_``, and ``t_`` counts the samples seen); ``fit`` warns with a
        ``ConvergenceWarning`` unless the stopping rule fired first. The
        schedules (``learning_rate="cosine"``, ``warmup_fraction``) then run
        on the larger of the share of ``max_iter`` done and the share of
        ``max_time`` used, so with a large ``max_iter`` a cosine decay reaches
        0 as the time runs out, using the whole budget whatever this
        machine's speed. A time budget makes the
        number of steps, and so the fit, depend on the machine and its load:
        ``random_state`` no longer gives identical fits. MLP has none.
    shuffle : bool, default=True
        Reshuffle the samples every epoch, as in MLPClassifier.
    random_state : int, RandomState instance or None, default=None
        Seeds weights, shuffling, the validation split (as in
        MLPClassifier), dropout and augmentation. An int gives bit-identical
        fits.
    tol : float, default=1e-4
        The stopping rule's tolerance, as in MLPClassifier: training stops
        when the training loss (with early stopping: the validation
        accuracy) has not improved by ``tol`` for more than
        ``n_iter_no_change`` consecutive epochs.
    verbose : bool or int, default=False
        Progress on stdout, as in MLPClassifier: False or 0, none; True or 1,
        a line per epoch (loss, validation score, seconds); 2, also a
        progress bar within each epoch (on stderr).
    warm_start : bool, default=False
        Continue from the current weights on ``fit``, as in MLPClassifier,
        with any new hyperparameters (set_params). MLP: it restarts its
        optimizer; here the optimizer's state (Adam's moments, say) is kept
        too, so a warm-started fit goes on as one longer fit would.
    momentum : float, default=0.9
        Momentum of "momentum" and "nesterov". MLP: of its "sgd" (see
        ``solver``).
    early_stopping : bool, default=False
        As in MLPClassifier: hold out ``validation_fraction`` of the data
        (stratified), stop when its accuracy has not improved by ``tol`` for
        more than ``n_iter_no_change`` epochs, and keep the best epoch's
        weights. Not for ``partial_fit``, which refuses it, as MLP's does.
    validation_fraction : float, default=0.1
        Share of the data held out for ``early_stopping``, as in MLPClassifier.
    beta_1, beta_2, epsilon : float, default=0.9, 0.999, 1e-8
        Adam's parameters, as in MLPClassifier (epsilon also serves
        "adagrad" and "rmsprop").
    n_iter_no_change : int, default=10
        Epochs without an improvement of ``tol`` before stopping, as in
        MLPClassifier.
    augment : str or None, default=None
        Random training-time augmentation: "shift" (up to 2 pixels), "flip"
        (left-right), "erase" (a blanked square), joined with "+".
    label_smoothing : float in [0, 1), default=0.0
        Train towards ``(1 - label_smoothing) * onehot + label_smoothing /
        n_classes`` instead of the one-hot labels (Szegedy et al., 2016,
        "Rethinking the Inception architecture"): it keeps the logits from
        growing without bound, a regulariser. ``loss_curve_`` is the
        smoothed loss (its minimum is then above 0). MLP has none.
    ema_decay : float in [0, 1), default=0.0
        When above 0, predict with an exponential moving average of the
        weights and of the batch-norm statistics, updated after every step
        with this decay (``weight_average_``; Polyak & Juditsky, 1992, as
        used by Szegedy et al., 2016); 0.999 averages over about the last
        1000 steps (the decay warms up, so short fits work too). The
        average is saved in parameter files and used by the model loaded
        from them. ``warm_start`` and ``partial_fit`` continue the average
        (a fresh ``fit`` starts a new one); a call with ``ema_decay=0``
        drops it. MLP has none.
    test_time_flips : bool, default=False
        Predict each image as the mean of its class probabilities and its
        left-right mirror image's (test-time augmentation, as in Krizhevsky
        et al., 2012, and Simonyan & Zisserman, 2015): twice the prediction
        time, usually a little more accuracy for a model trained with
        ``augment="flip"`` on pictures whose mirror image is the same class
        (clothes, objects; not digits or text). Training is unchanged.
        Saved in parameter files; ``skcnn.export.export_onnx`` refuses it
        (the exported graph holds one pass). MLP has none.
    test_time_shifts : int >= 0, default=0
        When above 0, predict each image as the mean of its class
        probabilities and those of four copies moved this many pixels up,
        down, left and right (filled with the corner value, as
        ``augment="shift"`` fills them): five passes, ten with
        ``test_time_flips`` (each copy and its mirror image). Test-time
        augmentation with the training shifts' own transform (Simonyan &
        Zisserman, 2015, average over shifted crops). For models trained
        with ``augment="shift"`` (up to 2 pixels) on Fashion-MNIST, 1 pixel
        scored higher than 2 (the README's accuracy section). Training is
        unchanged; saved in parameter files; ``export_onnx`` refuses it.
        Prediction raises a ValueError if it is not below the images'
        height and width (a copy would hold no pixel of its image). MLP
        has none.
    class_weight : dict, "balanced" or None, default=None
        Weights of the classes, as in scikit-learn's LogisticRegression or
        SVC (MLPClassifier has none): each sample's weight is its
        ``sample_weight`` times its class's weight, in training, in the
        input scaling and in early stopping's validation score. A dict maps
        class labels to weights (1 for the classes it leaves out);
        "balanced" gives ``n_samples / (n_classes * np.bincount(y))``, from
        the ``y`` of ``fit`` or of the first ``partial_fit`` call, whose
        weights later calls keep (every class must occur in it).

    dtype : {"auto", "float32", "float64"}, default="auto"
        What the network computes in; prediction converts its input to it.
        "auto": float32 for float32, integer and boolean input (exact for
        pixel values); for float64 input (what ``X / 255.0``,
        ``load_digits`` and ``fetch_openml`` give), float64 up to one
        million values (``n_samples * n_features``), where exactness costs
        nothing, and float32 above, about twice as fast; ``partial_fit``'s
        first call, which sees one batch and not the data's size, chooses
        float32 for float64 input of any size. Probabilities and
        log-probabilities come out in float32 for float32 input and in
        float64 for any other, as scikit-learn's estimators give them.
        MLP: always the input's float dtype.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    class_weight_ : ndarray of shape (n_classes,)
        Weight of each class (ones without ``class_weight``), as SVC's.
    n_features_in_ : int
        Pixels per sample (C * H * W).
    feature_names_in_ : ndarray of str
        Column names, when fitted on a DataFrame with string column names.
    input_shape_ : tuple
        ``(C, H, W)`` of one image.
    data_format_ : {"channels_first", "channels_last"}
        How ``fit`` read the channels of ``X`` (for 2-D and 3-D ``X``: from
        ``data_format``, "auto" meaning channels-first); ``predict`` and
        ``partial_fit`` expect 4-D ``X`` and flat rows of colour images laid
        out the same way (a 4-D batch of grey images in either layout).
        Parameter files keep it (files written before it was recorded load
        without it: 4-D ``X`` is then read by its shape, flat rows as
        channel planes unless ``data_format`` says otherwise).
    input_range_ : (float, float)
        Smallest and largest input value ``fit`` saw (widened by
        ``partial_fit`` and warm starts; kept in parameter files).
        The prediction methods, ``partial_fit`` and warm starts warn
        (``skcnn.estimator.InputRangeWarning``) when ``X`` is on another
        scale, e.g. pixels 0-255 for a model trained on ``X / 255``.
    network_ : skcnn.network.Network
        The fitted network (its layers and weights, as training left them).
    weight_average_ : skcnn.network.WeightAverage or None
        With ``ema_decay`` > 0, the averaged weights (``.network``), which
        ``predict``, ``predict_proba`` and ``score`` use; else None.
    history_ : skcnn.trainer.History
        The training record (losses, validation scores, epochs, samples
        seen), extended by warm starts and ``partial_fit``; the attributes
        below read it.
    n_iter_ : int
        Epochs trained, summed over warm starts and ``partial_fit`` calls.
        MLP: the epochs of the last call only; the sum here matches
        ``loss_curve_``, which both keep growing.
    t_ : int
        Training samples seen, as in MLPClassifier.
    loss_ : float or None
        The last epoch's training loss, as in MLPClassifier.
    loss_curve_ : list of float
        Mean training loss of each epoch, the L2 penalty included, as in
        MLPClassifier.
    best_loss_ : float or None
        Lowest training loss (None with early stopping), as in MLPClassifier.
    validation_scores_ : list of float or None
        Validation accuracy per epoch (with early stopping), as in
        MLPClassifier.
    best_validation_score_ : float or None
        Best validation accuracy (with early stopping), as in MLPClassifier.

    Notes
    -----
    Computation runs in float32 (the fast path) or float64, chosen at the
    first fit by ``dtype``; the fitted network keeps it (``network_.dtype``).
    The input is standardised with one mean and one standard deviation over
    all pixels of the training data (sample-weighted), stored in the
    network's first layer.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from skcnn import CNNClassifier
    >>> X, y = load_digits(return_X_y=True)
    >>> clf = CNNClassifier(random_state=0).fit(X[:1200], y[:1200])
    >>> clf.input_shape_
    (1, 8, 8)
    >>> clf.predict(X[1200:1205]).shape
    (5,)
    >>> bool(clf.score(X[1200:], y[1200:]) > 0.9)
    True
    """

    def __init__(
        self,
        architecture="origin",
        layers=None,
        conv_filters=None,
        kernel_size=None,
        hidden_layer_sizes=None,
        batch_norm=None,
        dropout=None,
        input_shape=None,
        data_format="auto",
        solver="adam",
        alpha=0.0,
        weight_decay=0.0,
        batch_size="auto",
        learning_rate="constant",
        learning_rate_init=0.001,
        max_iter=30,
        max_time=None,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=0,
        warm_start=False,
        momentum=0.9,
        early_stopping=False,
        validation_fraction=0.1,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        n_iter_no_change=10,
        augment=None,
        class_weight=None,
        label_smoothing=0.0,
        warmup_fraction=0.0,
        ema_decay=0.0,
        test_time_flips=False,
        test_time_shifts=0,
        dtype="auto",
    ):
        self.architecture = architecture
        self.layers = layers
        self.conv_filters = conv_filters
        self.kernel_size = kernel_size
        self.hidden_layer_sizes = hidden_layer_sizes
        self.batch_norm = batch_norm
        self.dropout = dropout
        self.input_shape = input_shape
        self.data_format = data_format
        self.solver = solver
        self.alpha = alpha
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.max_time = max_time
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.augment = augment
        self.class_weight = class_weight
        self.label_smoothing = label_smoothing
        self.warmup_fraction = warmup_fraction
        self.ema_decay = ema_decay
        self.test_time_flips = test_time_flips
        self.test_time_shifts = test_time_shifts
        self.dtype = dtype

    # -- parameters --------------------------------------------------------------

    def _check_param(self, name):
        """Reject an invalid value of the hyperparameter ``name`` (one with an
        entry in ``_CONSTRAINTS``), naming it and what is allowed."""
        valid, allowed = _CONSTRAINTS[name]
        value = getattr(self, name)
        if not valid(value):
            raise ValueError(f"{name} must be {allowed}; got {value!r}")

    def _check_params(self):
        """Reject invalid hyperparameters, naming the parameter and what is allowed."""
        for name in _CONSTRAINTS:
            self._check_param(name)
        if self.augment is not None:
            Augmenter(self.augment)  # raises a ValueError naming augment
        if self.warmup_fraction and self.learning_rate == "adaptive":
            raise ValueError(
                "warmup_fraction works with learning_rate='constant' or 'cosine'; 'adaptive' "
                "lowers the rate when training stalls, which a warm-up would undo. Set one of them."
            )
        if self.layers is not None:
            fields = [name for name in PRESET_FIELDS if getattr(self, name) is not None]
            if fields:
                raise ValueError(
                    f"layers describes the whole stack; it cannot be combined with {', '.join(fields)} "
                    "(fields of a preset architecture). Set one or the other."
                )

    def _layer_list(self, n_classes):
        """The unbuilt stack to fit: ``layers`` or the preset with its
        overridden fields, then the output layer."""
        if self.layers is not None:
            stack = list(self.layers)
        else:
            fields = dict(PRESETS[self.architecture])
            for name in PRESET_FIELDS:
                value = getattr(self, name)
                if value is not None and name == "hidden_layer_sizes":
                    value = (value,) if _is_int(value) else tuple(value)  # MLP accepts an int
                if value is not None:
                    fields[name] = value
            stack = preset_layers(**fields)
        return stack + [Dense(n_classes)]

    def __getstate__(self):
        # partial_fit's training replicas (scratch arrays, tens of MB) are not
        # part of the model: pickles and copies leave them out
        state = dict(super().__getstate__())
        state.pop("_parallel", None)
        return state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False
        tags.input_tags.allow_nan = False
        tags.classifier_tags.multi_class = True
        tags.target_tags.single_output = True
        return tags

    # -- input -------------------------------------------------------------------

    def _validate_input(self, X, y=_NO_Y, reset=True, incremental=False):
        """Validate X (and y) and return X as images (n, C, H, W).

        2-D X keeps sklearn's semantics (validate_data: n_features_in_,
        feature names, finite values, dtype); 3-D and 4-D arrays are image
        batches, flattened in their own layout for validation and reshaped
        back (a view; a channels-last batch becomes a transposed view).
        """
        sample_shape = None  # one sample's shape as X holds it, for 3-D and 4-D X
        data_format = None
        if isinstance(X, (np.ndarray, list, tuple)):
            ndim = np.ndim(X)
            if ndim in (3, 4):
                X = np.asarray(X)
                sample_shape = tuple(X.shape[1:])
                if not reset:  # the shape first: its error says more than a count of features
                    data_format = self._check_layout(sample_shape, len(X))
                X = X.reshape(len(X), -1)
            elif ndim > 4:
                raise ValueError(
                    f"X must be 2-D, 3-D (n, H, W) or 4-D (n, C, H, W) or (n, H, W, C); got {ndim}-D"
                )
            elif ndim == 2 and not reset and hasattr(self, "input_shape_"):
                c, h, w = self.input_shape_
                if c == 1 and h > 1 and np.shape(X) == (h, w):  # rows of one picture
                    raise ValueError(
                        f"X has {h} rows of {w} features, but {type(self).__name__} expects "
                        f"{h * w} features a row: one {h}x{w} picture? Give it a batch axis: "
                        "X[np.newaxis]."
                    )
        common = dict(reset=reset, dtype=self._input_dtype(X, reset, incremental), accept_sparse=False)
        if y is _NO_Y:
            X = validate_data(self, X, **common)
        else:
            X, y = validate_data(self, X, y, **common)
        if reset:
            self.input_shape_, self.data_format_ = self._resolve_layout(X.shape[1], sample_shape)
            data_format = self.data_format_
        elif data_format is None:  # flat rows
            data_format = self._check_layout(None, len(X))
        if hasattr(self, "network_") and not reset:
            X = X.astype(self.network_.dtype, copy=False)
        c, h, w = self.input_shape_
        if data_format == "channels_last":
            images = X.reshape(len(X), h, w, c).transpose(0, 3, 1, 2)  # (n, H, W, C) -> (n, C, H, W)
        else:
            images = X.reshape(len(X), c, h, w)
        return images if y is _NO_Y else (images, y)

    def _input_dtype(self, X, reset, incremental=False):
        """The dtype to validate ``X`` into: the fitted network's, or the one
        a fit (``partial_fit``: ``incremental``) on ``X`` computes in
        (:func:`_computation_dtype`)."""
        if not reset and hasattr(self, "network_"):
            return self.network_.dtype
        return _computation_dtype(X, self.dtype, incremental)

    def _resolve_input_shape(self, n_features, image_shape):
        """``(C, H, W)`` of one image, for X with ``n_features`` per sample."""
        return self._resolve_layout(n_features, image_shape)[0]

    def _resolve_layout(self, n_features, sample_shape):
        """``(C, H, W)`` and the data format of the X ``fit`` was given.

        ``sample_shape`` is one sample's shape in a 3-D or 4-D X (None for
        2-D X). Anything the shape and the parameters leave open is refused,
        never guessed.
        """
        fmt = self.data_format
        flat_format = "channels_last" if fmt == "channels_last" else "channels_first"
        declared = None
        if self.input_shape is not None:
            declared = tuple(self.input_shape)
            declared = (1, *declared) if len(declared) == 2 else declared
            if int(np.prod(declared)) != n_features:
                raise ValueError(
                    f"input_shape={self.input_shape!r} holds {int(np.prod(declared))} values per "
                    f"sample, but X has {n_features} features"
                )
            if fmt != "channels_first" and guess_data_format(declared) == "channels_last":
                c, h, w = declared
                raise ValueError(
                    f"input_shape={self.input_shape!r} is (C, H, W): {c} channels of {h}x{w} "
                    f"pixels. For {c}x{h} pictures with {w} channels write input_shape="
                    f"{(w, c, h)!r} (data_format says how X holds them); if the images do have "
                    f"{c} channels, pass data_format='channels_first'."
                )
        if sample_shape is None:  # flat rows
            if declared is not None:
                return declared, flat_format
            side = int(round(np.sqrt(n_features)))
            if side * side == n_features:
                return (1, side, side), flat_format
            side = int(round(np.sqrt(n_features / 3)))
            if 3 * side * side == n_features and side >= 8:
                warnings.warn(
                    f"X has {n_features} features, 3 x {side} x {side}: read as one 1 x "
                    f"{n_features} strip. If its rows are RGB pictures pass input_shape="
                    f"(3, {side}, {side}) and data_format='channels_first' (rows of channel "
                    "planes) or 'channels_last' (rows of interleaved pixels)",
                    UserWarning,
                    stacklevel=5,
                )
            return (1, 1, n_features), flat_format
        if len(sample_shape) == 2:  # (n, H, W): one channel, no channel axis
            shape = (1, *sample_shape)
            if declared is not None and declared != shape:
                raise ValueError(
                    f"input_shape={self.input_shape!r} does not match the shape of the "
                    f"images in X, {shape}"
                )
            return shape, flat_format
        a, b, c = sample_shape
        readings = {"channels_first": (a, b, c), "channels_last": (c, a, b)}
        if fmt != "auto":
            chosen = fmt
        elif declared is not None:
            matching = [f for f, shape in readings.items() if shape == declared]
            chosen = matching[0] if matching else "channels_first"
            if len(matching) == 2 and a != 1:
                raise self._ambiguous(sample_shape)
        else:
            chosen = guess_data_format(sample_shape)
            if chosen is None:
                raise self._ambiguous(sample_shape)
        shape = readings[chosen]
        if declared is not None and declared != shape:
            raise ValueError(
                f"input_shape={self.input_shape!r} does not match the shape of the images "
                f"in X, {sample_shape}, read {chosen.replace('_', '-')} as {shape}"
            )
        return shape, chosen

    @staticmethod
    def _ambiguous(sample_shape):
        a, b, c = sample_shape
        if a in CHANNEL_COUNTS and c in CHANNEL_COUNTS:
            axes = "both axes 1 and 3 have"
        else:
            axes = "neither axis 1 nor axis 3 has"
        return ValueError(
            f"X holds images of shape {sample_shape}, and {axes} 1 to 4 entries, so its "
            f"layout is ambiguous: channels-first it is {a} channel(s) of {b}x{c} pixels, "
            f"channels-last {c} channel(s) of {a}x{b}. Pass data_format='channels_first' "
            "or 'channels_last' (or input_shape=(C, H, W))."
        )

    def _check_layout(self, sample_shape, n):
        """The data format of X after ``fit``; raises, saying how to fix it,
        when X's images are not the shape or layout the model was fitted on."""
        c, h, w = self.input_shape_
        fitted = getattr(self, "data_format_", None)  # None: loaded from a parameter file
        if fitted is None and self.data_format != "auto":
            fitted = self.data_format
        held = {"channels_first": (c, h, w), "channels_last": (h, w, c)}
        if sample_shape is None:  # flat rows: validate_data checked their length
            return fitted or "channels_first"
        if len(sample_shape) == 3:
            matching = [f for f, shape in held.items() if shape == sample_shape]
            if fitted in matching or (fitted is None and len(matching) == 1):
                return fitted or matching[0]
            if len(matching) == 2:  # a loaded model of C == H == W
                if c == 1:
                    return "channels_first"
                raise self._ambiguous(sample_shape)
            if matching and c == 1:
                # grey: (n, 1, H, W) and (n, H, W, 1) are the same pixels in the
                # same order, so the other layout cannot be misread
                return matching[0]
            if matching:  # the other layout, of colour images
                other = matching[0]
                axes = "(0, 3, 1, 2)" if other == "channels_last" else "(0, 2, 3, 1)"
                raise ValueError(
                    f"X holds {other.replace('_', '-')} images (n, {', '.join(map(str, sample_shape))}), "
                    f"but {type(self).__name__} was fitted on {fitted.replace('_', '-')} "
                    f"images (n, {', '.join(map(str, held[fitted]))}). Pass X.transpose{axes} "
                    f"(or fit on {other.replace('_', '-')} images)."
                )
        elif (1, *sample_shape) == self.input_shape_:
            return fitted or "channels_first"
        layout = fitted or "channels_first"
        hint = ""
        if (n, *sample_shape) == held[layout] or (c == 1 and (n, *sample_shape) in held.values()):
            hint = " One picture? Give it a batch axis: X[np.newaxis]."
        elif len(sample_shape) == 2 and c > 1:
            hint = f" A 3-D X is grey (one channel); this model reads {c} channels."
        raise ValueError(
            f"X holds images of shape {sample_shape}, but {type(self).__name__} was fitted on "
            f"{layout.replace('_', '-')} images of shape {held[layout]}.{hint}"
        )

    @staticmethod
    def _check_sample_weight(sample_weight, n_samples):
        if sample_weight is None:
            return None
        sw = np.asarray(sample_weight)
        if sw.dtype.kind not in "iufb":
            raise ValueError(f"sample_weight must be numeric; got dtype {sw.dtype}")
        sw = sw.astype(np.float64)
        if sw.ndim == 0:
            sw = np.full(n_samples, float(sw))
        if sw.shape != (n_samples,):
            raise ValueError(f"sample_weight.shape == {sw.shape}, expected ({n_samples},)!")
        if not np.isfinite(sw).all():
            raise ValueError("sample_weight must be finite")
        if (sw < 0).any():
            raise ValueError("sample_weight must be non-negative")
        if not sw.any():
            raise ValueError("Sample weights must contain at least one non-zero number.")
        return sw

    # -- fitting -----------------------------------------------------------------

    def fit(self, X, y, sample_weight=None):
        """Train the network for up to ``max_iter`` epochs.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), (n, H, W), (n, C, H, W) or (n, H, W, C)
            See ``data_format`` for how the channel axis is found.
        y : array-like of shape (n_samples,)
            Any labels: ints, strings, +-1; two or more classes.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weights; the loss is their weighted mean. Multiplied
            by the class weights (``class_weight``).

        Returns
        -------
        self

        Raises
        ------
        ValueError
            For invalid data, sample weights or hyperparameters (named with
            their allowed values), and for batch norm with batches of one
            sample. The estimator is left exactly as it was.

        Warns
        -----
        ConvergenceWarning
            ``max_iter`` epochs (or ``max_time`` seconds) ran out before the
            stopping rule fired, as in MLPClassifier.
        DivergenceWarning
            The loss or the weights became non-finite, or an epoch's mean
            loss exceeded ``DIVERGENCE_FACTOR`` (10) times that of a uniform
            guess, ``log(n_classes)`` (a learning rate far too large): the
            weights and optimizer state from the start of that epoch are kept
            and training stops. Lower ``learning_rate_init``.
        TrainingInterruptedWarning
            Ctrl-C stopped training after the current batch.

        Every warning points at the line that called ``fit``.
        """
        with _unchanged_on_error(self):
            self._fit(X, y, sample_weight, incremental=False)
        return self

    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """Train for one epoch over ``(X, y)``, starting where the last call ended.

        Between calls the estimator keeps its training threads' replicas of
        the network and their working arrays (a few MB for the default
        network, tens of MB for the "deep" preset), so that a stream of
        small calls trains at nearly the speed of ``fit``; ``fit`` and
        pickling let them go.

        Parameters
        ----------
        X, y, sample_weight : as in :meth:`fit`
        classes : array-like of shape (n_classes,)
            All classes that will ever occur; required on the first call,
            optional later (and then it must equal ``classes_``).
            ``class_weight="balanced"`` takes its weights from the first
            call's ``y``, which must hold every class.

        Raises
        ------
        ValueError
            As :meth:`fit`, and with ``early_stopping=True`` (as MLPClassifier).

        Returns
        -------
        self
        """
        with _unchanged_on_error(self):
            self._fit(X, y, sample_weight, incremental=True, classes=classes)
        return self

    def _fit(self, X, y, sample_weight, *, incremental, classes=None):
        start_time = Trainer.clock()  # max_time counts the validation of the data too
        self._check_params()
        if incremental and self.early_stopping:
            raise ValueError(
                "partial_fit does not support early_stopping=True: it trains one epoch on "
                "the data it is given and holds none out. Set early_stopping=False."
            )
        fresh = not hasattr(self, "network_") or not (incremental or self.warm_start)
        X, y = self._validate_input(X, y, reset=fresh, incremental=incremental)
        if fresh or not incremental:
            # (later partial_fit calls check y against classes_ instead, in
            # _encode_labels: any label not in it, continuous ones included,
            # is refused there; this check took 5% of a call's time)
            check_classification_targets(y)
        sw = self._check_sample_weight(sample_weight, len(y))
        y_idx = self._encode_labels(y, sw, fresh, incremental, classes)
        if fresh or not incremental or not hasattr(self, "class_weight_"):
            self.class_weight_ = self._class_weights(y)
        sw = self._weigh_classes(sw, y_idx)

        low, high = _value_range(X)
        if not fresh:  # the input scaling is the first fit's: new data must be on its scale
            self._check_input_range(low, high)
        if fresh or getattr(self, "input_range_", None) is None:
            self.input_range_ = (low, high)
        else:  # partial_fit and warm starts widen it
            self.input_range_ = (min(self.input_range_[0], low), max(self.input_range_[1], high))
        if fresh:
            self._rng = self._new_rng()
            layers = self._layer_list(len(self.classes_))
            self.network_ = Network.from_layers(layers, self.input_shape_, self._rng, X.dtype)
            self._set_input_scaling(X, sw)
            self.history_ = History()
            self.weight_average_ = None
        if not hasattr(self, "_rng"):  # after load_params
            self._rng = self._new_rng()
        self.network_.loss_layer.label_smoothing = float(self.label_smoothing)
        self._set_weight_average()
        self._set_optimizer(fresh)
        # "adaptive" lowers the rate as training stalls: partial_fit goes on
        # from the lowered rate, every other call starts from learning_rate_init.
        if self.learning_rate != "adaptive" or not incremental:
            self._optimizer.lr = self.learning_rate_init
        validation = None
        if self.early_stopping:
            X, y_idx, sw, validation = self._split_validation(X, y_idx, sw)
        trainer = Trainer(
            self.network_,
            self._optimizer,
            self.history_,
            batch_size=self._batch_size(len(y_idx)),
            shuffle=self.shuffle,
            tol=self.tol,
            n_iter_no_change=self.n_iter_no_change,
            early_stopping=self.early_stopping,
            learning_rate="constant" if incremental else self.learning_rate,
            warmup_fraction=0.0 if incremental else self.warmup_fraction,
            max_time=None if self.max_time is None else float(self.max_time),
            start_time=start_time,
            average=self.weight_average_,
            augment=None if self.augment is None else Augmenter(self.augment),
            verbose=int(self.verbose),
            n_classes=len(self.classes_),
            parallel=getattr(self, "_parallel", None) if incremental else None,
        )
        max_epochs = 1 if incremental else self.max_iter
        trainer.fit(X, y_idx, sw, self._rng, max_epochs, validation=validation, warn_max_epochs=not incremental)
        # partial_fit's next call reuses the training threads' replicas and their
        # arrays (DataParallel.renew: its steps 1.3x faster); fit lets them go
        if incremental:
            self._parallel = trainer.parallel
        else:
            self.__dict__.pop("_parallel", None)
        self._early_stopping_fit = self.early_stopping

    def _set_weight_average(self):
        """Start, continue (with the current decay) or drop the average of
        the weights that prediction uses (``ema_decay``)."""
        average = getattr(self, "weight_average_", None)
        if not self.ema_decay:
            self.weight_average_ = None
        elif average is None:
            self.weight_average_ = WeightAverage(self.network_, self.ema_decay)
        elif average.decay != self.ema_decay:  # a copy: a call that fails later changes nothing
            self.weight_average_ = copy.copy(average)
            self.weight_average_.decay = float(self.ema_decay)

    def _set_optimizer(self, fresh):
        """A new optimizer for a fresh fit (or after load_params or a change of
        solver); otherwise the current one, keeping its state, with the
        current hyperparameters (set_params between warm-started fits)."""
        settings = dict(
            momentum=self.momentum,
            beta_1=self.beta_1,
            beta_2=self.beta_2,
            epsilon=self.epsilon,
            alpha=self.alpha,
            decoupled_weight_decay=self.weight_decay,
        )
        current = getattr(self, "_optimizer", None)
        if fresh or current is None or type(current) is not SOLVERS[self.solver]:
            self._optimizer = make_optimizer(self.solver, self.learning_rate_init, **settings)
            return
        for name, value in settings.items():
            if hasattr(current, name):
                setattr(current, name, value)

    def _batch_size(self, n_samples):
        """Samples per step, checked against the data and the network."""
        if self.batch_size == "auto":
            batch = min(AUTO_BATCH, n_samples)
        else:
            batch = min(self.batch_size, n_samples)
            if self.batch_size > n_samples:
                warn_user(
                    f"batch_size={self.batch_size} is larger than the {n_samples} training "
                    f"samples; each step uses all {n_samples}.",
                    UserWarning,
                )
        if batch == 1 and any(isinstance(layer, BatchNorm) for _, layer in self.network_.named_layers()):
            raise ValueError(
                "Batch norm normalises each batch with its own mean and variance, which a "
                f"batch of one sample does not have; got batches of 1 (batch_size="
                f"{self.batch_size!r}, {n_samples} training samples). Use batch_size >= 2 "
                "or batch_norm=False."
            )
        return batch

    def _class_weights(self, y):
        """Weight of each class in ``classes_`` (ones for class_weight=None)."""
        if self.class_weight is None:
            return np.ones(len(self.classes_))
        if isinstance(self.class_weight, str):  # "balanced": counts in this y
            missing = np.setdiff1d(self.classes_, y)
            if len(missing):
                raise ValueError(
                    f"class_weight='balanced' weighs each class by its count in y, but classes "
                    f"{missing.tolist()!r} have no samples in it (with partial_fit, the weights "
                    "come from the first call). Pass class_weight as a dict, e.g. from "
                    "sklearn.utils.class_weight.compute_class_weight('balanced', classes=..., "
                    "y=...) on (a sample of) all labels."
                )
        return compute_class_weight(self.class_weight, classes=self.classes_, y=y).astype(np.float64)

    def _weigh_classes(self, sw, y_idx):
        """``sample_weight`` times the class weights (unchanged where they are 1)."""
        if np.all(self.class_weight_ == 1):
            return sw
        weights = self.class_weight_[y_idx]
        sw = weights if sw is None else sw * weights
        if not sw.any():
            raise ValueError(
                f"class_weight={self.class_weight!r} and sample_weight leave every sample "
                "of y with weight 0: nothing to learn from."
            )
        return sw

    # -- the training record (one owner: history_) ------------------------------

    @property
    def n_iter_(self):
        """Epochs trained, summed over warm starts and ``partial_fit`` calls."""
        return self.history_.n_iter

    @property
    def t_(self):
        """Training samples seen."""
        return self.history_.t

    @property
    def loss_(self):
        """The last epoch's training loss (None before the first), as MLPClassifier's."""
        curve = self.history_.loss_curve
        return curve[-1] if curve else None

    @property
    def loss_curve_(self):
        """Mean training loss of each epoch (a copy of ``history_.loss_curve``)."""
        return list(self.history_.loss_curve)

    @property
    def best_loss_(self):
        """Lowest training loss, or None when the last fit used early stopping."""
        if self._early_stopping_fit or not self.history_.loss_curve:
            return None
        return self.history_.best_loss

    @property
    def validation_scores_(self):
        """Validation accuracy of each epoch, or None without early stopping."""
        return list(self.history_.validation_scores) if self._early_stopping_fit else None

    @property
    def best_validation_score_(self):
        """Best validation accuracy, or None without early stopping."""
        return self.history_.best_validation_score if self._early_stopping_fit else None

    def _new_rng(self):
        """The one generator every random number of a fit comes from."""
        seed = check_random_state(self.random_state).randint(np.iinfo(np.int32).max)
        return np.random.default_rng(seed)

    def _encode_labels(self, y, sw, fresh, incremental, classes):
        """Class indices 0..n_classes-1 for y; sets classes_ on a fresh fit."""
        if incremental and fresh and classes is None:
            raise ValueError("classes must be passed on the first call to partial_fit.")
        if classes is not None:
            classes = np.unique(np.asarray(classes))
            if not fresh and not np.array_equal(classes, self.classes_):
                raise ValueError(
                    f"`classes={classes!r}` is not the same as on the first call to "
                    f"partial_fit, which was {self.classes_!r}"
                )
        if fresh:
            if classes is None:
                present = y if sw is None else y[sw > 0]
                classes = np.unique(present)
            if len(classes) < 2:
                raise ValueError(
                    f"{type(self).__name__} needs samples of at least 2 classes to learn "
                    f"from (with non-zero sample_weight); got 1 class: {classes[0]!r}"
                )
            self.classes_ = classes
        unknown = np.setdiff1d(np.unique(y), self.classes_)
        if len(unknown):
            raise ValueError(
                f"y contains labels {unknown.tolist()!r} that are not in classes_ "
                f"{self.classes_.tolist()!r}"
            )
        return np.searchsorted(self.classes_, y)

    def _set_input_scaling(self, X, sw):
        """Standardise with one mean and std over all pixels, sample-weighted.

        Two passes in chunks of images: float64 statistics without a float64
        copy of the data, and no cancellation when the values sit far from 0.
        """
        per_sample = X.reshape(len(X), -1)
        w = np.ones(len(X)) if sw is None else sw
        chunks = [slice(i, i + 4096) for i in range(0, len(X), 4096)]
        mean = sum(w[c] @ per_sample[c].mean(axis=1, dtype=np.float64) for c in chunks) / w.sum()
        var = sum(
            w[c] @ np.square(per_sample[c] - per_sample.dtype.type(mean)).mean(axis=1, dtype=np.float64)
            for c in chunks
        ) / w.sum()
        std = float(np.sqrt(var))
        rescale = self.network_.layers[0]
        rescale.buffers["shift"][...] = mean
        rescale.buffers["scale"][...] = std if std > 1e-12 * max(1.0, abs(mean)) else 1.0

    def _split_validation(self, X, y_idx, sw):
        seed = int(self._rng.integers(np.iinfo(np.int32).max))
        idx = np.arange(len(y_idx))
        try:
            train, val = train_test_split(
                idx, test_size=self.validation_fraction, stratify=y_idx, random_state=seed
            )
        except ValueError:  # a class too rare to stratify
            train, val = train_test_split(idx, test_size=self.validation_fraction, random_state=seed)
        if len(train) == 0 or len(val) == 0:
            raise ValueError(
                f"early_stopping needs enough samples to hold out validation_fraction="
                f"{self.validation_fraction}; got {len(idx)} samples"
            )
        sw_train = None if sw is None else sw[train]
        sw_val = None if sw is None else sw[val]
        return X[train], y_idx[train], sw_train, (X[val], y_idx[val], sw_val)

    # -- parameter files ---------------------------------------------------------

    def save_params(self, path, metadata=None):
        """Save the fitted network to a parameter file (``.npz``, no pickle).

        The file holds the weights, the batch-norm and input-scaling
        statistics, the class labels and a JSON description of the
        architecture, and with ``ema_decay`` the averaged weights that
        prediction uses; :meth:`load_params` restores a model that predicts
        identically. Unlike ``joblib.dump`` it holds no optimizer state and
        can be loaded from an untrusted source: loading never runs code.

        Parameters
        ----------
        path : str or path-like
        metadata : dict, optional
            JSON-serialisable notes to keep in the file (e.g. the data set);
            read them back with ``skcnn.persistence.load_network(path).extra["metadata"]``.
        """
        check_is_fitted(self)
        extra = {
            "skcnn_version": __version__,
            "n_iter": self.n_iter_,
            "loss_curve": [float(v) for v in self.loss_curve_],
        }
        if hasattr(self, "feature_names_in_"):
            extra["feature_names_in"] = [str(v) for v in self.feature_names_in_]
        if hasattr(self, "data_format_"):  # how flat rows and 4-D batches were laid out
            extra["data_format"] = self.data_format_
        if getattr(self, "input_range_", None) is not None:  # for predict's scale check
            extra["input_range"] = [float(v) for v in self.input_range_]
        for name, one_pass in TEST_TIME_PARAMETERS.items():  # prediction uses them: the loaded model must too
            if getattr(self, name) != one_pass:
                extra[name] = type(one_pass)(getattr(self, name))  # bool, int: JSON
        if metadata is not None:
            extra["metadata"] = metadata
        save_network(path, self.network_, self.classes_, extra, average=getattr(self, "weight_average_", None))

    @classmethod
    def from_recipe(cls, name, **params):
        """A new, unfitted estimator set up with the training recipe ``name``.

        A recipe is a complete set of parameters measured together (the
        network, optimizer, schedule, augmentation and test-time settings),
        so one argument gives all of them; ``params`` then set or override
        any parameter, as in the constructor. Available recipes:

        ``"fashion-best"``
            The best measured on Fashion-MNIST in 30 minutes on two CPU
            cores (issue #17; the README's accuracy section): 94.81-95.01%
            test accuracy over seven trainings, mean 94.93%.
            ``architecture="deep"``, ``solver="nesterov"`` (Sutskever et
            al., 2013) from ``learning_rate_init=0.2`` with
            ``learning_rate="cosine"`` (Loshchilov & Hutter, 2017) over
            ``max_iter=25`` epochs, ``weight_decay=5e-4``,
            ``augment="shift+flip"``, ``test_time_flips=True`` and
            ``test_time_shifts=1`` (ten passes a prediction). About 60-70 s
            an epoch over 60,000 28x28 images on two cores. The README's
            figures were trained on a time budget, as the benchmark does:
            ``from_recipe("fashion-best", max_iter=1000, max_time=1794,
            n_iter_no_change=1000)`` (the cosine decay then follows the
            minutes, see ``max_time``, and only they end training).

        The recipe is not a constructor parameter because scikit-learn's
        convention is that ``get_params`` reports what ``fit`` uses: a
        ``recipe`` parameter changing the defaults of nine others would make
        ``solver="adam"`` mean different things with and without it. Here
        the returned estimator simply holds the recipe's values, so
        ``get_params``, ``clone``, ``set_params`` and ``GridSearchCV`` see
        them as if typed out.

        Parameters
        ----------
        name : str
            A key of :data:`skcnn.estimator.RECIPES`.
        **params
            Any estimator parameters; they take precedence over the recipe's.

        Returns
        -------
        CNNClassifier

        Raises
        ------
        ValueError
            If ``name`` is not a recipe.
        TypeError
            If a keyword of ``params`` is not an estimator parameter.

        Examples
        --------
        >>> from skcnn import CNNClassifier
        >>> clf = CNNClassifier.from_recipe("fashion-best", random_state=0)
        >>> clf.solver, clf.learning_rate_init, clf.test_time_flips
        ('nesterov', 0.2, True)
        """
        if not (isinstance(name, str) and name in RECIPES):
            raise ValueError(f"name must be one of {sorted(RECIPES)} (the recipes); got {name!r}")
        return cls(**{**RECIPES[name], **params})

    @classmethod
    def from_params_file(cls, path, **params):
        """A new estimator with the architecture stored in ``path``, loaded.

        ``params`` set any other parameters (e.g. for further training).
        Use this when you do not know the file's architecture; otherwise
        ``CNNClassifier(...).load_params(path)``.
        """
        loaded = load_network(path)
        stack = loaded.network.spec[:-1]  # without the output layer
        described = {"layers": [layer_from_config(config) for config in stack]}
        for name, fields in PRESETS.items():  # a preset's file reads back as that preset
            if [layer.get_config() for layer in preset_layers(**fields)] == stack:
                described = {"architecture": name}
        if loaded.average is not None:  # the model predicts with its average: say so
            described["ema_decay"] = loaded.average.decay
        for name, one_pass in TEST_TIME_PARAMETERS.items():  # as save_params wrote them
            value = loaded.extra.get(name, one_pass)
            if type(value) is type(one_pass) and value != one_pass:
                described[name] = value
        estimator = cls(**{**described, **params})
        with _unchanged_on_error(estimator):
            estimator._adopt(path, *loaded)
        return estimator

    def load_params(self, path):
        """Load a parameter file written by :meth:`save_params`.

        The estimator's architecture parameters (``architecture``,
        ``conv_filters``, ``hidden_layer_sizes``, ...) must describe the
        network in the file, and ``input_shape``, when set, its input; a
        mismatched, truncated or corrupt file raises ``ValueError`` and
        leaves the estimator exactly as it was. Training can go on with
        ``partial_fit`` or ``warm_start`` (with a fresh optimizer).

        The estimator keeps its own parameters, ``test_time_flips`` and
        ``test_time_shifts`` included: a file saved by a model predicting
        with them predicts in one pass here unless they are set. Use
        :meth:`from_params_file` to get the file's test-time settings too.

        Parameters
        ----------
        path : str or path-like

        Returns
        -------
        self
        """
        with _unchanged_on_error(self):
            self._adopt(path, *load_network(path))
        return self

    def _adopt(self, path, network, classes, extra, average=None):
        """Take a network read from a parameter file, if it matches the parameters."""
        self._check_params()
        wanted = [layer.get_config() for layer in self._layer_list(len(classes))]
        if wanted != network.spec:
            raise ParameterFileError(
                f"{path} holds the layers {network.spec}, but this estimator's parameters "
                f"describe {wanted}. Create the estimator with matching architecture "
                "parameters, or use CNNClassifier.from_params_file(path)."
            )
        if self.input_shape is not None:
            shape = self._resolve_input_shape(int(np.prod(self.input_shape)), None)
            if shape != network.input_shape:
                raise ParameterFileError(
                    f"{path} holds a network for images of shape {network.input_shape}, but "
                    f"input_shape={self.input_shape!r}"
                )
        for name in ("_optimizer", "_rng", "feature_names_in_", "class_weight_", "data_format_", "input_range_"):
            self.__dict__.pop(name, None)
        self.network_ = network
        self.weight_average_ = average
        self.classes_ = classes
        self.input_shape_ = network.input_shape
        self.n_features_in_ = int(np.prod(network.input_shape))
        if "feature_names_in" in extra:
            self.feature_names_in_ = np.asarray(extra["feature_names_in"], dtype=object)
        if extra.get("data_format") in ("channels_first", "channels_last"):
            self.data_format_ = extra["data_format"]
        input_range = extra.get("input_range")
        if isinstance(input_range, list) and len(input_range) == 2:
            self.input_range_ = (float(input_range[0]), float(input_range[1]))
        loss_curve = [float(v) for v in extra.get("loss_curve", [])]
        self.history_ = History(
            loss_curve=loss_curve,
            n_iter=int(extra.get("n_iter", 0)),
            best_loss=min(loss_curve, default=np.inf),
        )
        self._early_stopping_fit = False

    # -- prediction --------------------------------------------------------------

    def _prediction_network(self):
        """The network prediction uses: the weight average (``ema_decay``) if
        there is one, else ``network_``. Export and saliency read it too."""
        check_is_fitted(self)
        average = getattr(self, "weight_average_", None)
        return self.network_ if average is None else average.network

    def _logits(self, X):
        """Logits in float32 for float32 input, else in float64 (scikit-learn's
        convention), whatever the dtype the network computes in."""
        network = self._prediction_network()
        for name in TEST_TIME_PARAMETERS:  # the parameters prediction reads
            self._check_param(name)
        as_float32 = getattr(X, "dtype", None) == np.float32
        images = self._validate_input(X, reset=False)  # (n, C, H, W)
        self._check_input_range(*_value_range(images))
        self._check_test_time_shifts(images.shape[2:])
        views = self._test_time_views()
        if len(views) == 1:
            logits = network.predict_logits(images)
        else:
            # log of the mean of the views' probability vectors: softmax of
            # it is that mean, argmax its most probable class. One view at a
            # time: a moved copy of X is as large as X
            for i, (dy, dx, mirror) in enumerate(views):
                view = translate(images, dy, dx) if dy or dx else images
                log_proba = log_softmax(network.predict_logits(view[..., ::-1] if mirror else view))
                logits = log_proba if i == 0 else np.logaddexp(logits, log_proba)
            logits -= logits.dtype.type(np.log(len(views)))
        return logits if as_float32 else logits.astype(np.float64, copy=False)

    def _check_test_time_shifts(self, image_size):
        """Reject ``test_time_shifts`` that move a copy wholly out of images
        of ``image_size`` (H, W): such a copy holds only background, and its
        probabilities would be averaged in as if it showed the image."""
        s, smaller = self.test_time_shifts, min(image_size)
        if s >= smaller:
            raise ValueError(
                f"test_time_shifts={s} moves copies of {image_size[0]}x{image_size[1]} images wholly "
                f"out of the frame (they would show only background): give a shift below "
                f"{smaller}, such as 1 or 2 for 28x28 images, or 0 for none."
            )

    def _test_time_views(self):
        """The views of a batch whose predictions are averaged, as
        ``(dy, dx, mirror)``: moved ``dy`` pixels down and ``dx`` right
        (``test_time_shifts``), then mirrored left-right or not
        (``test_time_flips``); the first is the batch itself."""
        s = self.test_time_shifts
        moves = [(0, 0)] + ([(s, 0), (-s, 0), (0, s), (0, -s)] if s else [])
        mirrors = (False, True) if self.test_time_flips else (False,)
        return [(dy, dx, mirror) for mirror in mirrors for dy, dx in moves]

    def _check_input_range(self, x_lo, x_hi):
        """Warn (:class:`InputRangeWarning`) when X's values, from ``x_lo``
        to ``x_hi``, are on another scale than the training data's
        (``input_range_``, [lo, hi]):

        * some lie further outside [lo, hi] than its own width (pixels
          0-255 given to a model trained on ``X / 255``), or
        * all lie in [0, 1] while the training data reached 10 or more
          (``X / 255`` given to a model trained on raw pixels).

        Other differences (darker or brighter pictures) are data, not scale,
        and pass. Models loaded from files written without the range are
        not checked.
        """
        lo, hi = getattr(self, "input_range_", None) or (0.0, 0.0)
        span = hi - lo
        if not span > 0 or x_lo > x_hi:  # (an empty X: inf, -inf)
            return
        if x_hi > hi + span or x_lo < lo - span:
            hint = (
                "scale it as the training data was scaled (a model trained on X / 255 "
                "needs X / 255 here too)"
            )
        elif hi >= 10 and 0 <= x_lo and x_hi <= 1 and x_hi > x_lo:
            hint = "if it was scaled to [0, 1], pass the unscaled values the model was trained on"
        else:
            return
        warn_user(
            f"X's values lie in [{x_lo:.4g}, {x_hi:.4g}], but {type(self).__name__} was trained on "
            f"values in [{lo:.4g}, {hi:.4g}] (input_range_): {hint}. On another scale its "
            "predictions are meaningless.",
            InputRangeWarning,
        )

    def predict_proba(self, X):
        """Class probabilities; rows sum to 1.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), (n, H, W), (n, C, H, W) or (n, H, W, C)
            Laid out as the ``X`` of ``fit`` was (``data_format_``).

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            In the order of ``classes_``.
        """
        return softmax(self._logits(X))

    def predict_log_proba(self, X):
        """Logarithm of :meth:`predict_proba`, computed without underflow."""
        return log_softmax(self._logits(X))

    def predict(self, X):
        """Most probable class of each sample.

        Returns
        -------
        y : ndarray of shape (n_samples,)
        """
        logits = self._logits(X)  # checks that the model is fitted
        return self.classes_[logits.argmax(axis=1)]

    # -- inspection ----------------------------------------------------------------

    def summary(self):
        """The fitted network layer by layer, like Keras's ``model.summary()``.

        Returns
        -------
        skcnn.network.Summary
            Printed (or shown in a notebook) it is a table: each layer of
            ``network_.layers`` with its output shape for one image
            (channels-last ``(H, W, C)``, as computed, or ``(features,)``), its
            number of learnable values and its forward FLOPs per image, then
            the totals. ``.rows``, ``.total_params`` and ``.flops`` hold the
            figures.
        """
        check_is_fitted(self)
        return self.network_.summary(self.input_shape_)
