"""``aegis sim``: the SimPy simulator of the election (``aegis/sim/``), as a command.

Two modes:

* **campaign** (default): ``--runs`` runs over the fault mixes plus the lease x renew sweep, with a progress bar
  on stderr; writes ``<out>/sim-<name>.json``, ``.html`` and ``sim-predicted-failover.json`` (not in ``--json``
  mode unless ``--out`` is given); ``--json`` prints one JSON object on stdout.
* **replay**: ``--seed S`` runs exactly one run (mix ``--mix``, parameters ``--lease``/``--renew``/...) and prints
  its summary; ``--trace FILE`` writes its events as the spec's NDJSON trace (``aegis trace-check FILE``).

A violation prints the seed, the replay command and the last 20 events to stderr; the exit code is 1 then.

``--election quorum`` runs the quorum lease (``aegis/sim/quorum_run.py``) instead: a campaign over its fault
mixes (the node-crash mixes ``node`` and ``node-mixed`` among them) plus node-crash runs with the colocated
placement, reporting the gap per fault (``node_crash_gap_*``: the predicted gap of a NATS node crash) in
``<out>/sim-<name>.json`` (name ``quorum`` by default); ``--seed S`` replays one run (``--mix``, ``--placement``).
Every JSON output says which election ran (``election``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

err = Console(stderr=True)


def _print_violation(first: dict[str, Any]) -> None:
    err.print(f"[red]violation[/]: {first['property']}: {first['message']}", soft_wrap=True)
    err.print(f"seed {first['seed']} (mix {first['mix']}); replay: {first['replay']}", soft_wrap=True)
    for line in first["trace"]:
        err.print(f"  {line}", soft_wrap=True, highlight=False)


def sim_command(
    runs: int = 2000,
    seed: int | None = None,
    campaign_seed: int = 1,
    mix: str = "crash",
    lease: float | None = None,
    renew: float | None = None,
    drift: float | None = None,
    write_timeout: float | None = None,
    ttl: float = 10.0,
    duration: float = 60.0,
    trace: Path | None = None,
    control: str | None = None,
    sweep: bool = True,
    sweep_runs: int = 10,
    predicted_runs: int = 100,
    name: str = "default",
    out: Path | None = None,
    as_json: bool = False,
    election: str = "lease",
    placement: str = "spread",
    colocated_runs: int = 50,
) -> None:
    """Run a simulation campaign or replay one run; see the module docstring."""
    from aegis.sdk.election import ElectionParams
    from aegis.sim.campaign import CampaignConfig, SweepConfig, replay_command, run_campaign
    from aegis.sim.controls import CONTROLS, control_config
    from aegis.sim.faults import MIXES
    from aegis.sim.report import write_reports
    from aegis.sim.run import RunConfig, run

    defaults = ElectionParams()
    try:
        params = ElectionParams(
            lease_s=defaults.lease_s if lease is None else lease,
            renew_s=defaults.renew_s if renew is None else renew,
            drift=defaults.drift if drift is None else drift,
            write_timeout_s=defaults.write_timeout_s if write_timeout is None else write_timeout,
        )
    except ValueError as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    if election not in ("lease", "quorum"):
        err.print(f"[red]unknown election {election!r}; choose lease or quorum[/]")
        raise typer.Exit(2)
    if election == "quorum":
        _quorum(
            runs=runs,
            seed=seed,
            campaign_seed=campaign_seed,
            mix=mix,
            params=params,
            duration=duration,
            trace=trace,
            control=control,
            name=name,
            out=out,
            as_json=as_json,
            placement=placement,
            colocated_runs=colocated_runs,
        )
    if placement != "spread":
        err.print("[red]--placement applies to --election quorum[/]")
        raise typer.Exit(2)
    if mix not in MIXES:
        hint = (
            " (node crashes are --election quorum's; the lease's is --mix nats)"
            if mix.startswith("node")
            else ""
        )
        err.print(f"[red]unknown mix {mix!r}; choose from {', '.join(MIXES)}{hint}[/]")
        raise typer.Exit(2)
    if control is not None and control not in CONTROLS:
        err.print(f"[red]unknown control {control!r}; choose from {', '.join(CONTROLS)}[/]")
        raise typer.Exit(2)

    if seed is not None:  # replay one run
        rc = RunConfig(
            seed=seed, params=params, ttl_s=ttl, mix=MIXES[mix], duration_s=duration, trace=trace is not None
        )
        if control:
            rc = control_config(control, rc)
            from dataclasses import replace

            rc = replace(rc, mix=MIXES[mix])
        result = run(rc)
        summary = result.summary()
        summary["replay"] = replay_command(rc, control)
        if trace is not None:
            n = result.write_trace(trace)
            err.print(f"wrote {n} trace events to {trace}")
        if result.violations:
            v = result.violations[0]
            _print_violation({**v.to_dict(), "seed": seed, "mix": mix, "replay": summary["replay"]})
        sys.stdout.write(json.dumps(summary, indent=None if as_json else 2) + "\n")
        raise typer.Exit(1 if result.violations else 0)

    cfg = CampaignConfig(
        name=name,
        runs=runs,
        seed=campaign_seed,
        duration_s=duration,
        params=params,
        ttl_s=ttl,
        sweep=SweepConfig(runs=sweep_runs) if sweep and sweep_runs > 0 else None,
        control=control,
        predicted_runs=predicted_runs,
    )
    report = _with_progress(run_campaign, cfg)
    target = out if out is not None else (None if as_json else Path("reports"))
    if target is not None:
        predicted = control is None and params == defaults and ttl == 10.0
        for path in write_reports(report, target, predicted=predicted):
            err.print(f"wrote {path}")
    if report["first_violation"]:
        _print_violation(report["first_violation"])
    summary = {k: v for k, v in report.items() if k != "predicted_failover"}
    if as_json:
        sys.stdout.write(json.dumps(summary) + "\n")
    else:
        _print_table(summary)
    raise typer.Exit(1 if report["violations"] else 0)


def _with_progress(run: Callable[..., dict[str, Any]], cfg: Any) -> dict[str, Any]:
    """``run(cfg, progress=...)`` with a progress bar on stderr (both campaigns report ``(done, total, what)``)."""
    with _progress_bar() as bar:
        task = bar.add_task("", total=1)

        def progress(done: int, total: int, what: str) -> None:
            bar.update(task, completed=done, total=total, description=what)

        return run(cfg, progress=progress)


def _progress_bar() -> Any:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = (
        TextColumn("sim"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} {task.description}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    return Progress(*columns, console=err, transient=True)


def _quorum(
    *,
    runs: int,
    seed: int | None,
    campaign_seed: int,
    mix: str,
    params: Any,
    duration: float,
    trace: Path | None,
    control: str | None,
    name: str,
    out: Path | None,
    as_json: bool,
    placement: str,
    colocated_runs: int,
) -> None:
    """``aegis sim --election quorum``: a campaign of the quorum lease, or one replayed run; exits."""
    from aegis.sim.quorum_kv import PLACEMENTS
    from aegis.sim.quorum_run import (
        QUORUM_MIXES,
        QuorumCampaignConfig,
        QuorumRunConfig,
        quorum_replay_command,
        run_quorum,
        run_quorum_campaign,
    )

    if mix not in QUORUM_MIXES:
        err.print(f"[red]unknown mix {mix!r}; choose from {', '.join(QUORUM_MIXES)}[/]")
        raise typer.Exit(2)
    if placement not in PLACEMENTS:
        err.print(f"[red]unknown placement {placement!r}; choose from {', '.join(PLACEMENTS)}[/]")
        raise typer.Exit(2)
    if control is not None or trace is not None:
        err.print(
            "[red]--control and --trace are the single-bucket lease's: the quorum lease has no spec trace yet, and"
            " its broken machines are injected by tests/test_sim_quorum.py[/]"
        )
        raise typer.Exit(2)
    base = QuorumRunConfig(params=params, duration_s=duration, placement=placement)
    if seed is not None:
        from dataclasses import replace

        rc = replace(base, seed=seed, mix=QUORUM_MIXES[mix])
        result = run_quorum(rc)
        summary = result.summary()
        summary["replay"] = quorum_replay_command(rc)
        if result.violations:
            v = result.violations[0]
            _print_violation({**v.to_dict(), "seed": seed, "mix": mix, "replay": summary["replay"]})
        sys.stdout.write(json.dumps(summary, indent=None if as_json else 2) + "\n")
        raise typer.Exit(1 if result.violations else 0)

    cfg = QuorumCampaignConfig(
        name="quorum" if name == "default" else name,
        runs=runs,
        seed=campaign_seed,
        duration_s=duration,
        colocated_runs=colocated_runs,
        base=base,
    )
    report = _with_progress(run_quorum_campaign, cfg)
    target = out if out is not None else (None if as_json else Path("reports"))
    if target is not None:
        target.mkdir(parents=True, exist_ok=True)
        path = target / f"sim-{cfg.name}.json"
        path.write_text(json.dumps(report, indent=2) + "\n")
        err.print(f"wrote {path}")
    if report["first_violation"]:
        _print_violation(report["first_violation"])
    if as_json:
        sys.stdout.write(json.dumps(report) + "\n")
    else:
        _print_quorum_table(report)
    raise typer.Exit(1 if report["violations"] else 0)


def _print_quorum_table(report: dict[str, Any]) -> None:
    from rich.table import Table

    from aegis.stats import recorded, spread_text

    t = Table(title=f"aegis sim --election quorum: {report['name']} ({report['placement']} placement)")
    t.add_column("figure")
    t.add_column("value", justify="right")
    for key in ("runs", "colocated_runs", "violations"):
        t.add_row(key, str(report.get(key)))

    def dist(label: str, n: int, p50: Any, p99: Any, mx: Any) -> None:
        if n:
            t.add_row(label, spread_text(recorded(n, p50, p99, mx)))

    r = report
    dist(
        "node crash gap",
        r["node_crash_gap_samples"],
        r["node_crash_gap_p50_s"],
        r["node_crash_gap_p99_s"],
        r["node_crash_gap_max_s"],
    )
    dist(
        "node crash gap (client)",
        r["node_crash_client_gap_samples"],
        r["node_crash_client_gap_p50_s"],
        r["node_crash_client_gap_p99_s"],
        r["node_crash_client_gap_max_s"],
    )
    c = r["colocated"]["node_crash_gap"]
    dist("node crash gap, colocated", c["n"], c["p50_s"], c["p99_s"], c["max_s"])
    dist(
        "instance crash failover",
        r["failover_samples"],
        r["failover_p50_s"],
        r["failover_p99_s"],
        r["failover_max_s"],
    )
    for kind, g in r["gaps_by_fault"].items():
        d = g["gap"]
        dist(f"gap after {kind}", d["n"], d["p50_s"], d["p99_s"], d["max_s"])
    for key in ("sim_seconds", "wall_seconds", "speedup"):
        t.add_row(key, str(r.get(key)))
    Console().print(t)


def _print_table(report: dict[str, Any]) -> None:
    from rich.table import Table

    from aegis.stats import recorded, spread_text

    t = Table(title=f"aegis sim: {report['name']}")
    t.add_column("figure")
    t.add_column("value", justify="right")
    for key in ("runs", "sweep_runs", "violations"):
        t.add_row(key, str(report.get(key)))
    for label, prefix in (("crash failover", "failover"), ("crash failover (serving)", "serve_failover")):
        n = report.get(f"{prefix}_samples")
        if n is not None:
            got = recorded(
                n, report.get(f"{prefix}_p50_s"), report.get(f"{prefix}_p99_s"), report.get(f"{prefix}_max_s")
            )
            t.add_row(label, spread_text(got))
    for key in ("sim_seconds", "wall_seconds", "speedup"):
        t.add_row(key, str(report.get(key)))
    Console().print(t)
    cells = report.get("sweep", {}).get("cells", [])
    if cells:
        s = Table(title="sweep: lease x renew")
        for col in ("lease", "renew", "failover", "false failovers/h", "availability"):
            s.add_column(col, justify="right")
        for c in cells:
            n = c.get("failover_samples", 0)
            got = recorded(n, c["failover_p50_s"], c["failover_p99_s"], c.get("failover_max_s"))
            s.add_row(
                str(c["lease_s"]),
                str(c["renew_s"]),
                spread_text(got) if got["max"] is not None else f"p50 {c['failover_p50_s']} ({n})",
                str(c["false_failovers_per_hour"]),
                str(c["availability_under_pauses"]),
            )
        Console().print(s)
