"""The ``skcnn`` command: train, evaluate, predict.

    skcnn train                     # MNIST (falls back to digits offline)
    skcnn train --dataset fashion-mnist --epochs 10 --augment shift+flip
    skcnn train --idx DIR --n-train 6000 --out runs/today/model.npz
    skcnn evaluate runs/today/model.npz
    skcnn predict model.npz my_digit.png
    skcnn train --images pictures/ --epochs 20    # one subfolder per class
    skcnn predict model.npz a.jpg b.png --top 3

A trained model is never lost. Flags are checked as they are parsed (the
error names the flag), and every output path before any data is read
(missing folders are created). Files are written under a temporary name and
renamed into place; should saving still fail (a full disk, a folder removed
meanwhile), the file goes to a fallback folder and the command says where.

``skcnn train`` records in the parameter file where the data came from and
what the classes are called, so ``evaluate`` and ``predict`` need no flags
to use them (see :func:`load_model`).
"""

import argparse
import contextlib
import math
import os
import sys
import tempfile
import time
import warnings
import zipfile
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

import numpy as np

from . import datasets
from .augmentation import AUGMENTATIONS, Augmenter
from .images import FRAMINGS, prepare_image
from .network import PRESETS
from .optimizers import SOLVERS
from .parallel import n_threads
from .persistence import ParameterFileError, load_network
from .trainer import LEARNING_RATES

__all__ = ["main", "prepare_image", "load_model", "class_names"]

#: Trained on when neither --dataset nor --idx is given (with the digits as offline fallback).
DEFAULT_DATASET = "mnist"
OFFLINE_FALLBACK = "digits"


# -- the model file -------------------------------------------------------------


def load_model(path):
    """The model in a parameter file, and the notes ``skcnn train`` kept in it.

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    model : CNNClassifier
    metadata : dict
        What ``save_params(metadata=...)`` recorded; ``{}`` if nothing. For
        ``skcnn train``: "dataset" (a name in ``skcnn.datasets.DATASETS``,
        or None for IDX files of unknown origin), "idx" (absolute folder of
        the IDX files, when trained on them), "images" (absolute folder of
        the pictures, for ``--images``), "data_home" (when given), "n_train"
        (training images used), "class_names" (one str per
        ``model.classes_``, in that order) and "framing" (how the training
        images were made, see ``skcnn.images.FRAMINGS``; how ``skcnn
        predict`` prepares pictures).

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    skcnn.ParameterFileError (a ValueError)
        The file is not an skcnn parameter file, or a corrupt one; the
        message says which in plain words.
    """
    from . import CNNClassifier

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: " + ("is a folder" if path.is_dir() else "no such file"))
    written_by = "(skcnn train and CNNClassifier.save_params write those)"
    if not zipfile.is_zipfile(path):  # np.load would offer to unpickle it
        raise ParameterFileError(f"{path} is not an skcnn parameter file {written_by}")
    with np.load(path, allow_pickle=False) as archive:
        ours = "__meta__" in archive.files
    if not ours:
        raise ParameterFileError(
            f"{path} is not an skcnn parameter file: a .npz archive without skcnn's "
            f"description of a network {written_by}"
        )
    model = CNNClassifier.from_params_file(path)
    metadata = load_network(path).extra.get("metadata")
    return model, metadata if isinstance(metadata, dict) else {}


def class_names(model, metadata):
    """What each of ``model.classes_`` stands for, in that order, as str.

    The names recorded in the file (``metadata["class_names"]``), else
    those of the recorded data set, else the labels themselves.
    """
    classes = model.classes_.tolist()
    names = metadata.get("class_names")
    if isinstance(names, list) and len(names) == len(classes):
        return [str(name) for name in names]
    entry = datasets.DATASETS.get(metadata.get("dataset"))
    if entry is not None and all(isinstance(c, int) and 0 <= c < len(entry.class_names) for c in classes):
        return [entry.class_names[c] for c in classes]
    return [str(c) for c in classes]


# -- output files -----------------------------------------------------------------


