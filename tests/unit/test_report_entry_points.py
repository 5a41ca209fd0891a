"""Issue 18, layering: each run_report command has one way to run it, and the library never imports a command line."""

from __future__ import annotations

import ast
from pathlib import Path

REPORTING = Path(__file__).resolve().parents[2] / "run_report"


def _is_main_guard(node: ast.AST) -> bool:
    return (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
            and isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__")


def _imported_modules(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_only_the_cli_modules_run_and_nothing_else_imports_them():
    modules = {path.stem: ast.parse(path.read_text(encoding="utf-8")) for path in REPORTING.glob("*.py")}
    assert {"report_cli", "metrics_cli", "html_report", "metrics"} <= set(modules)
    runnable = {name for name, tree in modules.items() if any(map(_is_main_guard, tree.body))}
    assert runnable == {"report_cli", "metrics_cli"}
    for name, tree in modules.items():
        if not name.endswith("_cli"):
            assert not {m for m in _imported_modules(tree) if m.endswith("_cli")}, f"run_report/{name}.py imports a command line"
