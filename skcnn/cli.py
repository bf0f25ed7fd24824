"""The ``skcnn`` command: train, evaluate, predict.

    skcnn train                     # MNIST (falls back to digits offline)
    skcnn train --dataset fashion-mnist --epochs 10 --augment shift+flip
    skcnn evaluate model.npz
    skcnn predict model.npz my_digit.png
    skcnn train --images pictures/ --epochs 20    # one subfolder per class
    skcnn predict model.npz a.jpg b.png --top 3
"""

import argparse
import sys
import time

import numpy as np

from . import datasets
from .images import FRAMINGS, prepare_image

__all__ = ["main", "prepare_image"]

DATASETS = ("mnist", "fashion-mnist", "digits")


def _load(name, data_home, idx_dir, n_train, say, fallback=True, images=None):
    """Returns (X_train, X_test, y_train, y_test, name actually used).

    With ``fallback``, an unreachable MNIST is replaced by the bundled digits."""
    if images is not None:
        return (*_load_image_folder(images, say), f"the pictures in {images}")
    if idx_dir is not None:
        return (*datasets.load_idx_dataset(idx_dir, shape="images"), f"IDX files in {idx_dir}")
    try:
        if name == "mnist":
            data = datasets.load_mnist(data_home, shape="images")
        elif name == "fashion-mnist":
            data = datasets.load_fashion_mnist(data_home, shape="images")
        else:
            data = datasets.load_digits_images()
    except datasets.DatasetUnavailableError as exc:
        if not fallback:
            raise
        say(f"{exc}\n==> No network and no cache: training on scikit-learn's bundled 8x8 digits "
            "instead (1,797 images, always available offline).")  # fmt: skip
        data, name = datasets.load_digits_images(), "digits"
    X_train, X_test, y_train, y_test = data
    if n_train is not None:
        X_train, y_train = X_train[:n_train], y_train[:n_train]
    return X_train, X_test, y_train, y_test, name


def _load_image_folder(path, say):
    """A picture folder split into training and held-out test images (a fifth,
    stratified); the labels are the class folders' names."""
    from sklearn.model_selection import train_test_split

    bunch = datasets.load_image_folder(path)
    y = np.asarray(bunch.target_names)[bunch.target]
    c, h, w = bunch.data.shape[1:]
    say(f"Read {len(y)} pictures of {len(bunch.target_names)} classes from {path} "
        f"({', '.join(bunch.target_names)}) as {'RGB' if c == 3 else 'grey'} {h}x{w} images")  # fmt: skip
    counts = np.bincount(bunch.target)
    if counts.min() < 2:
        raise ValueError(
            f"{path}: class {bunch.target_names[counts.argmin()]!r} has {counts.min()} picture; "
            "every class needs at least 2 (one to train on, one to test)"
        )
    n_test = max(len(counts), round(0.2 * len(y)))
    return train_test_split(bunch.data, y, test_size=n_test, stratify=y, random_state=0)


def _dataset_for(path, model):
    """The data set a parameter file was trained on, as ``skcnn train`` recorded it."""
    from .persistence import load_network

    recorded = load_network(path)[3].get("metadata", {}).get("dataset")
    if recorded in DATASETS:
        return recorded
    return "digits" if model.input_shape_[1:] == (8, 8) else "mnist"


def _save_figure(fig, path, say):
    fig.savefig(path, dpi=100)
    say(f"Saved {path}")


def cmd_train(args, say):
    from . import CNNClassifier
    from .plotting import plot_predictions

    X_train, X_test, y_train, y_test, name = _load(
        args.dataset, args.data_home, args.idx, args.n_train, say, images=args.images
    )
    epochs = args.epochs or (30 if name == "digits" else 5)
    say(f"Training on {name}: {len(X_train)} training and {len(X_test)} test images of shape "
        f"{X_train.shape[1:]}, {epochs} epochs")  # fmt: skip
    clf = CNNClassifier(
        architecture=args.architecture,
        solver=args.solver,
        learning_rate_init=args.lr,
        learning_rate=args.schedule,
        batch_size=args.batch_size,
        max_iter=epochs,
        augment=args.augment,
        random_state=args.random_state,
        verbose=0 if args.quiet else 2,
        n_iter_no_change=epochs,  # train the epochs asked for
    )
    start = time.perf_counter()
    clf.fit(X_train, y_train)
    seconds = time.perf_counter() - start
    accuracy = clf.score(X_test, y_test)
    say(f"Test accuracy on {name}: {accuracy:.4f} after {clf.n_iter_} epochs in {seconds:.1f} s")
    framing = datasets.FRAMING.get("image-folder" if args.images else name)
    clf.save_params(args.out, metadata={"dataset": name, "framing": framing})
    say(f"Saved parameters to {args.out} (load with CNNClassifier.from_params_file)")
    if args.picture:
        import matplotlib

        matplotlib.use("Agg")
        fig = plot_predictions(clf, X_test, y_test, n=10)
        fig.suptitle(f"{name}: test accuracy {accuracy:.2%}")
        fig.tight_layout(rect=(0, 0, 1, 0.94))
        _save_figure(fig, args.picture, say)
    return 0


