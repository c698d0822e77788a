"""The layout of the repository: who may import whom, and the README's layout table against the tree.

:data:`ALLOWED` is the dependency rule, as data: for each unit (a harness sub-package, ``aegis/spec/``, the simulator,
the SDK), the modules of :data:`WATCHED` packages it may import besides its own. Third-party packages and ``sdk``
are free to import (the SDK imports none of the watched packages); ``aegis`` (the CLI) may import anything and is
not a unit. Every import counts, also one inside a function (the campaign imports TLC lazily).

The README's ``## Layout`` table must have a row for every Python package and sub-package, no row for a folder
that does not exist, and name no ``.py`` module a package does not have; the rows of ``aegis/harness/`` sub-packages,
``aegis/spec/`` and ``aegis/`` name every module they hold.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Project packages whose imports are policed (sdk is imported by everyone and imports none of them).
WATCHED = ("aegis",)
# ... but the SDK is free to import: it imports none of the rest.
FREE = ("aegis.sdk",)

ALLOWED: dict[str, tuple[str, ...]] = {
    # the bottom: nats-server nodes, the child processes we start, their ports and gids
    "aegis.harness.cluster": (),
    # faults act on a LocalCluster and on the cluster's gids
    "aegis.harness.faults": ("aegis.harness.cluster",),
    # `aegis up` starts a cluster and the demo processes
    "aegis.harness.demo": ("aegis.harness.cluster",),
    # the benchmarks start the demo's `aegis manage` and `aegis dashboard` children and take percentiles from the
    # one definition
    "aegis.harness.bench": (
        "aegis.harness.cluster",
        "aegis.harness.demo.management",
        "aegis.harness.demo.dashboard",
        "aegis.stats",
    ),
    # a campaign runs the demo's ledger on a cluster, injects faults, checks its trace with TLC (aegis/spec/), and
    # takes its percentiles from the one definition (aegis.stats)
    "aegis.harness.campaign": (
        "aegis.harness.cluster",
        "aegis.harness.faults",
        "aegis.harness.demo",
        "aegis.spec",
        "aegis.stats",
    ),
    # the deploy test: the secure cluster's permission model (rendered for the playbooks), children that die with us,
    # the demo's ledger request for its sticky probe
    "aegis.harness.deploy": (
        "aegis.harness.cluster.security",
        "aegis.harness.cluster.processes",
        "aegis.harness.demo.services",
    ),
    # TLC's java runs as a child that dies with us: the harness's spawn, nothing else of the harness
    "aegis.spec": ("aegis.harness.cluster.processes",),
    "aegis.sim": ("aegis.stats",),
    # the management service is a client of the SDK only
    "aegis.management": (),
    # the mutants run the simulator (in a scratch copy) and the spec's negative controls
    "aegis.verify": ("aegis.sim", "aegis.spec"),
    # the dashboard is a client of the management API over HTTP: of its code, only the response models
    "aegis.dashboard": ("aegis.management.api_models",),
    "aegis.sdk": (),
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports (``from a.b import c`` counts as ``a.b.c`` when that is a module)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                is_module = (ROOT / Path(*sub.split("."))).with_suffix(".py").is_file() or (
                    ROOT / Path(*sub.split(".")) / "__init__.py"
                ).is_file()
                found.add(sub if is_module else base)
    return found


def _unit_files(unit: str) -> list[Path]:
    return sorted((ROOT / Path(*unit.split("."))).rglob("*.py"))


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _harness_subpackages() -> set[str]:
    return {f"aegis.harness.{p.parent.name}" for p in (ROOT / "aegis" / "harness").glob("*/__init__.py")}


def test_every_harness_module_lives_in_a_subpackage_with_declared_edges() -> None:
    loose = sorted(p.name for p in (ROOT / "aegis" / "harness").glob("*.py") if p.name != "__init__.py")
    assert loose == [], f"aegis/harness/ modules outside a sub-package: {loose}"
    undeclared = _harness_subpackages() - set(ALLOWED)
    assert not undeclared, f"add the allowed imports of {sorted(undeclared)} to ALLOWED"


@pytest.mark.parametrize("unit", sorted(ALLOWED))
def test_unit_imports_only_what_it_is_allowed_to(unit: str) -> None:
    files = _unit_files(unit)
    assert files, f"{unit} has no modules"
    bad = []
    for path in files:
        for mod in sorted(_imports(path)):
            if (
                _within(mod, unit)
                or not any(_within(mod, w) for w in WATCHED)
                or any(_within(mod, f) for f in FREE)
            ):
                continue
            if not any(_within(mod, allowed) for allowed in ALLOWED[unit]):
                bad.append(f"{path.relative_to(ROOT)} imports {mod}")
    assert not bad, f"{unit} may import only {ALLOWED[unit] or 'nothing'} of {WATCHED}:\n" + "\n".join(bad)


# -- the README's layout table ---------------------------------------------------------------------------------


def _layout_rows(text: str) -> list[tuple[list[str], list[str]]]:
    """(folders of the first cell, code spans of the second) of every row of the ``## Layout`` table."""
    section = text.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        path_cell, what = line.strip().strip("|").split("|", 1)
        rows.append((re.findall(r"`([^`]+/)`", path_cell), re.findall(r"`([^`]+)`", what)))
    assert rows, "README.md has no ## Layout table"
    return rows


def _packages() -> set[str]:
    """Every Python package and sub-package of the project, as ``a/b/`` (tests/ is no package)."""
    found = set()
    for top in ROOT.iterdir():
        if not top.is_dir() or top.name.startswith(".") or top.name == "tests" or top.suffix == ".egg-info":
            continue
        for init in top.rglob("__init__.py"):
            found.add(init.parent.relative_to(ROOT).as_posix() + "/")
    return found


def _readme() -> str:
    return (ROOT / "README.md").read_text()


def test_readme_layout_has_a_row_for_every_package_and_only_for_folders_that_exist() -> None:
    listed = {path for paths, _ in _layout_rows(_readme()) for path in paths}
    missing = sorted(_packages() - listed)
    gone = sorted(p for p in listed if not (ROOT / p).is_dir())
    assert not missing, f"README.md's layout table has no row for the packages {missing}"
    assert not gone, f"README.md's layout table lists folders that do not exist: {gone}"


def test_readme_layout_names_the_modules_packages_hold() -> None:
    packages = _packages()
    named: dict[str, set[str]] = {}
    for paths, spans in _layout_rows(_readme()):
        for path in paths:
            named.setdefault(path, set()).update(s for s in spans if re.fullmatch(r"[\w/]+\.py", s))
    wrong = sorted(
        f"{p}{m}" for p, mods in named.items() if p in packages for m in mods if not (ROOT / p / m).is_file()
    )
    assert not wrong, f"README.md's layout table names modules that do not exist: {wrong}"
    # The rows this layout owns name every module of their package.
    owned = [
        p
        for p in packages
        if p.startswith(("aegis/harness/", "aegis/spec/", "aegis/management/")) and p != "aegis/harness/"
    ] + ["aegis/"]
    unnamed = sorted(
        f"{p}{m.name}"
        for p in owned
        for m in (ROOT / p).glob("*.py")
        if m.name not in ("__init__.py", "__main__.py") and m.name not in named.get(p, set())
    )
    assert not unnamed, f"README.md's layout table does not name the modules {unnamed}"
