"""Settings of the management service: environment (``AEGIS_MGMT_`` prefix), an optional TOML file, defaults.

The NATS connection is the SDK's (:class:`~aegis.sdk.config.AegisSettings`, ``AEGIS_`` prefix): the management
service is one more NATS client, with its own user when the cluster has accounts. Authentication settings
(JWT secret, the first admin) are :class:`~aegis.management.auth.SecuritySettings`, same prefix. An invalid value
raises :class:`~aegis.sdk.errors.ConfigError` naming the field::

    settings = load_management_settings()                     # env + optional file
    settings = load_management_settings("manage.toml", port=8081)
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from aegis.sdk.config import FileSettings, load_from_file

MGMT_CONFIG_FILE_ENV = "AEGIS_MGMT_CONFIG_FILE"


class ManagementSettings(FileSettings):
    """Validated settings of one management process. Times in seconds, sizes in bytes.

    The security settings share the ``AEGIS_MGMT_`` prefix and are read by their own model
    (:class:`~aegis.management.auth.SecuritySettings`): environment variables of other models' fields are not
    this model's business, an unknown key in its TOML file is an error."""

    model_config = SettingsConfigDict(env_prefix="AEGIS_MGMT_", extra="forbid", validate_default=True)

    host: str = Field(
        "127.0.0.1", description="Address uvicorn binds (loopback unless deployed behind a proxy)."
    )
    port: int = Field(8080, ge=0, le=65535, description="HTTP port; 0 picks a free one.")
    max_body_bytes: int = Field(
        64 * 1024, ge=1024, le=16 * 1024 * 1024, description="Larger request bodies get 413 before parsing."
    )
    degraded_error_rate: float = Field(
        0.05,
        ge=0,
        le=1,
        description="Default: an instance whose windowed error rate is above this is degraded.",
    )
    degraded_p99_ms: float = Field(
        250.0,
        gt=0,
        description="Default: an instance whose windowed p99 of any method is above this is degraded.",
    )
    stale_factor: float = Field(
        2.0, ge=1, le=100, description="A record older than heartbeat interval x this (our clock) is stale."
    )
    down_retention_s: float = Field(
        300.0, ge=0, le=86400, description="How long an instance that went away stays listed as down."
    )
    config_timeout_s: float = Field(
        2.0, gt=0, le=60, description="How long GET .../config waits for the instance before 504."
    )
    events_buffer: int = Field(
        1000, ge=10, le=100_000, description="Events kept for Last-Event-ID resumption of the live stream."
    )
    access_log: bool = Field(
        False,
        description="uvicorn's line per request (writes are in the audit log either way; it costs CPU).",
    )
    warm_timeout_s: float = Field(10.0, gt=0, le=300, description="How long start-up waits for the caches.")
    monitor_urls: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=(
            "HTTP monitoring endpoints of NATS nodes (comma-separated; in a deployment the local node's, bound to "
            "loopback, e.g. http://127.0.0.1:8222): /api/cluster reads the JetStream meta leader from the first "
            "one whose /jsz answers. Empty: asked of the system account over NATS, which only a system user sees."
        ),
    )

    @field_validator("monitor_urls", mode="before")
    @classmethod
    def _split_monitor_urls(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip().rstrip("/") for part in value.split(",") if part.strip()]
        return value

    @field_validator("monitor_urls")
    @classmethod
    def _check_monitor_urls(cls, value: list[str]) -> list[str]:
        for url in value:
            if not url.startswith(("http://", "https://")) or not url.split("://", 1)[1]:
                raise ValueError(f"{url!r} is not an HTTP URL (expected e.g. http://127.0.0.1:8222)")
        return value


def load_management_settings(config_file: str | Path | None = None, **overrides: Any) -> ManagementSettings:
    """Settings from ``overrides``, the environment, ``config_file`` (or ``AEGIS_MGMT_CONFIG_FILE``), defaults.

    Raises :class:`ConfigError` naming the field and the reason for a bad value or an unreadable file.
    """
    return load_from_file(
        ManagementSettings, config_file, MGMT_CONFIG_FILE_ENV, "management settings", **overrides
    )[0]
