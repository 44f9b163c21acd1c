"""docs/python.md's examples, run in order exactly as written (they share one namespace, as a notebook)."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import run_python_blocks

DOC = Path(__file__).resolve().parents[1] / "docs" / "python.md"


def test_python_md_runs_as_written(mnist_dir, monkeypatch, capsys):
    monkeypatch.setenv("TEGAKI_DATA_DIR", str(mnist_dir.parent))
    ns = run_python_blocks(DOC)
    assert ns["_blocks"] >= 5
    out = capsys.readouterr().out
    assert "(60000, 28, 28) uint8 [5 0 4 1 9 2 1 3 1 4]" in out
    assert 'Model: "model"' in out and "accuracy" in out
    assert ns["ev"].accuracy > 0.8
    assert ns["features"].shape == (1000, 500)


def test_readme_python_cell_runs_as_written(mnist_dir, monkeypatch, tmp_path, capsys):
    readme = (DOC.parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## From Python"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.setenv("TEGAKI_DATA_DIR", str(mnist_dir.parent))
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    exec(compile(code, "README.md", "exec"), ns)
    assert ns["ev"].accuracy > 0.95
    assert (tmp_path / "runs" / "mine" / "model.safetensors").is_file()


def test_readme_functional_example_runs_as_written(capsys):
    readme = (DOC.parents[1] / "README.md").read_text(encoding="utf-8")
    code = re.search(r"```python\n(.*?)```", readme[readme.index("Networks with branches"):], re.S).group(1)
    ns: dict = {}
    exec(compile(code, "README.md", "exec"), ns)
    assert "Connected to" in capsys.readouterr().out and ns["model"].spec.num_params() == 5002
