"""The layout shows the run-book: each module says its job in its first line; imports form no cycle."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "podinsight_dagster"


def test_every_module_starts_with_a_docstring_saying_its_job():
    missing = []
    for path in PACKAGE.rglob("*.py"):
        doc = ast.get_docstring(ast.parse(path.read_text()))
        if not doc or not doc.strip().splitlines()[0].strip():
            missing.append(path.relative_to(PACKAGE).as_posix())
    assert missing == []


def _imports(path: Path) -> set[str]:
    """Modules of the package that ``path`` imports at module level (function-level imports are lazy)."""
    out = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("podinsight_dagster"):
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("podinsight_dagster"))
    return out


def test_module_level_imports_have_no_cycle():
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    graph = {m: {i for i in _imports(p) if i in modules and i != m} for m, p in modules.items()}
    state: dict[str, int] = {}

    def visit(m, stack):
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack + [m, n]))
            if n not in state:
                visit(n, stack + [m])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [])


MAX_MODULE_LINES = 500


def test_no_module_is_over_500_lines():
    """A module does one job a reader can hold: over 500 lines, split it by job (issue 19)."""
    long = {path.relative_to(PACKAGE).as_posix(): n for path in PACKAGE.rglob("*.py")
            if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES}
    assert long == {}


def test_dagster_private_api_is_used_in_one_module():
    """Every ``dagster._`` import is in dagster_internals.py, each use with a contract test
    (tests/test_dagster_internals.py)."""
    users = sorted(path.relative_to(PACKAGE).as_posix() for path in PACKAGE.rglob("*.py")
                   if "dagster._" in path.read_text())
    assert users == ["dagster_internals.py"]
