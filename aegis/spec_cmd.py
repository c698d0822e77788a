"""``aegis spec`` and ``aegis trace-check``: TLC on the election spec (:mod:`aegis.spec.suite`) and on a recorded
trace (:mod:`aegis.spec.trace_check`).

``spec`` exits 1 when a configuration did not do what it is expected to, 2 when TLC cannot run or a
``--config`` is unknown. ``trace-check`` exits 0 when the trace is validated, 1 when it is rejected or
incomplete, 2 when it cannot be read or TLC cannot run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.console import Console

err = Console(stderr=True)


def spec_command(
    quick: bool = False, as_json: bool = False, config: list[str] | None = None, parallel: int = 2
) -> None:
    """Model-check the suite (or the ``config`` names), print the table or the JSON report."""
    from aegis.spec.suite import run_suite, table
    from aegis.spec.tlc import TlcUnavailable

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


def trace_check_command(trace: Path, as_json: bool = False, timeout: float = 600, workers: int = 1) -> None:
    """Check ``trace`` with TLC, print the verdict (or one JSON object)."""
    from aegis.sdk.trace_events import TraceError
    from aegis.spec.tlc import TlcUnavailable
    from aegis.spec.trace_check import TraceCheckError, check_trace

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