def cmd_evaluate(args, say):
    from sklearn.metrics import classification_report

    from . import CNNClassifier
    from .plotting import plot_confusion_matrix

    model = CNNClassifier.from_params_file(args.model)
    name = args.dataset or _dataset_for(args.model, model)
    _, X_test, _, y_test, name = _load(name, args.data_home, args.idx, None, say, fallback=False)
    pred = model.predict(X_test)
    say(f"Accuracy on the {name} test set: {np.mean(pred == y_test):.4f} ({len(y_test)} images)")
    say(classification_report(y_test, pred, digits=4))
    if args.picture:
        import matplotlib

        matplotlib.use("Agg")
        ax = plot_confusion_matrix(model, X_test, y_test)
        _save_figure(ax.figure, args.picture, say)
    return 0


def _framing_for(path, model, say_note):
    """How pictures are prepared for a model: as its parameter file records,
    else as its recorded data set's images were made, else by its shape."""
    from .persistence import load_network

    metadata = load_network(path)[3].get("metadata", {})
    framing = metadata.get("framing")
    if framing not in FRAMINGS:
        framing = datasets.FRAMING.get(metadata.get("dataset"))
    c, h, w = model.input_shape_
    if framing is None:
        framing = "whole" if c > 1 else "fill" if max(h, w) <= 8 else "mnist"
        say_note(f"{path} does not say how its training images were made; pictures are "
                 f"prepared as: {FRAMINGS[framing]}")  # fmt: skip
    if framing != "whole" and min(h, w) < 16:
        say_note(
            f"this model reads {h}x{w}-pixel images (such as scikit-learn's 8x8 digits): a "
            f"picture shrunk to {h}x{w} keeps only the rough shape of a drawing, so expect "
            "more mistakes than on its test set. A model trained on 28x28 MNIST reads drawings "
            "better."
        )
    return framing


def cmd_predict(args, say):
    from . import CNNClassifier

    model = CNNClassifier.from_params_file(args.model, data_format="channels_first")
    c, h, w = model.input_shape_
    if c not in (1, 3):
        raise ValueError(f"{args.model}: skcnn predict reads grey or RGB models; this one has {c} channels")
    if args.top < 1:
        raise ValueError(f"--top must be at least 1; got {args.top}")

    def note(message):
        print(f"skcnn predict: note: {message}", file=sys.stderr, flush=True)

    framing = _framing_for(args.model, model, note)
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
            ranked = ", ".join(f"class {model.classes_[i]} (probability {p[i]:.3f})" for i in best)
            say(f"{path}: {ranked}")
    if failed:
        print(f"skcnn predict: {len(failed)} of {len(args.images)} pictures could not be read",
              file=sys.stderr, flush=True)  # fmt: skip
        return 1
    return 0


def build_parser():
    parser = argparse.ArgumentParser(
        prog="skcnn", description="A CNN image classifier in NumPy: train, evaluate, predict."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def data_options(p):
        p.add_argument("--data-home", help="scikit-learn data folder (OpenML cache)")
        p.add_argument("--idx", metavar="DIR", help="folder with the four IDX files instead")

    train = sub.add_parser("train", help="train a model and save its parameters")
    train.add_argument("--dataset", choices=DATASETS, default="mnist")
    data_options(train)
    train.add_argument(
        "--images", metavar="DIR", default=None,
        help="train on the pictures in DIR, one subfolder per class (a fifth held out for testing)",
    )  # fmt: skip
    train.add_argument(
        "--epochs", type=int, default=None,
        help="default: 5 (the origin's run), 30 for the small digits set",
    )  # fmt: skip
    train.add_argument("--solver", default="adam")
    train.add_argument("--lr", type=float, default=1e-3, help="initial learning rate")
    train.add_argument("--schedule", default="constant", help="constant, cosine or adaptive")
    train.add_argument("--batch-size", type=int, default=100)
    train.add_argument("--architecture", default="origin", help="origin or deep")
    train.add_argument("--augment", default=None, help="e.g. shift, shift+flip+erase")
    train.add_argument("--n-train", type=int, default=None, help="use only the first N images")
    train.add_argument("--random-state", type=int, default=0)
    train.add_argument("--out", default="model.npz", help="parameter file to write")
    train.add_argument("--picture", default="predictions.png", help="predictions picture ('' for none)")
    train.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    train.set_defaults(func=cmd_train)

    evaluate = sub.add_parser("evaluate", help="accuracy, per-class report, confusion matrix")
    evaluate.add_argument("model")
    evaluate.add_argument("--dataset", choices=DATASETS, default=None)
    data_options(evaluate)
    evaluate.add_argument("--picture", default="confusion_matrix.png")
    evaluate.set_defaults(func=cmd_evaluate)

    predict = sub.add_parser(
        "predict", help="classify pictures (PNG, JPEG, ...): drawings of digits, photos",
        description="Prints one line per picture. Pictures are prepared the way the model's "
        "training images were made (the parameter file records it). Exit status 1 when a "
        "picture could not be read (the others are still classified), 2 on other errors.",
    )  # fmt: skip
    predict.add_argument("model")
    predict.add_argument("images", nargs="+")
    predict.add_argument("--top", type=int, default=1, metavar="K", help="the K most probable classes")
    predict.set_defaults(func=cmd_predict)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)

    def say(message):
        print(message, flush=True)

    try:
        return args.func(args, say)
    except (ValueError, OSError) as exc:  # bad files, unreachable data sets
        print(f"skcnn {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
