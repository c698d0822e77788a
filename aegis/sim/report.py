"""Campaign reports: ``reports/sim-<name>.json``, ``reports/sim-<name>.html`` (Bokeh plots) and the predicted
failover distribution for the default parameters (``reports/sim-predicted-failover.json``), which the fault
harness compares with real kill -9 measurements.

The HTML embeds BokehJS (``bokeh.resources.INLINE``: trading hosts are offline, a CDN script would not load);
the figures are also written as plain tables below the plots. Every percentile is printed with its sample
count; below :data:`aegis.stats.MIN_P99_SAMPLES` samples the maximum instead of a p99 (nearest rank: the
harness's definition too).
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from aegis.stats import MIN_P99_SAMPLES, recorded, seconds, spread_text

PREDICTED_NAME = "sim-predicted-failover.json"


def split_report(report: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The report without the (long) sample lists, and the predicted-failover export."""
    summary = {k: v for k, v in report.items() if k != "predicted_failover"}
    pred = dict(report.get("predicted_failover") or {})
    samples = pred.get("samples_s", [])
    pred.update(
        {
            "source": f"aegis sim campaign {report.get('name')!r}, seed {report.get('seed')}",
            "n": len(samples),
            "description": f"{report.get('failover_measure')}; samples_s: crash runs with real-machine clocks"
            f" (rates within 1 +/- {pred.get('clock_drift')}); bound_drift_samples_s: the crash mix, clock rates"
            f" anywhere within the protocol's drift bound ({pred.get('bound_drift')})",
        }
    )
    return summary, pred


def write_reports(report: dict[str, Any], out: Path, *, predicted: bool = True) -> list[Path]:
    """Write the JSON and HTML reports (and the predicted failover distribution); returns the paths."""
    out.mkdir(parents=True, exist_ok=True)
    summary, pred = split_report(report)
    name = report.get("name", "default")
    jpath = out / f"sim-{name}.json"
    jpath.write_text(json.dumps(summary, indent=2) + "\n")
    hpath = out / f"sim-{name}.html"
    hpath.write_text(render_html(report))
    paths = [jpath, hpath]
    if predicted:
        ppath = out / PREDICTED_NAME
        ppath.write_text(json.dumps(pred, indent=1) + "\n")
        paths.append(ppath)
    return paths


def _hist(values: list[float], bins: int = 40) -> tuple[list[float], list[float], list[int]]:
    if not values:
        return [], [], []
    lo, hi = min(values), max(values)
    if hi <= lo:
        hi = lo + 1e-3
    width = (hi - lo) / bins
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, int((v - lo) / width))] += 1
    lefts = [lo + i * width for i in range(bins)]
    return lefts, [x + width for x in lefts], counts


