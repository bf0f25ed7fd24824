import contextlib
import io
import os
import re
import subprocess
import sys
from pathlib import Path

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


def test_skcnn_train_falls_back_to_digits_and_evaluate_reports(offline, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--epochs", "3", "--data-home", str(tmp_path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "training on scikit-learn's 8x8 digits instead" in out
    # the advice speaks of the command's flags, not the library's arguments
    assert "--data-home DIR" in out and "--idx DIR" in out and "data_home=" not in out and "load_idx_dataset" not in out
    assert "Test accuracy on scikit-learn's 8x8 digits" in out and "after 3 epochs" in out
    assert (tmp_path / "model.npz").stat().st_size > 0
    assert (tmp_path / "predictions.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["evaluate", "model.npz"]) == 0  # the file says it was trained on digits
    out = capsys.readouterr().out
    assert "Test accuracy on scikit-learn's 8x8 digits" in out and "(450 images)" in out
    assert "precision" in out
    assert (tmp_path / "confusion_matrix.png").stat().st_size > 0
    # asking for MNIST offline is an error, not a silent switch to another data set
    for command in ("train", "evaluate model.npz"):
        argv = [*command.split(), "--dataset", "mnist", "--data-home", str(tmp_path), "--picture", ""]
        assert main(argv) == 2
        captured = capsys.readouterr()
        assert "Could not download mnist" in captured.err and "instead" not in captured.out
        assert "--idx DIR" in captured.err and "data_home=" not in captured.err


@pytest.fixture
def tiny_idx(tmp_path):
    from test_datasets import make_idx_folder

    (tmp_path / "idx").mkdir()
    return make_idx_folder(tmp_path / "idx", n_train=30, n_test=10)


def test_skcnn_train_on_idx_files_says_what_it_does_and_where_files_went(offline, tiny_idx, tmp_path, capsys):
    out_file, picture = tmp_path / "runs" / "today" / "m.npz", tmp_path / "pictures" / "p.png"
    argv = ["train", "--idx", str(tiny_idx), "--epochs", "2", "--out", str(out_file), "--picture", str(picture)]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].startswith("Training the origin network (conv 16-32, dense 100) on the IDX files in ")
    assert "30 training images (28x28), 10 test images; 2 epochs of adam" in lines[0]
    assert "each step on all 30 images (fewer than --batch-size 100)" in lines[0]  # not "batches of 100"
    assert lines[0].endswith(f"The model will go to {out_file}, test predictions to {picture}.")
    assert [line.split(":")[0] for line in lines[1:3]] == ["Epoch 1", "Epoch 2"]  # one line each
    assert "after 2 epochs" in lines[3]
    assert lines[4].startswith(f"Saved the model to {out_file} ")
    assert lines[5] == f"Saved 10 test predictions to {picture}"
    assert err == ""  # no progress bar: stderr is not a terminal here
    assert CNNClassifier.from_params_file(out_file).input_shape_ == (1, 28, 28)
    assert picture.read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in out_file.parent.iterdir()) == ["m.npz"]  # no temporary files left
    assert main([*argv[:4], "1", "--out", str(out_file), "--picture", "", "-q"]) == 0
    assert "after 1 epoch in" in capsys.readouterr().out


def test_evaluate_scores_the_idx_files_the_model_file_records(offline, tiny_idx, tmp_path, monkeypatch, capsys):  # offline: no trip to OpenML for MNIST
    model = tmp_path / "m.npz"
    assert main(["train", "--idx", str(tiny_idx), "--epochs", "1", "--out", str(model), "--picture", "", "-q"]) == 0
    trained = capsys.readouterr().out.splitlines()[1]
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", str(model), "--picture", ""]) == 0
    evaluated = capsys.readouterr().out.splitlines()[0]
    assert evaluated.startswith(f"Test accuracy on the IDX files in {tiny_idx}: ")
    assert evaluated.split(": ")[1].split()[0] == trained.split(": ")[1].split()[0]
    assert evaluated.endswith("(10 images)")
    (tiny_idx / "t10k-images-idx3-ubyte.gz").unlink()
    assert main(["evaluate", str(model), "--picture", ""]) == 2
    assert "lacks the test IDX files" in capsys.readouterr().err


