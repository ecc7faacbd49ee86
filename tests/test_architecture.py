"""The direction of the arrows, read from the import statements (docs/architecture.md).

Every `import` and `from ... import` of every project module counts, function-level ones included: an import
hidden in a function is still a dependency a reader has to follow.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.modeling_fixtures import REPO

# a package may import its own modules and those of lower layers only (bench measures everything: on top)
LAYERS = {"bench": 5, "app": 4, "audit": 3, "jobs": 2, "modeling": 1, "data_tools": 1, "binaudit": 0}


def project_modules() -> dict[str, Path]:
    """{"jobs.local.runner": path} for every module of the layered packages (tests are not project code)."""
    modules = {}
    for package in LAYERS:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules `name` imports anywhere in its file (`from a import b` means a.b when b is a module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from .x import y
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import a.b.c` of a name below a module: the module
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imported_modules(name, path, set(modules)) for name, path in modules.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_the_graph_reader_sees_function_level_and_relative_imports(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import jobs.store\nfrom . import sibling\n\ndef f():\n    from audit.export import x\n")
    known = {"jobs", "jobs.store", "audit", "audit.export", "pkg.sibling", "pkg.m"}
    assert imported_modules("pkg.m", module, known) == {"jobs.store", "audit.export", "pkg.sibling"}
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle_among_the_projects_modules():
    graph = import_graph()
    assert len(graph) > 50  # the whole project was read
    assert find_cycles(graph) == []


def test_every_import_points_down_the_layers():
    """app -> audit -> jobs -> modeling, data_tools -> binaudit; never upwards, not even inside a function."""
    upward = []
    for name, targets in import_graph().items():
        layer = LAYERS[name.split(".")[0]]
        for target in sorted(targets):
            top = target.split(".")[0]
            if top != name.split(".")[0] and LAYERS[top] >= layer:
                upward.append(f"{name} imports {target}")
    assert upward == []


DOCS = ("README.md", "docs/architecture.md", "docs/aws.md", "docs/security.md", "docs/benchmarks.md")
PROJECT_PATH = re.compile(r"`((?:app|audit|jobs|modeling|data_tools|binaudit|bench|tests|docs)/[\w./-]+\.(?:py|md))`")


def test_every_project_file_the_docs_name_exists():
    """Where the docs say a job of the system lives (`modeling/promotion.py`), that file is there: a move that
    forgets a doc fails here."""
    named = {(doc, m.group(1)) for doc in DOCS for m in PROJECT_PATH.finditer((REPO / doc).read_text("utf-8"))}
    assert len(named) > 40  # the docs were read
    assert [f"{doc}: {path}" for doc, path in sorted(named) if not (REPO / path).is_file()] == []
