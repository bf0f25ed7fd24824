"""The README's Python examples run, and print what their comments say."""

import contextlib
import io
import re
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)
# the examples that need nothing beyond the package (the Dask one needs a cluster)
LOCAL = [block for block in BLOCKS if "dask" not in block]


def test_the_readme_has_the_examples_this_file_runs():
    assert len(LOCAL) == 3
    assert "CNNClassifier(random_state=0).fit" in LOCAL[0]
    assert "Residual(" in LOCAL[1]
    assert "memorise" in LOCAL[2]


@pytest.mark.parametrize("block", LOCAL, ids=["estimator", "layers", "engine"])
def test_readme_example_prints_the_figures_its_comments_claim(block):
    claimed = [float(m) for m in re.findall(r"^print\(.*\)\s+#\s*([0-9.]+)", block, re.M)]
    assert claimed, "every example ends with a print(...)  # figure line"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block, "README.md", "exec"), {})
    printed = [float(line) for line in out.getvalue().split()]
    assert printed == pytest.approx(claimed, rel=0.05)