@pytest.fixture(scope="module")
def fashion_model(tmp_path_factory):
    """A model trained with --idx on Fashion-MNIST's files and --n-train 300,
    the sizes fit saw, and what train printed."""
    from skcnn.datasets import DEBIAN_FASHION_MNIST

    if not (DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    model = tmp_path_factory.mktemp("fashion") / "model.npz"
    seen, fit = [], CNNClassifier.fit

    def spy(self, X, y, sample_weight=None):
        seen.append(len(X))
        return fit(self, X, y, sample_weight)

    argv = ["train", "--idx", str(DEBIAN_FASHION_MNIST), "--n-train", "300", "--epochs", "1",
            "--out", str(model), "--picture", "", "-q"]  # fmt: skip
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out):
        mp.setattr(CNNClassifier, "fit", spy)
        assert main(argv) == 0
    return model, seen, out.getvalue()


def test_n_train_is_honoured_with_idx(fashion_model):
    _, seen, out = fashion_model
    assert seen == [300]
    assert "Fashion-MNIST (IDX files in /usr/share/datasets/fashion-mnist): the first 300 of 60,000 training images" in out


def test_evaluate_without_idx_scores_the_same_10000_test_images_with_class_names(
    offline, fashion_model, tmp_path, monkeypatch, capsys
):
    model, _, trained = fashion_model
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", str(model)]) == 0
    out = capsys.readouterr().out
    accuracy = trained.split("Test accuracy on ")[1].split(": ")[1].split()[0]
    assert f"Test accuracy on Fashion-MNIST (IDX files in /usr/share/datasets/fashion-mnist): {accuracy} (10,000 images)" in out
    report = [line.split() for line in out.splitlines()]
    assert ["T-shirt/top"] == report[3][:1] and ["Ankle", "boot"] == report[12][:2]
    assert (model.parent / "confusion_matrix.png").stat().st_size > 0  # beside the model


def test_predict_prints_class_names(fashion_model, tmp_path, capsys):
    from skcnn.datasets import FASHION_MNIST_CLASSES

    model, _, _ = fashion_model
    picture = render_digit(1, np.random.default_rng(0), path=tmp_path / "one.png")
    assert main(["predict", str(model), str(picture)]) == 0
    line = capsys.readouterr().out.strip()
    name = line.split(": class ")[1].split(" (probability")[0]
    assert name in FASHION_MNIST_CLASSES


@pytest.mark.parametrize(
    "flag, value",
    [("--epochs", "0"), ("--schedule", "foo"), ("--architecture", "huge"), ("--lr", "-1"),
     ("--batch-size", "0"), ("--augment", "spin"), ("--n-train", "0"), ("--lr", "nan"),
     ("--solver", "lbfgs"), ("--random-state", "-1"), ("--dataset", "cifar"), ("--epochs", "2.5"),
     ("--idx", "/no/such/folder"), ("--minutes", "0"), ("--minutes", "inf"), ("--minutes", "ten")],
)  # fmt: skip
def test_nonsense_values_are_refused_at_once_naming_the_flag(flag, value, monkeypatch, capsys):
    def no_loading(*args, **kwargs):
        raise AssertionError("data loaded before the flags were checked")

    monkeypatch.setattr("skcnn.cli._load_data", no_loading)
    with pytest.raises(SystemExit) as info:
        main(["train", flag, value])
    assert info.value.code == 2
    assert f"skcnn train: error: argument {flag}: " in capsys.readouterr().err


