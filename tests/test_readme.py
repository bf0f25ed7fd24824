"""The README's Python examples run, and print what their comments say."""

import contextlib
import io
import re
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)
# the examples that need nothing beyond the package (the Dask ones need a cluster)
LOCAL = [block for block in BLOCKS if "dask" not in block and "onnxruntime" not in block]
# ONNX export: runs on the classifier the first example fits
ONNX = [block for block in BLOCKS if "onnxruntime" in block]


def test_the_readme_has_the_examples_this_file_runs():
    assert len(LOCAL) == 2 and len(ONNX) == 1
    assert "CNNClassifier(random_state=0).fit" in LOCAL[0]
    assert "memorise" in LOCAL[1]
    assert "export_onnx(clf" in ONNX[0]


def run(block, namespace):
    """Execute ``block``; returns the figures it printed and those its comments claim."""
    claimed = [float(m) for m in re.findall(r"^print\(.*\)\s+#\s*([0-9.]+)", block, re.M)]
    assert claimed, "every example ends with a print(...)  # figure line"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block, "README.md", "exec"), namespace)
    return [float(line) for line in out.getvalue().split()], claimed


@pytest.fixture(scope="module")
def estimator_example():
    namespace = {}
    return namespace, run(LOCAL[0], namespace)


def test_readme_estimator_example_prints_the_figure_its_comment_claims(estimator_example):
    _, (printed, claimed) = estimator_example
    assert printed == pytest.approx(claimed, rel=0.05)


def test_readme_engine_example_prints_the_figure_its_comment_claims():
    printed, claimed = run(LOCAL[1], {})
    assert printed == pytest.approx(claimed, rel=0.05)


def test_readme_onnx_example_runs_the_exported_classifier(estimator_example, tmp_path, monkeypatch):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    monkeypatch.chdir(tmp_path)  # it writes model.onnx
    namespace, _ = estimator_example
    printed, claimed = run(ONNX[0], dict(namespace))
    assert printed == claimed
    n_weights = sum(p.size for p in namespace["clf"].network_.params())
    assert (tmp_path / "model.onnx").stat().st_size > 4 * n_weights  # float32 weights inside
