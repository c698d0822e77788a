"""Settings of the dashboard process, from ``AEGIS_DASH_*`` environment variables or arguments."""

from __future__ import annotations

import secrets
from pathlib import Path

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from aegis.sdk.config import read_secret_file
from aegis.sdk.errors import ConfigError


class DashboardSettings(BaseSettings):
    """What ``aegis dashboard`` needs: where the management API is and the key its shared feed reads with.

    The feed's key (``AEGIS_DASH_API_KEY``) needs only ``instances:read``: it is what lets one poller serve every
    browser session instead of one poller per logged-in person. People still log in with their own accounts.
    """

    model_config = SettingsConfigDict(env_prefix="AEGIS_DASH_", extra="ignore", validate_default=True)

    api_url: str = Field("http://127.0.0.1:8080", description="Base URL of the management API.")
    api_key: SecretStr | None = Field(
        None, description="X-API-Key with instances:read for the shared feed. Required (or the file)."
    )
    api_key_file: Path | None = Field(
        None, description="File holding that key (a mounted secret, mode 0600)."
    )
    host: str = Field(
        "127.0.0.1", description="Address the dashboard binds (loopback unless behind a proxy)."
    )
    port: int = Field(8090, ge=0, le=65535)
    cookie_secret: SecretStr = Field(
        default_factory=lambda: SecretStr(secrets.token_urlsafe(32)),
        description="Signs the session cookie; random per process unless given (sessions then end on restart).",
    )
    poll_interval_s: float = Field(
        1.0, gt=0, le=60, description="How often the feed reads instances and groups."
    )
    cluster_interval_s: float = Field(3.0, gt=0, le=300, description="How often the feed reads /api/cluster.")
    request_timeout_s: float = Field(3.0, gt=0, le=60)
    allow_websocket_origin: list[str] = Field(
        default_factory=list, description="Extra host:port the browser may reach the dashboard by."
    )

    @model_validator(mode="after")
    def _key_from_file(self) -> DashboardSettings:
        if self.api_key_file is not None:
            if self.api_key is not None:
                raise ValueError("set either AEGIS_DASH_API_KEY or AEGIS_DASH_API_KEY_FILE, not both")
            self.api_key = SecretStr(read_secret_file(self.api_key_file, "AEGIS_DASH_API_KEY_FILE"))
        return self


def load_dashboard_settings(**overrides: object) -> DashboardSettings:
    """Environment, then ``overrides``; a missing key or a bad value raises :class:`ConfigError` naming it."""
    try:
        settings = DashboardSettings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigError(f"dashboard setting {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    if settings.api_key is None:
        raise ConfigError(
            "AEGIS_DASH_API_KEY (or AEGIS_DASH_API_KEY_FILE) is required: an API key with instances:read for "
            "the dashboard's shared feed (an admin creates one: POST /api/keys)"
        )
    return settings