@pytest.mark.parametrize("value", ["abc", "0", "-2", "2.5"])
def test_a_bad_thread_setting_is_refused_before_any_work(value, monkeypatch, capsys):
    monkeypatch.setattr("skcnn.cli._load_data", lambda *a, **k: 1 / 0)  # reached: the check came too late
    monkeypatch.setenv("SKCNN_NUM_THREADS", value)
    for command in (["train"], ["evaluate", "m.npz"]):
        with pytest.raises(SystemExit) as info:
            main(command)
        assert info.value.code == 2
        assert f"error: SKCNN_NUM_THREADS must be a whole number >= 1; got '{value}'" in capsys.readouterr().err


def test_help_lists_choices_and_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for shown in ("--architecture {origin,deep,resnet}", "(default: origin)", "--solver {adagrad,adam,momentum,nesterov,rmsprop,sgd}",
                  "(default: adam)", "--schedule {constant,adaptive,cosine}", "(default: constant)",
                  "names from shift, flip, erase joined by '+'", "initial learning rate (default: 0.001)",
                  "(default: 5 for mnist, fashion-mnist; 30 for digits; with --recipe, the recipe's; with --minutes, up to 1000, which the minutes end first)", "(default: model.npz)",
                  "--recipe NAME", "e.g. fashion-best"):  # fmt: skip
        assert shown in text


def test_output_paths_are_refused_or_created_before_any_data_is_read(tmp_path, monkeypatch, capsys):
    loaded = []
    monkeypatch.setattr("skcnn.cli._load_data", lambda *a, **k: loaded.append(1) or 1 / 0)
    (tmp_path / "a_file").write_text("")
    refused = {
        "--out": [tmp_path / "a_file" / "model.npz", tmp_path / "a_file" / "deeper" / "model.npz", tmp_path],
        "--picture": [tmp_path / "a_file" / "p.png", tmp_path / "p.xyz"],
    }
    for flag, paths in refused.items():
        for path in paths:
            with pytest.raises(SystemExit):
                main(["train", flag, str(path)])
            assert f"error: argument {flag}: " in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["evaluate", "m.npz", "--picture", str(tmp_path / "a_file" / "cm.png")])
    assert "error: argument --picture: " in capsys.readouterr().err
    assert loaded == []
    # a missing folder is created before the data are read
    with pytest.raises(ZeroDivisionError):
        main(["train", "--out", str(tmp_path / "runs" / "today" / "m.npz"), "--picture", str(tmp_path / "pics" / "p.png")])
    assert (tmp_path / "runs" / "today").is_dir() and (tmp_path / "pics").is_dir() and loaded == [1]
    assert list((tmp_path / "runs" / "today").iterdir()) == []


def test_a_model_that_cannot_be_saved_where_asked_goes_to_a_fallback(tiny_idx, tmp_path, monkeypatch, capsys):
    """The disk fills up during training: the old file is kept whole, and
    the new model goes to the working folder, with a warning saying where."""
    import errno

    out = tmp_path / "runs" / "m.npz"
    out.parent.mkdir()
    out.write_bytes(b"the previous model")
    save = CNNClassifier.save_params

    def full_disk(self, path, metadata=None):
        if Path(path).parent == out.parent:
            Path(path).write_bytes(b"half a mod")
            raise OSError(errno.ENOSPC, "No space left on device")
        save(self, path, metadata)

    monkeypatch.setattr(CNNClassifier, "save_params", full_disk)
    monkeypatch.chdir(tmp_path)
    code = main(["train", "--idx", str(tiny_idx), "--epochs", "1", "--out", str(out), "--picture", "", "-q"])
    assert code == 1
    captured = capsys.readouterr()
    warning = captured.err.strip()
    assert warning.startswith(f"skcnn train: warning: could not write the model to {out} (No space left on device)")
    fallback = Path(warning.split("saved it to ")[1].split(" instead")[0])
    assert fallback.parent == tmp_path and fallback.name.startswith("m-") and fallback.suffix == ".npz"
    assert f"Saved the model to {fallback}" in captured.out
    assert CNNClassifier.from_params_file(fallback).input_shape_ == (1, 28, 28)
    assert out.read_bytes() == b"the previous model" and os.listdir(out.parent) == ["m.npz"]


