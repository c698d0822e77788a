"""``aegis``: the one command-line entry point (``aegis up``, ``aegis bench``, ...).

This module is the wiring only: each command's name, arguments, options and help, and a call to the module that
does the work, imported when the command runs (``aegis --help`` imports none of them):

=====================  ================================
``up``                 :mod:`aegis.up_cmd`
``bench``              :mod:`aegis.bench_cmd`
``failover``           :mod:`aegis.failover_cmd`
``instances, config``  :mod:`aegis.registry_cmd`
``spec, trace-check``  :mod:`aegis.spec_cmd`
``sim``                :mod:`aegis.sim_cmd`
``campaign``           :mod:`aegis.campaign_cmd`
``render, figures``    :mod:`aegis.reports_cmd`
``manage``             :mod:`aegis.manage_cmd`
``services ...``       :mod:`aegis.services_cmd`
``dashboard``          :mod:`aegis.dashboard_cmd`
=====================  ================================

The base install (the SDK) has ``instances``, ``config`` and ``figures``; ``sim`` needs the ``sim`` extra and the
other commands the ``verify`` extra (:func:`needs_extra` says so when one is missing).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer


@contextmanager
def needs_extra(command: str, extra: str) -> Iterator[None]:
    """Run a command whose modules need ``aegis[extra]``: a third-party module that is not installed ends the
    command with a line saying which extra to install (exit code 2) instead of an ImportError's traceback."""
    try:
        yield
    except ModuleNotFoundError as e:
        missing = (e.name or "").split(".")[0]
        if not missing or missing == "aegis":
            raise
        typer.echo(
            f"aegis {command} needs the '{extra}' extra ({missing} is not installed): pip install 'aegis[{extra}]'",
            err=True,
        )
        raise typer.Exit(2) from None


app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Aegis: sticky single-active services on NATS."
)


@app.command()
def up(
    nodes: int = typer.Option(3, min=1, max=7, help="nats-server nodes in the local cluster."),
    instances: int = typer.Option(2, min=1, max=8, help="Instances of the demo RPC service."),
    rate: float = typer.Option(200.0, min=1, max=5000, help="Demo client calls per second."),
    duration: float = typer.Option(0, min=0, help="Stop after this many seconds (0: until Ctrl-C)."),
    secure: bool = typer.Option(
        False,
        "--secure",
        help="TLS, accounts and a least-privilege NATS user per role; prints the CA and credentials.",
    ),
    management_port: int | None = typer.Option(
        None, min=1, max=65535, help="Port of the management API (default: a free one; the URL is printed)."
    ),
    dashboard: bool = typer.Option(
        True,
        help="Also run the dashboard (needs the dashboard extra) and print its URL.",
    ),
) -> None:
    """Start a local cluster, the demo, the management API and the dashboard; show a live status line; Ctrl-C stops
    everything."""
    options = dict(locals())
    with needs_extra("up", "verify"):
        from aegis.up_cmd import up_command

        up_command(**options)


