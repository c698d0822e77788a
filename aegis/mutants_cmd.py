"""``aegis mutants``: the protocol mutants of :mod:`aegis.verify.mutants` through the layers of verification.

Writes ``<out>/mutants.json`` and ``<out>/mutants.md`` (one row per mutant: which layer caught it and how fast;
``equivalent_because`` for one that is not caught and need not be), prints the table, exits 1 when the unmutated
tree fails a layer or a safety-relevant mutant without an equivalence argument slips past one, 2 when the list
no longer matches the code.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.console import Console

err = Console(stderr=True)


def mutants_command(
    quick: bool = False,
    name: list[str] | None = None,
    layer: list[str] | None = None,
    sim_runs: int | None = None,
    out: Path = Path("reports"),
    as_json: bool = False,
) -> None:
    """Run the mutants; see the module docstring."""
    from aegis.verify.mutants import (
        FULL_SIM_RUNS,
        LAYERS,
        QUICK_SIM_RUNS,
        MutantRot,
        Options,
        markdown,
        run_mutants,
    )

    layers = tuple(layer) if layer else LAYERS
    bad = [x for x in layers if x not in LAYERS]
    if bad:
        err.print(f"[red]unknown layer(s) {', '.join(bad)}; choose from {', '.join(LAYERS)}[/]")
        raise typer.Exit(2)
    options = Options(
        layers=layers,
        sim_runs=sim_runs or (QUICK_SIM_RUNS if quick else FULL_SIM_RUNS),
        names=tuple(name or ()),
        quick=quick,
        progress=lambda s: err.print(s, highlight=False),
    )
    try:
        report = run_mutants(options)
    except (MutantRot, KeyError) as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    out.mkdir(parents=True, exist_ok=True)
    (out / "mutants.json").write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report)
    (out / "mutants.md").write_text(text)
    err.print(f"wrote {out / 'mutants.json'} and {out / 'mutants.md'}")
    if as_json:
        sys.stdout.write(json.dumps(report) + "\n")
    else:
        sys.stdout.write(text)
    for p in report["problems"]:
        err.print(f"[red]{p}[/]")
    raise typer.Exit(1 if report["problems"] else 0)
