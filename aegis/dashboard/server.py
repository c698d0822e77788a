"""The dashboard's Bokeh server: its pages, the login routes and the one feed, on one event loop."""

from __future__ import annotations

import logging

import panel as pn

from .api_client import Credentials, ManagementClient
from .feed import Feed
from .frame import DashboardContext
from .login import DashboardAuth
from .overview import overview_page
from .sessions import SessionStore
from .settings import DashboardSettings

log = logging.getLogger(__name__)


def build_context(settings: DashboardSettings) -> DashboardContext:
    client = ManagementClient(settings.api_url, timeout=settings.request_timeout_s)
    key = settings.api_key.get_secret_value() if settings.api_key else None
    feed = Feed(client, Credentials(api_key=key), settings.poll_interval_s, settings.cluster_interval_s)
    return DashboardContext(
        store=SessionStore(),
        client=client,
        feed=feed,
        cookie_secret=settings.cookie_secret.get_secret_value(),
    )


def routes(ctx: DashboardContext) -> dict[str, object]:
    """URL path -> page builder (a new page per browser session)."""
    from .audit import audit_page
    from .groups import groups_page
    from .instance import instance_page
    from .services import services_page

    return {
        "/": lambda: overview_page(ctx),
        "/services": lambda: services_page(ctx),
        "/groups": lambda: groups_page(ctx),
        "/instance": lambda: instance_page(ctx),
        "/audit": lambda: audit_page(ctx),
    }


def serve_dashboard(settings: DashboardSettings) -> None:
    """Serve until SIGINT/SIGTERM; the feed starts with the server's loop."""
    ctx = build_context(settings)
    origins = [
        f"{settings.host}:{settings.port}",
        f"localhost:{settings.port}",
        *settings.allow_websocket_origin,
    ]
    server = pn.serve(
        routes(ctx),
        port=settings.port,
        address=settings.host,
        websocket_origin=origins,
        show=False,
        start=False,
        title="Aegis",
        auth_provider=DashboardAuth(ctx.store, ctx.client),
        cookie_secret=settings.cookie_secret.get_secret_value(),
        admin=False,
    )
    server.io_loop.add_callback(ctx.feed.start)
    log.info("dashboard on http://%s:%s", settings.host, server.port)
    server.start()
    server.io_loop.start()  # until SIGINT/SIGTERM; the process exit closes the feed's connections
