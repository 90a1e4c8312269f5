"""The notebooks run top to bottom against a real pipeline home, and are kept without outputs."""

from __future__ import annotations

import glob
import os

import nbformat
import pytest

from pipelines.config import REPO_ROOT

NOTEBOOK_DIR = os.path.join(REPO_ROOT, "notebooks")
NOTEBOOKS = sorted(glob.glob(os.path.join(NOTEBOOK_DIR, "*.ipynb")))


def test_the_three_notebooks_exist():
    names = [os.path.basename(p) for p in NOTEBOOKS]
    assert names == ["01_lineage.ipynb", "02_data_validation.ipynb", "03_model_analysis.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebooks_are_stored_without_outputs(path):
    book = nbformat.read(path, as_version=4)
    nbformat.validate(book)
    for cell in book.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, \
                f"{os.path.basename(path)} has outputs: run scripts/strip_notebooks.py before committing"
    sources = "\n".join(c.source for c in book.cells)
    assert 'os.environ.get("CD4ML_HOME", "~/.cd4ml")' in sources


# Every notebook on SQLite; on MySQL (a real MariaDB server) the lineage notebook, which walks the
# store hardest. The other two read it through the same cd4ml.mlmd calls (run on both stores by
# test_lineage.py and test_concurrency.py), so running them twice bought ~20 s of the suite, no check.
RUNS = [("sqlite", path) for path in NOTEBOOKS] + [("mysql", p) for p in NOTEBOOKS if "01_" in os.path.basename(p)]


@pytest.mark.slow
@pytest.mark.parametrize("store, path", RUNS, ids=[f"{os.path.basename(p)}-{s}" for s, p in RUNS])
def test_notebook_runs_top_to_bottom(request, store, path, monkeypatch):
    from nbclient import NotebookClient

    trained_home = request.getfixturevalue("trained_home" if store == "sqlite" else "mysql_home")
    # The kernel inherits this process's environment: the home (and its ML Metadata store, a SQLite
    # file or a MySQL server) come from CD4ML_HOME and CD4ML_METADATA_PATH, as a user's would.
    monkeypatch.setenv("CD4ML_HOME", trained_home.config.home)
    monkeypatch.setenv("CD4ML_METADATA_PATH", trained_home.config.metadata_path)
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    book = nbformat.read(path, as_version=4)
    client = NotebookClient(book, timeout=900, kernel_name="python3",
                            resources={"metadata": {"path": NOTEBOOK_DIR}})
    client.execute()  # raises CellExecutionError, naming the cell, on any error
    outputs = [o for c in book.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "pipeline home: " + trained_home.config.home in text
    if path.endswith("01_lineage.ipynb"):
        assert trained_home.span2.pushed_version in text and "CsvExampleGen" in text
        assert any("image/png" in o.get("data", {}) for o in outputs), "the lineage graph was not drawn"
    if path.endswith("02_data_validation.ipynb"):
        assert "drifted between span 1 and span 2" in text
    if path.endswith("03_model_analysis.ipynb"):
        assert "TFMA validation_ok: True" in text and "blessed: every threshold passed" in text
        assert "explainability check: passed" in text and "additive: True" in text