def render_html(report: dict[str, Any]) -> str:
    """The HTML report: failover distributions per fault class, availability per mix, the parameter sweep."""
    from bokeh.embed import components
    from bokeh.embed.bundle import bundle_for_objs_and_resources
    from bokeh.layouts import column, row
    from bokeh.models import ColumnDataSource, HoverTool
    from bokeh.palettes import Category10_10
    from bokeh.plotting import figure
    from bokeh.resources import INLINE

    figs = []
    # 1. failover time distributions per fault class (crash: client + serve; stop: serve)
    pred = report.get("predicted_failover") or {}
    series = {
        "client-visible, real clocks": pred.get("samples_s", []),
        "client-visible, clocks anywhere within the 5 % bound": pred.get("bound_drift_samples_s", []),
    }
    f1 = figure(
        title="Failover time after kill -9 of the active (crash mix, default parameters)",
        x_axis_label="seconds",
        y_axis_label="failovers",
        width=700,
        height=350,
    )
    for (label, values), color in zip(series.items(), Category10_10, strict=False):
        lefts, rights, counts = _hist(values)
        if counts:
            f1.quad(
                left=lefts, right=rights, top=counts, bottom=0, alpha=0.5, color=color, legend_label=label
            )
    f1.legend.location = "top_left"
    figs.append(f1)

    by_mix = report.get("by_mix", {})
    classes: list[str] = []
    p50s: list[float] = []
    p99s: list[float] = []
    ns: list[int] = []
    for mix, agg in by_mix.items():
        for cls, d in agg.get("failovers", {}).items():
            if d.get("p50_s") is not None:
                classes.append(f"{mix}: {cls} (n={d['n']})")
                p50s.append(d["p50_s"])
                # below MIN_P99_SAMPLES samples the dot is the max (a p99 of a handful says nothing more)
                p99s.append(d["p99_s"] if d["n"] >= MIN_P99_SAMPLES else d["max_s"])
                ns.append(d["n"])
    if classes:
        src = ColumnDataSource({"cls": classes, "p50": p50s, "p99": p99s, "n": ns})
        f2 = figure(
            y_range=classes,
            title=f"Failover time per fault class (p50 bar, p99 dot; max below {MIN_P99_SAMPLES} samples)",
            x_axis_label="seconds",
            width=700,
            height=40 + 28 * len(classes),
        )
        f2.hbar(y="cls", right="p50", height=0.6, source=src, color=Category10_10[0], legend_label="p50")
        f2.scatter(x="p99", y="cls", size=9, source=src, color=Category10_10[3], legend_label="p99 (or max)")
        f2.add_tools(
            HoverTool(
                tooltips=[("class", "@cls"), ("p50", "@p50 s"), ("p99 (or max)", "@p99 s"), ("n", "@n")]
            )
        )
        f2.legend.location = "bottom_right"
        figs.append(f2)

    # 2. availability per fault mix
    mixes = list(by_mix)
    avail = [by_mix[m].get("availability") or 0.0 for m in mixes]
    if mixes:
        lo = min(avail) if avail else 0.9
        f3 = figure(
            x_range=mixes,
            title="Availability per fault mix (fraction of time an unpaused instance serves)",
            width=700,
            height=300,
            y_range=(max(0.0, lo - (1 - lo) * 0.5 - 0.001), 1.0005),
        )
        f3.vbar(x=mixes, top=avail, width=0.7, color=Category10_10[2])
        figs.append(f3)

    # 3. the sweep: p99 failover and false failovers per hour, one line per renew interval
    cells = (report.get("sweep") or {}).get("cells", [])
    if cells:
        renews = sorted({c["renew_s"] for c in cells})
        fa = figure(
            title="p99 failover after a crash vs lease", x_axis_label="lease (s)", y_axis_label="p99 (s)"
        )
        fb = figure(
            title="False failovers per hour under pauses vs lease",
            x_axis_label="lease (s)",
            y_axis_label="false failovers / hour",
        )
        for renew, color in zip(renews, Category10_10, strict=False):
            sel = sorted((c for c in cells if c["renew_s"] == renew), key=lambda c: c["lease_s"])
            xs = [c["lease_s"] for c in sel]
            fa.line(
                xs, [c["failover_p99_s"] for c in sel], color=color, legend_label=f"renew {renew}s", width=2
            )
            fa.scatter(xs, [c["failover_p99_s"] for c in sel], color=color, size=6)
            fb.line(
                xs, [c["false_failovers_per_hour"] for c in sel], color=color, legend_label=f"renew {renew}s"
            )
            fb.scatter(xs, [c["false_failovers_per_hour"] for c in sel], color=color, size=6)
        for f in (fa, fb):
            f.width, f.height = 470, 350
            f.legend.location = "top_left"
        figs.append(row(fa, fb))

    layout = column(*figs)
    script, div = components(layout)
    # Only the BokehJS parts these plots use (about 1.3 MB; INLINE.render() would embed all of it, 4 MB).
    return _page(report, script, div, bundle_for_objs_and_resources([layout], INLINE).scripts())


def _table(rows: list[list[Any]], head: list[str]) -> str:
    cells = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{cells}</tr>{body}</table>"


