"""Settings of an SDK process (FR5): environment (``AEGIS_`` prefix), an optional TOML file, defaults.

Precedence, highest first: keyword arguments, environment, TOML file, defaults. The file is the one
passed as ``config_file`` or named by ``AEGIS_CONFIG_FILE``. Every value is validated at start-up;
an invalid one raises :class:`~aegis.sdk.errors.ConfigError` naming the field and the bad value::

    settings = load_settings()                                  # env + optional file
    settings = load_settings("service.toml", pool_size=4)       # explicit file and override

A secure cluster needs a user, its password (``password`` or, better, ``password_file``) and TLS: ``tls_ca``,
plus ``tls_cert`` and ``tls_key`` when the servers ask for client certificates; ``inbox_prefix`` gives the
client its own reply subjects (``_INBOX.<user>``) when its permissions allow only those::

    AEGIS_USER=svc-quotes AEGIS_PASSWORD_FILE=/run/aegis/svc-quotes.password AEGIS_TLS_CA=ca.pem \\
    AEGIS_TLS_CERT=svc-quotes.pem AEGIS_TLS_KEY=svc-quotes.key AEGIS_INBOX_PREFIX=_INBOX.svc-quotes
"""

from __future__ import annotations

import json
import os
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from .errors import ConfigError

CONFIG_FILE_ENV = "AEGIS_CONFIG_FILE"
_SCHEMES = ("nats://", "tls://", "ws://", "wss://")

Source = Literal["default", "env", "file", "override"]


