"""The layout's two rules, read from the source: the core never imports the development wing,
and neither package has an import cycle.

Every import counts, wherever it sits: at module level, inside a function (a lazy import runs
when its code does: in production, for the core), and, for the direction rule, under
``TYPE_CHECKING`` too. The cycle rule counts the imports that run (``TYPE_CHECKING`` blocks are
for the type checker only).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO

SRC = REPO / "src"
CORE = "retrain_trigger"
WING = "retrain_trigger_dev"


def modules(package: str, src: Path = SRC) -> dict[str, Path]:
    """Dotted name -> file of every module of one package under src/."""
    out = {}
    for path in sorted((src / package).rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        name = ".".join(path.relative_to(src).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(path: Path, *, type_checking: bool, src: Path = SRC) -> Iterator[tuple[int, str]]:
    """(line, imported name) of every import in the file; ``from a import b`` gives ``a.b``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    name = ".".join(path.relative_to(src).with_suffix("").parts)
    package = name.removesuffix(".__init__") if path.name == "__init__.py" else name
    package = package if path.name == "__init__.py" else package.rsplit(".", 1)[0]

    def visit(node: ast.AST) -> Iterator[tuple[int, str]]:
        if isinstance(node, ast.If) and _is_type_checking(node.test) and not type_checking:
            for child in node.orelse:
                yield from visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join([*parts, base] if base else parts)
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}"
        for child in ast.iter_child_nodes(node):
            yield from visit(child)

    yield from visit(tree)


def resolve(target: str, known: dict[str, Path]) -> str:
    """The module an import names: ``a.b`` itself, or ``a`` when ``b`` is an attribute of it."""
    while target and target not in known:
        target = target.rpartition(".")[0]
    return target


@pytest.mark.parametrize("module", sorted(modules(CORE)))
def test_the_core_imports_nothing_from_the_wing(module: str) -> None:
    path = modules(CORE)[module]
    found = [
        f"{path.relative_to(REPO)}:{line} imports {target}"
        for line, target in imports(path, type_checking=True)
        if target == WING or target.startswith(WING + ".")
    ]
    assert not found, found


def cycles(package: str, src: Path = SRC) -> list[list[str]]:
    """Import cycles among a package's modules (strongly connected components of two or more
    modules), by Tarjan's algorithm."""
    known = modules(package, src)
    graph = {
        name: sorted(
            {
                resolved
                for _, target in imports(path, type_checking=False, src=src)
                if (resolved := resolve(target, known)) and resolved != name
            }
        )
        for name, path in known.items()
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in index:
                connect(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            connect(node)
    return found


@pytest.mark.parametrize("package", [CORE, WING])
def test_no_import_cycle(package: str) -> None:
    assert cycles(package) == []


def test_the_cycle_check_finds_a_cycle(tmp_path: Path) -> None:
    """The check above can fail: two modules importing each other, one of them lazily."""
    package = tmp_path / "src" / "pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg import b\n")
    (package / "b.py").write_text("def f():\n    from pkg.a import x\n")
    (package / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.a\n"
    )
    assert cycles("pkg", tmp_path / "src") == [["pkg.a", "pkg.b"]]


def test_the_direction_check_sees_lazy_and_type_checking_imports(tmp_path: Path) -> None:
    source = tmp_path / "src" / CORE
    source.mkdir(parents=True)
    (source / "m.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import retrain_trigger_dev.cli\n"
        "def f():\n    from retrain_trigger_dev.local import backend\n"
    )
    found = imports(source / "m.py", type_checking=True, src=tmp_path / "src")
    targets = [target for _, target in found]
    assert targets == [
        "typing.TYPE_CHECKING",
        "retrain_trigger_dev.cli",
        "retrain_trigger_dev.local.backend",
    ]


@pytest.mark.parametrize("module", sorted(modules(CORE)))
def test_no_core_module_above_about_400_lines_without_its_reason(module: str) -> None:
    path = modules(CORE)[module]
    lines = len(path.read_text().splitlines())
    docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
    assert lines <= 420 or "Above ~400 lines on purpose" in docstring, (path, lines)