def _spread(report: dict[str, Any], key: str, values: list[float] | None = None) -> str:
    """``<key>_p50_s`` / ``_p99_s`` / ``_max_s`` with ``<key>_samples`` (or, in a report recorded before those
    keys, counted from ``values``): no p99 below the minimum sample count."""
    n = report.get(f"{key}_samples", None if values is None else len(values))
    p50, p99, top = (report.get(f"{key}_{q}_s") for q in ("p50", "p99", "max"))
    if top is None and values:
        top = max(values)
    if n is None:
        return f"p50 {p50} s, p99 {p99} s (sample count not recorded)"
    if top is None and n and p50 is not None:  # a report recorded before the max was
        parts = [f"p50 {seconds(p50)}"]
        if n >= MIN_P99_SAMPLES and p99 is not None:
            parts.append(f"p99 {seconds(p99)}")
        return f"{', '.join(parts)} ({n} samples; max not recorded)"
    return spread_text(recorded(n, p50, p99, top))


def _dist_text(d: dict[str, Any]) -> str:
    return spread_text(recorded(d["n"], d["p50_s"], d["p99_s"], d.get("max_s")))


def _page(report: dict[str, Any], script: str, div: str, resources: str) -> str:
    p = report.get("params", {})
    pred = report.get("predicted_failover") or {}
    headline = _table(
        [
            ["runs (fault mixes)", report.get("runs")],
            ["runs (sweep)", report.get("sweep_runs")],
            ["violations", report.get("violations")],
            ["crash failover (client-visible)", _spread(report, "failover")],
            [
                "predicted with real clocks",
                _spread(report, "predicted_failover_real_clocks", pred.get("samples_s")),
            ],
            ["new epoch serves", _spread(report, "serve_failover")],
            ["simulated seconds", report.get("sim_seconds")],
            ["speedup (simulated s per wall s)", report.get("speedup")],
            ["parameters", ", ".join(f"{k}={v}" for k, v in p.items())],
        ],
        ["", ""],
    )
    mixes = _table(
        [
            [
                m,
                a["runs"],
                a["violations"],
                a["availability"],
                a["false_failovers_per_hour"],
                "; ".join(f"{k}: {_dist_text(d)}" for k, d in a["failovers"].items()),
            ]
            for m, a in report.get("by_mix", {}).items()
        ],
        ["mix", "runs", "violations", "availability", "false failovers/h", "failovers"],
    )
    cells = (report.get("sweep") or {}).get("cells", [])
    sweep = _table(
        [
            [
                c["lease_s"],
                c["renew_s"],
                c["window_s"],
                _spread(c, "failover"),
                c["false_failovers_per_hour"],
                c["availability_under_pauses"],
                c["violations"],
            ]
            for c in cells
        ],
        [
            "lease",
            "renew",
            "window",
            "failover after a crash",
            "false failovers/h",
            "availability",
            "violations",
        ],
    )
    first = report.get("first_violation")
    viol = ""
    if first:
        viol = (
            f"<h2>First violation</h2><p>{html.escape(first['message'])} &mdash; replay: "
            f"<code>{html.escape(first['replay'])}</code></p><pre>{html.escape(chr(10).join(first['trace']))}</pre>"
        )
    name = html.escape(str(report.get("name")))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Aegis simulation: {name}</title>
{resources}
{script}
<style>body{{font-family:sans-serif;margin:2em;max-width:1000px}} table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:left}}</style></head>
<body><h1>Aegis simulation campaign: {name}</h1>
<p>The SDK's election state machine (<code>aegis.sdk.election.Election</code>) driven by a SimPy model of the KV,
the network, the processes and sticky clients. Safety is checked at every event (no overlapping service,
serving epochs only increase, no client accepts a stale epoch).</p>
{headline}{viol}
<div>{div}</div>
<h2>Fault mixes</h2>{mixes}
<h2>Parameter sweep</h2><p>Pause distribution: {html.escape(json.dumps((report.get("sweep") or {}).get("pauses")))}</p>{sweep}
</body></html>
"""
