"""``aegis campaign FILE``: a fault campaign (``harness/campaigns/*.yaml``) on a fresh local cluster
(:mod:`aegis.harness.campaign.runner`), with a progress bar on stderr.

Exit code 1 when a promise of the campaign is broken, 2 for a bad campaign file. ``--json`` prints the report
without its ``timeline``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.console import Console

err = Console(stderr=True)


def campaign_command(file: Path, as_json: bool = False, out: Path | None = None) -> None:
    """Load and run the campaign, write its report and trace where asked, print its summary."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from aegis.harness.campaign.report import markdown as campaign_md
    from aegis.harness.campaign.report import write_report as write_campaign
    from aegis.harness.campaign.runner import run_campaign
    from aegis.harness.campaign.schema import CampaignError, load_campaign

    try:
        spec = load_campaign(file)
    except CampaignError as exc:
        err.print(f"[red]{exc}[/]", soft_wrap=True)
        raise typer.Exit(2) from None
    columns = (
        TextColumn(spec.name),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} {task.description}"),
    )
    with Progress(*columns, TimeElapsedColumn(), console=err, transient=True) as bar:
        task = bar.add_task("", total=spec.runs)
        report = run_campaign(
            spec,
            progress=lambda done, total, what: bar.update(task, completed=done, description=what),
            trace_out=None if out is None else out / f"{spec.name}-trace.ndjson.gz",
        ).report.model_dump(mode="json")
    if out is not None:
        paths = write_campaign(report, out)
        err.print("wrote " + ", ".join(str(p) for p in paths))
    if as_json:
        compact = {k: v for k, v in report.items() if k != "timeline"}
        sys.stdout.write(json.dumps(compact) + "\n")
    else:
        from rich.markdown import Markdown

        Console().print(Markdown(campaign_md(report)))
    if report["expectations_broken"]:
        raise typer.Exit(1)
