"""Single-active groups: who is active, under which epoch, since when, and each group's failover timeline.

The groups come from the process's feed; a group's leadership log (``/api/groups/{service}/{group}/failovers``)
is read again only when its epoch or active changes, not on every tick.
"""

from __future__ import annotations

import html
import time
from functools import partial

import pandas as pd
import panel as pn
from bokeh.models import ColumnDataSource, HoverTool
from bokeh.plotting import figure

from aegis.management.api_models import GroupView
from aegis.sdk.schema import LeadershipChange

from .api_client import ApiError, ApiUnreachable, Credentials
from .feed import Snapshot
from .frame import DashboardContext, ago, clock, html_pane, page
from .sessions import UserSession

GROUP_COLUMNS = ["service", "group", "active", "epoch", "since", "for", "standbys"]
KIND_COLOUR = {"acquire": "#1b6e20", "release": "#0b4f8a", "lose": "#b3261e", "expire": "#8a5a00"}


def group_rows(groups: list[GroupView]) -> pd.DataFrame:
    rows = [
        {
            "service": g.service,
            "group": g.group,
            "active": f"✔ {g.active_instance_id}" if g.active_instance_id else "✖ NONE (no lease holder)",
            "epoch": "" if g.epoch is None else str(g.epoch),
            "since": clock(g.since),
            "for": ago(g.since),
            "standbys": ", ".join(g.standbys) or "none",
        }
        for g in sorted(groups, key=lambda g: (g.service, g.group))
    ]
    return pd.DataFrame(rows, columns=GROUP_COLUMNS)


def timeline_rows(changes: list[LeadershipChange]) -> pd.DataFrame:
    rows = [
        {
            "at": clock(c.at),
            "group": f"{c.service}/{c.group}",
            "what": c.kind,
            "instance": c.instance_id,
            "epoch": c.epoch,
            "previous": f"{c.previous_instance_id or '-'} e{c.previous_epoch}" if c.previous_epoch else "",
            "reason": c.reason,
        }
        for c in sorted(changes, key=lambda c: c.at, reverse=True)
    ]
    return pd.DataFrame(rows, columns=["at", "group", "what", "instance", "epoch", "previous", "reason"])


def build_groups(ctx: DashboardContext, session: UserSession, creds: Credentials):  # type: ignore[no-untyped-def]
    table = pn.widgets.Tabulator(
        pd.DataFrame(columns=GROUP_COLUMNS),
        disabled=True,
        show_index=False,
        sizing_mode="stretch_width",
        layout="fit_data_fill",
        name="Groups",
    )
    events = pn.widgets.Tabulator(
        timeline_rows([]),
        disabled=True,
        show_index=False,
        sizing_mode="stretch_width",
        height=300,
        layout="fit_data_fill",
        name="Failovers",
    )
    source = ColumnDataSource({"t": [], "group": [], "kind": [], "instance": [], "epoch": [], "colour": []})
    known = sorted({f"{g.service}/{g.group}" for g in ctx.feed.snapshot.groups}) or ["(no groups)"]
    now_ms = time.time() * 1000
    fig = figure(
        height=220,
        sizing_mode="stretch_width",
        x_axis_type="datetime",
        y_range=known,
        x_range=(now_ms - 3_600_000, now_ms + 60_000),
        title="Failover timeline",
        toolbar_location=None,
    )
    fig.scatter("t", "group", source=source, size=11, color="colour", legend_field="kind")
    fig.add_tools(HoverTool(tooltips=[("what", "@kind"), ("instance", "@instance"), ("epoch", "@epoch")]))
    note = html_pane("")
    seen: dict[str, object] = {"key": None}
    doc = pn.state.curdoc

    async def load_timeline(groups: list[GroupView]) -> None:
        changes: list[LeadershipChange] = []
        for g in groups:
            try:
                changes += await ctx.client.failovers(creds, g.service, g.group)
            except (ApiError, ApiUnreachable) as exc:
                note.object = f'<p role="alert">Could not read failovers of {html.escape(g.service)}/{html.escape(g.group)}: {html.escape(str(exc))}</p>'
        doc.add_next_tick_callback(partial(show_timeline, groups, changes))

    def show_timeline(groups: list[GroupView], changes: list[LeadershipChange]) -> None:
        """Bokeh models change under the document lock: on the next tick, not in the coroutine."""
        events.value = timeline_rows(changes)
        names = sorted({f"{g.service}/{g.group}" for g in groups}) or ["(no groups)"]
        fig.y_range.factors = names
        if changes:
            fig.x_range.start = min(c.at for c in changes) * 1000 - 60_000
            fig.x_range.end = time.time() * 1000 + 60_000
        source.data = {
            "t": [c.at * 1000 for c in changes],
            "group": [f"{c.service}/{c.group}" for c in changes],
            "kind": [str(c.kind) for c in changes],
            "instance": [c.instance_id for c in changes],
            "epoch": [c.epoch for c in changes],
            "colour": [KIND_COLOUR.get(str(c.kind), "#333333") for c in changes],
        }

    def update(snap: Snapshot) -> None:
        table.value = group_rows(snap.groups)
        key = tuple((g.service, g.group, g.active_instance_id, g.epoch) for g in snap.groups)
        if key != seen["key"]:
            seen["key"] = key
            pn.state.execute(partial(load_timeline, snap.groups))

    body = pn.Column(
        html_pane(
            f"<h2>Single-active groups</h2><p class='aegis-muted'>As of {time.strftime('%H:%M:%S')}; "
            "the failover log is re-read when an active or epoch changes.</p>"
        ),
        table,
        note,
        pn.pane.Bokeh(fig, sizing_mode="stretch_width"),
        html_pane("<h2>Failovers, newest first</h2>"),
        events,
        sizing_mode="stretch_width",
    )
    return body, update


def groups_page(ctx: DashboardContext) -> pn.viewable.Viewable:
    return page(ctx, "/groups", "Groups", lambda s, c: build_groups(ctx, s, c))
