"""A step's code version: a hash of the source of its spec and executor modules (components/<step>/spec.py and
executor.py) and of every project module they import, transitively (only this project's packages,
PROJECT_PACKAGES; third-party code is pinned by the environment instead). Editing a library module therefore
changes the cache key of exactly the steps that use it.

Imports are read with `ast`, never executed, so computing a version costs no TensorFlow or Beam import. Every
import statement counts, including those inside functions: a component imports its heavy helpers lazily."""
from __future__ import annotations

import ast
import contextlib
import functools
import hashlib
import importlib.util
import sys
from pathlib import Path
from typing import Iterator

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PROJECT_PACKAGES = ("contract", "library", "components", "pipeline", "engines", "apps")


def _module_file(name: str, root: Path) -> Path | None:
    """The source file of module `name` under `root` (a package's __init__.py), or None if it is not there."""
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _statements(nodes: list[ast.AST]) -> Iterator[ast.AST]:
    """Every statement, nested ones included (an import is a statement, so expressions need no visit)."""
    for node in nodes:
        yield node
        for block in ("body", "orelse", "finalbody", "handlers", "cases"):
            yield from _statements(getattr(node, block, None) or [])


@functools.lru_cache(maxsize=None)
def _imported_names(source: bytes, package: str) -> frozenset[str]:
    """Every module named by an import statement in `source` (relative imports made absolute against
    `package`), plus each `from package import name` as package.name in case that names a submodule."""
    names: set[str] = set()
    for node in _statements(ast.parse(source).body):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            # relative: "from . import x", "from ..a import b"
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.add(base)
            # kept only if such a module exists
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return frozenset(names)


def _outside_file(name: str) -> Path | None:
    """The source file of a module outside the project's packages (a test's toy component), found without
    importing it (unless it is already imported)."""
    if getattr(sys.modules.get(name), "__file__", None):
        return Path(sys.modules[name].__file__)
    with contextlib.suppress(ImportError, ValueError):
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.origin and spec.origin.endswith(".py"):
            return Path(spec.origin)
    return None


def project_modules(module: str, root: Path = PROJECT_ROOT) -> dict[str, Path]:
    """`module` and every project module it imports, directly or not: name -> source file. `module` itself may
    live outside the project's packages (a test's toy component): then its file is the imported module's."""
    found: dict[str, Path] = {}
    pending = [module]
    while pending:
        name = pending.pop()
        if name in found or (name != module and name.split(".")[0] not in PROJECT_PACKAGES):
            continue
        path = _module_file(name, root)
        if path is None and name == module:
            path = _outside_file(name)
        if path is None:
            continue
        found[name] = path
        parents = [".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)]
        # importing a.b.c runs a/__init__.py and a/b/__init__.py
        pending.extend(parents)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        pending.extend(_imported_names(path.read_bytes(), package))
    return found


def code_version(*modules: str, root: Path = PROJECT_ROOT) -> str:
    """16 hex digits over the names and sources of `modules` and the project modules they import."""
    found: dict[str, Path] = {}
    for module in modules:
        found.update(project_modules(module, root))
    digest = hashlib.sha256()
    for name, path in sorted(found.items()):
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def step_code_version(step, root: Path = PROJECT_ROOT) -> str:
    """The code version of a DAG step (a pipeline.dag.Step): its spec and its executor, and what they import.
    Neither is imported to compute it."""
    return code_version(step.spec.module, step.spec.executor_module, root=root)
