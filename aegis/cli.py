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
    from harness.demo.up import run_up

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
    from harness.bench.runner import markdown, run_bench, write_report

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


@app.command()
def failover(
    kills: int = typer.Option(10, min=0, max=1000, help="kill -9 of the active instance, this many times."),
    graceful: int = typer.Option(5, min=0, max=1000, help="Graceful stops (SIGTERM) of the active."),
    seed: int = typer.Option(1, help="Seeds the order of the faults and the moments they hit."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
    out: Path | None = typer.Option(
        None, help="Also write <out>/failover.json and <out>/failover.md (nothing is written without it)."
    ),
) -> None:
    """Failover of the single-active demo group on a fresh local 3-node cluster (real processes).

    Kills (kill -9) or stops (SIGTERM) the active instance in seeded order while a sticky client calls it
    back to back and a prober calls every instance directly; restarts each victim as a standby before the
    next fault. Reports the client-visible gaps (fault -> first reply from a new epoch: p50/p99/max),
    split-brain answers and epoch regressions (both must be 0). Exit code 1 when either is not 0.
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from harness.campaign.failover import markdown as failover_md
    from harness.campaign.failover import run_failover
    from harness.campaign.failover import write_report as write_failover

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


@app.command()
def spec(
    quick: bool = typer.Option(False, "--quick", help="Only the CI configurations (a minute or two)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
    config: list[str] = typer.Option(
        [], "--config", help="Run only this configuration (spec/tla/NAME.cfg); repeatable."
    ),
    parallel: int = typer.Option(2, min=1, max=8, help="TLC processes at a time (one worker each)."),
) -> None:
    """Model-check the election spec (spec/tla) with TLC: real configs must pass, negative controls must fail.

    Exits non-zero when any configuration did not do what it is expected to do.
    """
    from spec.suite import run_suite, table
    from spec.tlc import TlcUnavailable

    try:
        report = run_suite(quick, config or None, parallel=parallel, console=None if as_json else err)
    except (TlcUnavailable, KeyError) as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    if as_json:
        sys.stdout.write(json.dumps(report) + "\n")
    else:
        Console().print(table(report))
        for bad in report["unexpected"]:
            err.print(f"[red]{bad['config']}: {bad['reason']}[/]")
    raise typer.Exit(1 if report["unexpected"] else 0)


@app.command("trace-check")
def trace_check(
    trace: Path = typer.Argument(..., exists=True, dir_okay=False, help="NDJSON trace of election events."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
    timeout: float = typer.Option(600, min=1, help="TLC's time budget, seconds."),
    workers: int = typer.Option(1, min=1, help="TLC worker threads."),
) -> None:
    """Check an election trace against the TLA+ spec with TLC; print the first line no behaviour explains.

    Exits 0 when every event is explained (validated), 1 when the trace is rejected (an unexplained line, an
    empty or one-sided trace) or TLC ran out of --timeout (incomplete), 2 when it cannot be read.
    """
    from sdk.trace_events import TraceError
    from spec.tlc import TlcUnavailable
    from spec.trace_check import TraceCheckError, check_trace

    try:
        verdict = check_trace(trace, timeout=timeout, workers=workers)
    except TraceError as exc:
        err.print(f"[red]{trace}: {exc}[/]", soft_wrap=True)
        raise typer.Exit(2) from None
    except (TlcUnavailable, TraceCheckError) as exc:
        err.print(f"[red]{exc}[/]", soft_wrap=True)
        raise typer.Exit(2) from None
    if as_json:
        sys.stdout.write(json.dumps({"trace": str(trace), **verdict.summary()}) + "\n")
    elif verdict.accepted:
        Console().print(
            f"[green]validated[/]: all {verdict.events} events are a behaviour of the spec"
            f" ({verdict.checked} given to TLC, the rest implied; {verdict.seconds:.1f} s)"
        )
    elif verdict.first_bad_line is not None:
        event = verdict.first_bad_event
        shown = event.model_dump_json(exclude_none=True) if event else ""
        Console().print(
            f"[red]rejected[/] at line {verdict.first_bad_line}: no behaviour of the spec explains it "
            f"(the {verdict.explained} events before it are explained)\n  {shown}",
            soft_wrap=True,
        )
    else:
        color = "red" if verdict.result == "rejected" else "yellow"
        Console().print(f"[{color}]{verdict.result}[/]: {verdict.reason}", soft_wrap=True)
    raise typer.Exit(0 if verdict.accepted else 1)


@app.command()
def sim(
    runs: int = typer.Option(2000, min=1, help="Campaign: runs over the fault mixes (default parameters)."),
    seed: int | None = typer.Option(None, help="Replay exactly one run with this seed (no campaign)."),
    campaign_seed: int = typer.Option(
        1, "--campaign-seed", help="Campaign: run k uses seed campaign-seed + k."
    ),
    mix: str = typer.Option(
        "crash", help="Replay: the fault mix (calm, crash, stop, pause, nats, netdelay, gc, mixed)."
    ),
    lease: float | None = typer.Option(None, help="Lease, seconds (default: the SDK's)."),
    renew: float | None = typer.Option(None, help="Renew interval, seconds (default: the SDK's)."),
    drift: float | None = typer.Option(
        None, help="Clock drift bound the protocol assumes (default: the SDK's)."
    ),
    write_timeout: float | None = typer.Option(None, help="KV write timeout, seconds (default: the SDK's)."),
    ttl: float = typer.Option(10.0, help="Key TTL, seconds (the SDK's default 10)."),
    duration: float = typer.Option(60.0, min=1, help="Simulated seconds per run."),
    trace: Path | None = typer.Option(None, help="Replay: write the run's events as an NDJSON trace."),
    control: str | None = typer.Option(
        None, help="Negative control: no-fencing, no-stepdown, drift, no-epoch-check (violations expected)."
    ),
    sweep: bool = typer.Option(True, "--sweep/--no-sweep", help="Campaign: also sweep lease x renew."),
    sweep_runs: int = typer.Option(10, min=0, help="Sweep: crash runs and pause runs per cell."),
    predicted_runs: int = typer.Option(
        100, min=0, help="Crash runs with real-machine clocks for the predicted failover distribution."
    ),
    name: str = typer.Option("default", help="Campaign name: reports/sim-<name>.json/.html."),
    out: Path | None = typer.Option(None, help="Report folder (default reports/; none in --json mode)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
) -> None:
    """Simulate the election (the SDK's own state machine) under thousands of faults, far faster than real time.

    Prints runs, violations, crash failover p50/p99 and the speedup; exit code 1 on any safety violation.
    """
    options = dict(locals())
    from aegis.sim_cmd import sim_command

    sim_command(**options)


@app.command()
def campaign(
    file: Path = typer.Argument(..., help="Campaign YAML (harness/campaigns/*.yaml)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
    out: Path | None = typer.Option(
        None,
        help="Write <out>/<name>.json, .md, .html and the election trace checked with TLC"
        " (<name>-trace.ndjson.gz); nothing is written without it.",
    ),
) -> None:
    """Run a fault campaign on a fresh local cluster: real nats-server nodes, real SDK processes, real faults.

    Prints the per-fault-class summary (or with --json one object with at least runs, split_brain,
    lost_events, failover_p99_s, trace_validated). Exit code 1 when a promise of the campaign is broken (a
    fault class's gap budget, split brain, lost events, commands processed twice, a rejected trace, ...), 2
    for a bad campaign file.
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from harness.campaign.report import markdown as campaign_md
    from harness.campaign.report import write_report as write_campaign
    from harness.campaign.runner import run_campaign
    from harness.campaign.schema import CampaignError, load_campaign

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
        )
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


@app.command()
def render(
    report: Path = typer.Argument(
        ..., help="A recorded report: reports/<campaign>.json or reports/sim-<name>.json."
    ),
) -> None:
    """Re-render a recorded report's HTML (and a campaign's markdown) from its JSON, without re-measuring.

    The pages embed BokehJS, so they open on hosts without internet. A simulator report takes its predicted
    failover samples from ``sim-predicted-failover.json`` beside it.
    """
    from harness.campaign.report import html as campaign_html
    from harness.campaign.report import markdown as campaign_md
    from sim.report import PREDICTED_NAME, render_html

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


@app.command()
def figures(
    files: list[Path] = typer.Argument(
        None, help="Markdown files (default: README.md, docs/*.md, reports/*.md with figures blocks)."
    ),
    check: bool = typer.Option(
        False, "--check", help="Change nothing; exit 1 listing the blocks that disagree with their JSON."
    ),
) -> None:
    """Render every figures table (`<!-- figures:NAME source=... -->` blocks) from the JSON reports it cites.

    Rewrites the files in place (= `make reports`); with --check lists stale blocks and exits 1 if any.
    """
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


def main() -> None:  # pragma: no cover - console script shim
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
