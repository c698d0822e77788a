"""``aegis render`` and ``aegis figures``: re-render what was recorded, without measuring again.

``render`` rewrites a campaign report's markdown and HTML, or a simulator report's HTML, from its JSON.
``figures`` rewrites the figures tables of README.md and docs (:mod:`aegis.figures`) from the JSON they cite;
``--check`` only lists the stale ones (exit 1). Both exit 2 when a report or a block cannot be read.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

err = Console(stderr=True)


def render_command(report: Path) -> None:
    """Re-render ``report``'s pages beside it."""
    from aegis.harness.campaign.report import html as campaign_html
    from aegis.harness.campaign.report import markdown as campaign_md
    from aegis.sim.report import PREDICTED_NAME, render_html

    try:
        data = json.loads(report.read_text())
    except (OSError, ValueError) as exc:
        err.print(f"[red]cannot read {report}: {exc}[/]")
        raise typer.Exit(2) from None
    if isinstance(data, dict) and "campaign" in data:
        written = [report.with_suffix(".md"), report.with_suffix(".html")]
        written[0].write_text(campaign_md(data))
        written[1].write_text(campaign_html(data))
    elif isinstance(data, dict) and "by_mix" in data:
        predicted = report.parent / PREDICTED_NAME
        if predicted.exists():
            data = {**data, "predicted_failover": json.loads(predicted.read_text())}
        written = [report.with_suffix(".html")]
        written[0].write_text(render_html(data))
    else:
        err.print(f"[red]{report} is neither a campaign report nor a simulator report (sim-*.json)[/]")
        raise typer.Exit(2)
    err.print("wrote " + ", ".join(str(p) for p in written))


def figures_command(files: list[Path] | None = None, check: bool = False) -> None:
    """Rewrite (or with ``check`` list) the figures blocks of ``files`` (default: every file that has some)."""
    from aegis.figures import FiguresError, targets
    from aegis.figures import check as stale_blocks
    from aegis.figures import write as write_figures

    paths = list(files) if files else targets()
    try:
        if check:
            stale = [(p, b) for p in paths for b in stale_blocks(p)]
            for p, b in stale:
                err.print(
                    f"{p}:{b.line}: figures:{b.name} disagrees with {', '.join(b.sources)}", soft_wrap=True
                )
            if stale:
                err.print("run `make reports` (= `aegis figures`) to re-render them")
                raise typer.Exit(1)
            err.print(f"all figures blocks in {len(paths)} files agree with their JSON")
            return
        changed = write_figures(paths)
    except FiguresError as exc:
        err.print(f"[red]{exc}[/]", soft_wrap=True)
        raise typer.Exit(2) from None
    err.print("rewrote " + (", ".join(str(p) for p in changed) if changed else "nothing (all current)"))
