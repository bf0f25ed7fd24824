"""Every example runs, on small settings, so none can rot."""

import re
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
    "distributed_search.py": ["--epochs", "1"],  # + --scheduler
    "incremental_dask.py": ["--n-train", "600", "--blocks", "2", "--n-test", "200"],  # + --scheduler
    "inspect_and_export.py": ["--n-train", "300", "--epochs", "1", "--n-test", "300"],
    "colour_shapes.py": ["--epochs", "3", "--n-per-class", "12"],
}
#: Optional packages an example needs (in the test extra).
NEEDS = {"incremental_dask.py": ["dask_ml"], "inspect_and_export.py": ["onnx", "onnxruntime"]}


def test_every_example_is_covered():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(SMALL)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_example_runs(name, tmp_path, monkeypatch, capsys, request):
    for module in NEEDS.get(name, []):
        pytest.importorskip(module)
    monkeypatch.chdir(tmp_path)
    argv = [name, *SMALL[name]]
    if name in ("incremental_dask.py", "distributed_search.py"):
        # on the suite's cluster (tests/test_readme.py starts a LocalCluster as the README does)
        argv += ["--scheduler", request.getfixturevalue("dask_client").scheduler.address]
    monkeypatch.setattr(sys, "argv", argv)
    if name == "train_mnist.py":  # no network here: the example must fall back, and say so
        request.getfixturevalue("offline")
        monkeypatch.setenv("SCIKIT_LEARN_DATA", str(tmp_path))
    runpy.run_path(str(EXAMPLES / name), run_name="__main__")
    out = capsys.readouterr().out
    assert "accuracy" in out or "best" in out
    if name == "pipeline_and_persistence.py":
        assert out.count("identical probabilities: True") == 2
    if name == "incremental_dask.py":
        assert "2 partial_fit calls" in out and "on 2 workers" in out and "equal predict's: True" in out
    if name == "inspect_and_export.py":
        assert "Total params" in out
        assert float(re.search(r"predict_proba by at most (\S+),", out).group(1)) < 1e-5
        assert (tmp_path / "saliency.png").stat().st_size > 2000 and (tmp_path / "model.onnx").exists()
