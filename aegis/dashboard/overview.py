"""The overview page: every instance with its health in colour AND words, counts per health, filter, search, sort.

The table is a Tabulator whose rows are keyed by ``service/instance``; while the set of rows stays the same an
update patches only the cells that changed, so the browser keeps the person's sort, scroll and selection.
"""

from __future__ import annotations

import html
from collections import Counter
from typing import Any

import pandas as pd
import panel as pn

from aegis.management.api_models import Health, InstanceView

from .api_client import Credentials
from .feed import Snapshot
from .frame import DashboardContext, clock, html_pane, page
from .sessions import UserSession

HEALTH_LABEL = {
    Health.DOWN: "✖ down",
    Health.STALE: "◐ stale",
    Health.DEGRADED: "⚠ degraded",
    Health.HEALTHY: "✔ healthy",
}
"""Words and a symbol with every colour (WCAG 1.4.1: colour is never the only sign)."""
STALE_SUFFIX = " (stale data)"
"""Added to every row's health while the feed cannot read the API."""
PATCH_MAX_SHARE = 0.25
"""Above this share of changed rows an update replaces the table's data instead of patching cells."""
HEALTH_ORDER = [Health.DOWN, Health.STALE, Health.DEGRADED, Health.HEALTHY]
# Light backgrounds with dark text: every pair is above 7:1 contrast.
ROW_STYLE = {
    "✖ down": "background-color: #fde2e1; color: #6e120d",
    "◐ stale": "background-color: #fff0d4; color: #5a3a00",
    "⚠ degraded": "background-color: #fff8c2; color: #4d4000",
}
COLUMNS = [
    "health",
    "service",
    "instance",
    "role",
    "req/s",
    "error %",
    "p50 ms",
    "p99 ms",
    "queue",
    "heartbeat age s",
    "version",
    "config",
]


def _figures(view: InstanceView) -> tuple[float, float, float, float]:
    """req/s, error %, p50, p99 over the last window, all methods (p50/p99: the worst method's)."""
    m = view.instance.metrics
    if m is None:
        return 0.0, 0.0, 0.0, 0.0
    windows = [s.window for s in m.methods.values() if s.window is not None]
    rate = sum(w.rate_per_s for w in windows)
    requests = sum(w.requests for w in windows)
    errors = sum(w.errors for w in windows)
    p50 = max((w.p50_ms for w in windows if w.requests), default=0.0)
    p99 = max((w.p99_ms for w in windows if w.requests), default=0.0)
    return rate, (100.0 * errors / requests if requests else 0.0), p50, p99


def _drifted(views: list[InstanceView]) -> set[tuple[str, str]]:
    """Instances whose config hash differs from the most common one among the live instances of their service."""
    by_service: dict[str, list[InstanceView]] = {}
    for v in views:
        if v.health != Health.DOWN and v.instance.config_hash:
            by_service.setdefault(v.instance.service, []).append(v)
    out: set[tuple[str, str]] = set()
    for members in by_service.values():
        counts = Counter(v.instance.config_hash for v in members)
        if len(counts) > 1:
            common = counts.most_common(1)[0][0]
            out |= {
                (v.instance.service, v.instance.instance_id)
                for v in members
                if v.instance.config_hash != common
            }
    return out


def instance_rows(views: list[InstanceView]) -> pd.DataFrame:
    """One row per instance, indexed ``service/instance``, worst health first; what the table shows."""
    drifted = _drifted(views)
    rows = []
    for v in sorted(
        views, key=lambda v: (HEALTH_ORDER.index(v.health), v.instance.service, v.instance.instance_id)
    ):
        i = v.instance
        rate, err, p50, p99 = _figures(v)
        role = ""
        if i.role:
            role = f"{i.role.upper()} e{i.epoch}" if i.epoch is not None else i.role.upper()
            # never show a dead or silent instance as serving: its record is its last word, not the truth
            if v.health == Health.DOWN:
                role = f"was {role}"
            elif v.health == Health.STALE:
                role = f"{role} (unconfirmed)"
        config = i.config_hash[:8]
        if (i.service, i.instance_id) in drifted:
            config = f"≠ {config} drift"
        rows.append(
            {
                "key": f"{i.service}/{i.instance_id}",
                "health": HEALTH_LABEL[v.health],
                "service": i.service,
                "instance": i.instance_id,
                "role": role,
                "req/s": round(rate, 1),
                "error %": round(err, 2),
                "p50 ms": round(p50, 2),
                "p99 ms": round(p99, 2),
                "queue": i.metrics.queue_depth if i.metrics else 0,
                "heartbeat age s": round(v.heartbeat_age_s, 1),
                "version": i.version,
                "config": config,
            }
        )
    return pd.DataFrame(rows, columns=["key", *COLUMNS]).set_index("key")


