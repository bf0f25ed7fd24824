"""The README's Python examples run, and print what their comments say."""

import contextlib
import io
import re
import warnings
from pathlib import Path

import pytest
from conftest import load_benchmark

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)
# the examples that need nothing beyond the package; ONNX export, which runs
# on the classifier the first example fits; the Dask ones (a cluster)
LOCAL = [block for block in BLOCKS if "dask" not in block and "onnxruntime" not in block]
ONNX = [block for block in BLOCKS if "onnxruntime" in block]
DASK = [block for block in BLOCKS if "dask" in block]


def test_the_readme_has_the_examples_this_file_runs():
    assert len(LOCAL) == 3 and len(ONNX) == 1 and len(DASK) == 2 and len(BLOCKS) == 6
    assert "CNNClassifier(random_state=0).fit" in LOCAL[0]
    assert "Residual(" in LOCAL[1]
    assert "memorise" in LOCAL[2]
    assert "export_onnx(clf" in ONNX[0]
    assert "GridSearchCV" in DASK[0] and 'if __name__ == "__main__":' in DASK[0]
    assert "Incremental" in DASK[1]  # examples/incremental_dask.py runs it (tests/test_examples.py)


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
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        figures = run(LOCAL[0], namespace)
    namespace["warnings"] = [w.category.__name__ for w in caught]
    return namespace, figures


def test_readme_estimator_example_prints_the_figure_its_comment_claims(estimator_example):
    namespace, (printed, claimed) = estimator_example
    assert printed == pytest.approx(claimed, rel=0.05)
    # the README says this example warns that max_iter ran out; so it must, and warn of nothing else
    assert "It also prints a `ConvergenceWarning`" in README
    assert namespace["warnings"] == ["ConvergenceWarning"]


@pytest.mark.parametrize("block", LOCAL[1:], ids=["layers", "engine"])
def test_readme_example_prints_the_figures_its_comments_claim(block):
    printed, claimed = run(block, {})
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


def test_readme_dask_example_runs_as_a_script(monkeypatch):
    """As written, on the first 150 digits: run as a script it searches on a
    two-process LocalCluster and prints the best setting; imported by a
    worker process (any other __name__) it starts nothing."""
    pytest.importorskip("dask.distributed")
    import sklearn.datasets

    load_digits = sklearn.datasets.load_digits
    monkeypatch.setattr(sklearn.datasets, "load_digits", lambda **kw: tuple(a[:150] for a in load_digits(**kw)))
    code = compile(DASK[0], "README.md", "exec")
    as_worker = {"__name__": "__mp_main__"}
    exec(code, as_worker)
    assert "search" not in as_worker and "X" not in as_worker
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(code, {"__name__": "__main__"})
    printed = eval(out.getvalue().strip().splitlines()[-1])  # a dict, as the comment shows
    claimed = eval(re.search(r"print\(search.best_params_\)\s+#\s*(.*)", DASK[0]).group(1))
    assert printed.keys() == claimed.keys() and printed["learning_rate_init"] in (3e-4, 1e-3, 3e-3)


def test_readme_names_only_configurations_the_benchmark_has():
    named = set(re.findall(r"--config\s+([\w-]+)", README))
    assert {"fashion-best", "fashion-best-lr01", "fashion-best-reg"} <= named  # the pattern finds them
    assert named <= set(load_benchmark("accuracy").CONFIGS)


def changed(configs, name, base):
    """The parameters of configuration ``name`` that differ from ``base``'s."""
    return {k: v for k, v in configs[name].items() if configs[base].get(k) != v}


def test_readme_fashion_best_reg_is_fashion_best_lr01_with_erasing_and_label_smoothing():
    configs = load_benchmark("accuracy").CONFIGS
    assert changed(configs, "fashion-best-reg", "fashion-best-lr01") == {
        "augment": "shift+flip+erase",
        "label_smoothing": 0.1,
    }
    assert (
        "`fashion-best-reg`, which is `fashion-best-lr01` (`fashion-best` as it was then) "
        "with random erasing and label smoothing 0.1" in README
    )


def test_readme_fashion_best_lr01_is_fashion_best_from_a_learning_rate_of_0_1():
    configs = load_benchmark("accuracy").CONFIGS
    assert changed(configs, "fashion-best-lr01", "fashion-best") == {"learning_rate_init": 0.1}
    assert configs["fashion-best"]["learning_rate_init"] == 0.2
    assert "today's `fashion-best-lr01`" in README


def test_readme_fashion_best_block_is_the_benchmarks_configuration():
    import ast

    section = README.split("### Toward 95% in 30 minutes")[1]
    block = re.search(r"```\n(CNNClassifier\(.*?\))\s*#", section, re.S).group(1)
    call = ast.parse(block).body[0].value
    shown = {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}
    accuracy = load_benchmark("accuracy")
    # what --minutes 30 sets: a time budget, and an epoch cap it never reaches
    configured = dict(
        accuracy.CONFIGS["fashion-best"],
        max_iter=accuracy.EPOCHS_UNDER_MINUTES,
        max_time=30 * 60.0,
        n_iter_no_change=accuracy.EPOCHS_UNDER_MINUTES,  # as run() sets it: the stopping rule never ends it
    )
    assert shown == configured


def test_readme_from_recipe_line_builds_the_estimator_its_block_shows():
    import ast

    from skcnn import CNNClassifier

    section = README.split("### Toward 95% in 30 minutes")[1]
    block = re.search(r"```\n(CNNClassifier\(.*?\))\s*#", section, re.S).group(1)
    line = re.search(r"```\n(CNNClassifier\.from_recipe\(.*?\))\s*#", section, re.S).group(1)
    call = ast.parse(line).body[0].value
    args = [ast.literal_eval(arg) for arg in call.args]
    kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}
    shown = ast.parse(block).body[0].value
    typed_out = CNNClassifier(**{kw.arg: ast.literal_eval(kw.value) for kw in shown.keywords})
    assert CNNClassifier.from_recipe(*args, **kwargs).get_params() == typed_out.get_params()
