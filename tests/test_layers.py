"""The SDK's layering, checked on the source: who may import whom inside ``aegis/sdk/``.

Imports are read with :mod:`ast` (every ``import`` in a module, inside functions and ``if TYPE_CHECKING:`` too,
unless a check says runtime only) and followed through ``aegis/sdk/`` modules. The package's ``__init__`` is followed
only when a module imports the package itself (``from sdk import X``, ``from . import X`` where X is no module),
not as the parent every ``sdk.x`` import runs first.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

SDK = Path(__file__).resolve().parent.parent / "aegis" / "sdk"

UPPER = frozenset(
    {
        "aegis.sdk.rpc",
        "aegis.sdk.registry",
        "aegis.sdk.events",
        "aegis.sdk.commands",
        "aegis.sdk.single_active",
        "aegis.sdk.discovery",
        "aegis.sdk.sticky",
        "aegis.sdk.heartbeat",
        "aegis.sdk.micro",
        "aegis.sdk.effective_config",
    }
)
"""Modules that build on the bottom layer: no bottom module may reach one of them."""

BOTTOM = (
    "aegis.sdk.codec",
    "aegis.sdk.kv_types",
    "aegis.sdk.deadline",
    "aegis.sdk.nats_errors",
    "aegis.sdk.kv",
    "aegis.sdk.consumer",
)


def _path(module: str) -> Path | None:
    """Source file of an ``sdk`` module (``sdk`` itself: its ``__init__.py``); None for anything else."""
    parts = module.split(".")
    if parts[:2] != ["aegis", "sdk"]:
        return None
    if len(parts) == 2:
        return SDK / "__init__.py"
    path = SDK.joinpath(*parts[2:]).with_suffix(".py")
    if path.exists():
        return path
    package = SDK.joinpath(*parts[2:], "__init__.py")
    return package if package.exists() else None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST, runtime_only: bool) -> list[ast.Import | ast.ImportFrom]:
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        if runtime_only and isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


@cache
def imports(module: str, runtime_only: bool = False) -> frozenset[str]:
    """Full names of the modules ``module`` (an ``sdk`` module) imports directly."""
    path = _path(module)
    assert path is not None, module
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: set[str] = set()
    for node in _import_nodes(ast.parse(path.read_text(), str(path)), runtime_only):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
            continue
        if node.level:
            base = package.split(".")
            base = base[: len(base) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
        else:
            target = node.module or ""
        names = [f"{target}.{alias.name}" for alias in node.names]
        submodules = [n for n in names if _path(n) is not None and n.count(".") > target.count(".")]
        out.update(submodules)
        if len(submodules) < len(names):  # some names are attributes of ``target`` itself
            out.add(target)
    return frozenset(out)


def closure(module: str, runtime_only: bool = False) -> tuple[frozenset[str], frozenset[str]]:
    """(``sdk`` modules reached from ``module``, top-level names of the other modules they import)."""
    seen: set[str] = set()
    external: set[str] = set()
    todo = [module]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        for name in imports(current, runtime_only):
            if _path(name) is not None:
                todo.append(name)
            else:
                external.add(name.split(".")[0])
    return frozenset(seen - {module}), frozenset(external)


def sdk_modules() -> list[str]:
    return sorted(
        "aegis.sdk"
        if p.name == "__init__.py"
        else "aegis.sdk." + ".".join(p.relative_to(SDK).with_suffix("").parts)
        for p in SDK.rglob("*.py")
    )


def test_the_walker_sees_real_imports() -> None:
    """Guards the checks below against passing vacuously (a walker that finds nothing)."""
    reached, external = closure("aegis.sdk.rpc")
    assert {
        "aegis.sdk.codec",
        "aegis.sdk.deadline",
        "aegis.sdk.registry",
        "aegis.sdk.kv",
        "aegis.sdk.kv_types",
    } <= reached
    assert {"nats", "asyncio", "pydantic"} <= external
    assert "aegis.sdk.kv_types" in closure("aegis.sdk.election")[0]


@pytest.mark.parametrize("module", sdk_modules())
def test_sdk_imports_nothing_from_the_layers_above_it(module: str) -> None:
    _, external = closure(module)
    assert not external & {"harness", "sim", "aegis", "management", "dashboard"}, module


@pytest.mark.parametrize("core", ["aegis.sdk.election", "aegis.sdk.sticky_core"])
def test_the_protocol_cores_import_neither_nats_nor_asyncio(core: str) -> None:
    """The election machine and the sticky client's rules are sans-IO: neither they nor any ``sdk`` module they
    import may import nats or asyncio (the SDK and the simulator drive them)."""
    reached, external = closure(core)
    assert not external & {"nats", "asyncio"}, f"{core} reaches {sorted(external)} via {sorted(reached)}"
    assert not reached & UPPER


@pytest.mark.parametrize("module", BOTTOM)
def test_bottom_modules_import_no_module_above_them(module: str) -> None:
    reached, _ = closure(module)
    assert not reached & UPPER, f"{module} reaches {sorted(reached & UPPER)}"
    assert "aegis.sdk" not in reached, f"{module} imports the sdk package (its __init__ pulls in everything)"


@pytest.mark.parametrize(
    ("module", "allowed"),
    [
        ("aegis.sdk.kv_types", frozenset()),
        ("aegis.sdk.codec", frozenset()),
        ("aegis.sdk.deadline", frozenset({"aegis.sdk.errors"})),
    ],
)
def test_the_lowest_modules_stay_nats_free(module: str, allowed: frozenset[str]) -> None:
    """KeyState, the codec and the deadline rule carry no NATS (the pool's type is an annotation only)."""
    reached, external = closure(module, runtime_only=True)
    assert reached <= allowed, f"{module} imports {sorted(reached - allowed)}"
    assert not external & {"nats", "asyncio"}, f"{module} imports {sorted(external & {'nats', 'asyncio'})}"
