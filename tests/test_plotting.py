import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

from skcnn import CNNClassifier  # noqa: E402
from skcnn.inspection import saliency  # noqa: E402
from skcnn.plotting import (  # noqa: E402
    plot_confusion_matrix,
    plot_filters,
    plot_learning_curve,
    plot_predictions,
    plot_saliency,
)


@pytest.fixture(scope="module")
def model_and_data():
    X, y = load_digits(return_X_y=True)
    clf = CNNClassifier(max_iter=3, early_stopping=True, random_state=0).fit(X[:800], y[:800])
    return clf, X[800:], y[800:]


def saved_png(fig, path):
    fig.savefig(path)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000
    return data


def test_plot_predictions_marks_mistakes(model_and_data, tmp_path):
    clf, X, y = model_and_data
    wrong = np.flatnonzero(clf.predict(X) != y)
    order = np.r_[wrong[:2], np.flatnonzero(clf.predict(X) == y)[:4]]
    fig = plot_predictions(clf, X[order], y[order], n=6, ncols=3)
    titles = [ax.get_title() for ax in fig.axes]
    colors = [ax.title.get_color() for ax in fig.axes]
    assert len(fig.axes) == 6 and all(t.startswith("true") for t in titles)
    assert colors.count("red") == min(2, len(wrong))
    saved_png(fig, tmp_path / "pred.png")


def test_plot_learning_curve_shows_loss_and_validation(model_and_data, tmp_path):
    clf, _, _ = model_and_data
    ax = plot_learning_curve(clf)
    assert len(ax.lines) == 1 and len(ax.figure.axes) == 2  # twin axis for validation
    np.testing.assert_allclose(ax.lines[0].get_ydata(), clf.loss_curve_)
    saved_png(ax.figure, tmp_path / "curve.png")


def test_plot_confusion_matrix_and_filters(model_and_data, tmp_path):
    clf, X, y = model_and_data
    ax = plot_confusion_matrix(clf, X, y)
    saved_png(ax.figure, tmp_path / "cm.png")
    fig = plot_filters(clf)
    assert len(fig.axes) == 16
    saved_png(fig, tmp_path / "filters.png")


def test_plots_name_the_classes_and_title_the_confusion_matrix(model_and_data, tmp_path):
    clf, X, y = model_and_data
    names = [f"class {c}" for c in clf.classes_]
    ax = plot_confusion_matrix(clf, X, y, class_names=names)
    assert ax.get_title() == "Confusion matrix"
    assert [t.get_text() for t in ax.get_xticklabels()] == names
    assert [t.get_text() for t in ax.get_yticklabels()] == names
    ax = plot_confusion_matrix(clf, X, y, title="digits: 95% right")
    assert ax.get_title() == "digits: 95% right"
    fig = plot_predictions(clf, X[:3], y[:3], n=3, class_names=names)
    assert fig.axes[0].get_title().startswith(f"true class {y[0]}\npred class ")
    with pytest.raises(ValueError, match="2 names for 10 classes"):
        plot_predictions(clf, X[:3], class_names=["a", "b"])


def test_plot_saliency_draws_each_image_beside_its_map(model_and_data, tmp_path):
    clf, X, _ = model_and_data
    fig = plot_saliency(clf, X, n=5, ncols=2)
    assert len(fig.axes) == 10
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0::2] == [f"class {c}" for c in clf.predict(X[:5])] and set(titles[1::2]) == {"saliency"}
    maps = np.abs(saliency(clf, X[:5])).max(axis=1)
    for ax, expected in zip(fig.axes[1::2], maps):
        np.testing.assert_array_equal(ax.images[0].get_array(), expected)
    fig = plot_saliency(clf, X, target=7, n=2)
    assert [ax.get_title() for ax in fig.axes[0::2]] == ["class 7", "class 7"]
    saved_png(fig, tmp_path / "saliency.png")


@pytest.mark.parametrize("channels", [1, 3])
def test_pictures_show_channels_last_images_as_the_model_reads_them(channels, rng):
    X = rng.random((20, 6, 5, channels))  # channels-last, H != W: a misread layout changes the shape
    y = np.arange(20) % 2
    clf = CNNClassifier(max_iter=1, data_format="channels_last", random_state=0).fit(X, y)
    for fig in (plot_predictions(clf, X, y, n=2), plot_saliency(clf, X, n=2)):
        shown = np.asarray(fig.axes[0].images[0].get_array())
        if channels == 1:
            np.testing.assert_allclose(shown, X[0, :, :, 0])
        else:  # colour, scaled to [0, 1] over the images shown
            first = X[:2]
            np.testing.assert_allclose(shown, (X[0] - first.min()) / (first.max() - first.min()))
