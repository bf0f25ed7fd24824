import importlib.util
import types
import urllib.error
from pathlib import Path

import numpy as np
import pytest

from skcnn.functions import numerical_gradient


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name):
    """The script benchmarks/NAME.py as a module (benchmarks/ is no package)."""
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rel_error(a, b):
    """Relative error between two arrays, by norms (0 when both are 0)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    denom = np.linalg.norm(a) + np.linalg.norm(b)
    return 0.0 if denom == 0 else float(np.linalg.norm(a - b) / denom)


def learnable_arrays(layer, prefix=""):
    """(name, owner, key) for every learnable array of ``layer`` and of the
    layers inside it (a residual block's), named like "0.W", "projection.W"."""
    for key in layer.params:
        yield prefix + key, layer, key
    for name, sub in layer.sublayers().items():
        yield from learnable_arrays(sub, f"{prefix}{name}.")


def check_layer_gradients(layer, x, rng, tol=1e-6):
    """Compare a layer's backward with central differences of sum(out * R).

    Checks the input gradient (when the layer computes one) and every
    parameter gradient, those of the layers inside it included; returns the
    relative error of each, by name ("x", "W", "0.W", ...).
    """
    out = layer.forward(x, training=True)
    r = rng.standard_normal(out.shape)

    def f():
        return float(np.sum(layer.forward(x, training=True) * r))

    layer.forward(x, training=True)
    dx = layer.backward(r.copy())
    arrays = list(learnable_arrays(layer))
    grads = {name: owner.grads[key].copy() for name, owner, key in arrays}
    errors = {}
    if dx is not None:
        errors["x"] = rel_error(dx, numerical_gradient(f, x))
    for name, owner, key in arrays:
        errors[name] = rel_error(grads[name], numerical_gradient(f, owner.params[key]))
    for name, err in errors.items():
        assert err < tol, f"{layer!r}: gradient of {name} off by {err:.2e}"
    return errors


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def fashion_mnist():
    """Fashion-MNIST images ``(X_train, X_test, y_train, y_test)``, from
    Debian's dataset-fashion-mnist; tests that need it skip where it is not
    installed."""
    from skcnn.datasets import DEBIAN_FASHION_MNIST, load_idx_dataset

    if not DEBIAN_FASHION_MNIST.is_dir():
        pytest.skip(f"Fashion-MNIST is not installed in {DEBIAN_FASHION_MNIST}")
    return load_idx_dataset(DEBIAN_FASHION_MNIST, shape="images")


@pytest.fixture(scope="session")
def dask_client():
    """A client of one two-process LocalCluster (one thread each) on
    127.0.0.1, shared by the tests and examples that use Dask."""
    distributed = pytest.importorskip("dask.distributed")
    cluster = distributed.LocalCluster(  # (dashboard_address=None would still take port 8787)
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address="127.0.0.1:0"
    )
    with distributed.Client(cluster) as client:
        yield client
    cluster.close()


@pytest.fixture(autouse=True)
def _close_figures():
    """Close the figures a test left open (pyplot keeps them, and warns past 20)."""
    yield
    import sys

    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close("all")


@pytest.fixture
def offline(monkeypatch):
    """No network: scikit-learn's OpenML downloads fail at once, as they do on
    a machine without internet, but without its retry pauses (a second
    between tries, three tries a data set)."""

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("no network in this test")

    monkeypatch.setattr("sklearn.datasets._openml.urlopen", no_network)
    monkeypatch.setattr("sklearn.datasets._openml.time", types.SimpleNamespace(sleep=lambda seconds: None))


@pytest.fixture(scope="session")
def digits_split():
    """scikit-learn's 8x8 digits as float32 rows, split 75/25, stratified,
    ``random_state=0``: ``(X_train, X_test, y_train, y_test)``. Shared; do
    not modify the arrays."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    return train_test_split(X.astype(np.float32), y, test_size=0.25, random_state=0, stratify=y)
