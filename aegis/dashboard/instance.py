"""One instance (deep link ``/instance?service=S&id=I``): live and historical charts, last error, metadata, and
its effective configuration with each value's source, secrets redacted.

History comes from ``/api/instances/{service}/{id}/metrics`` for the picked range; after that each feed update
appends the instance's newest window figures with ``ColumnDataSource.stream`` (rollover), so only the delta
travels to the browser.
"""

from __future__ import annotations

import html
import time
from typing import Any

import pandas as pd
import panel as pn
from bokeh.models import ColumnDataSource
from bokeh.plotting import figure

from aegis.management.api_models import InstanceView
from aegis.sdk.schema import EffectiveConfig, MetricsSnapshot

from .api_client import ApiError, ApiUnreachable, Credentials
from .feed import Snapshot
from .frame import DashboardContext, clock, html_pane, page
from .overview import HEALTH_LABEL
from .sessions import UserSession

RANGES = {"last 5 minutes": 300, "last 15 minutes": 900, "last hour": 3600}
POINTS = 120
"""Points asked of the history per range: one per range/120 s."""
ROLLOVER = 600


def point(m: MetricsSnapshot) -> dict[str, float]:
    """The chart figures of one snapshot: its window over all methods (p50/p99 of the worst method)."""
    windows = [s.window for s in m.methods.values() if s.window is not None]
    requests = sum(w.requests for w in windows)
    return {
        "t": m.taken_at * 1000,
        "p50": max((w.p50_ms for w in windows if w.requests), default=0.0),
        "p99": max((w.p99_ms for w in windows if w.requests), default=0.0),
        "rate": sum(w.rate_per_s for w in windows),
        "errors": 100.0 * sum(w.errors for w in windows) / requests if requests else 0.0,
        "queue": float(m.queue_depth),
    }


def _columns(points: list[dict[str, float]]) -> dict[str, list[float]]:
    keys = ["t", "p50", "p99", "rate", "errors", "queue"]
    return {k: [p[k] for p in points] for k in keys}


def config_rows(cfg: EffectiveConfig) -> pd.DataFrame:
    rows = [
        {
            "setting": name,
            "value": "*** (secret, redacted)" if v.secret else str(v.value),
            "source": v.source,
        }
        for name, v in sorted(cfg.settings.items())
    ]
    return pd.DataFrame(rows, columns=["setting", "value", "source"])


def metadata_html(view: InstanceView | None, service: str, instance_id: str) -> str:
    if view is None:
        return f"<p role='status'>No instance {html.escape(service)}/{html.escape(instance_id)} is listed now.</p>"
    i = view.instance
    last_errors = [
        f"{html.escape(name)}: {html.escape(s.last_error)}"
        for name, s in (i.metrics.methods.items() if i.metrics else [])
        if s.last_error
    ]
    role = f"{i.role.upper()} epoch {i.epoch}" if i.role else "-"
    reasons = ", ".join(view.reasons) or "-"
    items = [
        ("health", f"{HEALTH_LABEL[view.health]} ({html.escape(reasons)})"),
        ("status / role", f"{i.status.value} / {html.escape(role)}"),
        ("version", html.escape(i.version)),
        ("host / pid", f"{html.escape(i.host)} / {i.pid}"),
        ("started", clock(i.started_at)),
        ("heartbeat age", f"{view.heartbeat_age_s:.1f} s (every {i.heartbeat_interval_s} s)"),
        ("config hash", html.escape(i.config_hash[:16])),
        ("last error", "<br>".join(last_errors) or "none"),
    ]
    rows = "".join(f"<tr><th scope='row'>{k}</th><td>{v}</td></tr>" for k, v in items)
    return f"<table class='aegis-meta'><caption>Instance metadata</caption>{rows}</table>"


def _chart(source: ColumnDataSource, title: str, unit: str, lines: list[tuple[str, str, str]]) -> Any:
    fig = figure(
        height=200, sizing_mode="stretch_width", x_axis_type="datetime", title=title, toolbar_location=None
    )
    for column, label, colour in lines:
        fig.line("t", column, source=source, legend_label=label, color=colour, line_width=2)
    fig.yaxis.axis_label = unit
    fig.legend.location = "top_left"
    return pn.pane.Bokeh(fig, sizing_mode="stretch_width")


