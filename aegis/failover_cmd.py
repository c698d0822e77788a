"""``aegis failover``: kill -9 / SIGTERM the single-active demo group's active, measure the gaps
(:mod:`aegis.harness.campaign.failover`: a built-in campaign run by the campaign runner), with a progress bar on
stderr. Exit code 1 on split brain or an epoch regression, 2 when there is no fault to run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.console import Console

err = Console(stderr=True)


def failover_command(
    kills: int = 10, graceful: int = 5, seed: int = 1, as_json: bool = False, out: Path | None = None
) -> None:
    """Run the faults, write the report where asked, print it; exit 1 when a promise is broken."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from aegis.harness.campaign.failover import markdown as failover_md
    from aegis.harness.campaign.failover import run_failover
    from aegis.harness.campaign.failover import write_report as write_failover

    if kills < 0 or graceful < 0 or kills + graceful == 0:
        err.print("[red]--kills and --graceful must not be negative, and one of them must be > 0[/]")
        raise typer.Exit(2)
    columns = (
        TextColumn("failover"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} {task.description}"),
    )
    with Progress(*columns, TimeElapsedColumn(), console=err, transient=True) as bar:
        task = bar.add_task("", total=max(1, kills + graceful))
        report = run_failover(
            kills=kills,
            graceful=graceful,
            seed=seed,
            progress=lambda done, total, what: bar.update(task, completed=done, description=what),
        )
    if out is not None:
        jpath, mpath = write_failover(report, out)
        err.print(f"wrote {jpath} and {mpath}")
    if as_json:
        sys.stdout.write(json.dumps(report) + "\n")
    else:
        from rich.markdown import Markdown

        Console().print(Markdown(failover_md(report)))
    if report["split_brain"] or report["epoch_regressions"]:
        raise typer.Exit(1)
