"""What every page has: the logged-in person, the navigation, the cluster strip and the unreachable banner.

A page is built per browser session by :func:`page`; it reads the process's one :class:`~aegis.dashboard.feed.Feed`
once a second (no HTTP per session) and redraws only what changed.
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable
from dataclasses import dataclass

import panel as pn
from tornado.web import decode_signed_value

from aegis.management.api_models import ClusterView

from .api_client import Credentials, ManagementClient
from .feed import Feed, Snapshot
from .login import LOGIN_PATH, LOGOUT_PATH
from .sessions import COOKIE_NAME, SessionStore, UserSession

REFRESH_MS = 1000
PAGES = (("/", "Overview"), ("/services", "Services"), ("/groups", "Groups"))
CSS = """
.aegis-header { display:flex; gap:1.5rem; align-items:center; font-family:system-ui,sans-serif; }
.aegis-header h1 { font-size:1.3rem; margin:0; }
.aegis-header nav a { margin-right:1rem; color:#0b4f8a; font-weight:600; }
.aegis-header nav a[aria-current=page] { color:#1a1a1a; text-decoration:none; border-bottom:3px solid #0b4f8a; }
.aegis-user { margin-left:auto; }
.aegis-user a { color:#0b4f8a; }
.aegis-strip { font-family:system-ui,sans-serif; font-size:.9rem; background:#eef1f5; color:#1a1a1a;
               padding:.4rem .6rem; border-radius:4px; }
.aegis-strip .down { color:#8a1c12; font-weight:700; }
.aegis-banner { font-family:system-ui,sans-serif; background:#fdecea; color:#7a1410; border:2px solid #7a1410;
                padding:.5rem .8rem; border-radius:4px; font-weight:600; }
.aegis-counts span { margin-right:1.2rem; font-family:system-ui,sans-serif; font-weight:600; }
.aegis-muted { color:#4a4a4a; }
"""

# <main> around the page's roots: one main landmark per page (axe landmark-one-main, region).
TEMPLATE = """{% extends "base.html" %}
{% block contents %}<main aria-label="{{ title | e }}">
{% for doc in docs %}{{ embed(doc) if doc.elementid }}{% for root in doc.roots %}{{ embed(root) }}
{% endfor %}{% endfor %}</main>
<script>
/* Tabulator puts a focusable scroll holder straight inside its role=grid (axe aria-required-children,
   critical): make the holder a plain box. The grid's rows stay reachable; Chromium keeps the scroller
   keyboard-scrollable. Panel renders into shadow roots, so walk them. */
(function () {
  function fix(root) {
    root.querySelectorAll('.tabulator-tableholder[tabindex]').forEach(function (e) {
      e.removeAttribute('tabindex'); e.setAttribute('role', 'none');
    });
    root.querySelectorAll('*').forEach(function (e) { if (e.shadowRoot) fix(e.shadowRoot); });
  }
  setInterval(function () { fix(document); }, 250);
})();
</script>{% endblock %}"""


@dataclass
class DashboardContext:
    """What pages share in one process: the sessions, the API client and the feed."""

    store: SessionStore
    client: ManagementClient
    feed: Feed
    cookie_secret: str

    def current_session(self) -> tuple[str | None, UserSession | None]:
        """The session of the browser that opened this Bokeh session (from its signed cookie)."""
        request = pn.state.curdoc.session_context.request if pn.state.curdoc else None
        raw = request.cookies.get(COOKIE_NAME) if request is not None else None
        if not raw:
            return None, None
        sid = decode_signed_value(self.cookie_secret, COOKIE_NAME, raw, max_age_days=1)
        sid_text = sid.decode() if sid else None
        return sid_text, self.store.get(sid_text)


def html_pane(text: str, **kw: object) -> pn.pane.HTML:
    """An HTML pane with the dashboard's styles (each pane renders in its own shadow DOM)."""
    return pn.pane.HTML(text, stylesheets=[CSS], sizing_mode="stretch_width", **kw)


def ago(t: float | None) -> str:
    if t is None:
        return "never"
    s = max(0.0, time.time() - t)
    return f"{s:.0f} s ago" if s < 120 else f"{s / 60:.0f} min ago"


def clock(t: float | None) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t)) if t else "-"


def cluster_strip_html(cluster: ClusterView | None) -> str:
    """NATS nodes (up/down in words, not only colour), the JetStream meta leader, who leads each Aegis stream."""
    if cluster is None:
        return '<div class="aegis-strip" role="region" aria-label="NATS cluster">NATS cluster: not read yet</div>'
    nodes = " · ".join(
        f'{html.escape(n.name)} <span class="{"" if n.up else "down"}">{"● up" if n.up else "✖ DOWN"}</span>'
        + (f" (behind on {len(n.behind)})" if n.behind else "")
        for n in cluster.nodes
    )
    meta = (
        html.escape(cluster.meta_leader)
        if cluster.meta_leader
        else f'<span title="{html.escape(cluster.meta_leader_note)}">unknown</span>'
    )
    streams = ", ".join(
        f"{html.escape(s.stream)} → {html.escape(s.leader) if s.leader else '<span class=down>no leader</span>'}"
        for s in cluster.streams
    )
    quorum = (
        ""
        if cluster.quorum_leaders_distinct is None
        else " &nbsp;|&nbsp; <b>quorum buckets</b> leaders on 3 nodes"
        if cluster.quorum_leaders_distinct
        else " &nbsp;|&nbsp; <b>quorum buckets</b> <span class=down>⚠ leaders share a node</span>"
        f" ({html.escape(cluster.quorum_leaders_note)}): a crash of it fails quorum groups over"
    )
    return (
        f'<div class="aegis-strip" role="region" aria-label="NATS cluster"><b>NATS</b> {nodes}'
        f" &nbsp;|&nbsp; <b>meta leader</b> {meta}{quorum} &nbsp;|&nbsp; <b>stream leaders</b> {streams}</div>"
    )


def banner_html(snap: Snapshot) -> str:
    if not snap.stale:
        return ""
    return (
        f'<div class="aegis-banner" role="alert">⚠ Management API or NATS unreachable since '
        f"{clock(snap.error_since)} ({html.escape(snap.error or '')}). The data below is STALE: last read at "
        f"{clock(snap.read_at)}.</div>"
    )


def header_html(session: UserSession, current: str) -> str:
    pages = [*PAGES, ("/audit", "Audit log")] if "audit:read" in session.scopes else list(PAGES)
    links = " ".join(
        f'<a href="{path}"{" aria-current=page" if path == current else ""}>{name}</a>'
        for path, name in pages
    )
    return (
        f'<header class="aegis-header"><h1>Aegis</h1><nav aria-label="Pages">{links}</nav>'
        f'<span class="aegis-user">{html.escape(session.user)} ({session.role}) · '
        f'<a href="{LOGOUT_PATH}">Log out</a></span></header>'
    )


def page(
    ctx: DashboardContext,
    path: str,
    title: str,
    build: Callable[[UserSession, Credentials], tuple[pn.viewable.Viewable, Callable[[Snapshot], None]]],
) -> pn.viewable.Viewable:
    """Build one page for the current browser session: ``build`` returns the body and its updater."""
    pn.state.curdoc.title = f"{title} · Aegis"
    pn.state.curdoc.template = pn.io.resources._env.from_string(TEMPLATE)
    pn.state.curdoc.template_variables["title"] = title
    sid, session = ctx.current_session()
    if session is None:  # the auth provider already refused this; a race with expiry lands here
        return pn.pane.HTML(f'<p>Your session has ended. <a href="{LOGIN_PATH}">Log in</a></p>')
    creds = Credentials(token=session.token)
    body, update = build(session, creds)
    strip = html_pane(cluster_strip_html(ctx.feed.snapshot.cluster))
    banner = html_pane(banner_html(ctx.feed.snapshot))
    ended = html_pane("")
    seen = {"version": -1, "stale": None, "cluster": None}

    def tick() -> None:
        if ctx.store.get(sid) is None:
            ended.object = (
                f'<div class="aegis-banner" role="alert">Your session has ended. '
                f'<a href="{LOGIN_PATH}">Log in again</a></div>'
            )
            body.visible = False
            return
        snap = ctx.feed.snapshot
        if snap.stale != seen["stale"]:
            banner.object = banner_html(snap)
            seen["stale"] = snap.stale
        if snap.cluster is not seen["cluster"]:
            strip.object = cluster_strip_html(snap.cluster)
            seen["cluster"] = snap.cluster
        if snap.version != seen["version"] or snap.stale:
            seen["version"] = snap.version
            update(snap)

    tick()
    pn.state.add_periodic_callback(tick, period=REFRESH_MS)
    return pn.Column(
        html_pane(header_html(session, path)),
        strip,
        banner,
        ended,
        body,
        sizing_mode="stretch_width",
    )