def build_instance(ctx: DashboardContext, session: UserSession, creds: Credentials):  # type: ignore[no-untyped-def]
    args = pn.state.session_args
    service = (args.get("service") or [b""])[0].decode()
    instance_id = (args.get("id") or [b""])[0].decode()
    source = ColumnDataSource(_columns([]))
    picker = pn.widgets.Select(name="Time range", options=list(RANGES), value="last 5 minutes")
    meta = html_pane("")
    status = html_pane("")
    config = pn.widgets.Tabulator(
        pd.DataFrame(columns=["setting", "value", "source"]),
        disabled=True,
        show_index=False,
        sizing_mode="stretch_width",
        layout="fit_data_fill",
        name="Configuration",
    )
    config_note = html_pane("")
    last: dict[str, float] = {"t": 0.0}
    doc = pn.state.curdoc

    async def load_history(*_: Any) -> None:
        span = RANGES[picker.value]
        until = time.time()
        try:
            points = await ctx.client.metrics_history(
                creds, service, instance_id, until - span, until, max(1.0, span / POINTS)
            )
        except (ApiError, ApiUnreachable) as exc:
            status.object = f"<p role='alert'>History not available: {html.escape(str(exc))}</p>"
            return
        data = [point(p) for p in points]

        def apply() -> None:  # Bokeh models change under the document lock: on the next tick, not here
            source.data = _columns(data)
            last["t"] = data[-1]["t"] if data else 0.0
            status.object = f"<p class='aegis-muted'>{len(data)} points of history, then live.</p>"

        doc.add_next_tick_callback(apply)

    async def load_config() -> None:
        try:
            cfg = await ctx.client.config(creds, service, instance_id)
        except (ApiError, ApiUnreachable) as exc:
            config_note.object = f"<p role='alert'>Configuration not available: {html.escape(str(exc))}</p>"
            return
        config.value = config_rows(cfg)
        config_note.object = f"<p class='aegis-muted'>config hash {html.escape(cfg.config_hash[:16])}</p>"

    def update(snap: Snapshot) -> None:
        view = next(
            (
                v
                for v in snap.instances
                if v.instance.service == service and v.instance.instance_id == instance_id
            ),
            None,
        )
        meta.object = metadata_html(view, service, instance_id)
        m = view.instance.metrics if view else None
        if m is not None and m.taken_at * 1000 > last["t"]:
            p = point(m)
            last["t"] = p["t"]
            source.stream({k: [v] for k, v in p.items()}, rollover=ROLLOVER)

    picker.param.watch(lambda _e: pn.state.execute(load_history), "value")
    pn.state.onload(load_history)
    pn.state.onload(load_config)
    body = pn.Column(
        html_pane(
            f"<h2>Instance {html.escape(service)}/{html.escape(instance_id)}</h2>"
            "<p><a href='#configuration'>Jump to its configuration</a></p>"
        ),
        meta,
        pn.Row(picker),
        status,
        _chart(
            source,
            "Latency (window, worst method)",
            "ms",
            [("p50", "p50", "#0b4f8a"), ("p99", "p99", "#b3261e")],
        ),
        _chart(source, "Request rate", "req/s", [("rate", "req/s", "#1b6e20")]),
        _chart(source, "Error rate", "%", [("errors", "error %", "#b3261e")]),
        _chart(source, "Queue depth", "messages", [("queue", "queue", "#5a3a00")]),
        html_pane(
            "<h2 id='configuration'>Effective configuration</h2><p>Each value with its source (default, "
            "env, file, override); secrets are redacted by the instance itself.</p>"
        ),
        config_note,
        config,
        sizing_mode="stretch_width",
    )
    return body, update


def instance_page(ctx: DashboardContext) -> pn.viewable.Viewable:
    return page(ctx, "/instance", "Instance", lambda s, c: build_instance(ctx, s, c))
