import re
import subprocess
import sys

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from skcnn import CNNClassifier  # noqa: E402
from skcnn.cli import main, prepare_image  # noqa: E402


def render_digit(digit, rng, size=None, path=None, ink="black", paper="white"):
    """A digit drawn with matplotlib text: a picture a person might supply."""
    fig = plt.figure(figsize=(1, 1), dpi=int(rng.integers(40, 90)))
    fig.patch.set_facecolor(paper)
    fig.text(
        rng.uniform(0.35, 0.65), rng.uniform(0.35, 0.65), str(digit),
        fontsize=size or rng.uniform(30, 55), ha="center", va="center", color=ink,
        fontweight=rng.choice(["normal", "bold"]), rotation=rng.uniform(-12, 12),
    )  # fmt: skip
    if path is not None:
        fig.savefig(path, facecolor=paper)
        plt.close(fig)
        return path
    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba())
    plt.close(fig)
    return image


def test_prepare_image_inverts_crops_and_centres(tmp_path):
    rng = np.random.default_rng(0)
    dark_on_light = prepare_image(render_digit(7, rng, path=tmp_path / "a.png"))
    light_on_dark = prepare_image(render_digit(7, rng, path=tmp_path / "b.png", ink="white", paper="black"))
    for img in (dark_on_light, light_on_dark):
        assert img.shape == (28, 28) and img.dtype == np.float32
        assert img[0].max() == 0 and img[:, 0].max() == 0  # background black, ink white
        assert img.max() == pytest.approx(1, abs=0.05)
        rows = np.flatnonzero(img.max(axis=1) > 0.1)
        assert rows.max() - rows.min() + 1 <= 21  # fits the 20-pixel box
        ys, xs = np.indices(img.shape)
        assert abs((ys * img).sum() / img.sum() - 13.5) < 1.0
        assert abs((xs * img).sum() / img.sum() - 13.5) < 1.0
    with pytest.raises(ValueError, match="blank"):
        prepare_image(np.ones((20, 20)))


@pytest.fixture(scope="module")
def font_model(tmp_path_factory):
    """A model trained on rendered digits, saved as a parameter file."""
    rng = np.random.default_rng(1)
    X = np.stack([prepare_image(render_digit(d, rng)) for _ in range(25) for d in range(10)])
    y = np.tile(np.arange(10), 25)
    clf = CNNClassifier(max_iter=40, random_state=0).fit(X[:, None], y)
    path = tmp_path_factory.mktemp("model") / "font.npz"
    clf.save_params(path)
    return path


