"""``aegis dashboard``: run the dashboard (Panel/Bokeh) against a management API, settings from the environment."""

from __future__ import annotations

import typer

from aegis.dashboard.server import serve_dashboard
from aegis.dashboard.settings import load_dashboard_settings
from aegis.sdk.errors import ConfigError


def dashboard_command(host: str | None, port: int | None, api_url: str | None) -> None:
    """Validate the settings, then serve until SIGINT/SIGTERM."""
    try:
        settings = load_dashboard_settings(host=host, port=port, api_url=api_url)
    except ConfigError as exc:
        typer.echo(f"aegis dashboard: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(
        f"dashboard on http://{settings.host}:{settings.port} (management API {settings.api_url})", err=True
    )
    serve_dashboard(settings)
