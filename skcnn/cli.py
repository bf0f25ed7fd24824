"""The ``skcnn`` command: train, evaluate, predict.

    skcnn train                     # MNIST (falls back to digits offline)
    skcnn train --dataset fashion-mnist --epochs 10 --augment shift+flip
    skcnn evaluate model.npz
    skcnn predict model.npz my_digit.png
"""

import argparse
import sys
import time

import numpy as np

from . import datasets

__all__ = ["main", "prepare_image"]

DATASETS = ("mnist", "fashion-mnist", "digits")


def _load(name, data_home, idx_dir, n_train, say, fallback=True):
    """Returns (X_train, X_test, y_train, y_test, name actually used).

    With ``fallback``, an unreachable MNIST is replaced by the bundled digits."""
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


def _dataset_for(path, model):
    """The data set a parameter file was trained on, as ``skcnn train`` recorded it."""
    from .persistence import load_network

    recorded = load_network(path).extra.get("metadata", {}).get("dataset")
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
        args.dataset, args.data_home, args.idx, args.n_train, say
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
    clf.save_params(args.out, metadata={"dataset": name})
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


def prepare_image(image, shape=(28, 28)):
    """Turn a picture of one digit into an MNIST-style image.

    Grayscale; inverted when the background is light (MNIST is white on
    black); cropped to the ink; scaled so the longer side fills 20/28 of the
    frame; centred by its centre of mass, as MNIST digits were.

    Parameters
    ----------
    image : path of a PNG/JPEG/... file, or an ndarray (H, W) or (H, W, 3|4)
        with values in [0, 1] or [0, 255]
    shape : (H, W) of the result

    Returns
    -------
    ndarray of shape ``shape``, float32 in [0, 1]
    """
    from PIL import Image

    if isinstance(image, np.ndarray):
        arr = image.astype(np.float32)
        arr = arr / 255.0 if arr.max() > 1 else arr
        if arr.ndim == 3:  # RGB(A): luminance, transparent parts as white paper
            alpha = arr[..., 3:4] if arr.shape[2] == 4 else 1.0
            rgb = arr[..., :3] * alpha + (1 - alpha)
            arr = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        gray = arr
    else:
        with Image.open(image) as im:
            im = im.convert("RGBA")
            white = Image.new("RGBA", im.size, (255, 255, 255, 255))
            gray = np.asarray(Image.alpha_composite(white, im).convert("L"), dtype=np.float32) / 255.0
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    if border.mean() > 0.5:  # dark ink on light paper
        gray, border = 1.0 - gray, 1.0 - border
    gray = np.clip(gray - np.median(border), 0, None)  # the background becomes 0
    if gray.max() <= 0:
        raise ValueError(f"{image if not isinstance(image, np.ndarray) else 'the image'}: it is blank")
    gray /= gray.max()
    rows, cols = np.nonzero(gray > 0.1)
    gray = gray[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    h, w = shape
    box = max(1, round(min(h, w) * 20 / 28))
    scale = box / max(gray.shape)
    new_size = (max(1, round(gray.shape[1] * scale)), max(1, round(gray.shape[0] * scale)))
    small = Image.fromarray((gray * 255).astype(np.uint8)).resize(new_size, Image.LANCZOS)
    small = np.asarray(small, dtype=np.float32) / 255.0
    out = np.zeros(shape, dtype=np.float32)
    top, left = (h - small.shape[0]) // 2, (w - small.shape[1]) // 2
    out[top : top + small.shape[0], left : left + small.shape[1]] = small
    # shift the centre of mass to the centre
    ys, xs = np.indices(shape)
    mass = out.sum()
    dy = int(round(h / 2 - 0.5 - (ys * out).sum() / mass))
    dx = int(round(w / 2 - 0.5 - (xs * out).sum() / mass))
    out = np.roll(out, (dy, dx), axis=(0, 1))
    return np.clip(out, 0, 1)


def cmd_predict(args, say):
    from . import CNNClassifier

    model = CNNClassifier.from_params_file(args.model)
    c, h, w = model.input_shape_
    if c != 1:
        raise SystemExit("skcnn predict handles grayscale models (one input channel)")
    images = np.stack([prepare_image(p, (h, w)) for p in args.images])[:, None]
    proba = model.predict_proba(images)
    for path, p in zip(args.images, proba):
        say(f"{path}: class {model.classes_[p.argmax()]} (probability {p.max():.3f})")
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

    predict = sub.add_parser("predict", help="classify pictures of digits (PNG, JPEG)")
    predict.add_argument("model")
    predict.add_argument("images", nargs="+")
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
