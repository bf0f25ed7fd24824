"""How well models read their own test digits drawn as picture files.

    python benchmarks/drawn_digits.py                 # the 8x8 digits model of `skcnn train`
    python benchmarks/drawn_digits.py --n 100 --epochs 10   # a quick run

Trains what `skcnn train --dataset digits` trains (offline, seconds), draws each
of its held-out test digits as a large PNG (upscaled 8x8 -> 160x160; nearest
or bicubic; black on white or white on black; with or without a margin of
paper), and classifies the files through `skcnn predict`'s path
(`prepare_image` with the model's recorded framing, "fill"), then with the
MNIST framing for comparison. Prints the accuracy of each way of drawing.
"""

import argparse
import contextlib
import io
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from skcnn import CNNClassifier
from skcnn.cli import main as skcnn
from skcnn.datasets import load_digits_images
from skcnn.images import prepare_image

RESAMPLE = {"nearest": Image.Resampling.NEAREST, "bicubic": Image.Resampling.BICUBIC}


def draw(image, resample, ink, margin):
    """One 8x8 digit (values in [0, 1], ink high) as a 160x160 drawing."""
    values = image if ink == "white" else 1 - image
    drawing = Image.fromarray((values * 255).round().astype(np.uint8)).resize((160, 160), RESAMPLE[resample])
    page = Image.new("L", (160 + 2 * margin, 160 + 2 * margin), 0 if ink == "white" else 255)
    page.paste(drawing, (margin, margin))
    return page


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=30, help="as skcnn train on digits")
    parser.add_argument("--n", type=int, default=None, help="test digits to draw (default: all 450)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = tmp / "digits.npz"
        with contextlib.redirect_stdout(io.StringIO()):
            skcnn(["train", "--dataset", "digits", "--epochs", str(args.epochs), "--quiet",
                   "--picture", "", "--out", str(model)])  # fmt: skip
        clf = CNNClassifier.from_params_file(model)
        _, X_test, _, y_test = load_digits_images()
        X_test, y_test = X_test[: args.n], y_test[: args.n]
        print(f"8x8 digits model ({args.epochs} epochs): {np.mean(clf.predict(X_test) == y_test):.3f} "
              f"on its {len(y_test)} test digits as arrays")  # fmt: skip
        print(f"{'drawn':>32}  {'skcnn predict':>13}  {'MNIST framing':>13}")
        for resample in RESAMPLE:
            for ink in ("black", "white"):
                for margin in (0, 40):
                    files = []
                    for i, image in enumerate(X_test[:, 0]):
                        files.append(tmp / f"{i}.png")
                        draw(image, resample, ink, margin).save(files[-1])
                    out = io.StringIO()
                    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
                        skcnn(["predict", str(model), *map(str, files)])
                    got = [line.split(": class ")[1].split()[0] for line in out.getvalue().splitlines()]
                    predict_accuracy = np.mean(np.array(got).astype(int) == y_test)
                    mnist = np.stack([prepare_image(f, (8, 8), framing="mnist") for f in files])[:, None]
                    mnist_accuracy = np.mean(clf.predict(mnist) == y_test)
                    how = f"{resample}, {ink} ink, margin {margin}"
                    print(f"{how:>32}  {predict_accuracy:>13.3f}  {mnist_accuracy:>13.3f}")


if __name__ == "__main__":
    main()