class FileSettings(BaseSettings):
    """Settings from keyword arguments, the environment and a TOML file, highest first (:func:`load_from_file`
    names the file). The SDK's settings and the management service's share this."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = _config_file_var.get(None)
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)


class AegisSettings(FileSettings):
    """Validated settings. Times are in seconds, sizes in bytes."""

    model_config = SettingsConfigDict(env_prefix="AEGIS_", extra="forbid", validate_default=True)

    # The TOML file the settings were loaded from (for setting_sources); not a setting itself.
    _config_file: Path | None = PrivateAttr(default=None)

    servers: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["nats://127.0.0.1:4222"],
        description="NATS server URLs; in the environment a comma-separated list.",
    )
    user: str | None = None
    password: SecretStr | None = None
    token: SecretStr | None = None
    creds_file: Path | None = Field(default=None, description="NATS .creds file (JWT + NKey seed).")

    # --- TLS, password file and inbox prefix (secure clusters; aegis.harness.cluster.security) -------------------
    password_file: Path | None = Field(
        default=None,
        description="File holding the password of `user` (one line); read when the pool connects, never logged.",
    )
    tls_ca: Path | None = Field(
        default=None, description="PEM file of the CA that signed the servers' certificates."
    )
    tls_cert: Path | None = Field(
        default=None, description="PEM client certificate (mutual TLS); needs tls_key."
    )
    tls_key: Path | None = Field(default=None, description="PEM private key of tls_cert.")
    inbox_prefix: str = Field(
        default="_INBOX",
        description="Prefix of this client's reply subjects; a per-user prefix lets the server allow a user"
        " to subscribe to its own replies only (e.g. _INBOX.svc-quotes).",
    )

    @field_validator("password_file", "tls_ca", "tls_cert", "tls_key")
    @classmethod
    def _readable_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is None:
            return None
        value = value.expanduser()
        if not value.is_file():
            raise ValueError(f"{info.field_name} file {str(value)!r} does not exist")
        if not os.access(value, os.R_OK):
            raise ValueError(f"{info.field_name} file {str(value)!r} is not readable by this process")
        return value

    @field_validator("inbox_prefix")
    @classmethod
    def _check_inbox_prefix(cls, value: str) -> str:
        tokens = value.split(".")
        if not value or any(not t or t in ("*", ">") or any(c.isspace() for c in t) for t in tokens):
            raise ValueError(
                f"{value!r} is not a subject prefix (dot-separated tokens, no wildcards or spaces)"
            )
        return value

    @model_validator(mode="after")
    def _tls_and_password_file(self) -> AegisSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: set both (mutual TLS) or neither")
        if self.password_file is not None:
            if self.password is not None:
                raise ValueError("set either password or password_file, not both")
            if self.user is None:
                raise ValueError("password_file is set but user is not")
            if self.token is not None:
                raise ValueError("set either user/password_file or token, not both")
        return self

    # --- end of the TLS / password-file block -----------------------------------------------------------------------
    name: str | None = Field(default=None, description="Client name shown by the servers' /connz.")

    pool_size: int = Field(default=2, ge=1, le=64, description="Connections used for requests.")
    rpc_timeout_s: float = Field(default=5.0, gt=0, le=3600)
    method_timeouts: Annotated[dict[str, float], NoDecode] = Field(
        default_factory=dict,
        description='Per-method RPC timeouts, keyed "service.method" (or "service" for all its methods).',
    )
    unavailable_retry_s: float = Field(
        default=0.5,
        ge=0,
        le=60,
        description="How long a call retries when no instance listens (capped by the call's timeout).",
    )

    connect_timeout_s: float = Field(default=2.0, gt=0, le=60)
    reconnect_time_wait_s: float = Field(default=0.05, ge=0, le=60)
    max_reconnect_attempts: int = Field(default=-1, ge=-1, description="-1 retries forever.")
    ping_interval_s: float = Field(default=2.0, gt=0, le=600)
    max_outstanding_pings: int = Field(default=2, ge=1, le=100)

    max_payload_bytes: int = Field(
        default=1024 * 1024, ge=1024, le=64 * 1024 * 1024, description="Largest request/reply/event."
    )

    heartbeat_interval_s: float = Field(
        default=1.0, ge=0.05, le=60, description="How often an instance rewrites its registry record."
    )
    instance_ttl_s: int = Field(
        default=3,
        ge=1,
        le=3600,
        description="Whole seconds (server granularity) after the last heartbeat when a record disappears.",
    )
    metrics_history_interval_s: float = Field(
        default=10.0,
        ge=0,
        le=3600,
        description="Snapshot period into the AEGIS_METRICS stream; 0 turns it off.",
    )
    metrics_history_max_age_s: float = Field(
        default=24 * 3600.0, gt=0, le=90 * 24 * 3600.0, description="Retention of the AEGIS_METRICS stream."
    )
    require_definition: bool = Field(
        default=False, description="Strict mode: refuse to start a service that has no definition."
    )
    quorum_bucket_tags: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Three server tags: the quorum lease's buckets are created with one replica each, bucket k"
        " on the server tagged with the k-th (docs/quorum-lease.md, rule 9). Empty: R3 buckets whose stream"
        " leaders are kept apart. Existing buckets keep their layout unless this is set.",
    )

    @field_validator("servers", "quorum_bucket_tags", mode="before")
    @classmethod
    def _split_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("quorum_bucket_tags")
    @classmethod
    def _check_quorum_bucket_tags(cls, value: list[str]) -> list[str]:
        if value and (len(value) != 3 or len(set(value)) != 3):
            raise ValueError(f"give three different server tags, one per quorum bucket (got {value})")
        return value

    @field_validator("servers")
    @classmethod
    def _check_servers(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one server URL is needed")
        for url in value:
            if not url.startswith(_SCHEMES) or len(url.split("://", 1)[1]) == 0:
                raise ValueError(f"{url!r} is not a NATS URL (expected e.g. nats://127.0.0.1:4222)")
        return value

    @field_validator("method_timeouts", mode="before")
    @classmethod
    def _parse_method_timeouts(cls, value: Any) -> Any:
        # Environment form: "calc.add=0.5,calc=2"
        if isinstance(value, str) and value.lstrip().startswith("{"):
            try:
                return json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"not valid JSON: {exc}") from None
        if isinstance(value, str):
            pairs = [p for p in value.split(",") if p.strip()]
            out: dict[str, str] = {}
            for pair in pairs:
                key, sep, num = pair.partition("=")
                if not sep:
                    raise ValueError(f"{pair!r} is not of the form service.method=seconds")
                out[key.strip()] = num.strip()
            return out
        return value

    @field_validator("method_timeouts")
    @classmethod
    def _check_method_timeouts(cls, value: dict[str, float]) -> dict[str, float]:
        for key, seconds in value.items():
            if seconds <= 0:
                raise ValueError(f"timeout for {key!r} must be > 0, got {seconds}")
        return value

    @field_validator("creds_file")
    @classmethod
    def _creds_exist(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"credentials file {str(value)!r} does not exist")
        return value

    @model_validator(mode="after")
    def _one_auth_method(self) -> AegisSettings:
        if self.password is not None and self.user is None:
            raise ValueError("password is set but user is not")
        if self.token is not None and self.user is not None:
            raise ValueError("set either user/password or token, not both")
        if self.instance_ttl_s < 2 * self.heartbeat_interval_s:
            raise ValueError(
                f"instance_ttl_s ({self.instance_ttl_s}) must be at least twice heartbeat_interval_s"
                f" ({self.heartbeat_interval_s}), so one late heartbeat does not drop the record"
            )
        return self

    def timeout_for(self, service: str, method: str) -> float:
        """The RPC timeout for ``service.method``: per-method override, per-service override, default."""
        mt = self.method_timeouts
        if mt:
            return mt.get(f"{service}.{method}") or mt.get(service) or self.rpc_timeout_s
        return self.rpc_timeout_s


# The file for the settings being built; a ContextVar keeps concurrent loads independent.
_config_file_var: ContextVar[Path | None] = ContextVar("aegis_config_file", default=None)


def read_secret_file(path: Path, setting: str) -> str:
    """The secret held in ``path`` (a mounted secret, a 0600 file), stripped; ValueError naming ``setting`` (never
    the secret) if the file cannot be read or is empty. For ``*_FILE`` settings, so that no secret need sit in the
    environment."""
    try:
        value = path.read_text().strip()
    except OSError as exc:
        raise ValueError(f"{setting}: cannot read {path}: {exc.strerror}") from None
    if not value:
        raise ValueError(f"{setting}: {path} is empty")
    return value


def _describe(err: ValidationError, file: Path | None, what: str) -> str:
    lines = []
    for item in err.errors():
        field = ".".join(str(p) for p in item["loc"]) or "(settings)"
        value = item.get("input")
        if field.split(".")[0] in ("password", "token"):
            value = "***"
        where = f" (from {file})" if file else ""
        msg = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            msg = "unknown setting"
        # A model-level error's input is every setting, secrets included: show only the message.
        got = "" if field == "(settings)" else f" (got {value!r})"
        lines.append(f"{field}: {msg}{got}{where}")
    return f"invalid {what}: " + "; ".join(lines)


S = TypeVar("S", bound=FileSettings)


def load_from_file(
    cls: type[S], config_file: str | Path | None, file_env: str, what: str, **overrides: Any
) -> tuple[S, Path | None]:
    """Build ``cls`` from ``overrides``, the environment and ``config_file`` (else the file named by the
    environment variable ``file_env``); the settings and the file. Every problem (a missing or non-TOML file, a bad
    value, an unknown setting) is a :class:`ConfigError` naming the field, the bad value and where it came from."""
    path = config_file if config_file is not None else os.environ.get(file_env)
    file = Path(path) if path else None
    if file is not None:
        if not file.is_file():
            raise ConfigError(f"config file {str(file)!r} does not exist")
        try:
            with file.open("rb") as fh:
                tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {str(file)!r} is not valid TOML: {exc}") from exc
    token = _config_file_var.set(file)
    try:
        return cls(**overrides), file
    except ValidationError as exc:
        raise ConfigError(_describe(exc, file, what)) from None
    except SettingsError as exc:
        raise ConfigError(f"invalid {what}: {exc}") from None
    finally:
        _config_file_var.reset(token)


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> AegisSettings:
    """Load and validate settings; raise ConfigError with field and bad value on any problem."""
    settings, file = load_from_file(
        AegisSettings, config_file, CONFIG_FILE_ENV, "Aegis settings", **overrides
    )
    settings._config_file = file
    return settings


def setting_sources(settings: AegisSettings, config_file: str | Path | None = None) -> dict[str, Source]:
    """Where each field's value came from: ``env``, ``file``, ``override`` or ``default``.

    The file is ``config_file``, else the one the settings were loaded from, else ``AEGIS_CONFIG_FILE``.
    """
    path = config_file or settings._config_file or os.environ.get(CONFIG_FILE_ENV)
    file_keys: set[str] = set()
    if path and Path(path).is_file():
        with Path(path).open("rb") as fh:
            file_keys = set(tomllib.load(fh))
    out: dict[str, Source] = {}
    for name in AegisSettings.model_fields:
        if f"AEGIS_{name.upper()}" in {k.upper() for k in os.environ}:
            out[name] = "env"
        elif name in file_keys:
            out[name] = "file"
        elif name in settings.model_fields_set:
            out[name] = "override"
        else:
            out[name] = "default"
    return out
