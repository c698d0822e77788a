"""``aegis manage``: run the management service (FastAPI under uvicorn) with settings from the environment/TOML."""

from __future__ import annotations

from pathlib import Path

import typer
import uvicorn

from aegis.management.app import create_app
from aegis.management.auth import load_security_settings
from aegis.management.settings import load_management_settings
from aegis.sdk.errors import ConfigError


def manage_command(host: str | None, port: int | None, config: Path | None) -> None:
    """Validate the settings, then serve until SIGINT/SIGTERM (uvicorn stops gracefully on both)."""
    overrides = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    try:
        settings = load_management_settings(config, **overrides)
        security = load_security_settings()
    except (ConfigError, ValueError) as exc:
        typer.echo(f"aegis manage: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"management API on http://{settings.host}:{settings.port} (docs at /docs)", err=True)
    uvicorn.run(
        create_app(settings, security=security), host=settings.host, port=settings.port, log_level="info"
    )
