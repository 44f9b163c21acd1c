"""Every notebook in docs/notebooks runs, cell by cell, in a real Jupyter kernel (ipykernel via nbclient),
on the reduced budget (TEGAKI_NOTEBOOK_QUICK=1: a few thousand images, one epoch); no cell may raise."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "docs" / "notebooks").glob("*.ipynb"))


def test_there_is_one_notebook_per_source_document():
    assert len(NOTEBOOKS) == 5, NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, mnist_dir, monkeypatch, tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("TEGAKI_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("TEGAKI_DATA_DIR", str(mnist_dir.parent))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(Path(__file__).resolve().parents[1] / "src"),
                                                      os.environ.get("PYTHONPATH", "")]))
    nb = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit notebooks without outputs"
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, naming the cell, if any cell fails
    images = sum(1 for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {}))
    assert images >= 2, f"{path.name} drew {images} pictures"
