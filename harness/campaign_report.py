"""A campaign's report: the JSON other scripts read, a markdown summary, and an HTML page with Bokeh plots.

The JSON (``reports/<campaign>.json``) has at least ``runs``, ``split_brain``, ``lost_events``,
``failover_p99_s`` and ``trace_validated`` at the top level (the ``aegis campaign --json`` contract), then
``by_class`` (per fault class: runs, failover p50/p99/max, failed calls), ``faults`` (one row per fault) and
``timeline`` (every failed client operation, for the plot).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.checkers import percentile


def ks_distance(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the two empirical CDFs.

    Written out (ten lines) rather than pulling in SciPy for one statistic.
    """
    if not a or not b:
        return None
    xs, ys = sorted(a), sorted(b)
    i = j = 0
    worst = 0.0
    while i < len(xs) and j < len(ys):
        x = min(xs[i], ys[j])
        while i < len(xs) and xs[i] <= x:
            i += 1
        while j < len(ys) and ys[j] <= x:
            j += 1
        worst = max(worst, abs(i / len(xs) - j / len(ys)))
    return round(worst, 4)


def by_class(faults: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per fault class: runs, client-visible gap p50/p99/max, new-epoch failovers, failed calls, split brain."""
    out: dict[str, dict[str, Any]] = {}
    for kind in dict.fromkeys(f["kind"] for f in faults):
        rows = [f for f in faults if f["kind"] == kind]
        gaps = [f["gap_s"] for f in rows if f["gap_s"] is not None]
        failovers = [f["failover_s"] for f in rows if f["failover_s"] is not None]
        out[kind] = {
            "runs": len(rows),
            "gap_p50_s": percentile(gaps, 50),
            "gap_p99_s": percentile(gaps, 99),
            "gap_max_s": max(gaps) if gaps else None,
            "failovers": len(failovers),
            "failover_p50_s": percentile(failovers, 50),
            "failover_p99_s": percentile(failovers, 99),
            "failover_max_s": max(failovers) if failovers else None,
            "failed_calls": sum(f["failed_calls"] for f in rows),
            "failed_ops": sum(sum(f["failed_ops"].values()) for f in rows),
            "split_brain": sum(f["split_brain"] for f in rows),
            "unrecovered": sum(1 for f in rows if not f["recovered"]),
        }
    return out


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1000:.0f} ms"


def markdown(report: dict[str, Any]) -> str:
    """The human summary: what ran, the per-class table, the promises kept or broken."""
    c = report["campaign"]
    lines = [
        f"# Campaign `{c['name']}`",
        "",
        f"{c['description']}",
        "",
        f"Reproduce: `aegis campaign harness/campaigns/{c['name']}.yaml --out reports` (seed {c['seed']}).",
        f"{report['runs']} faults in {report['took_s']:.0f} s on a local {c['topology']['nodes']}-node cluster;"
        f" {c['topology']['instances']} single-active instances, {c['topology']['rpc_instances']} RPC instances.",
        "",
        "Gap = the longest stretch without a successful sticky call, from the fault until the client is steady"
        " again. Failover = fault -> first successful sticky call from a newer epoch (only faults that changed"
        " the active). Failed calls = sticky calls sent during the fault's window that failed.",
        "",
        "| fault class | runs | gap p50 | gap p99 | gap max | failovers | failover p50 | failover p99 | failover max"
        " | failed calls | other failed ops | split brain |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for kind, r in report["by_class"].items():
        lines.append(
            f"| {kind} | {r['runs']} | {_ms(r['gap_p50_s'])} | {_ms(r['gap_p99_s'])} | {_ms(r['gap_max_s'])}"
            f" | {r['failovers']} | {_ms(r['failover_p50_s'])} | {_ms(r['failover_p99_s'])}"
            f" | {_ms(r['failover_max_s'])} | {r['failed_calls']} | {r['failed_ops']} | {r['split_brain']} |"
        )
    lines += [
        "",
        "| check | value |",
        "|---|---|",
        f"| split brain (whole campaign) | {report['split_brain']} |",
        f"| epoch regressions (sticky client) | {report['epoch_regressions']} |",
        f"| events acknowledged / lost | {report['events_acked']} / {report['lost_events']} |",
        f"| commands completed / processed twice | {report['commands_completed']} / {report['duplicate_commands']} |",
        f"| sticky calls / failed | {report['calls']} / {report['failed_calls']} |",
        f"| trace validated with TLC | {report['trace_validated']} {report.get('trace', {}).get('note', '')} |",
    ]
    pred = report.get("prediction")
    if pred:
        lines += [
            "",
            "## Simulator prediction vs measurement (instance crash)",
            "",
            f"Simulated with the same election state machine (`{pred['source']}`): p50 {_ms(pred['sim_p50_s'])},"
            f" p99 {_ms(pred['sim_p99_s'])} over {pred['sim_samples']} simulated crashes; measured here p50"
            f" {_ms(pred['real_p50_s'])}, p99 {_ms(pred['real_p99_s'])} over {pred['real_samples']} kills."
            f" Two-sample KS distance {pred['ks_distance']}.",
        ]
    broken = report["expectations_broken"]
    lines += ["", "## Promises", ""]
    lines += [f"- **broken:** {b}" for b in broken] or ["- all kept"]
    if report.get("skipped"):
        lines += ["", "## Skipped", ""] + [f"- {s}" for s in report["skipped"]]
    return "\n".join(lines) + "\n"


def html(report: dict[str, Any]) -> str:
    """An HTML page: the gap distribution per fault class (ECDF, with the simulator's prediction for
    instance crashes), and a timeline of faults against each client's failed operations.

    BokehJS is embedded (``bokeh.resources.INLINE``, about 1 MB): trading hosts are offline, so a page that
    loads it from a CDN would show no plots there."""
    from bokeh.embed import file_html
    from bokeh.layouts import column
    from bokeh.models import BoxAnnotation, Div, Label
    from bokeh.palettes import Category10
    from bokeh.plotting import figure
    from bokeh.resources import INLINE

    palette = Category10[10]
    ecdf = figure(
        title="Client-visible gap per fault class (ECDF)",
        x_axis_label="gap (s)",
        y_axis_label="fraction of faults",
        width=900,
        height=380,
    )
    kinds = list(report["by_class"])
    for n, kind in enumerate(kinds):
        gaps = sorted(f["gap_s"] for f in report["faults"] if f["kind"] == kind and f["gap_s"] is not None)
        if gaps:
            ys = [(i + 1) / len(gaps) for i in range(len(gaps))]
            ecdf.step(gaps, ys, mode="after", color=palette[n % 10], line_width=2, legend_label=kind)
    pred = report.get("prediction")
    if pred and pred.get("sim_samples_s"):
        sim = sorted(pred["sim_samples_s"])
        ecdf.step(
            sim,
            [(i + 1) / len(sim) for i in range(len(sim))],
            mode="after",
            color="black",
            line_dash="dashed",
            legend_label="instance-kill, simulator prediction",
        )
    ecdf.legend.location = "bottom_right"

    timeline = figure(
        title="Faults (shaded) and failed client operations (dots)",
        x_axis_label="seconds since the campaign started",
        y_range=list(report["timeline"]["clients"]) or ["sticky"],
        width=900,
        height=320,
    )
    for n, f in enumerate(report["faults"]):
        color = palette[kinds.index(f["kind"]) % 10]
        timeline.add_layout(
            BoxAnnotation(left=f["at_s"], right=f["until_s"], fill_alpha=0.15, fill_color=color)
        )
        timeline.add_layout(Label(x=f["at_s"], y=0, y_units="screen", text=str(n + 1), text_font_size="8pt"))
    for client, times in report["timeline"]["failures"].items():
        if times:
            timeline.scatter(times, [client] * len(times), size=5, color="red", alpha=0.6)
    header = Div(
        text=f"<h2>Campaign {report['campaign']['name']}</h2><pre>{markdown(report)}</pre>", width=900
    )
    title = f"Aegis campaign {report['campaign']['name']}"
    return file_html(column(header, ecdf, timeline), INLINE, title)


def write_report(report: dict[str, Any], out: Path) -> list[Path]:
    """``<name>.json``, ``<name>.md`` and ``<name>.html`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    name = report["campaign"]["name"]
    paths = [out / f"{name}.json", out / f"{name}.md", out / f"{name}.html"]
    paths[0].write_text(json.dumps(report, indent=2) + "\n")
    paths[1].write_text(markdown(report))
    paths[2].write_text(html(report))
    return paths
