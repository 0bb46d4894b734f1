"""The layering of ``adapter/`` and ``handlers/``, read from the source (AST), not by importing.

- the channels in ``handlers/`` reach the core only through :mod:`adapter.channels`;
- the public ``__all__`` lists are sorted;
- no import cycles among the project's modules: imports at module level and inside
  functions count alike, those under ``if TYPE_CHECKING:`` do not (a package's
  ``__init__`` importing its own submodules counts too: it runs them);
- no module over 600 lines;
- the pure core (``adapter/core/``, ``adapter/rocketchat/sansio.py``) imports nothing of
  the I/O layers, nor an HTTP, database or metrics library.
"""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

import adapter
import adapter.channels

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("adapter", "handlers")
MAX_LINES = 600
PURE = ("adapter.core", "adapter.rocketchat.sansio")
FORBIDDEN_IN_PURE = (
    "adapter.ledger",
    "adapter.delivery",
    "adapter.web",
    "adapter.ops",
    "adapter.channels",
    "sqlalchemy",
    "aiohttp",
    "httpx",
    "starlette",
    "prometheus_client",
    "structlog",
)


@dataclass(frozen=True)
class Import:
    """One import statement's target, as a dotted name, and where it is."""

    name: str
    line: int
    type_checking: bool


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    is_package: bool

    @property
    def relative(self) -> str:
        return self.path.relative_to(ROOT).as_posix()