_shared: dict[str, Any] = {"version": None, "rows": None}


def shared_rows(snap: Snapshot) -> pd.DataFrame:
    """:func:`instance_rows` of the feed's snapshot, built once per snapshot for every session of the process."""
    key = (snap.version, snap.read_at, snap.stale)
    if _shared["version"] != key:
        rows = instance_rows(snap.instances)
        if snap.stale:  # the last data stays, but no row may look current
            rows = rows.assign(health=rows["health"] + STALE_SUFFIX)
        _shared["rows"] = rows
        _shared["version"] = key
    return _shared["rows"]


def filter_rows(df: pd.DataFrame, unhealthy_only: bool, search: str) -> pd.DataFrame:
    """The rows the person asked for: not healthy only, and/or containing ``search`` in service, id or role."""
    if unhealthy_only:
        df = df[~df["health"].str.startswith(HEALTH_LABEL[Health.HEALTHY])]
    needle = search.strip().lower()
    if needle:
        hay = (df["service"] + " " + df["instance"] + " " + df["role"] + " " + df["version"]).str.lower()
        df = df[hay.str.contains(needle, regex=False)]
    return df


def counts_html(views: list[InstanceView], snap: Snapshot) -> str:
    counts = Counter(v.health for v in views)
    parts = " ".join(
        f'<span data-health="{h.value}">{HEALTH_LABEL[h]}: {counts.get(h, 0)}</span>' for h in HEALTH_ORDER
    )
    when = f"STALE, last read {clock(snap.read_at)}" if snap.stale else f"read {clock(snap.read_at)}"
    return (
        f'<div class="aegis-counts" role="region" aria-label="Instances per health">{parts}'
        f'<span class="aegis-muted">{len(views)} instances · {html.escape(when)}</span></div>'
    )


def _row_style(row: pd.Series) -> list[str]:
    style = ROW_STYLE.get(row["health"].removesuffix(STALE_SUFFIX), "")
    return [style] * len(row)


def build_overview(ctx: DashboardContext, session: UserSession, creds: Credentials):  # type: ignore[no-untyped-def]
    """The overview's body and its updater (see :func:`aegis.dashboard.frame.page`)."""
    # a Select, not a Checkbox: Panel's checkbox input has no accessible label (axe "label", critical)
    unhealthy = pn.widgets.Select(
        name="Show", options=["all instances", "unhealthy only"], value="all instances"
    )
    search = pn.widgets.TextInput(name="Search", placeholder="service, instance, role, version")
    counts = html_pane("")
    table = pn.widgets.Tabulator(
        pd.DataFrame(columns=COLUMNS),
        disabled=True,
        show_index=False,
        selectable=True,
        sizing_mode="stretch_width",
        height=520,
        layout="fit_data_fill",
        formatters={
            "instance": {"type": "link", "urlPrefix": "", "labelField": "instance", "urlField": "link"}
        },
        hidden_columns=["link"],
        widths={"health": 170, "role": 195, "config": 150},  # room for "(stale data)", "(unconfirmed)", drift
        name="Instances",
    )
    table.style.apply(_row_style, axis=1)
    state: dict[str, pd.DataFrame] = {"all": pd.DataFrame(columns=COLUMNS)}

    def show(full_replace: bool) -> None:
        df = filter_rows(
            state["all"], unhealthy.value == "unhealthy only", search.value_input or search.value
        )
        df = df.assign(
            link=[f"/instance?service={s}&id={i}" for s, i in zip(df["service"], df["instance"], strict=True)]
        )
        current = table.value
        if (
            not full_replace
            and list(current.index) == list(df.index)
            and list(current.columns) == list(df.columns)
        ):
            changed = (current != df).any(axis=1)
            if changed.sum() > PATCH_MAX_SHARE * len(df):
                # most rows changed (heartbeat ages do each second): one column array each is cheaper to send
                # than a patch per cell; the browser keeps its sorters, filter and scroll across either
                table.value = df
            elif changed.any():
                table.patch(df[changed], as_index=True)
        else:
            table.value = df

    def update(snap: Snapshot) -> None:
        state["all"] = shared_rows(snap)
        counts.object = counts_html(snap.instances, snap)
        show(full_replace=False)

    unhealthy.param.watch(lambda _e: show(full_replace=True), "value")
    search.param.watch(lambda _e: show(full_replace=True), "value_input")
    body = pn.Column(
        counts,
        pn.Row(search, unhealthy, align="end"),
        table,
        sizing_mode="stretch_width",
    )
    return body, update


def overview_page(ctx: DashboardContext) -> pn.viewable.Viewable:
    return page(ctx, "/", "Overview", lambda s, c: build_overview(ctx, s, c))
