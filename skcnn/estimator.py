"""CNNClassifier: the network, the optimizer and the trainer behind scikit-learn's API."""

import numbers
import warnings
from contextlib import contextmanager
from dataclasses import replace

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from .augmentation import Augmenter
from .functions import log_softmax, softmax
from .images import CHANNEL_COUNTS, guess_data_format
from . import __version__
from .network import PRESETS, Architecture, Network
from .optimizers import SOLVERS, make_optimizer
from .persistence import ParameterFileError, load_network, save_network
from .trainer import LEARNING_RATES, Trainer

__all__ = ["CNNClassifier"]

_NO_Y = object()  # _validate_input without y (None is a y, and an invalid one)

#: batch_size="auto" trains on min(AUTO_BATCH, n_samples) samples per step.
AUTO_BATCH = 100

#: Values of the data_format parameter.
DATA_FORMATS = ("auto", "channels_first", "channels_last")


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


class CNNClassifier(ClassifierMixin, BaseEstimator):
    """Convolutional neural network classifier, written from scratch in NumPy.

    The default network is the origin project's: Conv(16, 3x3) - ReLU -
    MaxPool 2x2 - Conv(32, 3x3) - ReLU - MaxPool 2x2 - Dense(100) - ReLU -
    Dense(n_classes) with softmax cross-entropy, He initialisation, Adam.
    Parameters shared with :class:`~sklearn.neural_network.MLPClassifier`
    have its names and meanings, so one can replace the other.

    Parameters
    ----------
    architecture : {"origin", "deep"}, default="origin"
        Preset network. "deep" is two 3x3 convolutions per block
        ((32, 32), (64, 64)) with batch norm, Dense(256) and dropout 0.3.
        The five parameters below override single fields of the preset.
    conv_filters : tuple or None, default=None
        Filters of each conv block; an entry is an int (one convolution) or a
        tuple of ints (several), each block ending in a 2x2 max pool, e.g.
        ``(16, 32)`` or ``((32, 32), (64, 64))``. None: the preset's.
    kernel_size : int or None, default=None
        Odd size of every convolution kernel ("same" padding). None: 3.
    hidden_layer_sizes : tuple of int or None, default=None
        Dense layers between the conv blocks and the output. None: the
        preset's ((100,) for "origin").
    batch_norm : bool or None, default=None
        Batch normalisation after every convolution and hidden dense layer.
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
        in ``data_format_``, and later calls must use it.
    solver : {"adam", "sgd", "momentum", "nesterov", "adagrad", "rmsprop"}, default="adam"
    alpha : float, default=0.0
        L2 penalty: ``0.5 * alpha * ||W||^2`` is added to the loss for every
        weight matrix and kernel (not biases).
    weight_decay : float, default=0.0
        Decoupled weight decay (AdamW): after each step, weights shrink by
        ``learning_rate * weight_decay`` of themselves.
    batch_size : int or "auto", default="auto"
        Samples per step. "auto" is ``min(100, n_samples)``: the origin's
        batches of 100 on real data, and one full batch on tiny data sets,
        where full-batch steps make sample weights behave exactly like
        repeated samples. Larger values are clipped to n_samples.
    learning_rate : {"constant", "adaptive", "cosine"}, default="constant"
        Schedule: "adaptive" divides the rate by 5 when the stopping rule
        fires (stopping once it is below 1e-6), "cosine" decays it to 0 over
        ``max_iter`` epochs.
    learning_rate_init : float, default=0.001
    max_iter : int, default=30
        Most epochs (passes over the data) per ``fit``; training stops
        earlier once the loss stops improving (``tol``, ``n_iter_no_change``).
        30 is what small data sets such as ``load_digits`` need with batches
        of 100 at Adam's 1e-3; on 60,000 MNIST images fewer epochs suffice
        (pass ``max_iter=5`` to 10 there to save time).
    shuffle : bool, default=True
        Reshuffle samples every epoch.
    random_state : int, RandomState instance or None, default=None
        Seeds weights, shuffling, dropout, augmentation and the validation
        split. An int gives bit-identical fits.
    tol : float, default=1e-4
    verbose : int, default=0
        1: one line per epoch (loss, validation score, seconds); 2: also a
        progress bar within each epoch.
    warm_start : bool, default=False
        Continue from the current weights and optimizer state on ``fit``.
    momentum : float, default=0.9
        For "momentum" and "nesterov".
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the data (stratified), stop when
        its accuracy stops improving, and restore the best epoch's weights.
    validation_fraction : float, default=0.1
    beta_1, beta_2, epsilon : float, default=0.9, 0.999, 1e-8
        Adam's parameters (epsilon also for "adagrad" and "rmsprop").
    n_iter_no_change : int, default=10
        Epochs without an improvement of ``tol`` before stopping.
    augment : str or None, default=None
        Random training-time augmentation: "shift" (up to 2 pixels), "flip"
        (left-right), "erase" (a blanked square), joined with "+".

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    n_features_in_ : int
        Pixels per sample (C * H * W).
    feature_names_in_ : ndarray of str
        Column names, when fitted on a DataFrame with string column names.
    input_shape_ : tuple
        ``(C, H, W)`` of one image.
    data_format_ : {"channels_first", "channels_last"}
        How ``fit`` read the channels of ``X`` (for 2-D and 3-D ``X``: from
        ``data_format``, "auto" meaning channels-first); ``predict`` and
        ``partial_fit`` expect 4-D ``X`` and flat rows laid out the same way.
        Parameter files keep it (files written before it was recorded load
        without it: 4-D ``X`` is then read by its shape, flat rows as
        channel planes unless ``data_format`` says otherwise).
    network_ : skcnn.network.Network
        The fitted network (its layers and weights).
    n_iter_ : int
        Epochs trained, summed over warm starts and ``partial_fit`` calls.
    t_ : int
        Training samples seen.
    loss_curve_ : list of float
        Mean training loss of each epoch.
    best_loss_ : float or None
        Lowest training loss (None with early stopping).
    validation_scores_ : list of float or None
        Validation accuracy per epoch (with early stopping).
    best_validation_score_ : float or None

    Notes
    -----
    Computation runs in the dtype of the training data: float32 (the fast
    path, and what :mod:`skcnn.datasets` returns) or float64 (anything
    else). Prediction casts inputs to that dtype. The input is standardised
    with one mean and one standard deviation over all pixels of the training
    data (sample-weighted), stored in the network's first layer.

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
    ):
        self.architecture = architecture
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

    # -- parameters --------------------------------------------------------------

    def _check_params(self):
        """Reject invalid hyperparameters, naming the parameter and what is allowed."""

        def fail(name, allowed):
            raise ValueError(f"{name} must be {allowed}; got {getattr(self, name)!r}")

        def positive_int_tuple(value):
            return isinstance(value, tuple) and all(_is_int(v) and v > 0 for v in value)

        if self.architecture not in PRESETS:
            fail("architecture", f"one of {sorted(PRESETS)}")
        cf = self.conv_filters
        if cf is not None and not (
            isinstance(cf, tuple)
            and all((_is_int(b) and b > 0) or (positive_int_tuple(b) and len(b) > 0) for b in cf)
        ):
            fail("conv_filters", "None or a tuple of positive ints or of tuples of positive ints, e.g. (16, 32)")
        ks = self.kernel_size
        if ks is not None and not (_is_int(ks) and ks > 0 and ks % 2 == 1):
            fail("kernel_size", "None or an odd positive int")
        hl = self.hidden_layer_sizes
        if hl is not None and not (
            isinstance(hl, (tuple, list)) and all(_is_int(v) and v > 0 for v in hl)
        ):
            fail("hidden_layer_sizes", "None or a tuple of positive ints, e.g. (100,)")
        if self.batch_norm is not None and not isinstance(self.batch_norm, (bool, np.bool_)):
            fail("batch_norm", "None, True or False")
        if self.dropout is not None and not (_is_real(self.dropout) and 0 <= self.dropout < 1):
            fail("dropout", "None or a float in [0, 1)")
        sh = self.input_shape
        if sh is not None and not (positive_int_tuple(sh) and len(sh) in (2, 3)):
            fail("input_shape", "None or a tuple (C, H, W) or (H, W) of positive ints")
        if self.data_format not in DATA_FORMATS:
            fail("data_format", f"one of {list(DATA_FORMATS)}")
        if self.solver not in SOLVERS:
            fail("solver", f"one of {sorted(SOLVERS)}")
        for name in ("alpha", "weight_decay", "tol"):
            value = getattr(self, name)
            if not (_is_real(value) and value >= 0 and np.isfinite(value)):
                fail(name, "a finite float >= 0")
        for name in ("learning_rate_init", "epsilon"):
            value = getattr(self, name)
            if not (_is_real(value) and value > 0 and np.isfinite(value)):
                fail(name, "a finite float > 0")
        bs = self.batch_size
        if not (bs == "auto" if isinstance(bs, str) else (_is_int(bs) and bs >= 1)):
            fail("batch_size", "'auto' or an int >= 1")
        if self.learning_rate not in LEARNING_RATES:
            fail("learning_rate", f"one of {list(LEARNING_RATES)}")
        for name in ("max_iter", "n_iter_no_change"):
            value = getattr(self, name)
            if not (_is_int(value) and value >= 1):
                fail(name, "an int >= 1")
        if not (_is_int(self.verbose) and self.verbose >= 0):
            fail("verbose", "an int >= 0")
        for name in ("shuffle", "warm_start", "early_stopping"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                fail(name, "True or False")
        if not (_is_real(self.momentum) and 0 <= self.momentum <= 1):
            fail("momentum", "a float in [0, 1]")
        if not (_is_real(self.validation_fraction) and 0 < self.validation_fraction < 1):
            fail("validation_fraction", "a float in (0, 1)")
        for name in ("beta_1", "beta_2"):
            value = getattr(self, name)
            if not (_is_real(value) and 0 <= value < 1):
                fail(name, "a float in [0, 1)")
        if self.augment is not None:
            Augmenter(self.augment)  # raises a ValueError naming augment

    def _architecture(self, input_shape, n_classes):
        fields = dict(PRESETS[self.architecture])
        for name in fields:
            value = getattr(self, name)
            if value is not None:
                fields[name] = tuple(value) if name == "hidden_layer_sizes" else value
        return Architecture(input_shape=input_shape, n_classes=n_classes, **fields)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False
        tags.input_tags.allow_nan = False
        tags.classifier_tags.multi_class = True
        tags.target_tags.single_output = True
        return tags

    # -- input -------------------------------------------------------------------

    def _validate_input(self, X, y=_NO_Y, reset=True):
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
        common = dict(reset=reset, dtype=(np.float64, np.float32), accept_sparse=False)
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
                    f"{(w, c, h)!r} (data_format says how X holds them); for {c} channels "
                    "indeed, pass data_format='channels_first'"
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
            if matching:  # the other layout
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
        if (n, *sample_shape) == held[layout]:
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
            Non-negative weights; the loss is their weighted mean.

        Returns
        -------
        self
        """
        with _unchanged_on_error(self):
            self._fit(X, y, sample_weight, incremental=False)
        return self

    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """Train for one epoch over ``(X, y)``, starting where the last call ended.

        Parameters
        ----------
        X, y, sample_weight : as in :meth:`fit`
        classes : array-like of shape (n_classes,)
            All classes that will ever occur; required on the first call,
            optional later (and then it must equal ``classes_``).

        Returns
        -------
        self
        """
        with _unchanged_on_error(self):
            self._fit(X, y, sample_weight, incremental=True, classes=classes)
        return self

    def _fit(self, X, y, sample_weight, *, incremental, classes=None):
        self._check_params()
        fresh = not hasattr(self, "network_") or not (incremental or self.warm_start)
        X, y = self._validate_input(X, y, reset=fresh)
        check_classification_targets(y)
        sw = self._check_sample_weight(sample_weight, len(y))
        y_idx = self._encode_labels(y, sw, fresh, incremental, classes)

        if fresh:
            self._rng = self._new_rng()
            self._arch = self._architecture(self.input_shape_, len(self.classes_))
            self.network_ = Network.from_architecture(self._arch, self._rng, X.dtype)
            self._set_input_scaling(X, sw)
        if fresh or not hasattr(self, "_trainer"):  # also after load_params
            if not hasattr(self, "_rng"):
                self._rng = self._new_rng()
            optimizer = make_optimizer(
                self.solver,
                self.learning_rate_init,
                momentum=self.momentum,
                beta_1=self.beta_1,
                beta_2=self.beta_2,
                epsilon=self.epsilon,
                weight_decay=self.alpha,
                decoupled_weight_decay=self.weight_decay,
            )
            self._trainer = Trainer(self.network_, optimizer, batch_size=1)
            if not fresh:  # a loaded network: its history goes on
                self._trainer.n_iter = self.n_iter_
                self._trainer.loss_curve = list(self.loss_curve_)
        trainer = self._configure_trainer(len(y), incremental)

        validation = None
        if self.early_stopping and not incremental:
            X, y_idx, sw, validation = self._split_validation(X, y_idx, sw)
        trainer.fit(
            X, y_idx, sw, self._rng, 1 if incremental else self.max_iter, validation=validation
        )
        trainer.drop_best_state()

        self.n_iter_ = trainer.n_iter
        self.t_ = trainer.t
        self.loss_curve_ = list(trainer.loss_curve)
        early = self.early_stopping and not incremental
        self.validation_scores_ = list(trainer.validation_scores) if early else None
        self.best_validation_score_ = trainer.best_validation_score if early else None
        self.best_loss_ = None if early else trainer.best_loss

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

    def _configure_trainer(self, n_samples, incremental):
        trainer = self._trainer
        batch = AUTO_BATCH if self.batch_size == "auto" else self.batch_size
        trainer.batch_size = min(batch, n_samples)
        trainer.shuffle = self.shuffle
        trainer.tol = self.tol
        trainer.n_iter_no_change = self.n_iter_no_change
        trainer.early_stopping = self.early_stopping and not incremental
        trainer.learning_rate = "constant" if incremental else self.learning_rate
        trainer.augment = None if self.augment is None else Augmenter(self.augment)
        trainer.verbose = self.verbose
        if self.learning_rate != "adaptive" or not incremental:
            trainer.lr_init = trainer.optimizer.lr = self.learning_rate_init
        return trainer

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
        architecture; :meth:`load_params` restores a model that predicts
        identically. Unlike ``joblib.dump`` it holds no optimizer state and
        can be loaded from an untrusted source: loading never runs code.

        Parameters
        ----------
        path : str or path-like
        metadata : dict, optional
            JSON-serialisable notes to keep in the file (e.g. the data set);
            read them back with ``skcnn.persistence.load_network(path)[3]["metadata"]``.
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
        if metadata is not None:
            extra["metadata"] = metadata
        save_network(path, self.network_, self._arch, self.classes_, extra)

    @classmethod
    def from_params_file(cls, path, **params):
        """A new estimator with the architecture stored in ``path``, loaded.

        ``params`` set any other parameters (e.g. for further training).
        Use this when you do not know the file's architecture; otherwise
        ``CNNClassifier(...).load_params(path)``.
        """
        loaded = load_network(path)
        arch = loaded[1]
        fields = {
            name: getattr(arch, name)
            for name in ("conv_filters", "kernel_size", "hidden_layer_sizes", "batch_norm", "dropout")
        }
        estimator = cls(**{**fields, **params})
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

    def _adopt(self, path, network, arch, classes, extra):
        """Take a network read from a parameter file, if it matches the parameters."""
        self._check_params()
        wanted = self._architecture(arch.input_shape, arch.n_classes)
        if self.input_shape is not None:
            wanted = replace(wanted, input_shape=self._resolve_input_shape(
                int(np.prod(self.input_shape)), None))  # fmt: skip
        if wanted != arch:
            raise ParameterFileError(
                f"{path} holds a network {arch.to_dict()}, but this estimator's parameters "
                f"describe {wanted.to_dict()}. Create the estimator with matching "
                "architecture parameters, e.g. CNNClassifier(architecture=..., conv_filters=...)."
            )
        for name in ("_trainer", "_rng", "feature_names_in_", "data_format_"):
            self.__dict__.pop(name, None)
        self.network_, self._arch = network, arch
        self.classes_ = classes
        self.input_shape_ = tuple(arch.input_shape)
        self.n_features_in_ = int(np.prod(arch.input_shape))
        if "feature_names_in" in extra:
            self.feature_names_in_ = np.asarray(extra["feature_names_in"], dtype=object)
        if extra.get("data_format") in ("channels_first", "channels_last"):
            self.data_format_ = extra["data_format"]
        self.n_iter_ = int(extra.get("n_iter", 0))
        self.t_ = 0
        self.loss_curve_ = list(extra.get("loss_curve", []))
        self.best_loss_ = min(self.loss_curve_) if self.loss_curve_ else None
        self.validation_scores_ = self.best_validation_score_ = None

    # -- prediction --------------------------------------------------------------

    def _scores(self, X):
        check_is_fitted(self)
        return self.network_.predict_scores(self._validate_input(X, reset=False))

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
        return softmax(self._scores(X))

    def predict_log_proba(self, X):
        """Logarithm of :meth:`predict_proba`, computed without underflow."""
        return log_softmax(self._scores(X))

    def predict(self, X):
        """Most probable class of each sample.

        Returns
        -------
        y : ndarray of shape (n_samples,)
        """
        scores = self._scores(X)
        return self.classes_[scores.argmax(axis=1)]
