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
    repeat: int = 1,
    confirm: bool = True,
    baseline: Path = REPORTS / "baseline.json",
    tolerance: float = 0.10,
    soak: bool = False,
    groups: str | None = None,
) -> None:
    """Measure, write the report where asked, print it."""
    if check:
        check_command(baseline, tolerance, as_json, repeat, out, confirm)
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


def check_command(
    baseline: Path,
    tolerance: float,
    as_json: bool,
    repeat: int = 1,
    out: Path | None = None,
    confirm: bool = True,
) -> None:
    """``make bench-check`` (NFR2): the SDK/raw RPC p99 ratio at concurrency 1 (:meth:`BenchPlan.check`: that
    comparison only, 24 rounds of 3000 calls) against the recorded baseline's, ``repeat`` times in a row; exits 1
    when any run is a regression of more than ``tolerance``.

    Each run first waits (up to a minute) for the machine's load average to settle. With ``confirm``, a run over
    the limit is measured once more at once and counts as a regression only if that run is over the limit too: a
    real regression fails both, a noisy round rarely does twice. With ``out``, writes ``<out>/bench-check.json``:
    the verdict, spread and load average of every run (the first measurement's verdict, and the confirmation's)."""
    import typer

    from aegis.harness.bench.runner import BenchPlan, regression_check, run_bench, wait_for_quiet

    def measure(label: str) -> tuple[dict[str, Any], dict[str, Any]]:
        waited = wait_for_quiet()
        with err.status(label) as status:
            report = run_bench(
                True,
                progress=lambda what: status.update(f"{label}: {what}"),
                plan=BenchPlan.check(),
                command="aegis bench --check",
            )
        verdict = regression_check(report, recorded, tolerance=tolerance)
        report["check"] = verdict
        report["waited_for_quiet_s"] = waited
        err.print(
            f"{label}: {verdict['key']} {verdict['measured']:.3f} (rounds {verdict['measured_min']} -"
            f" {verdict['measured_max']}) vs baseline {verdict['baseline']:.3f} ({baseline},"
            f" {verdict['baseline_recorded_at']}); limit {verdict['limit']:.3f} (+{tolerance:.0%}):"
            f" {'ok' if verdict['ok'] else 'over the limit'}; load average {report['load_avg']['before']} ->"
            f" {report['load_avg']['after']} (waited {waited} s for it to settle)"
        )
        if as_json:
            sys.stdout.write(json.dumps(report) + "\n")
        return report, verdict

    try:
        recorded = json.loads(baseline.read_text())
    except (OSError, ValueError) as exc:
        err.print(f"cannot read the baseline {baseline}: {exc}")
        raise typer.Exit(2) from None
    runs = []
    for i in range(repeat):
        report, verdict = measure(f"check {i + 1}/{repeat}")
        confirmation = None
        if confirm and not verdict["ok"]:
            _, confirmation = measure(f"check {i + 1}/{repeat}, confirmation")
        ok = verdict["ok"] or (confirmation is not None and confirmation["ok"])
        if not ok:
            err.print(f"check {i + 1}/{repeat}: REGRESSION")
        runs.append(
            {
                "check": verdict,
                "confirmation": confirmation,
                "ok": ok,
                "ratio_spread": report["ratio_spread"][verdict["key"]],
                "load_avg": report["load_avg"],
                "waited_for_quiet_s": report["waited_for_quiet_s"],
                "took_s": report["took_s"],
                "recorded_at": report["recorded_at"],
            }
        )
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        flags = "" if confirm else " --no-confirm"
        command = f"aegis bench --check --repeat {repeat}{flags} --out {out}"
        path = out / "bench-check.json"
        path.write_text(
            json.dumps({"command": command, "plan": report["plan"], "runs": runs}, indent=2) + "\n"
        )
        err.print(f"wrote {path}")
    if not all(r["ok"] for r in runs):
        raise typer.Exit(1)
