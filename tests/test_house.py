"""The layout's rules, checked on the source: short functions, imports that run one way, one of each.

These read the code as text (ast); they assert the numbers the project holds itself to: no function
in src/ over 60 lines, no import cycle between tegaki's modules (lazy imports inside functions count
too), no command module importing the CLI, and one definition each of softmax, normalisation and PNG
encoding.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "tegaki"


def modules() -> dict[str, ast.Module]:
    out = {}
    for p in sorted(PKG.rglob("*.py")):
        rel = p.relative_to(SRC).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = ast.parse(p.read_text(encoding="utf-8"), filename=str(p))
    return out


def imports_of(name: str, tree: ast.Module, known: set[str]) -> set[str]:
    """The tegaki modules `name` imports anywhere in its body (the package itself excluded)."""
    found = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Import):
            targets = [a.name for a in n.names]
        elif isinstance(n, ast.ImportFrom) and n.level == 0 and n.module:
            targets = [n.module] + [f"{n.module}.{a.name}" for a in n.names]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != "tegaki" and t != name:
                found.add(t)
    return found


def test_no_function_over_60_lines():
    long = []
    for p in sorted(PKG.rglob("*.py")):
        for n in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > 60:
                long.append(f"{p.relative_to(SRC)}:{n.lineno} {n.name} ({n.end_lineno - n.lineno + 1} lines)")
    assert not long, long


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(u: str) -> list[str] | None:
        state[u] = 1
        stack.append(u)
        for v in sorted(graph.get(u, ())):
            if state.get(v) == 1:
                return stack[stack.index(v):] + [v]
            if v not in state and (c := visit(v)):
                return c
        stack.pop()
        state[u] = 2
        return None

    for u in sorted(graph):
        if u not in state and (c := visit(u)):
            return c
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_and_commands_never_import_cli():
    mods = modules()
    graph = {m: imports_of(m, t, set(mods)) for m, t in mods.items()}
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))
    users_of_cli = sorted(m for m, deps in graph.items() if "tegaki.cli" in deps and m != "tegaki.__main__")
    assert users_of_cli == [], users_of_cli


def definitions(name: str) -> list[str]:
    return [f"{m}:{n.lineno}" for m, t in modules().items() for n in ast.walk(t)
            if isinstance(n, ast.FunctionDef) and n.name == name]


def test_one_softmax_one_normalisation_one_png_encoder():
    assert len(definitions("softmax")) == 1, definitions("softmax")
    assert len(definitions("normalise")) == 1, definitions("normalise")
    assert definitions("normalize") == [], definitions("normalize")
    savers = []
    for m, t in modules().items():
        for n in ast.walk(t):
            if (isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "save"
                    and any(isinstance(k.value, ast.Constant) and str(k.value.value).upper() == "PNG"
                            for k in n.keywords) or
                    isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "save"
                    and any(isinstance(a, ast.Constant) and str(a.value).upper() == "PNG" for a in n.args)):
                savers.append(f"{m}:{n.lineno}")
    assert {s.split(":")[0] for s in savers} == {"tegaki.png"}, savers