def test_adaptive_schedule_acts_on_two_epochs_without_progress(tiny_idx, tmp_path, capsys):
    # a rate far too small to lower the loss by tol, and too small to be divided by 5 again
    argv = ["train", "--idx", str(tiny_idx), "--solver", "sgd", "--lr", "1e-8", "--epochs", "5",
            "--out", str(tmp_path / "m.npz"), "--picture", ""]  # fmt: skip
    assert main(argv) == 0
    assert "after 5 epochs" in capsys.readouterr().out  # constant: the epochs asked for
    assert main([*argv, "--schedule", "adaptive"]) == 0
    out = capsys.readouterr().out
    assert "Stopping." in out and "after 3 epochs" in out


def test_a_new_dataset_is_one_registry_entry(tmp_path, monkeypatch, capsys):
    from skcnn import datasets

    def load_toy(data_home, shape):
        rng = np.random.default_rng(0)
        y = np.arange(40) % 2
        X = rng.random((40, 1, 12, 12), dtype=np.float32) * 0.2
        X[y == 1, :, 3:9, 3:9] += 0.8  # a bright square: "dog"
        return X[:30], X[30:], y[:30], y[30:]

    toy = datasets.Dataset("Toy", load_toy, ("cat", "dog"), (1, 12, 12), default_epochs=4)
    monkeypatch.setitem(datasets.DATASETS, "toy", toy)
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--dataset", "toy", "-q"]) == 0
    out = capsys.readouterr().out
    assert "on Toy: 30 training images (12x12), 10 test images; 4 epochs" in out
    assert main(["evaluate", "model.npz"]) == 0
    report = capsys.readouterr().out
    assert "Test accuracy on Toy" in report and " cat " in report and " dog " in report


def test_files_that_are_not_models_are_named_plainly(tmp_path, capsys):
    np.savez(tmp_path / "notes.npz", a=np.array([{"x": 1}], dtype=object))
    (tmp_path / "text.npz").write_text("not a model")
    for name in ("notes.npz", "text.npz"):
        for command in (["predict", str(tmp_path / name), "x.png"], ["evaluate", str(tmp_path / name)]):
            assert main(command) == 2
            err = capsys.readouterr().err
            assert f"{tmp_path / name} is not an skcnn parameter file" in err
            assert "pickle" not in err and "Traceback" not in err
    assert main(["predict", str(tmp_path / "gone.npz"), "x.png"]) == 2
    assert f"{tmp_path / 'gone.npz'}: no such file" in capsys.readouterr().err


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


