import os
import pickle
import zipfile

import numpy as np
import pytest
from sklearn.datasets import load_digits

from skcnn import CNNClassifier, ParameterFileError


@pytest.fixture(scope="module")
def data():
    X, y = load_digits(return_X_y=True)
    return X.astype(np.float32), y


@pytest.fixture(scope="module")
def model(data):
    X, y = data
    return CNNClassifier(max_iter=3, random_state=0).fit(X[:1000], y[:1000])


def test_parameter_file_round_trip_without_pickle(model, data, tmp_path):
    X, _ = data
    path = tmp_path / "model.npz"
    model.save_params(path)
    with np.load(path, allow_pickle=False) as f:  # the whole file loads without pickle
        assert "1.W" in f.files and "classes" in f.files and "__meta__" in f.files
    loaded = CNNClassifier().load_params(path)
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
    assert loaded.n_iter_ == 3 and loaded.loss_curve_ == pytest.approx(model.loss_curve_)
    again = CNNClassifier.from_params_file(path)
    np.testing.assert_array_equal(again.predict(X), model.predict(X))


def test_deep_float64_string_label_model_round_trip(tmp_path):
    X, y = load_digits(return_X_y=True)
    names = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])
    clf = CNNClassifier(architecture="deep", conv_filters=((4, 4), 8), max_iter=1, random_state=0)
    clf.fit(X[:300], names[y[:300]])
    clf.save_params(tmp_path / "deep.npz")
    loaded = CNNClassifier.from_params_file(tmp_path / "deep.npz")
    assert loaded.network_.dtype == np.float64
    np.testing.assert_array_equal(loaded.predict(X[:50]), clf.predict(X[:50]))
    np.testing.assert_array_equal(loaded.predict_proba(X[:50]), clf.predict_proba(X[:50]))


def test_loaded_model_keeps_training(model, data, tmp_path):
    X, y = data
    model.save_params(tmp_path / "m.npz")
    loaded = CNNClassifier().load_params(tmp_path / "m.npz")
    loaded.partial_fit(X[:500], y[:500])
    assert loaded.n_iter_ == 4


def assert_unchanged_after_rejection(model, X, call):
    before = model.predict_proba(X)
    state = dict(model.__dict__)
    with pytest.raises(ValueError) as info:
        call()
    np.testing.assert_array_equal(model.predict_proba(X), before)
    assert set(model.__dict__) == set(state)
    return str(info.value)


def test_a_mismatched_architecture_is_refused_and_leaves_the_model_alone(model, data, tmp_path):
    X, y = data
    other = CNNClassifier(conv_filters=(8,), max_iter=1, random_state=0).fit(X[:200], y[:200])
    other.save_params(tmp_path / "other.npz")
    message = assert_unchanged_after_rejection(model, X, lambda: model.load_params(tmp_path / "other.npz"))
    assert "matching architecture parameters" in message


def test_truncated_file_is_refused(model, data, tmp_path):
    X, _ = data
    model.save_params(tmp_path / "m.npz")
    raw = (tmp_path / "m.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(raw[: len(raw) // 2])
    message = assert_unchanged_after_rejection(model, X, lambda: model.load_params(tmp_path / "cut.npz"))
    assert "not a readable skcnn parameter file" in message


def test_a_file_with_the_wrong_arrays_is_refused(model, data, tmp_path):
    X, _ = data
    model.save_params(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz", allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    wrong_shape = dict(arrays, **{"1.W": arrays["1.W"][..., :8]})
    np.savez(tmp_path / "shape.npz", **wrong_shape)
    assert "shape" in assert_unchanged_after_rejection(model, X, lambda: model.load_params(tmp_path / "shape.npz"))
    dropped = next(k for k in arrays if k.endswith(".b"))
    missing = {k: v for k, v in arrays.items() if k != dropped}
    np.savez(tmp_path / "missing.npz", **missing)
    assert "missing" in assert_unchanged_after_rejection(model, X, lambda: model.load_params(tmp_path / "missing.npz"))
    nan = dict(arrays, **{"1.W": np.full_like(arrays["1.W"], np.nan)})
    np.savez(tmp_path / "nan.npz", **nan)
    assert "non-finite" in assert_unchanged_after_rejection(model, X, lambda: model.load_params(tmp_path / "nan.npz"))
    no_meta = {k: v for k, v in arrays.items() if k != "__meta__"}
    np.savez(tmp_path / "nometa.npz", **no_meta)
    assert "metadata" in assert_unchanged_after_rejection(model, X, lambda: model.load_params(tmp_path / "nometa.npz"))


class _Exploit:
    """Unpickling this runs code: it would create the marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_file_that_would_run_code_is_refused_and_runs_nothing(model, data, tmp_path):
    X, _ = data
    marker = tmp_path / "pwned"
    # an npz whose array is a pickled object
    bomb = np.empty(1, dtype=object)
    bomb[0] = _Exploit(marker)
    np.savez(tmp_path / "object.npz", **{"1.W": bomb})
    assert_unchanged_after_rejection(model, X, lambda: model.load_params(tmp_path / "object.npz"))
    # a bare pickle with an .npz name
    (tmp_path / "pickle.npz").write_bytes(pickle.dumps(_Exploit(marker)))
    assert_unchanged_after_rejection(model, X, lambda: model.load_params(tmp_path / "pickle.npz"))
    # a zip whose member is a pickle
    with zipfile.ZipFile(tmp_path / "zip.npz", "w") as z:
        z.writestr("__meta__.npy", pickle.dumps(_Exploit(marker)))
    assert_unchanged_after_rejection(model, X, lambda: model.load_params(tmp_path / "zip.npz"))
    assert not marker.exists()


def test_parameter_file_error_is_a_value_error():
    assert issubclass(ParameterFileError, ValueError)
    with pytest.raises(ParameterFileError, match="not a readable"):
        CNNClassifier().load_params("/nonexistent/model.npz")
