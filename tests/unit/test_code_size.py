"""The house rules on size: no product module over 450 lines and no product function over 60 lines
(docs/development.md), so a module keeps one job and a function reads as one step. The product is every
module of the project packages (library/code_version.py's PROJECT_PACKAGES); tests, tools and benchmarks are
not counted."""
from __future__ import annotations

import ast
from pathlib import Path

from library.code_version import PROJECT_PACKAGES, PROJECT_ROOT

MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 60


def product_modules() -> list[Path]:
    return sorted(path for package in PROJECT_PACKAGES for path in (PROJECT_ROOT / package).rglob("*.py"))


def long_functions(path: Path, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """"file:line name (N lines)" for each function or method of `path` longer than `limit` lines, counted
    from its `def` (decorators not included) to its last line."""
    tree = ast.parse((PROJECT_ROOT / path).read_text(encoding="utf-8"))
    functions = [node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]
    lengths = {node: node.end_lineno - node.lineno + 1 for node in functions}
    return [f"{path}:{node.lineno} {node.name} ({lines} lines)"
            for node, lines in lengths.items() if lines > limit]


def test_the_checker_finds_a_long_function_and_only_it(tmp_path):
    module = tmp_path / "module.py"
    module.write_text("def short():\n    return 1\n\n\ndef long():\n" + "    x = 1\n" * 60 + "    return x\n")
    assert long_functions(module) == [f"{module}:5 long (62 lines)"]


def test_no_product_module_is_over_450_lines():
    modules = product_modules()
    assert len(modules) > 50
    too_long = {str(path.relative_to(PROJECT_ROOT)): lines for path in modules
                if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES}
    assert too_long == {}, "split these modules along their seams"


def test_no_product_function_is_over_60_lines():
    too_long = [entry for path in product_modules()
                for entry in long_functions(path.relative_to(PROJECT_ROOT))]
    assert too_long == [], "split these functions into named steps"
