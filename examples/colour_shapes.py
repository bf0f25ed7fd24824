"""Colour pictures from a folder: draw red, green and blue shapes, learn them, read new files.

The classes differ by colour and shape (a red disc, a green disc, a red square,
...), in colours of the same brightness, so a grey model cannot tell them
apart (it sees the shape, and guesses the colour). The example draws the pictures with Pillow into a folder of class
subfolders (PNG and JPEG, of mixed sizes), loads it with
``skcnn.datasets.load_image_folder``, trains on the images channels-last,
(n, H, W, C), as Keras and PIL hold them, and classifies new picture files the
way ``skcnn predict`` does. Nothing is downloaded.

    python examples/colour_shapes.py
"""

import argparse
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from sklearn.model_selection import train_test_split

from skcnn import CNNClassifier
from skcnn.datasets import load_image_folder
from skcnn.images import prepare_image

# colours of one brightness (luma 0.299 R + 0.587 G + 0.114 B within 104-106 of 255)
COLOURS = {"red": (230, 50, 50), "green": (45, 147, 45), "blue": (80, 90, 255)}
SHAPES = ("disc", "square")


def draw(folder, n_per_class, rng):
    """Pictures of every colour-shape pair in ``folder/<colour>_<shape>/``."""
    for colour, rgb in COLOURS.items():
        for shape in SHAPES:
            (folder / f"{colour}_{shape}").mkdir(parents=True, exist_ok=True)
            for i in range(n_per_class):
                side = int(rng.integers(28, 48))  # mixed sizes: load_image_folder resizes
                grey = tuple(int(v) for v in rng.integers(150, 175, 3))  # lighter paper
                im = Image.new("RGB", (side, side), grey)
                r = side * rng.uniform(0.2, 0.35)
                cx, cy = side * rng.uniform(0.35, 0.65, 2)
                box = [cx - r, cy - r, cx + r, cy + r]
                pen = ImageDraw.Draw(im)
                (pen.ellipse if shape == "disc" else pen.rectangle)(box, fill=rgb)
                im.save(folder / f"{colour}_{shape}" / f"{i}.{'jpg' if i % 2 else 'png'}", quality=90)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--n-per-class", type=int, default=60)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "shapes"
        draw(folder, args.n_per_class, rng)
        pictures = load_image_folder(folder, size=24)  # (n, 3, 24, 24) float32 in [0, 1]
        X = pictures.data.transpose(0, 2, 3, 1)  # channels-last (n, 24, 24, 3), as Keras holds it
        y = np.asarray(pictures.target_names)[pictures.target]
        print(f"{len(X)} pictures of {len(pictures.target_names)} classes, channels-last {X.shape[1:]}")
        X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)

        clf = CNNClassifier(max_iter=args.epochs, random_state=0).fit(X_train, y_train)
        print(f"read as {clf.input_shape_} ({clf.data_format_}); test accuracy: {clf.score(X_test, y_test):.3f}")
        luma = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # what a grey picture keeps
        grey = CNNClassifier(max_iter=args.epochs, random_state=0).fit(X_train @ luma, y_train)
        print(f"the same pictures in grey: test accuracy {grey.score(X_test @ luma, y_test):.3f}")

        # new files, as `skcnn predict` reads them: the whole picture resized, colours kept
        draw(Path(tmp) / "new", 1, np.random.default_rng(1))
        for path in sorted((Path(tmp) / "new").glob("*/*")):
            image = prepare_image(path, (24, 24), framing="whole", color="rgb")  # (3, 24, 24)
            guess = clf.predict(image.transpose(1, 2, 0)[None])[0]  # channels-last, like the fit
            print(f"{path.parent.name + '/' + path.name:>20}: {guess}")


if __name__ == "__main__":
    main()
