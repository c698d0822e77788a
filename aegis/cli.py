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


def _server_list(servers: str | None) -> list[str] | None:
    return [u.strip() for u in servers.split(",") if u.strip()] if servers else None


SERVERS_OPTION = typer.Option(None, "--servers", help="Comma-separated NATS URLs (default: AEGIS_SERVERS).")


@app.command()
def instances(
    service: str | None = typer.Argument(None, help="Only this service's instances."),
    servers: str | None = SERVERS_OPTION,
    as_json: bool = typer.Option(False, "--json", help="Print the records as one JSON list."),
) -> None:
    """Registered instances: status, epoch, host, heartbeat age, calls, errors, p99."""
    from aegis.registry_cmd import instances_table, list_instances
    from sdk.errors import AegisError

    try:
        found = list_instances(_server_list(servers), service)
    except AegisError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    if as_json:
        sys.stdout.write(json.dumps([r.model_dump(mode="json") for r in found]) + "\n")
        return
    Console().print(instances_table(found))


@app.command()
def config(
    service: str = typer.Argument(..., help="Service name."),
    instance: str = typer.Argument(..., help="Instance id (see `aegis instances`)."),
    servers: str | None = SERVERS_OPTION,
    as_json: bool = typer.Option(False, "--json", help="Print the EffectiveConfig as JSON."),
) -> None:
    """One running instance's effective configuration: every setting, its source, secrets redacted."""
    from aegis.registry_cmd import config_table, instance_config
    from sdk.errors import AegisError

    try:
        cfg = instance_config(_server_list(servers), service, instance)
    except AegisError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    if as_json:
        sys.stdout.write(cfg.model_dump_json() + "\n")
        return
    Console().print(config_table(cfg))


def main() -> None:  # pragma: no cover - console script shim
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
