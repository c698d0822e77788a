"""``aegis``: the one command-line entry point (``aegis up``, ``aegis bench``, ...)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.console import Console

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Aegis: sticky single-active services on NATS."
)
err = Console(stderr=True)
REPORTS = Path("reports")


@app.command()
def up(
    nodes: int = typer.Option(3, min=1, max=7, help="nats-server nodes in the local cluster."),
    instances: int = typer.Option(2, min=1, max=8, help="Instances of the demo RPC service."),
    rate: float = typer.Option(200.0, min=1, max=5000, help="Demo client calls per second."),
    duration: float = typer.Option(0, min=0, help="Stop after this many seconds (0: until Ctrl-C)."),
) -> None:
    """Start a local cluster and the demo; show a live status line; Ctrl-C stops everything."""
    from harness.up import run_up

    code = run_up(nodes=nodes, instances=instances, rate=rate, duration=duration, console=Console())
    raise typer.Exit(code)


@app.command()
def bench(
    quick: bool = typer.Option(False, "--quick", help="Short run (under a minute)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
    out: Path | None = typer.Option(
        None,
        help="Write <out>/baseline.json and .md (default: reports/ for a full run, nothing for --quick).",
    ),
) -> None:
    """Raw nats-py vs SDK: RPC latency and throughput, event publish; prints SDK/raw ratios."""
    from harness.bench import markdown, run_bench, write_report

    with err.status("benchmark") as status:
        report = run_bench(quick, progress=lambda what: status.update(f"benchmark: {what}"))
    target = out if out is not None else (None if quick else REPORTS)
    if target is not None:
        jpath, mpath = write_report(report, target)
        err.print(f"wrote {jpath} and {mpath}")
    if as_json:
        sys.stdout.write(json.dumps(report) + "\n")
        return
    from rich.markdown import Markdown

    Console().print(Markdown(markdown(report)))


def main() -> None:  # pragma: no cover - console script shim
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
