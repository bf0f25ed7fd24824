"""Every example runs, on small settings, so none can rot."""

import runpy
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

SMALL = {
    "quickstart.py": ["--epochs", "3"],
    "train_mnist.py": ["--epochs", "1", "--n-train", "300"],
    "grid_search_learning_rate.py": ["--epochs", "2", "--n-jobs", "1"],
    "pipeline_and_persistence.py": ["--epochs", "2"],
    "distributed_search.py": ["--epochs", "1", "--workers", "1"],
    "colour_shapes.py": ["--epochs", "3", "--n-per-class", "12"],
}


def test_every_example_is_covered():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(SMALL)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_example_runs(name, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [name, *SMALL[name]])
    if name == "train_mnist.py":  # no network here: the example must fall back, and say so
        import urllib.error

        def offline(*args, **kwargs):
            raise urllib.error.URLError("offline")

        monkeypatch.setattr("sklearn.datasets._openml.urlopen", offline)
        monkeypatch.setenv("SCIKIT_LEARN_DATA", str(tmp_path))
    runpy.run_path(str(EXAMPLES / name), run_name="__main__")
    out = capsys.readouterr().out
    assert "accuracy" in out or "best" in out
    if name == "pipeline_and_persistence.py":
        assert out.count("identical probabilities: True") == 2
