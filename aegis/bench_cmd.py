"""``aegis bench``: raw nats-py vs the SDK on one local cluster (:mod:`aegis.harness.bench.runner`).

A full run writes ``reports/baseline.json`` and ``.md`` (``--out`` elsewhere; ``--quick`` writes nothing unless
``--out`` is given); ``--json`` prints the report as one JSON object, otherwise its markdown is printed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rich.console import Console

err = Console(stderr=True)
REPORTS = Path("reports")


def bench_command(quick: bool = False, as_json: bool = False, out: Path | None = None) -> None:
    """Measure, write the report where asked, print it."""
    from aegis.harness.bench.runner import markdown, run_bench, write_report

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