@app.command()
def bench(
    quick: bool = typer.Option(False, "--quick", help="Short run (under a minute)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
    out: Path | None = typer.Option(
        None,
        help="Write <out>/baseline.json and .md, or management-bench.* with --management (default: reports/"
        " for a full run, nothing for --quick).",
    ),
    management: bool = typer.Option(
        False,
        "--management",
        help="Instead: the management API under load (200 instances, 50 clients on GET /api/metrics; --quick:"
        " 20 and 5): latency p50/p99/max, requests/s, errors, NATS messages per HTTP request.",
    ),
    check: bool = typer.Option(
        False,
        "--check",
        help="NFR2 (make bench-check): RPC at concurrency 1 only (24 alternating rounds of 3000 calls); exit 1 if"
        " its SDK/raw p99 ratio (rpc_p99_ratio) is more than --tolerance above the baseline's. With --out, also"
        " writes <out>/bench-check.json.",
    ),
    repeat: int = typer.Option(
        1,
        min=1,
        max=20,
        help="--check this many times in a row; exit 1 if any run fails (a false alarm count).",
    ),
    confirm: bool = typer.Option(
        True,
        "--confirm/--no-confirm",
        help="--check: measure a run over the limit once more; a regression only if that run is over it too.",
    ),
    baseline: Path = typer.Option(
        Path("reports/baseline.json"), help="The recorded run --check compares with."
    ),
    tolerance: float = typer.Option(
        0.10, help="Regression --check allows, as a fraction of the baseline ratio."
    ),
    soak: bool = typer.Option(
        False,
        "--soak",
        help="Instead: the soak (one million RPCs and 200 000 events through one instance at a steady rate;"
        " --quick: 12 000 and 2 400): RSS growth of service and client, p99 of the first and last minute;"
        " writes <out>/soak.{json,md,html}.",
    ),
    groups: str | None = typer.Option(
        None,
        "--groups",
        help="Instead: the election at scale for these single-active group counts (e.g. 10,100,1000; 3"
        " instances each): KV writes/s, nats-server CPU, SDK CPU per group, renewal ack p99, sampled crash"
        " failover p99; writes <out>/election-scale.{json,md,html}.",
    ),
) -> None:
    """Raw nats-py vs SDK: RPC latency and throughput, event publish; prints SDK/raw ratios. With --management,
    the management API's load benchmark; with --soak, the soak; with --groups, the election at scale."""
    options = dict(locals())
    with needs_extra("bench", "verify,management" if management else "verify"):
        from aegis.bench_cmd import bench_command

        bench_command(**options)


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
    options = dict(locals())
    with needs_extra("failover", "verify"):
        from aegis.failover_cmd import failover_command

        failover_command(**options)


SERVERS_OPTION = typer.Option(None, "--servers", help="Comma-separated NATS URLs (default: AEGIS_SERVERS).")


@app.command()
def instances(
    service: str | None = typer.Argument(None, help="Only this service's instances."),
    servers: str | None = SERVERS_OPTION,
    as_json: bool = typer.Option(False, "--json", help="Print the records as one JSON list."),
) -> None:
    """Registered instances: status, epoch, host, heartbeat age, calls, errors, p99."""
    options = dict(locals())
    from aegis.registry_cmd import instances_command

    instances_command(**options)


@app.command()
def config(
    service: str = typer.Argument(..., help="Service name."),
    instance: str = typer.Argument(..., help="Instance id (see `aegis instances`)."),
    servers: str | None = SERVERS_OPTION,
    as_json: bool = typer.Option(False, "--json", help="Print the EffectiveConfig as JSON."),
) -> None:
    """One running instance's effective configuration: every setting, its source, secrets redacted."""
    options = dict(locals())
    from aegis.registry_cmd import config_command

    config_command(**options)


@app.command()
def spec(
    quick: bool = typer.Option(False, "--quick", help="Only the CI configurations (a minute or two)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
    config: list[str] = typer.Option(
        [], "--config", help="Run only this configuration (aegis/spec/tla/NAME.cfg); repeatable."
    ),
    parallel: int = typer.Option(2, min=1, max=8, help="TLC processes at a time (one worker each)."),
) -> None:
    """Model-check the election spec (aegis/spec/tla) with TLC: real configs must pass, negative controls must fail.

    Exits non-zero when any configuration did not do what it is expected to do.
    """
    options = dict(locals())
    with needs_extra("spec", "verify"):
        from aegis.spec_cmd import spec_command

        spec_command(**options)


@app.command()
def mutants(
    quick: bool = typer.Option(False, "--quick", help="Only the CI subset, and a short simulator run."),
    name: list[str] = typer.Option(
        [], "--name", help="Only this mutant (aegis/verify/mutants.py); repeatable."
    ),
    layer: list[str] = typer.Option([], "--layer", help="Only this layer (tests, sim, tlc); repeatable."),
    sim_runs: int | None = typer.Option(
        None, min=1, help="Simulator runs per mutant (default 2000; 140 with --quick)."
    ),
    out: Path = typer.Option(Path("reports"), help="Report folder: mutants.json and mutants.md."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
) -> None:
    """Apply each protocol mutant to a scratch copy and run the layers that must catch it (tests, simulator, TLC).

    Exits 1 when the unmutated tree fails a layer or a safety-relevant mutant slips past one; 2 when a mutant's
    text is no longer in the code.
    """
    options = dict(locals())
    with needs_extra("sim", "sim"):
        from aegis.mutants_cmd import mutants_command

        mutants_command(**options)


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
    options = dict(locals())
    with needs_extra("trace-check", "verify"):
        from aegis.spec_cmd import trace_check_command

        trace_check_command(**options)


@app.command()
def sim(
    runs: int = typer.Option(2000, min=1, help="Campaign: runs over the fault mixes (default parameters)."),
    seed: int | None = typer.Option(None, help="Replay exactly one run with this seed (no campaign)."),
    campaign_seed: int = typer.Option(
        1, "--campaign-seed", help="Campaign: run k uses seed campaign-seed + k."
    ),
    mix: str = typer.Option(
        "crash",
        help="Replay: the fault mix (calm, crash, stop, pause, nats, netdelay, gc, mixed; with --election quorum"
        " also node: NATS node crashes, node-mixed).",
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
    election: str = typer.Option(
        "lease",
        help="lease (the single-bucket lease) or quorum (the quorum lease, docs/quorum-lease.md: its fault mixes"
        " plus NATS node crashes, and the gap they cost).",
    ),
    placement: str = typer.Option(
        "spread",
        help="Quorum: which node leads each bucket: spread (one each) or colocated (two on one node).",
    ),
    colocated_runs: int = typer.Option(
        50, min=0, help="Quorum campaign: node-crash runs with the colocated placement, for comparison."
    ),
) -> None:
    """Simulate the election (the SDK's own state machine) under thousands of faults, far faster than real time.

    Prints runs, violations, crash failover p50/p99 and the speedup; exit code 1 on any safety violation.
    """
    options = dict(locals())
    with needs_extra("sim", "sim"):
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
    options = dict(locals())
    with needs_extra("campaign", "verify"):
        from aegis.campaign_cmd import campaign_command

        campaign_command(**options)


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
    options = dict(locals())
    with needs_extra("render", "verify"):
        from aegis.reports_cmd import render_command

        render_command(**options)


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
    options = dict(locals())
    from aegis.reports_cmd import figures_command

    figures_command(**options)


@app.command()
def manage(
    host: str | None = typer.Option(None, help="Bind address (default AEGIS_MGMT_HOST or 127.0.0.1)."),
    port: int | None = typer.Option(
        None, min=0, max=65535, help="HTTP port (default AEGIS_MGMT_PORT or 8080)."
    ),
    config: Path | None = typer.Option(None, help="TOML settings file (else AEGIS_MGMT_CONFIG_FILE)."),
) -> None:
    """Run the management API (FastAPI, uvicorn) against the NATS cluster of AEGIS_SERVERS.

    Needs AEGIS_MGMT_JWT_SECRET (or _FILE) and a first admin (AEGIS_MGMT_ADMIN_PASSWORD or _FILE).
    """
    options = dict(locals())
    with needs_extra("manage", "management"):
        from aegis.manage_cmd import manage_command

        manage_command(**options)


@app.command()
def dashboard(
    host: str | None = typer.Option(None, help="Bind address (default AEGIS_DASH_HOST or 127.0.0.1)."),
    port: int | None = typer.Option(
        None, min=0, max=65535, help="HTTP port (default AEGIS_DASH_PORT or 8090)."
    ),
    api_url: str | None = typer.Option(
        None, help="Management API base URL (default AEGIS_DASH_API_URL or http://127.0.0.1:8080)."
    ),
) -> None:
    """Run the dashboard (Panel/Bokeh), a client of the management API at --api-url.

    Needs AEGIS_DASH_API_KEY: an API key with instances:read for its one shared data feed. People log in with
    their management API accounts.
    """
    options = dict(locals())
    with needs_extra("dashboard", "dashboard"):
        from aegis.dashboard_cmd import dashboard_command

        dashboard_command(**options)


services_app = typer.Typer(no_args_is_help=True, help="Service definitions through the management API.")
app.add_typer(services_app, name="services")


@services_app.callback()
def services_options(
    ctx: typer.Context,
    url: str = typer.Option(
        "http://127.0.0.1:8080", envvar="AEGIS_MGMT_URL", help="Management API base URL."
    ),
    api_key: str | None = typer.Option(None, envvar="AEGIS_API_KEY", help="An API key (X-API-Key)."),
    user: str | None = typer.Option(
        None, envvar="AEGIS_MGMT_USER", help="User name (password: AEGIS_MGMT_PASSWORD)."
    ),
    password: str | None = typer.Option(None, envvar="AEGIS_MGMT_PASSWORD", hidden=True),
    timeout: float = typer.Option(10.0, min=0.1, help="HTTP timeout in seconds."),
) -> None:
    with needs_extra("services", "management"):
        from aegis.services_cmd import ApiClient

        ctx.obj = ApiClient(url, api_key, user, password, timeout)


_JSON = typer.Option(False, "--json", help="Print JSON.")


@services_app.command("list")
def services_list(ctx: typer.Context, as_json: bool = _JSON) -> None:
    """Every definition."""
    from aegis.services_cmd import list_command

    list_command(ctx.obj, as_json)


@services_app.command("get")
def services_get(ctx: typer.Context, name: str, as_json: bool = _JSON) -> None:
    """One definition and its revision."""
    from aegis.services_cmd import get_command

    get_command(ctx.obj, name, as_json)


def _fields(
    owner: str | None, description: str | None, version: str | None, single_active: bool | None
) -> dict[str, object]:
    return {"owner": owner, "description": description, "version": version, "single_active": single_active}


@services_app.command("create")
def services_create(
    ctx: typer.Context,
    name: str,
    owner: str | None = typer.Option(None),
    description: str | None = typer.Option(None),
    version: str | None = typer.Option(None),
    single_active: bool | None = typer.Option(None, "--single-active/--no-single-active"),
    as_json: bool = _JSON,
) -> None:
    """Create a definition (fails if it exists)."""
    from aegis.services_cmd import create_command

    create_command(ctx.obj, name, _fields(owner, description, version, single_active), as_json)


@services_app.command("update")
def services_update(
    ctx: typer.Context,
    name: str,
    owner: str | None = typer.Option(None),
    description: str | None = typer.Option(None),
    version: str | None = typer.Option(None),
    single_active: bool | None = typer.Option(None, "--single-active/--no-single-active"),
    as_json: bool = _JSON,
) -> None:
    """Change the given fields of a definition (read, then write with its ETag: a concurrent change is refused)."""
    from aegis.services_cmd import update_command

    update_command(ctx.obj, name, _fields(owner, description, version, single_active), as_json)


@services_app.command("delete")
def services_delete(
    ctx: typer.Context, name: str, yes: bool = typer.Option(False, "--yes", help="Do not ask.")
) -> None:
    """Delete a definition (asks first unless --yes)."""
    if not yes:
        typer.confirm(f"Delete the definition of {name}?", abort=True)
    from aegis.services_cmd import delete_command

    delete_command(ctx.obj, name)


@services_app.command("history")
def services_history(ctx: typer.Context, name: str, as_json: bool = _JSON) -> None:
    """The kept revisions of a definition."""
    from aegis.services_cmd import history_command

    history_command(ctx.obj, name, as_json)


def main() -> None:  # pragma: no cover - console script shim
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
