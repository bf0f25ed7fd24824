import io
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


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def as_displayed(text):
    """The lines a terminal shows for ``text``: a carriage return moves back
    to the start of the line and later characters overwrite earlier ones."""
    lines = []
    for raw in text.split("\n"):
        shown = []
        for segment in raw.split("\r"):
            shown[: len(segment)] = segment
        lines.append("".join(shown).rstrip())
    return lines


def test_progress_bar_redrawn_in_place_on_a_terminal_and_absent_otherwise(monkeypatch, capsys):
    from sklearn.datasets import load_digits

    from skcnn.trainer import _ProgressBar

    X, y = load_digits(return_X_y=True)
    monkeypatch.setattr(_ProgressBar, "INTERVAL", 0.0)  # draw after every batch
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    CNNClassifier(max_iter=3, batch_size=200, verbose=2, random_state=0).fit(X[:1000], y[:1000])
    drawn = terminal.getvalue()
    assert drawn.count("\r") >= 3 * 5 and "100.0%" in drawn  # five batches per epoch
    assert "\n" not in drawn and as_displayed(drawn) == [""]  # erased: nothing is left behind
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3 and all(line.startswith(f"Epoch {i}: loss") for i, line in enumerate(out, 1))
    monkeypatch.undo()
    CNNClassifier(max_iter=1, verbose=2, random_state=0).fit(X[:300], y[:300])
    out, err = capsys.readouterr()
    assert err == "" and out.startswith("Epoch 1: loss")  # stderr is not a terminal
