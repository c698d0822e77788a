"""The audit log for those who may read it (``audit:read``, admins): the last day of ``/api/audit``, newest first.

Read on opening and on Refresh with the person's own token; a role without the scope sees only that it lacks it
(the API would refuse it anyway).
"""

from __future__ import annotations

import html
import time
from typing import Any

import pandas as pd
import panel as pn

from aegis.sdk.schema import AuditEntry

from .api_client import ApiError, ApiUnreachable, Credentials
from .frame import DashboardContext, html_pane, page
from .sessions import UserSession

COLUMNS = ["time", "actor", "action", "target", "revisions", "request id", "detail"]
WINDOW_S = 86400.0


def audit_rows(entries: list[AuditEntry]) -> pd.DataFrame:
    rows = [
        {
            "time": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.time)),
            "actor": e.actor,
            "action": e.action,
            "target": e.target,
            "revisions": ""
            if e.before_revision is None and e.after_revision is None
            else f"{e.before_revision or '-'} → {e.after_revision or '-'}",
            "request id": e.request_id,
            "detail": e.detail,
        }
        for e in sorted(entries, key=lambda e: e.seq, reverse=True)
    ]
    return pd.DataFrame(rows, columns=COLUMNS)


def build_audit(ctx: DashboardContext, session: UserSession, creds: Credentials):  # type: ignore[no-untyped-def]
    if "audit:read" not in session.scopes:
        return html_pane("<h2>Audit log</h2><p>Your role cannot read the audit log.</p>"), lambda _s: None
    table = pn.widgets.Tabulator(
        pd.DataFrame(columns=COLUMNS),
        disabled=True,
        show_index=False,
        sizing_mode="stretch_width",
        height=600,
        layout="fit_data_fill",
        name="Audit log",
    )
    note = html_pane("")
    refresh = pn.widgets.Button(name="Refresh")

    async def load(*_: Any) -> None:
        try:
            entries = await ctx.client.audit(creds, time.time() - WINDOW_S)
        except (ApiError, ApiUnreachable) as exc:
            note.object = f"<p role='alert'>Could not read the audit log: {html.escape(str(exc))}</p>"
            return
        table.value = audit_rows(entries)
        note.object = f"<p class='aegis-muted'>{len(entries)} entries in the last 24 hours, newest first.</p>"

    refresh.on_click(load)
    pn.state.onload(load)
    body = pn.Column(html_pane("<h2>Audit log</h2>"), refresh, note, table, sizing_mode="stretch_width")
    return body, lambda _s: None


def audit_page(ctx: DashboardContext) -> pn.viewable.Viewable:
    return page(ctx, "/audit", "Audit log", lambda s, c: build_audit(ctx, s, c))
