"""``aegis spec``: model-check every configuration of the election spec and say whether each did as expected.

A configuration (``spec/tla/*.cfg``) declares itself in comment lines: ``\\* suite: quick`` (CI) or
``\\* suite: full``, and for a negative control ``\\* expect: <Invariant>``, the invariant TLC must find
violated. Positive configurations must pass. The result is one JSON-ready dict::

    {"passed": [...], "failed_as_expected": [...], "unexpected": [{"config": ..., "reason": ...}],
     "distinct_states": 123456, "seconds": 61.2, "configs": [{"name": ..., "expected": ..., ...}]}

``unexpected`` is empty when all is well.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from harness.tlc import TlcResult, run_tlc

SPEC_DIR = Path(__file__).resolve().parent.parent / "spec" / "tla"
SPEC_MODULE = "Lease.tla"


@dataclass(frozen=True)
class ModelConfig:
    """One TLC configuration of the spec and what it must give."""

    name: str
    path: Path
    suite: str  # "quick" or "full"
    expect: str | None  # the invariant a negative control must violate; None: must pass

    @property
    def fair(self) -> bool:
        """The configuration checks the spec under fairness (liveness: the slowest to check)."""
        return bool(re.search(r"^SPECIFICATION\s+FairSpec\b", self.path.read_text(), re.M))

    @property
    def expected(self) -> str:
        """``pass`` or ``fail:<Invariant>``."""
        return "pass" if self.expect is None else f"fail:{self.expect}"


def load_configs(spec_dir: Path = SPEC_DIR) -> list[ModelConfig]:
    """Every model configuration in ``spec_dir`` (trace configs are generated elsewhere)."""
    configs = []
    for path in sorted(spec_dir.glob("*.cfg")):
        text = path.read_text()
        suite = re.search(r"^\\\*\s*suite:\s*(\w+)", text, re.M)
        expect = re.search(r"^\\\*\s*expect:\s*(\w+)", text, re.M)
        configs.append(
            ModelConfig(
                name=path.stem,
                path=path,
                suite=suite.group(1) if suite else "full",
                expect=expect.group(1) if expect else None,
            )
        )
    return configs


def select_configs(configs: list[ModelConfig], quick: bool, names: list[str] | None) -> list[ModelConfig]:
    """The configurations to run: those named, else the quick suite, else all. Unknown names raise."""
    if names:
        by_name = {c.name: c for c in configs}
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise KeyError(f"unknown config(s) {', '.join(unknown)}; known: {', '.join(by_name)}")
        return [by_name[n] for n in names]
    return [c for c in configs if c.suite == "quick" or not quick]


def judge(config: ModelConfig, result: TlcResult) -> str | None:
    """Why ``result`` is not what ``config`` expects, or None when it is."""
    if config.expect is None:
        if result.passed:
            return None
        what = result.violated or result.message or ""
        return f"expected to pass, got {result.status} {what}".strip()
    if result.status in ("invariant", "property") and result.violated == config.expect:
        return None
    if result.passed:
        return f"expected {config.expect} to be violated, but TLC found no error"
    return f"expected {config.expect} to be violated, got {result.status} {result.violated or result.message}"


def _row(config: ModelConfig, result: TlcResult, reason: str | None) -> dict[str, Any]:
    return {
        "name": config.name,
        "suite": config.suite,
        "expected": config.expected,
        "result": "pass" if result.passed else "fail" if result.status != "error" else "error",
        "as_expected": reason is None,
        "invariant": result.violated,
        "status": result.status,
        "generated": result.generated,
        "distinct": result.distinct,
        "depth": result.depth,
        "seconds": result.seconds,
        **({"reason": reason} if reason else {}),
    }


def run_suite(
    quick: bool = False,
    names: list[str] | None = None,
    *,
    parallel: int = 2,
    workers: int | None = None,
    console: Console | None = None,
    on_result: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run the selected configurations, ``parallel`` TLC processes at a time, and collect the verdicts.

    Each TLC process gets ``workers`` threads (default: the cores shared among the parallel runs).
    With a ``console`` a progress bar shows which configurations are done.
    """
    chosen = select_configs(load_configs(), quick, names)
    parallel = max(1, min(parallel, len(chosen)))
    if workers is None:
        workers = max(1, (os.cpu_count() or 2) // parallel)
    # Longest first (positive configs explore everything; negative ones stop at the first violation;
    # among positive ones, those under fairness also check liveness, the slowest part), so the longest
    # run starts at once and two parallel runs finish close together.
    chosen.sort(key=lambda c: (c.expect is not None, not c.fair, c.name))
    spec = SPEC_DIR / SPEC_MODULE
    rows: dict[str, dict[str, Any]] = {}
    start = time.monotonic()
    progress = Progress(
        TextColumn("[bold]TLC[/]"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} {task.description}"),
        TimeElapsedColumn(),
        console=console,
        disable=console is None,
        transient=True,
    )
    with progress, ThreadPoolExecutor(max_workers=parallel) as pool:
        task = progress.add_task("", total=len(chosen))
        futures = {pool.submit(run_tlc, spec, c.path, workers=workers): c for c in chosen}
        for future in as_completed(futures):
            config = futures[future]
            result = future.result()
            row = _row(config, result, judge(config, result))
            rows[config.name] = row
            progress.update(task, advance=1, description=config.name)
            if on_result is not None:
                on_result(row)
    ordered = [rows[c.name] for c in chosen]
    return {
        "quick": quick and not names,
        "passed": [r["name"] for r in ordered if r["as_expected"] and r["expected"] == "pass"],
        "failed_as_expected": [r["name"] for r in ordered if r["as_expected"] and r["expected"] != "pass"],
        "unexpected": [{"config": r["name"], "reason": r["reason"]} for r in ordered if not r["as_expected"]],
        "distinct_states": sum(r["distinct"] for r in ordered),
        "seconds": round(time.monotonic() - start, 1),
        "configs": ordered,
    }


def table(report: dict[str, Any]) -> Table:
    """The report as a rich table: config, result, states generated, distinct states, depth, seconds."""
    t = Table(title=f"TLC: {len(report['configs'])} configurations in {report['seconds']} s")
    for col, justify in [
        ("config", "left"),
        ("expected", "left"),
        ("result", "left"),
        ("generated", "right"),
        ("distinct", "right"),
        ("depth", "right"),
        ("seconds", "right"),
    ]:
        t.add_column(col, justify=justify)  # type: ignore[arg-type]
    for r in report["configs"]:
        got = "pass" if r["result"] == "pass" else f"{r['status']} {r['invariant'] or ''}".strip()
        mark = "[green]ok[/]" if r["as_expected"] else "[red]UNEXPECTED[/]"
        t.add_row(
            r["name"],
            r["expected"],
            f"{got} {mark}",
            f"{r['generated']:,}",
            f"{r['distinct']:,}",
            str(r["depth"]),
            f"{r['seconds']:.1f}",
        )
    return t