def test_skcnn_predict_classifies_digits_drawn_into_png_files(font_model, tmp_path, capsys):
    rng = np.random.default_rng(123)  # other positions, sizes and tilts than in training
    files = [str(render_digit(d, rng, path=tmp_path / f"digit{d}.png")) for d in range(10)]
    assert main(["predict", str(font_model), *files]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    predicted = [int(line.split("class ")[1].split()[0]) for line in lines]
    assert sum(p == d for p, d in zip(predicted, range(10))) >= 9
    assert all("probability" in line for line in lines)


def test_skcnn_train_falls_back_to_digits_and_evaluate_reports(tmp_path, monkeypatch, capsys):
    import urllib.error

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network in this test")

    monkeypatch.setattr("sklearn.datasets._openml.urlopen", offline)
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--epochs", "3", "--data-home", str(tmp_path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "training on scikit-learn's bundled 8x8 digits instead" in out
    assert "Test accuracy on digits" in out
    assert (tmp_path / "model.npz").stat().st_size > 0
    assert (tmp_path / "predictions.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["evaluate", "model.npz"]) == 0  # the file says it was trained on digits
    out = capsys.readouterr().out
    assert "Accuracy on the digits test set" in out and "precision" in out
    # asking for MNIST offline is an error, not a silent switch to another data set
    assert main(["evaluate", "model.npz", "--dataset", "mnist", "--data-home", str(tmp_path)]) == 2
    assert "Could not download mnist" in capsys.readouterr().err
    assert (tmp_path / "confusion_matrix.png").stat().st_size > 0


def test_skcnn_train_on_idx_files_with_progress(tmp_path, capsys):
    from test_datasets import make_idx_folder

    (tmp_path / "idx").mkdir()
    folder = make_idx_folder(tmp_path / "idx", n_train=30, n_test=10)
    out_file = tmp_path / "m.npz"
    code = main(["train", "--idx", str(folder), "--epochs", "1", "--out", str(out_file), "--picture", ""])
    assert code == 0
    captured = capsys.readouterr()
    assert "Epoch 1: loss" in captured.out and "100.0%" in captured.err
    assert CNNClassifier.from_params_file(out_file).input_shape_ == (1, 28, 28)


def test_errors_are_reported_without_a_traceback(tmp_path, capsys):
    (tmp_path / "bad.npz").write_bytes(b"not a model")
    assert main(["evaluate", str(tmp_path / "bad.npz")]) == 2
    assert "error:" in capsys.readouterr().err


def test_python_dash_m_skcnn_works():
    out = subprocess.run([sys.executable, "-m", "skcnn", "--help"], capture_output=True, text=True, check=True)
    assert "train" in out.stdout and "predict" in out.stdout


def predictions(out):
    """{file: [classes in order of probability]} from skcnn predict's output lines."""
    result = {}
    for line in out.strip().splitlines():
        path, ranked = line.rsplit(": class ", 1)[0], line.split(": class ", 1)[1]
        result[path] = [part.split()[0] for part in ("class " + ranked).split("class ")[1:]]
    return result


def test_predict_reads_phone_photos_16_bit_and_unevenly_lit_pictures(font_model, tmp_path, capsys):
    from PIL import Image

    rng = np.random.default_rng(7)
    files, truth = [], {}
    for d in range(10):
        grey = render_digit(d, rng)[..., :3].mean(axis=2) / 255
        upright = (grey * 255).round().astype(np.uint8)
        # a phone's JPEG: stored turned left, EXIF orientation 6 shows it upright
        exif = Image.Exif()
        exif[0x0112] = 6
        phone = tmp_path / f"phone{d}.jpg"
        Image.fromarray(np.ascontiguousarray(np.rot90(upright, 1))).convert("RGB").save(phone, exif=exif, quality=90)
        # 16-bit grey ink on grey paper (Pillow's 8-bit grey of it is blank)
        sixteen = tmp_path / f"grey16_{d}.png"
        Image.fromarray((36000 - 6000 * (1 - grey)).round().astype(np.uint16)).save(sixteen)
        # paper lit from 0.95 down to 0.75 across the sheet, ink at 0.08
        light = np.linspace(0.95, 0.75, grey.shape[1])[None, :]
        uneven = tmp_path / f"uneven{d}.png"
        Image.fromarray(((grey * light + (1 - grey) * 0.08) * 255).round().astype(np.uint8)).save(uneven)
        for path in (phone, sixteen, uneven):
            files.append(str(path))
            truth[str(path)] = str(d)
    assert main(["predict", str(font_model), *files]) == 0
    captured = capsys.readouterr()
    got = predictions(captured.out)
    assert list(got) == files
    for kind in ("phone", "grey16", "uneven"):
        right = sum(got[f][0] == truth[f] for f in files if kind in f)
        assert right >= 9, (kind, right)
    assert "does not say how its training images were made" in captured.err  # saved without metadata


def test_predict_goes_on_past_unreadable_pictures_and_fails_at_the_end(font_model, tmp_path, capsys):
    rng = np.random.default_rng(3)
    good = [str(render_digit(d, rng, path=tmp_path / f"d{d}.png")) for d in (4, 7)]
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    blank = tmp_path / "blank.png"
    matplotlib.pyplot.imsave(blank, np.ones((20, 20)), cmap="gray", vmin=0, vmax=1)
    files = [good[0], str(tmp_path / "broken.png"), str(tmp_path / "missing.png"), str(blank), good[1]]
    assert main(["predict", str(font_model), *files, "--top", "3"]) == 1
    captured = capsys.readouterr()
    got = predictions(captured.out)
    assert list(got) == good and all(len(ranked) == 3 for ranked in got.values())
    for line in captured.out.splitlines():  # the K most probable, most probable first
        p = [float(v) for v in re.findall(r"probability ([0-9.]+)", line)]
        assert p == sorted(p, reverse=True) and sum(p) <= 1 + 1e-6
    for name in ("broken.png", "missing.png", "blank.png"):
        assert name in captured.err
    assert "it is blank" in captured.err and "3 of 5 pictures could not be read" in captured.err


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory):
    """What `skcnn train` trains offline: scikit-learn's 8x8 digits."""
    path = tmp_path_factory.mktemp("digits") / "digits.npz"
    assert main(["train", "--dataset", "digits", "--epochs", "20", "--quiet", "--picture", "", "--out", str(path)]) == 0
    return path


def test_an_8x8_digits_model_reads_its_own_test_digits_drawn_large(digits_model, tmp_path, capsys):
    # prepared the MNIST way (a 20/28 box centred by mass) they were read 58% of the time
    from PIL import Image

    from skcnn.datasets import load_digits_images
    from skcnn.persistence import load_network

    assert load_network(digits_model)[3]["metadata"]["framing"] == "fill"
    capsys.readouterr()
    _, X_test, _, y_test = load_digits_images()
    resamples = [Image.Resampling.NEAREST, Image.Resampling.BICUBIC]
    files = []
    for i, image in enumerate(X_test[:300, 0]):
        ink = image if i % 3 == 0 else 1 - image  # white on black, or black on white paper
        drawing = Image.fromarray((ink * 255).round().astype(np.uint8)).resize((160, 160), resamples[i % 2])
        files.append(tmp_path / f"{i}.png")
        drawing.save(files[-1])
    assert main(["predict", str(digits_model), *map(str, files)]) == 0
    captured = capsys.readouterr()
    got = predictions(captured.out)
    accuracy = np.mean([int(got[str(f)][0]) == y for f, y in zip(files, y_test)])
    assert accuracy >= 0.85, accuracy
    assert "8x8" in captured.err and "expect more mistakes" in captured.err


def coloured_shapes(folder, n, rng, size=(16, 16)):
    """Pictures of red and of blue discs of the same brightness (a grey model cannot tell them apart)."""
    from PIL import Image, ImageDraw

    for colour, rgb in (("red", (200, 40, 40)), ("blue", (64, 64, 255))):
        (folder / colour).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            im = Image.new("RGB", size, tuple(int(v) for v in rng.integers(90, 110, 3)))
            r = rng.uniform(0.2, 0.4) * size[0]
            cx, cy = rng.uniform(0.4, 0.6, 2) * size[0]
            ImageDraw.Draw(im).ellipse([cx - r, cy - r, cx + r, cy + r], fill=rgb)
            im.save(folder / colour / f"{i}.{'jpg' if i % 2 else 'png'}")
    return folder


def test_train_on_a_picture_folder_and_predict_with_the_rgb_model(tmp_path, capsys):
    from skcnn.persistence import load_network

    rng = np.random.default_rng(0)
    folder = coloured_shapes(tmp_path / "shapes", 30, rng)
    model = tmp_path / "shapes.npz"
    args = ["train", "--images", str(folder), "--epochs", "15", "--quiet", "--picture", "", "--out", str(model)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "Read 60 pictures of 2 classes" in out and "RGB 16x16" in out
    assert float(out.split("Test accuracy on the pictures in")[1].split(": ")[1].split()[0]) >= 0.9
    assert load_network(model)[3]["metadata"]["framing"] == "whole"
    assert CNNClassifier.from_params_file(model).input_shape_ == (3, 16, 16)
    new = coloured_shapes(tmp_path / "new", 4, np.random.default_rng(1), size=(40, 40))  # other size
    files = sorted(str(p) for p in new.glob("*/*"))
    assert main(["predict", str(model), *files]) == 0
    got = predictions(capsys.readouterr().out)
    assert sum(got[f][0] == f.split("/")[-2] for f in files) >= 7
    # a model fitted in Python on channels-last pictures reads the same files the same way
    from skcnn.datasets import load_image_folder

    bunch = load_image_folder(folder)
    y = np.asarray(bunch.target_names)[bunch.target]
    clf = CNNClassifier(max_iter=15, random_state=0).fit(bunch.data.transpose(0, 2, 3, 1), y)
    clf.save_params(tmp_path / "last.npz", metadata={"framing": "whole"})
    assert main(["predict", str(tmp_path / "last.npz"), *files]) == 0
    got = predictions(capsys.readouterr().out)
    from skcnn.images import prepare_image

    expected = clf.predict(np.stack([prepare_image(f, (16, 16), framing="whole", color="rgb") for f in files]).transpose(0, 2, 3, 1))
    assert [got[f][0] for f in files] == list(expected)
