"""Look inside a trained CNN and take it elsewhere: summary, saliency maps, ONNX.

    pip install "skcnn[onnx]" onnxruntime
    python examples/inspect_and_export.py                          # writes saliency.png and model.onnx
    python examples/inspect_and_export.py --saliency docs/saliency.png

Trains the default network on Fashion-MNIST (scikit-learn's digits where it is
not installed), prints its layer table, draws saliency maps (the gradient of
the predicted class's score with respect to each pixel; Simonyan et al. 2014)
with the mean saliency on the object against the background, and exports the
model to ONNX, checking onnxruntime's probabilities against predict_proba.
"""

import argparse
import time

import numpy as np

from skcnn import CNNClassifier
from skcnn.datasets import DEBIAN_FASHION_MNIST, load_digits_images, load_idx_dataset
from skcnn.inspection import saliency


def main(argv=None):
    import matplotlib

    matplotlib.use("Agg")
    from skcnn.plotting import plot_saliency

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-train", type=int, default=10000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--n-test", type=int, default=10000)
    parser.add_argument("--saliency", default="saliency.png", help="picture to write")
    parser.add_argument("--onnx", default="model.onnx", help="ONNX model to write")
    args = parser.parse_args(argv)

    if DEBIAN_FASHION_MNIST.is_dir():
        name, (X_train, X_test, y_train, y_test) = "Fashion-MNIST", load_idx_dataset(DEBIAN_FASHION_MNIST, shape="images")
    else:
        print(f"Fashion-MNIST is not installed in {DEBIAN_FASHION_MNIST}: using scikit-learn's digits")
        name, (X_train, X_test, y_train, y_test) = "digits", load_digits_images(shape="images")
    X_test, y_test = X_test[: args.n_test], y_test[: args.n_test]
    start = time.perf_counter()
    clf = CNNClassifier(max_iter=args.epochs, random_state=0).fit(X_train[: args.n_train], y_train[: args.n_train])
    print(f"{name}: trained on {min(args.n_train, len(X_train))} images in {time.perf_counter() - start:.1f} s, "
          f"accuracy on {len(X_test)} test images {clf.score(X_test, y_test):.4f}")  # fmt: skip
    print(clf.summary())

    X = X_test[:500]
    maps = np.abs(saliency(clf, X)).max(axis=1)  # (n, H, W): largest |gradient| over the channels
    obj, background = X[:, 0] > 0.1, X[:, 0] == 0
    print(f"mean saliency on the object / on the background: {maps[obj].mean() / maps[background].mean():.2f}")
    plot_saliency(clf, X_test, n=6).savefig(args.saliency, dpi=100)
    print(f"saliency maps: {args.saliency}")

    try:
        import onnx  # noqa: F401
        import onnxruntime as ort

        from skcnn.export import export_onnx
    except ImportError as exc:
        print(f"skipping the ONNX export ({exc}): pip install 'skcnn[onnx]' onnxruntime")
        return
    export_onnx(clf, args.onnx)
    session = ort.InferenceSession(args.onnx, providers=["CPUExecutionProvider"])
    labels, proba = session.run(None, {"input": X_test.astype(np.float32)})
    print(f"ONNX model: {args.onnx}; onnxruntime's probabilities differ from predict_proba by at most "
          f"{np.abs(proba - clf.predict_proba(X_test)).max():.1e}, "
          f"labels agree on {np.mean(labels == clf.predict(X_test)):.2%} of the test images")  # fmt: skip


if __name__ == "__main__":
    main()
