"""``aegis sim``: the SimPy simulator of the election (``aegis/sim/``), as a command.

Two modes:

* **campaign** (default): ``--runs`` runs over the fault mixes plus the lease x renew sweep, with a progress bar
  on stderr; writes ``<out>/sim-<name>.json``, ``.html`` and ``sim-predicted-failover.json`` (not in ``--json``
  mode unless ``--out`` is given); ``--json`` prints one JSON object on stdout.
* **replay**: ``--seed S`` runs exactly one run (mix ``--mix``, parameters ``--lease``/``--renew``/...) and prints
  its summary; ``--trace FILE`` writes its events as the spec's NDJSON trace (``aegis trace-check FILE``).

A violation prints the seed, the replay command and the last 20 events to stderr; the exit code is 1 then.
"""

from __future__ import annotations

import json
import sys
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
    if mix not in MIXES:
        err.print(f"[red]unknown mix {mix!r}; choose from {', '.join(MIXES)}[/]")
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

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

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
    columns = (
        TextColumn("sim"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} {task.description}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task("", total=1)

        def progress(done: int, total: int, what: str) -> None:
            bar.update(task, completed=done, total=total, description=what)

        report = run_campaign(cfg, progress=progress)
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