def test_a_bad_flag_is_refused_before_scikit_learn_is_even_imported():
    # scikit-learn takes seconds to import: flag errors must not wait for it
    code = (
        "import sys\n"
        "from skcnn.cli import main\n"
        "try:\n"
        "    main(['train', '--epochs', '0', '--out', 'never.npz'])\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 2, exc.code\n"
        "assert 'sklearn' not in sys.modules, 'scikit-learn was imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "argument --epochs" in result.stderr


def test_pictures_go_beside_the_model_by_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--dataset", "digits", "--epochs", "1", "-q", "--out", "runs/m.npz"]) == 0
    assert (tmp_path / "runs" / "predictions.png").exists() and not (tmp_path / "predictions.png").exists()
    assert main(["evaluate", "runs/m.npz"]) == 0
    assert (tmp_path / "runs" / "confusion_matrix.png").exists()


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

    assert load_network(digits_model).extra["metadata"]["framing"] == "fill"
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
    assert load_network(model).extra["metadata"]["framing"] == "whole"
    assert CNNClassifier.from_params_file(model).input_shape_ == (3, 16, 16)
    assert main(["evaluate", str(model), "--picture", ""]) == 0  # the recorded folder, the same fifth held out
    report = capsys.readouterr().out
    assert f"Test accuracy on the pictures in {folder}" in report and " red " in report and " blue " in report
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


def test_train_images_is_refused_with_another_source_of_data(tmp_path, capsys):
    for other in (["--dataset", "digits"], ["--idx", str(tmp_path)]):
        with pytest.raises(SystemExit) as exc:
            main(["train", "--images", str(tmp_path), *other, "--out", str(tmp_path / "m.npz")])
        assert exc.value.code == 2
        assert "argument --images: not allowed with --dataset or --idx" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--images", str(tmp_path / "nowhere")])
    assert "no such folder" in capsys.readouterr().err
    assert not (tmp_path / "m.npz").exists()


def test_train_runs_the_epochs_asked_for_without_a_convergence_warning(tmp_path, recwarn):
    assert main(["train", "--dataset", "digits", "--epochs", "1", "-q", "--out", str(tmp_path / "m.npz")]) == 0
    assert not [w for w in recwarn if "epochs ran out" in str(w.message)]


def test_train_for_minutes_stops_when_they_run_out(tmp_path, capsys, recwarn):
    # a budget of 6 ms: one batch of 100 of the digits' 1,437 training images, then it stops
    assert main(["train", "--dataset", "digits", "--minutes", "0.0001", "--out", str(tmp_path / "m.npz")]) == 0
    out = capsys.readouterr().out
    assert "up to 0.0001 minutes of adam" in out
    assert "after 1 epoch (cut short by --minutes)" in out
    assert not [w for w in recwarn if "ran out" in str(w.message)]  # the minutes asked for: no news
    model = CNNClassifier.from_params_file(tmp_path / "m.npz")
    assert model.n_features_in_ == 64


def test_warnings_are_printed_in_the_commands_words(tmp_path, capsys):
    from PIL import Image

    for label in ("a", "b"):
        (tmp_path / "pics" / label).mkdir(parents=True)
        for i in range(6):
            Image.new("L", (8, 8), color=40 * i + (120 if label == "a" else 0)).save(tmp_path / "pics" / label / f"{i}.png")
    (tmp_path / "pics" / "a" / "broken.png").write_bytes(b"not a picture")
    assert main(["train", "--images", str(tmp_path / "pics"), "--epochs", "1", "-q", "--out", str(tmp_path / "m.npz")]) == 0
    err = capsys.readouterr().err
    assert "skcnn train: warning: " in err and "broken.png" in err
    assert "UserWarning" not in err and ".py:" not in err


def test_train_with_a_recipe_takes_its_settings_and_the_flags_given_beside_it(tmp_path, capsys):
    from skcnn.estimator import RECIPES
    from skcnn.persistence import load_network

    out = tmp_path / "m.npz"
    argv = ["train", "--dataset", "digits", "--recipe", "fashion-best", "--lr", "0.05", "--n-train", "100", "-q"]
    assert main([*argv, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "deep network" in printed and "25 epochs of nesterov at 0.05" in printed  # the recipe's epochs
    assert "Recipe fashion-best (CNNClassifier.from_recipe)" in printed and "weight_decay=0.0005" in printed
    model = CNNClassifier.from_params_file(out)  # prediction's settings are in the file
    assert (model.architecture, model.test_time_flips, model.test_time_shifts) == ("deep", True, 1)
    trained = load_network(out).extra["metadata"]["params"]
    expected = dict(RECIPES["fashion-best"], learning_rate_init=0.05)
    assert {name: trained[name] for name in expected} == expected
    # --epochs beside it overrides the recipe's
    assert main([*argv, "--epochs", "2", "--out", str(tmp_path / "two.npz")]) == 0
    assert "2 epochs of nesterov" in capsys.readouterr().out
    assert load_network(tmp_path / "two.npz").extra["metadata"]["params"]["max_iter"] == 2
    # --augment none switches the recipe's augmentation off; other names replace it
    for augment, expected in (("none", None), ("erase", "erase")):
        assert main([*argv, "--epochs", "1", "--augment", augment, "--out", str(tmp_path / "a.npz")]) == 0
        assert load_network(tmp_path / "a.npz").extra["metadata"]["params"]["augment"] == expected


def test_train_without_a_recipe_keeps_the_origin_training(tmp_path, capsys):
    from skcnn.persistence import load_network

    assert main(["train", "--dataset", "digits", "--epochs", "1", "-q", "--out", str(tmp_path / "m.npz")]) == 0
    assert "origin network" in capsys.readouterr().out
    trained = load_network(tmp_path / "m.npz").extra["metadata"]["params"]
    defaults = CNNClassifier().get_params()
    for name in ("architecture", "solver", "learning_rate_init", "learning_rate", "augment", "weight_decay"):
        assert trained[name] == defaults[name], name


@pytest.mark.parametrize("name", ["fashion", "FASHION-BEST", ""])
def test_train_refuses_an_unknown_recipe_before_any_work(name, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--dataset", "digits", "--recipe", name, "--out", str(tmp_path / "m.npz")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --recipe: invalid choice: {name!r} (choose from 'fashion-best')" in err
    assert not (tmp_path / "m.npz").exists()


def test_train_defaults_are_the_estimators_own():
    from skcnn.cli import TRAIN_DEFAULTS

    defaults = CNNClassifier().get_params()
    assert TRAIN_DEFAULTS == {name: defaults[name] for name in TRAIN_DEFAULTS}


def test_train_with_a_recipe_uses_the_data_set_it_was_measured_on(tmp_path, monkeypatch, capsys):
    import dataclasses

    from skcnn import datasets
    from skcnn.cli import RECIPE_DATASETS

    assert RECIPE_DATASETS["fashion-best"] == "fashion-mnist"
    loaded = []

    def load_small(data_home, shape):  # Fashion-MNIST-shaped pictures, without the download
        loaded.append(shape)
        rng = np.random.default_rng(0)
        X, y = rng.random((60, 1, 28, 28), dtype=np.float32), np.arange(60) % 10
        return X[:40], X[40:], y[:40], y[40:]

    real = datasets.DATASETS["fashion-mnist"]
    monkeypatch.setitem(datasets.DATASETS, "fashion-mnist", dataclasses.replace(real, load=load_small))
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--recipe", "fashion-best", "--epochs", "1", "-q"]) == 0
    out = capsys.readouterr().out
    assert loaded == ["images"]
    assert "Recipe fashion-best was measured on Fashion-MNIST: training on it" in out
    assert "on Fashion-MNIST: 40 training images" in out and "digits" not in out
    # a data set given beside it wins
    assert main(["train", "--recipe", "fashion-best", "--dataset", "digits", "--epochs", "1", "-q"]) == 0
    out = capsys.readouterr().out
    assert "measured on" not in out and "on scikit-learn's 8x8 digits" in out and loaded == ["images"]

    # asked for by the recipe, it is not replaced by the bundled digits when it cannot be loaded
    def unavailable(data_home, shape):
        raise datasets.DatasetUnavailableError("offline", dataset="fashion-mnist", reason="no network here", where="/nowhere")

    monkeypatch.setitem(datasets.DATASETS, "fashion-mnist", dataclasses.replace(real, load=unavailable))
    assert main(["train", "--recipe", "fashion-best", "--epochs", "1", "-q", "--out", "m2.npz"]) == 2
    captured = capsys.readouterr()
    assert "Could not download fashion-mnist" in captured.err and "no network here" in captured.err
    assert "instead" not in captured.out
    assert not (tmp_path / "m2.npz").exists()
