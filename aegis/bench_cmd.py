"""``aegis bench``: raw nats-py vs the SDK on one local cluster (:mod:`aegis.harness.bench.runner`), or with
``--management`` the management API under load (:mod:`aegis.harness.bench.management`), with ``--soak`` the soak
(:mod:`aegis.harness.bench.soak`), with ``--groups 10,100,1000`` the election at scale
(:mod:`aegis.harness.bench.election_scale`).

A full run writes ``reports/baseline.json`` and ``.md`` (``reports/management-bench.*`` with ``--management``,
``reports/soak.*`` with ``--soak``, ``reports/election-scale.*`` with ``--groups``;
``--out`` elsewhere; ``--quick`` writes nothing unless ``--out`` is given); ``--json`` prints the report as one
JSON object, otherwise its markdown is printed. Progress goes to stderr, so stdout holds the report alone.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

err = Console(stderr=True)
REPORTS = Path("reports")

Report = dict[str, Any]
Markdown = Callable[[Report], str]
Writer = Callable[[Report, Path], tuple[Path, Path]]


def bench_command(
    quick: bool = False,
    as_json: bool = False,
    out: Path | None = None,
    management: bool = False,
    check: bool = False,
    baseline: Path = REPORTS / "baseline.json",
    tolerance: float = 0.10,
    soak: bool = False,
    groups: str | None = None,
) -> None:
    """Measure, write the report where asked, print it."""
    if check:
        check_command(baseline, tolerance, as_json)
        return
    if soak:
        from aegis.harness.bench.soak import markdown, run_soak, write_report

        report = run_soak(quick=quick, command=_command("--soak", quick, out))
    elif groups is not None:
        from aegis.harness.bench.election_scale import markdown, parse_groups, run_scale, write_report

        counts = parse_groups(groups)
        with err.status("election at scale") as status:
            report = run_scale(
                counts,
                quick=quick,
                progress=lambda what: status.update(f"election at scale: {what}"),
                command=_command(f"--groups {','.join(map(str, counts))}", quick, out),
            )
    elif management:
        from aegis.harness.bench.management import markdown, run_management_bench, write_report

        with err.status("management benchmark") as status:
            report = run_management_bench(
                quick=quick, progress=lambda what: status.update(f"management benchmark: {what}")
            )
    else:
        from aegis.harness.bench.runner import markdown, run_bench, write_report

        with err.status("benchmark") as status:
            report = run_bench(quick, progress=lambda what: status.update(f"benchmark: {what}"))
    _publish(report, markdown, write_report, None if quick and out is None else (out or REPORTS), as_json)


def _command(option: str, quick: bool, out: Path | None) -> str:
    """The command line that reproduces a report (its markdown's first line)."""
    return f"aegis bench {option}{' --quick' if quick else ''}{f' --out {out}' if out is not None else ''}"


def _publish(
    report: Report, markdown: Markdown, write_report: Writer, target: Path | None, as_json: bool
) -> None:
    """Write the report under ``target`` (when given), then print it as JSON or as rendered markdown."""
    if target is not None:
        jpath, mpath = write_report(report, target)
        err.print(f"wrote {jpath} and {mpath}")
    if as_json:
        sys.stdout.write(json.dumps(report) + "\n")
        return
    from rich.markdown import Markdown as Rendered

    Console().print(Rendered(markdown(report)))


def check_command(baseline: Path, tolerance: float, as_json: bool) -> None:
    """``make bench-check`` (NFR2): a quick run's SDK/raw p99 ratio against the recorded baseline's; exits 1 on a
    regression of more than ``tolerance``."""
    import typer

    from aegis.harness.bench.runner import regression_check, run_bench

    recorded = json.loads(baseline.read_text())
    with err.status("benchmark (check)") as status:
        report = run_bench(True, progress=lambda what: status.update(f"benchmark (check): {what}"))
    verdict = regression_check(report, recorded, tolerance=tolerance)
    report["check"] = verdict
    line = (
        f"{verdict['key']} {verdict['measured']:.3f} (rounds {verdict['measured_min']} - {verdict['measured_max']})"
        f" vs baseline {verdict['baseline']:.3f} ({baseline}, {verdict['baseline_recorded_at']}); limit"
        f" {verdict['limit']:.3f} (+{tolerance:.0%}): {'ok' if verdict['ok'] else 'REGRESSION'}"
        f"; load average {report['load_avg']['before']} -> {report['load_avg']['after']}"
    )
    err.print(line)
    if as_json:
        sys.stdout.write(json.dumps(report) + "\n")
    if not verdict["ok"]:
        raise typer.Exit(1)
