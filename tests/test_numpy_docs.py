"""docs/backprop.md stays true: its code excerpts match the source lines they cite, and its
runnable examples run (they compare the NumPy conv layer's backward with plain loops)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "backprop.md"
EXCERPT = re.compile(r"From \[(src/tegaki/engines/\w+\.py), lines (\d+)-(\d+)\]\(\.\./\1#L\2-L\3\):\n\n"
                     r"```python\n(.*?)\n```", re.S)


def test_excerpts_match_the_cited_lines():
    text = DOC.read_text(encoding="utf-8")
    found = EXCERPT.findall(text)
    assert len(found) >= 5, "the walk-through should quote the conv layer, the tanh and the engine's loop"
    for path, a, b, code in found:
        lines = (ROOT / path).read_text(encoding="utf-8").splitlines()[int(a) - 1:int(b)]
        assert code == "\n".join(lines), (f"docs/backprop.md quotes {path} lines {a}-{b}, which have changed: "
                                          "copy the current lines into the excerpt and fix its line numbers")
    assert text.count("From [") == len(found), "an excerpt is not in the checked form"


def runnable_blocks() -> list[str]:
    return re.findall(r"```python\n(# runnable.*?)```", DOC.read_text(encoding="utf-8"), re.S)


@pytest.mark.parametrize("i", range(2))
def test_runnable_examples_run(i, capsys):
    blocks = runnable_blocks()
    assert len(blocks) == 2
    exec(compile(blocks[i], f"docs/backprop.md example {i + 1}", "exec"), {})