def _check_output(parser, flag, path):
    """Refuse an output path that cannot be written, before any work is done;
    create its folder when missing."""
    path = Path(path)
    if path.is_dir():
        parser.error(f"argument {flag}: {path} is a folder; give a file name in it")
    folder = path.parent
    existing = next((p for p in (folder, *folder.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        parser.error(f"argument {flag}: cannot write {path}: {existing} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".{path.name}.{os.getpid()}.probe"
        probe.open("xb").close()  # the only sure test that a file can be made there
        probe.unlink()
    except OSError as exc:
        parser.error(f"argument {flag}: cannot write {path} ({exc.strerror or exc})")
    return path


def _check_picture_format(parser, flag, path):
    from matplotlib.backend_bases import FigureCanvasBase

    formats = FigureCanvasBase.get_supported_filetypes()
    suffix = path.suffix[1:].lower()
    if suffix and suffix not in formats:
        parser.error(
            f"argument {flag}: matplotlib cannot write .{suffix} pictures; "
            f"use one of {', '.join('.' + f for f in sorted(formats))}"
        )


def _write_file(path, write):
    """``write(name)`` under a temporary name beside ``path``, then rename it to
    ``path`` (atomic: a reader never sees half a file, an old file survives a
    failed write)."""
    temporary = path.with_name(f".{path.stem}.{os.getpid()}.part{path.suffix}")
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise


def _fallbacks(path):
    name = f"{path.stem}-{datetime.now():%Y%m%d-%H%M%S}{path.suffix}"
    for folder in (Path.cwd(), Path.home(), Path(tempfile.gettempdir())):
        if not (folder / name).exists():
            yield folder / name


def _save(path, write, what, warn):
    """Write ``what`` to ``path`` with ``write(name)``; when that fails, to a
    fallback (the working folder, home, the temporary folder), saying where.

    Returns the path written. Raises OSError only when every place failed.
    """
    try:
        _write_file(path, write)
        return path
    except OSError as exc:
        error = exc
    for fallback in _fallbacks(path):
        try:
            _write_file(fallback, write)
        except OSError:
            continue
        warn(f"could not write {what} to {path} ({error.strerror or error}); saved it to {fallback} instead")
        return fallback
    raise OSError(f"could not write {what} to {path} ({error}), nor to any fallback folder") from error


def _save_figure(fig, path, what, warn):
    import matplotlib.pyplot as plt

    fmt = path.suffix[1:].lower() or "png"
    try:
        return _save(path, lambda name: fig.savefig(name, dpi=100, format=fmt), what, warn)
    finally:
        plt.close(fig)  # the command is done with it (main() may run many times in one process)


# -- data ---------------------------------------------------------------------------


class _Data(NamedTuple):
    X_train: np.ndarray
    X_test: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray
    title: str  # for messages, e.g. "Fashion-MNIST (IDX files in /data/fashion)"
    short: str  # for pictures, e.g. "Fashion-MNIST"
    entry: object  # its datasets.Dataset, or None (IDX files of unknown origin)
    source: dict  # recorded in the parameter file: how to load the same data again
    framing: str = None  # how its images were made (skcnn.images.FRAMINGS), None if unknown


def _dataset_in(folder):
    """The registered data set known to live in ``folder`` as IDX files, if any."""
    for name, entry in datasets.DATASETS.items():
        if entry.local_dir is not None and Path(entry.local_dir).resolve() == folder:
            return name
    return None


def _load_image_folder(path, say):
    """A picture folder split into training and held-out test images (a fifth,
    stratified, always the same); the labels are the class folders' names."""
    from sklearn.model_selection import train_test_split

    bunch = datasets.load_image_folder(path)
    y = np.asarray(bunch.target_names)[bunch.target]
    c, h, w = bunch.data.shape[1:]
    say(f"Read {_count(len(y), 'picture')} of {len(bunch.target_names)} classes from {path} "
        f"({', '.join(bunch.target_names)}) as {'RGB' if c == 3 else 'grey'} {h}x{w} images")  # fmt: skip
    counts = np.bincount(bunch.target)
    if counts.min() < 2:
        raise ValueError(
            f"{path}: class {bunch.target_names[counts.argmin()]!r} has {counts.min()} picture; "
            "every class needs at least 2 (one to train on, one to test)"
        )
    n_test = max(len(counts), round(0.2 * len(y)))
    split = train_test_split(bunch.data, y, test_size=n_test, stratify=y, random_state=0)
    return split, bunch.framing


def _load_data(name, idx, data_home, say, fallback, images=None):
    """Images (N, C, H, W) of the registered data set ``name`` (None: the
    default, or the one known to live in ``idx``), of the IDX files in
    ``idx``, or of the picture folder ``images``. With ``fallback``, an
    unreachable data set is replaced by the bundled digits (saying so)."""
    if images is not None:
        images = Path(images).resolve()
        split, framing = _load_image_folder(images, say)
        source = {"images": str(images)}
        return _Data(*split, f"the pictures in {images}", images.name, None, source, framing)
    source = {"data_home": str(Path(data_home).resolve())} if data_home else {}
    if idx is not None:
        idx = Path(idx).resolve()
        name = name or _dataset_in(idx)
        data = datasets.load_idx_dataset(idx, shape="images")
        entry = datasets.DATASETS.get(name)
        title = f"{entry.title} (IDX files in {idx})" if entry else f"the IDX files in {idx}"
        short = entry.title if entry else idx.name
        source.update(dataset=name, idx=str(idx))
    else:
        name = name or DEFAULT_DATASET
        entry = datasets.DATASETS[name]
        try:
            data = entry.load(data_home, "images")
        except datasets.DatasetUnavailableError as exc:
            if not fallback:
                raise
            name, entry = OFFLINE_FALLBACK, datasets.DATASETS[OFFLINE_FALLBACK]
            say(f"{_unavailable(exc)}\n==> No network and no cache: training on {entry.title} instead "
                "(always available offline).")  # fmt: skip
            data = entry.load(data_home, "images")
        title = short = entry.title
        source.update(dataset=name)
    shape = data[0].shape[1:]
    if entry is not None and shape != tuple(entry.image_shape):
        raise ValueError(
            f"{title} holds images of shape {shape}, but {entry.title}'s are "
            f"{tuple(entry.image_shape)}: is it the right folder?"
        )
    return _Data(*data, title, short, entry, source, entry.framing if entry is not None else None)


def _unavailable(exc):
    """An error's message; for a data set that could not be downloaded, in
    the command line's terms (its flags, not the library's arguments)."""
    if not isinstance(exc, datasets.DatasetUnavailableError) or exc.dataset is None:
        return str(exc)
    return exc.advice(
        "or give --data-home DIR (a folder that holds the OpenML cache) or --idx DIR (a folder "
        "of the original IDX files)."
    )


# -- the commands ---------------------------------------------------------------------


def _describe_network(name):
    """'conv 16-32, dense 100' for the preset ``name``, from its fields."""
    preset = PRESETS[name]
    convs = "-".join(str(f) for block in preset["conv_filters"] for f in np.atleast_1d(block))
    parts = [f"residual blocks {convs}, global average pooling" if preset.get("residual") else f"conv {convs}"]
    if preset["hidden_layer_sizes"]:
        parts.append("dense " + "-".join(map(str, preset["hidden_layer_sizes"])))
    if preset["batch_norm"]:
        parts.append("batch norm")
    if preset["dropout"]:
        parts.append(f"dropout {preset['dropout']}")
    return ", ".join(parts)


def _count(n, noun):
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


#: What ``skcnn train`` trains with when neither --recipe nor the flag sets it:
#: CNNClassifier's own defaults (the origin project's training), restated here
#: because the parser's help names them and must not import scikit-learn
#: (tests/test_cli.py checks that they equal the estimator's).
TRAIN_DEFAULTS = dict(
    architecture="origin", solver="adam", learning_rate_init=1e-3, learning_rate="constant", augment=None
)


#: The data set each recipe of CNNClassifier.from_recipe was measured on:
#: ``skcnn train --recipe NAME`` trains on it unless --dataset, --idx or
#: --images says otherwise (a recipe is estimator parameters, not data; the
#: command is where the two meet). Such a data set is asked for, not a
#: default: when it cannot be loaded the command stops instead of falling
#: back to the bundled digits.
RECIPE_DATASETS = {"fashion-best": "fashion-mnist"}


def _training_settings(args):
    """The estimator parameters that ``skcnn train``'s flags ask for: the
    command's defaults, then --recipe's parameters, then the flags given."""
    from .estimator import RECIPES

    settings = dict(TRAIN_DEFAULTS)
    if args.recipe is not None:
        settings.update(RECIPES[args.recipe])
    given = dict(architecture=args.architecture, solver=args.solver, learning_rate_init=args.lr,
                 learning_rate=args.schedule, augment=args.augment)  # fmt: skip
    settings.update({name: value for name, value in given.items() if value is not None})
    if settings["augment"] == "none":
        settings["augment"] = None
    return settings


def cmd_train(args, say, warn):
    from . import CNNClassifier
    from .plotting import plot_predictions

    dataset = args.dataset
    if args.recipe is not None and dataset is None and args.idx is None and args.images is None:
        dataset = RECIPE_DATASETS.get(args.recipe)
        if dataset is not None:
            say(f"Recipe {args.recipe} was measured on {datasets.DATASETS[dataset].title}: training on it "
                "(--dataset, --idx or --images chooses other data).")  # fmt: skip
    data = _load_data(dataset, args.idx, args.data_home, say, images=args.images,
                      fallback=dataset is None and args.idx is None)  # fmt: skip
    X_train, y_train = data.X_train[: args.n_train], data.y_train[: args.n_train]
    settings = _training_settings(args)
    recipe_epochs = settings.pop("max_iter", None)
    if args.minutes is not None:  # the minutes end training; --epochs, when given, still caps it
        epochs = args.epochs or EPOCHS_UNDER_MINUTES
    else:
        epochs = args.epochs or recipe_epochs or (data.entry.default_epochs if data.entry else 5)
    used = _count(len(data.X_train), "training image")
    if args.n_train is not None and args.n_train < len(data.X_train):
        used = f"the first {args.n_train:,} of {used}"
    elif args.n_train is not None:
        used = f"all {used} (--n-train asked for {args.n_train:,})"
    h, w = X_train.shape[2:]
    network = f"{settings['architecture']} network ({_describe_network(settings['architecture'])})"
    batches = (f"batches of {args.batch_size}" if args.batch_size <= len(X_train)
               else f"each step on all {len(X_train):,} images (fewer than --batch-size {args.batch_size})")  # fmt: skip
    say(f"Training the {network} on {data.title}: {used} ({h}x{w}), "
        f"{_count(len(data.X_test), 'test image')}; {_length(args.minutes, args.epochs, epochs)} of {settings['solver']} "
        f"at {settings['learning_rate_init']:g}, {batches}. The model will go to {args.out}"
        + (f", test predictions to {args.picture}." if args.picture else "."))  # fmt: skip
    if args.recipe is not None:
        say(f"Recipe {args.recipe} (CNNClassifier.from_recipe), with the flags given beside it: "
            + ", ".join(f"{name}={value!r}" for name, value in settings.items()))  # fmt: skip
    clf = CNNClassifier(
        **settings,
        batch_size=min(args.batch_size, len(X_train)),  # a small --n-train: all of it per step
        max_iter=epochs,
        max_time=None if args.minutes is None else args.minutes * 60,
        random_state=args.random_state,
        verbose=0 if args.quiet else 2,
        # train the epochs asked for; "adaptive" lowers the rate after two epochs without progress
        n_iter_no_change=1 if settings["learning_rate"] == "adaptive" else epochs,
    )
    start = time.perf_counter()
    with warnings.catch_warnings():
        # the command trains the epochs asked for: running them all is no news
        warnings.filterwarnings("ignore", message=r"max_iter=\d+ epochs ran out")
        warnings.filterwarnings("ignore", message=r"max_time=\S+ s ran out")
        clf.fit(X_train, y_train)
    seconds = time.perf_counter() - start
    accuracy = clf.score(data.X_test, data.y_test)
    partial = ""
    if clf.t_ < clf.n_iter_ * len(X_train):
        partial = " (the last one cut short by --minutes)" if clf.n_iter_ > 1 else " (cut short by --minutes)"
    say(f"Test accuracy on {data.title}: {accuracy:.4f} after {_count(clf.n_iter_, 'epoch')}{partial} "
        f"in {seconds:.1f} s")  # fmt: skip
    names = class_names(clf, {"dataset": data.source.get("dataset")})
    metadata = {**data.source, "n_train": len(X_train), "class_names": names}
    # how it was trained: a loaded model restores its network and test-time settings, not these
    metadata["params"] = clf.get_params()
    if args.recipe is not None:
        metadata["recipe"] = args.recipe
    if data.framing is not None:  # how skcnn predict prepares pictures for this model
        metadata["framing"] = data.framing
    out = _save(args.out, lambda name: clf.save_params(name, metadata=metadata), "the model", warn)
    say(f"Saved the model to {out} (skcnn evaluate {out}; CNNClassifier.from_params_file)")
    moved = out != args.out
    if args.picture:
        import matplotlib

        matplotlib.use("Agg")
        fig = plot_predictions(clf, data.X_test, data.y_test, n=10, class_names=names)
        fig.suptitle(f"{data.short}: test accuracy {accuracy:.2%}")
        fig.tight_layout(rect=(0, 0, 1, 0.94))
        picture = _save_figure(fig, args.picture, "the picture", warn)
        say(f"Saved 10 test predictions to {picture}")
        moved = moved or picture != args.picture
    return 1 if moved else 0


def cmd_evaluate(args, say, warn):
    from sklearn.metrics import classification_report

    from .plotting import plot_confusion_matrix

    model, metadata = load_model(args.model)
    name, idx, data_home, images = args.dataset, args.idx, args.data_home, None
    if name is None and idx is None and metadata.get("images") is not None:  # skcnn train --images
        images = metadata["images"]
        if not Path(images).is_dir():
            raise FileNotFoundError(
                f"{args.model} was trained on the pictures in {images}, which is gone; "
                "pass --idx DIR or --dataset NAME"
            )
    elif name is None and idx is None:  # the data the file records
        idx = metadata.get("idx")
        if idx is not None and not Path(idx).is_dir():
            raise FileNotFoundError(
                f"{args.model} was trained on the IDX files in {idx}, which is gone; "
                "pass --idx DIR or --dataset NAME"
            )
        name = metadata.get("dataset")
        if name not in datasets.DATASETS:
            name = _dataset_in(Path(idx)) if idx else _dataset_shaped(model.input_shape_)
        data_home = data_home or metadata.get("data_home")
    data = _load_data(name, idx, data_home, say, fallback=False, images=images)
    if data.X_test.shape[1:] != model.input_shape_:
        raise ValueError(
            f"{args.model} takes images of shape {model.input_shape_}, but {data.title} holds "
            f"{data.X_test.shape[1:]}; choose the data with --dataset or --idx"
        )
    names = class_names(model, metadata)
    pred = model.predict(data.X_test)
    accuracy = float(np.mean(pred == data.y_test))
    say(f"Test accuracy on {data.title}: {accuracy:.4f} ({_count(len(data.y_test), 'image')})")
    say(classification_report(data.y_test, pred, labels=model.classes_, target_names=names,
                              digits=4, zero_division=0))  # fmt: skip
    if args.picture:
        import matplotlib

        matplotlib.use("Agg")
        title = f"{Path(args.model).name}\n{accuracy:.2%} of {len(pred):,} {data.short} test images right"
        ax = plot_confusion_matrix(model, data.X_test, data.y_test, class_names=names, title=title)
        ax.figure.tight_layout()
        picture = _save_figure(ax.figure, args.picture, "the confusion matrix", warn)
        say(f"Saved the confusion matrix to {picture}")
        return 0 if picture == args.picture else 1
    return 0


def _dataset_shaped(input_shape):
    """For files without a record: the first data set whose images fit the model."""
    return next((n for n, e in datasets.DATASETS.items() if tuple(e.image_shape) == input_shape), None)


def _framing_for(path, model, metadata, note):
    """How pictures are prepared for a model: as its parameter file records,
    else as its recorded data set's images were made, else by its shape."""
    framing = metadata.get("framing")
    if framing not in FRAMINGS:
        entry = datasets.DATASETS.get(metadata.get("dataset"))
        framing = entry.framing if entry is not None else None
    c, h, w = model.input_shape_
    if framing is None:
        framing = "whole" if c > 1 else "fill" if max(h, w) <= 8 else "mnist"
        note(f"{path} does not say how its training images were made; pictures are "
             f"prepared as: {FRAMINGS[framing]}")  # fmt: skip
    if framing != "whole" and min(h, w) < 16:
        note(
            f"this model reads {h}x{w}-pixel images (such as scikit-learn's 8x8 digits): a "
            f"picture shrunk to {h}x{w} keeps only the rough shape of a drawing, so expect "
            "more mistakes than on its test set. A model trained on 28x28 MNIST reads drawings "
            "better."
        )
    return framing


def cmd_predict(args, say, warn):
    model, metadata = load_model(args.model)
    if not hasattr(model, "data_format_"):  # a file from before data_format_: channels-first
        model.set_params(data_format="channels_first")
    names = class_names(model, metadata)
    c, h, w = model.input_shape_
    if c not in (1, 3):
        raise ValueError(
            f"{args.model}: skcnn predict reads grey or RGB models; this one has {c} channels"
        )

    def note(message):
        print(f"skcnn predict: note: {message}", file=sys.stderr, flush=True)

    framing = _framing_for(args.model, model, metadata, note)
    color = "rgb" if c == 3 else "gray"
    prepared, failed = [], []
    for path in args.images:
        try:
            prepared.append((path, prepare_image(path, (h, w), framing=framing, color=color)))
        except Exception as exc:  # Pillow raises many kinds for broken or foreign files
            message = str(exc) if str(exc).startswith(str(path)) else f"{path}: {exc}"
            print(f"skcnn predict: error: {message}", file=sys.stderr, flush=True)
            failed.append(path)
    if prepared:
        X = np.stack([image for _, image in prepared]).reshape(-1, c, h, w)
        if getattr(model, "data_format_", None) == "channels_last":  # fitted on (n, H, W, C)
            X = X.transpose(0, 2, 3, 1)
        proba = model.predict_proba(X)
        top = min(args.top, len(model.classes_))
        for (path, _), p in zip(prepared, proba):
            best = np.argsort(-p, kind="stable")[:top]
            ranked = ", ".join(f"class {names[i]} (probability {p[i]:.3f})" for i in best)
            say(f"{path}: {ranked}")
    if failed:
        print(f"skcnn predict: {len(failed)} of {len(args.images)} pictures could not be read",
              file=sys.stderr, flush=True)  # fmt: skip
        return 1
    return 0


# -- flags ----------------------------------------------------------------------------


def _whole_number(low, high=None, what=None):
    """An argparse type: an int in [low, high] (no upper bound if None)."""
    what = what or f"at least {low}"

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {what}, got {value}")
        return value

    return parse


_positive_int = _whole_number(1)
_seed = _whole_number(0, 2**32 - 1, "between 0 and 2**32 - 1")


#: max_iter under --minutes without --epochs (and benchmarks/accuracy.py's
#: --minutes): a cap that the minutes end first on any data set worth timing
#: (26-29 passes of the deep preset over Fashion-MNIST fit in 30 minutes on
#: two cores).
EPOCHS_UNDER_MINUTES = 1000


def _length(minutes, asked_epochs, epochs):
    """How long training runs, in the words of the announcement."""
    if minutes is None:
        return _count(epochs, "epoch")
    if asked_epochs is None:
        return f"up to {minutes:g} minutes"
    return f"up to {minutes:g} minutes or {_count(epochs, 'epoch')}, whichever ends first,"


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _folder(text):
    if not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"no such folder: {text}")
    return text


def _augmentations(text):
    if text == "none":  # kept as given: it switches off a recipe's augmentation
        return text
    try:
        Augmenter(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected names from {', '.join(AUGMENTATIONS)} joined by '+' (e.g. shift+flip), "
            f"or none, got {text!r}"
        ) from None
    return text


def build_parser():
    """The argument parser of the ``skcnn`` command."""
    parser = argparse.ArgumentParser(
        prog="skcnn", description="A CNN image classifier in NumPy: train, evaluate, predict."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{train,evaluate,predict}")
    names = list(datasets.DATASETS)
    epochs = {}
    for name, entry in datasets.DATASETS.items():
        epochs.setdefault(entry.default_epochs, []).append(name)
    default_epochs = "; ".join(f"{n} for {', '.join(which)}" for n, which in epochs.items())

    def data_options(p, home_default, idx_default):
        p.add_argument("--data-home", metavar="DIR",
                       help="scikit-learn's data folder, where OpenML downloads are cached "
                       f"(default: {home_default})")  # fmt: skip
        p.add_argument("--idx", metavar="DIR", type=_folder,
                       help="read the data from the four IDX files in DIR (train-images-idx3-ubyte, "
                       f"...) instead of downloading it (default: {idx_default})")  # fmt: skip

    train = sub.add_parser(
        "train", help="train a model and save its parameters",
        description="Train a CNN and save its parameters (and a picture of test predictions).",
    )  # fmt: skip
    train.add_argument("--dataset", choices=names, default=None,
                       help=f"data set (default: {DEFAULT_DATASET}; {OFFLINE_FALLBACK} when that "
                       "cannot be downloaded). With --idx: the data set the files hold, for its "
                       "class names")  # fmt: skip
    data_options(train, "~/scikit_learn_data", "none")
    train.add_argument("--images", metavar="DIR", type=_folder,
                       help="train on the pictures in DIR, one subfolder per class named after it "
                       "(a fifth held out for testing); not with --dataset or --idx")  # fmt: skip
    train.add_argument("--epochs", type=_positive_int, metavar="N",
                       help=f"passes over the training images (default: {default_epochs}; with --recipe, the "
                       "recipe's; with --minutes, "
                       f"up to {EPOCHS_UNDER_MINUTES}, which the minutes end first)")
    train.add_argument("--minutes", type=_positive_float, metavar="M",
                       help="train for at most M minutes of wall time: training stops after the batch "
                       "during which they run out, and --schedule cosine decays to 0 as they do; "
                       "--epochs, if given, still caps the passes (default: no time limit)")  # fmt: skip
    train.add_argument("--n-train", type=_positive_int, metavar="N",
                       help="train on the first N training images only (default: all)")
    train.add_argument("--recipe", metavar="NAME",
                       help="train with a recipe of CNNClassifier.from_recipe (its docstring lists "
                       "them), e.g. fashion-best: its network, optimizer, schedule, augmentation, "
                       "epochs and test-time settings; --architecture, "
                       "--solver, --lr, --schedule, --augment and --epochs given beside it override "
                       "its own; it trains on the data set it was measured on ("
                       + ", ".join(f"{r}: {d}" for r, d in RECIPE_DATASETS.items())
                       + ") unless --dataset, --idx or --images is given (default: none)")  # fmt: skip
    defaults = TRAIN_DEFAULTS  # None below: not given, so --recipe or these decide
    train.add_argument("--architecture", choices=list(PRESETS), default=None,
                       help="network: " + "; ".join(f"{n} = {_describe_network(n)}" for n in PRESETS)
                       + f" (default: {defaults['architecture']})")  # fmt: skip
    train.add_argument("--solver", choices=sorted(SOLVERS), default=None,
                       help=f"optimizer (default: {defaults['solver']})")
    train.add_argument("--lr", type=_positive_float, default=None, metavar="RATE",
                       help=f"initial learning rate (default: {defaults['learning_rate_init']})")
    train.add_argument("--schedule", choices=LEARNING_RATES, default=None,
                       help="learning rate over time: constant; adaptive (divided by 5 after two "
                       "epochs without progress, training stops when it would fall below 1e-6); "
                       f"cosine (decayed to 0 along a half cosine) (default: {defaults['learning_rate']})")  # fmt: skip
    train.add_argument("--batch-size", type=_positive_int, default=100, metavar="N",
                       help="images per training step (default: %(default)s)")
    train.add_argument("--augment", type=_augmentations, metavar="NAMES",
                       help="random changes to training images: names from "
                       f"{', '.join(AUGMENTATIONS)} joined by '+', e.g. shift+flip, or none (default: "
                       "none; with --recipe, the recipe's)")
    train.add_argument("--random-state", type=_seed, default=0, metavar="SEED",
                       help="seed of the initial weights and the shuffling (default: %(default)s)")
    train.add_argument("--out", default="model.npz", metavar="FILE",
                       help="parameter file to write; a missing folder is created "
                       "(default: %(default)s)")  # fmt: skip
    train.add_argument("--picture", default=None, metavar="FILE",
                       help="picture of 10 test predictions to write, '' for none "
                       "(default: predictions.png beside --out)")  # fmt: skip
    train.add_argument("-q", "--quiet", action="store_true",
                       help="no progress bar and no line per epoch")
    train.set_defaults(func=cmd_train, parser=train)

    evaluate = sub.add_parser(
        "evaluate", help="accuracy, per-class report, confusion matrix",
        description="Score a parameter file on a test set: accuracy, a per-class report and "
        "a picture of the confusion matrix.",
    )  # fmt: skip
    evaluate.add_argument("model", help="parameter file written by skcnn train")
    evaluate.add_argument("--dataset", choices=names, default=None,
                          help="data set (default: the one the model file records)")
    data_options(evaluate, "as the model file records", "as the model file records")
    evaluate.add_argument("--picture", default=None, metavar="FILE",
                          help="confusion matrix picture to write, '' for none "
                          "(default: confusion_matrix.png beside the model file)")  # fmt: skip
    evaluate.set_defaults(func=cmd_evaluate, parser=evaluate)

    predict = sub.add_parser(
        "predict", help="classify pictures (PNG, JPEG, ...): drawings of digits, photos",
        description="Prints one line per picture. Pictures are prepared the way the model's "
        "training images were made (the parameter file records it). Exit status 1 when a "
        "picture could not be read (the others are still classified), 2 on other errors.",
    )  # fmt: skip
    predict.add_argument("model", help="parameter file written by skcnn train")
    predict.add_argument("images", nargs="+", help="picture files")
    predict.add_argument("--top", type=_positive_int, default=1, metavar="K",
                         help="print the K most probable classes (default: %(default)s)")
    predict.set_defaults(func=cmd_predict, parser=predict)
    return parser


def _check_outputs(args):
    """Output flags as paths, each checked (and its folder made) before any work."""
    if getattr(args, "picture", "") is None:  # the picture goes beside the model
        model = Path(args.out if args.func is cmd_train else args.model)
        name = "predictions.png" if args.func is cmd_train else "confusion_matrix.png"
        args.picture = str(model.parent / name)
    for flag in ("--out", "--picture"):
        dest = flag[2:]
        if getattr(args, dest, None):
            path = _check_output(args.parser, flag, getattr(args, dest))
            if dest == "picture":
                _check_picture_format(args.parser, flag, path)
                if path.resolve() == Path(getattr(args, "out", "") or "").resolve():
                    args.parser.error("argument --picture: the same file as --out")
            setattr(args, dest, path)


def main(argv=None):
    """Run the ``skcnn`` command with ``argv`` (default: ``sys.argv[1:]``).

    Returns the exit status: 0 done, 1 done but a file went to a fallback
    place (it says where), 2 an error (bad files, unreachable data sets).
    Bad flags exit at once through argparse (status 2), naming the flag.
    """
    args = build_parser().parse_args(argv)
    if args.func is cmd_train and args.images and (args.dataset or args.idx):
        args.parser.error("argument --images: not allowed with --dataset or --idx")
    if args.func is cmd_train and args.recipe is not None:
        from .estimator import RECIPES  # here, not in the parser: scikit-learn takes seconds to import

        if args.recipe not in RECIPES:
            known = ", ".join(map(repr, RECIPES))
            args.parser.error(f"argument --recipe: invalid choice: {args.recipe!r} (choose from {known})")
    _check_outputs(args)
    try:
        n_threads()  # a bad SKCNN_NUM_THREADS stops the command before any work, like a bad flag
    except ValueError as exc:
        args.parser.error(str(exc))

    def say(message):
        print(message, flush=True)

    def warn(message):
        print(f"skcnn {args.command}: warning: {message}", file=sys.stderr, flush=True)

    def show_warning(message, category, filename, lineno, file=None, line=None):
        warn(str(message))  # in the command's words, not Python's source lines

    try:
        with warnings.catch_warnings():
            warnings.showwarning = show_warning
            return args.func(args, say, warn)
    except (ValueError, OSError) as exc:  # bad files, unreachable data sets
        print(f"skcnn {args.command}: error: {_unavailable(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