@cache
def modules() -> dict[str, Module]:
    """Every module of the project's packages, by dotted name."""
    found: dict[str, Module] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts.pop()
            found[".".join(parts)] = Module(".".join(parts), path, is_package)
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_in(source: str, name: str, *, is_package: bool = False) -> tuple[Import, ...]:
    """What the module ``name`` with this ``source`` imports, anywhere in it (``from a
    import b``: ``a.b``; relative imports resolved)."""
    package = name.split(".") if is_package else name.split(".")[:-1]
    found: list[Import] = []

    def visit(node: ast.AST, type_checking: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, True)
            for child in node.orelse:
                visit(child, type_checking)
            return
        if isinstance(node, ast.Import):
            found.extend(Import(a.name, node.lineno, type_checking) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            found.extend(
                Import(f"{target}.{a.name}", node.lineno, type_checking) for a in node.names
            )
        for child in ast.iter_child_nodes(node):
            visit(child, type_checking)

    visit(ast.parse(source), False)
    return tuple(found)


@cache
def imports(name: str) -> tuple[Import, ...]:
    """What project module ``name`` imports."""
    module = modules()[name]
    source = module.path.read_text(encoding="utf-8")
    return imports_in(source, name, is_package=module.is_package)


def project_module(dotted: str) -> str | None:
    """The project module ``dotted`` names (``a.b.name`` → ``a.b``), or None if not ours."""
    parts = dotted.split(".")
    while parts and ".".join(parts) not in modules():
        parts.pop()
    return ".".join(parts) or None


@cache
def graph() -> dict[str, frozenset[str]]:
    """Project module → the project modules it imports at run time."""
    return {
        name: frozenset(
            target
            for imp in imports(name)
            if not imp.type_checking and (target := project_module(imp.name)) not in (None, name)
        )
        for name in modules()
    }


def cycles_of(edges: Mapping[str, Iterable[str]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for v in sorted(edges):
        if v not in index:
            strong(v)
    return found


@cache
def cycles() -> tuple[frozenset[str], ...]:
    """The import cycles among the project's modules."""
    return tuple(cycles_of(graph()))


# -- (a) handlers/ use the core only through adapter.channels ------------------------------


def _outside_project(top: str) -> bool:
    """A top-level name of the standard library or an installed third-party package (not
    one of the repository's own top-level packages, such as ``tests``)."""
    if (ROOT / top).is_dir() or (ROOT / f"{top}.py").exists():
        return False
    return top in sys.stdlib_module_names or importlib.util.find_spec(top) is not None


@pytest.mark.parametrize("name", sorted(n for n in modules() if n.startswith("handlers")))
def test_handlers_reach_the_core_only_through_adapter_channels(name: str) -> None:
    wrong = []
    for imp in imports(name):
        top = imp.name.split(".")[0]
        if top == "adapter":
            if project_module(imp.name) != "adapter.channels":
                wrong.append(f"line {imp.line}: {imp.name} (import it from adapter.channels)")
        elif top != "handlers" and not _outside_project(top):
            wrong.append(f"line {imp.line}: {imp.name} (neither the stdlib nor installed)")
    assert not wrong, f"{modules()[name].relative}: " + "; ".join(wrong)


def test_the_import_reading_counts_functions_and_sets_type_checking_apart() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from adapter.delivery.queue import DeliveryQueue\n"
        "else:\n    import adapter.web\n"
        "def f():\n    from adapter.ledger import schema\n    return schema\n"
        "from . import config\n"
    )
    found = imports_in(source, "handlers.slack.probe")
    assert [(i.name, i.type_checking) for i in found] == [
        ("typing.TYPE_CHECKING", False),
        ("adapter.delivery.queue.DeliveryQueue", True),
        ("adapter.web", False),
        ("adapter.ledger.schema", False),
        ("handlers.slack.config", False),
    ]
    assert project_module("adapter.ledger.schema") == "adapter.ledger.schema"
    assert project_module("adapter.delivery.queue.DeliveryQueue") == "adapter.delivery.queue"
    assert project_module("sqlalchemy.orm") is None


# -- (b) sorted public lists ----------------------------------------------------------------


def isort_order(name: str) -> tuple[int, str]:
    """The order ruff keeps ``__all__`` in (RUF022, isort-style): CONSTANTS, then Classes,
    then functions, each alphabetical."""
    if name.isupper():
        return (0, name)
    return (1, name) if name[:1].isupper() else (2, name)


@pytest.mark.parametrize("package", [adapter, adapter.channels], ids=lambda p: p.__name__)
def test_public_all_is_sorted_and_complete(package: object) -> None:
    names = list(package.__all__)  # type: ignore[attr-defined]
    assert names == sorted(names, key=isort_order)
    assert len(set(names)) == len(names)
    missing = [n for n in names if not hasattr(package, n)]
    assert not missing


def test_adapter_channels_offers_what_handlers_import() -> None:
    """Every name a handler takes from ``adapter.channels`` is in its ``__all__``."""
    offered = set(adapter.channels.__all__)
    taken = {
        imp.name.removeprefix("adapter.channels.")
        for name in modules()
        if name.startswith("handlers")
        for imp in imports(name)
        if project_module(imp.name) == "adapter.channels"
    }
    assert taken <= offered, sorted(taken - offered)


# -- (c) no import cycles ---------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(modules()))
def test_no_import_cycle(name: str) -> None:
    for component in cycles():
        assert name not in component, "import cycle: " + " <-> ".join(sorted(component))


def test_the_cycle_check_finds_cycles_and_counts_re_exports() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a", "e"}, "e": set()}
    assert cycles_of(edges) == [frozenset({"a", "b", "c"})]
    assert cycles_of({"a": {"b"}, "b": set()}) == []
    assert "adapter.web.app" in graph()["adapter.app"]  # from adapter.web.app import app
    assert "adapter.channels.base" in graph()["adapter.channels"]  # a package's re-export


# -- (d) short modules -------------------------------------------------------------------------


@pytest.mark.parametrize("relative", sorted(m.relative for m in modules().values()))
def test_no_module_over_600_lines(relative: str) -> None:
    lines = len((ROOT / relative).read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{relative} is {lines} lines: split it by job"


# -- (e) the pure core -------------------------------------------------------------------------


def _pure_modules() -> list[str]:
    return [n for n in modules() if any(n == p or n.startswith(p + ".") for p in PURE)]


def _forbidden(dotted: str) -> bool:
    return any(dotted == f or dotted.startswith(f + ".") for f in FORBIDDEN_IN_PURE)


@pytest.mark.parametrize("name", _pure_modules())
def test_the_pure_core_imports_no_io_layer_nor_io_library(name: str) -> None:
    """Neither the module nor any project module it imports (transitively) does."""
    seen, todo, wrong = set(), [name], []
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        for imp in imports(current):
            if imp.type_checking:
                continue
            if _forbidden(imp.name):
                via = "" if current == name else f" (via {current})"
                wrong.append(f"{imp.name}{via}")
            target = project_module(imp.name)
            if target is not None:
                todo.append(target)
    assert not wrong, f"{name} imports " + ", ".join(sorted(wrong))


def test_importing_the_pure_core_loads_no_io_library() -> None:
    """At run time too: importing the core must not load ``adapter/__init__``'s eager imports
    (issue 11: it resolves its names lazily, PEP 562)."""
    pure = _pure_modules()
    code = (
        "import sys\n"
        + "".join(f"import {name}\n" for name in pure)
        + f"forbidden = {FORBIDDEN_IN_PURE!r}\n"
        "print(sorted({m.split('.')[0] if not m.startswith('adapter') else m for m in sys.modules"
        " if any(m == f or m.startswith(f + '.') for f in forbidden)}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]", done.stdout
