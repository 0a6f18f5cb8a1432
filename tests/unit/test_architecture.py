"""The import graph has no circles. The layer order itself (contract < library < components < pipeline <
engines < apps) is enforced by import-linter's contracts in pyproject.toml (`make lint`); this test reads the
same graph the code versions are derived from (every import statement, those inside functions included)."""
from __future__ import annotations

from library.code_version import PROJECT_PACKAGES, PROJECT_ROOT, _imported_names


def _graph() -> dict[str, set[str]]:
    modules = {}
    for package in PROJECT_PACKAGES:
        for path in sorted((PROJECT_ROOT / package).rglob("*.py")):  # subpackages too (components/<step>/)
            parts = path.relative_to(PROJECT_ROOT).with_suffix("").parts
            modules[".".join(parts[:-1] if path.name == "__init__.py" else parts)] = path
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        graph[name] = {imported for imported in _imported_names(path.read_bytes(), package)
                       if imported in modules and imported != name}
    return graph


def _a_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (found := visit(target)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_module_imports_itself_through_others():
    graph = _graph()
    assert len(graph) > 40
    assert _a_cycle(graph) is None, " -> ".join(_a_cycle(graph))


def test_the_cycle_finder_finds_one():
    assert _a_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _a_cycle({"a": {"b"}, "b": set()}) is None
