"""Wire schemas shared by the SDK, the management API and the dashboard. Nothing else redefines them."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator


class WindowStats(BaseModel):
    """One handler's calls that finished in a recent window: the interval since the previous snapshot of the
    same feed (the registry heartbeat, the metrics history). "Is it slow now", where :class:`MethodStats`'
    lifetime figures answer "since the instance started"."""

    model_config = ConfigDict(frozen=True)

    window_s: float = Field(description="Length of the window (seconds of the instance's monotonic clock).")
    requests: int = 0
    errors: int = 0
    error_rate: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    rate_per_s: float = Field(0.0, description="requests / window_s.")


class MethodStats(BaseModel):
    """Latency and counts of one RPC method, command or event handler on one instance.

    The top-level figures cover the instance's lifetime; ``window`` the calls since the feed's previous snapshot.
    """

    model_config = ConfigDict(frozen=True)

    kind: str = Field(description='"rpc", "event" or "command"')
    requests: int = 0
    errors: int = 0
    error_rate: float = 0.0
    in_flight: int = 0
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    mean_ms: float = 0.0
    last_error: str = ""
    window: WindowStats | None = Field(
        None, description="Calls finished since the previous snapshot of the same feed; None outside a feed."
    )


class MetricsSnapshot(BaseModel):
    """Metrics of one instance at one moment (FR2)."""

    model_config = ConfigDict(frozen=True)

    service: str
    instance_id: str
    taken_at: float = Field(description="Wall-clock UNIX time of the snapshot.")
    uptime_s: float
    methods: dict[str, MethodStats] = Field(default_factory=dict)
    in_flight: int = 0
    queue_depth: int = Field(0, description="Messages waiting in the instance's subscriptions/consumers.")
    window_s: float | None = Field(
        None,
        description="Seconds the methods' window figures cover (since the feed's previous snapshot);"
        " None when the snapshot carries no window.",
    )


class InstanceStatus(StrEnum):
    """Lifecycle of an instance as its registry record shows it."""

    STARTING = "STARTING"
    ACTIVE = "ACTIVE"
    """Serving. For a single-active group: the one instance holding the lease."""
    STANDBY = "STANDBY"
    """Single-active groups only: up, not serving exclusive methods, ready to take over."""
    UNHEALTHY = "UNHEALTHY"
    """Up but unable to do its job (e.g. it cannot write its heartbeat). Often only visible locally."""
    STOPPING = "STOPPING"


def _token(value: str, kind: str) -> str:
    from .wire import check_token  # wire imports errors only; imported here to keep schema import-light

    return check_token(kind, value)


class DefinitionFields(BaseModel):
    """What an operator sets on a service definition (the body of ``PUT /api/services/{name}``). The stored
    :class:`ServiceDefinition` adds its name and the registry's timestamps. Strict: ``"0"`` is not a boolean and
    ``"0.5"`` not a number (schemathesis found the lax coercion accepting what the schema forbids)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    owner: str = Field("", max_length=200, description="Team or person on call for it.")
    description: str = Field("", max_length=2000)
    version: str = Field("0.0.0", max_length=64)
    single_active: bool = Field(
        False, description="Exactly one instance serves (sticky single-active group)."
    )
    max_error_rate: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Above this windowed error rate an instance is degraded (None: the default).",
    )
    max_p99_ms: float | None = Field(
        None,
        gt=0,
        le=3_600_000,
        description="Above this windowed p99 an instance is degraded (None: the default).",
    )


class ServiceDefinition(DefinitionFields):
    """A service that may run (FR3): stored in the definitions bucket under its name, without TTL."""

    name: str = Field(description="Service name: one subject token ([-_=a-zA-Z0-9]).")
    created_at: float = Field(0.0, description="Wall-clock UNIX time of creation (set by the registry).")
    updated_at: float = Field(
        0.0, description="Wall-clock UNIX time of the last change (set by the registry)."
    )

    @field_validator("name")
    @classmethod
    def _name_is_token(cls, value: str) -> str:
        return _token(value, "service name")


class ServiceInstance(BaseModel):
    """One running instance (FR3): its heartbeat record in the instances bucket, key ``<service>.<id>``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    service: str
    instance_id: str
    version: str = "0.0.0"
    host: str = ""
    pid: int = 0
    status: InstanceStatus = InstanceStatus.STARTING
    role: str | None = Field(None, description='Single-active groups: "active" or "standby".')
    epoch: int | None = Field(None, description="Single-active groups: the lease epoch this instance knows.")
    group: str | None = Field(
        None, description="The single-active group this instance belongs to; None otherwise."
    )
    started_at: float = Field(0.0, description="Wall-clock UNIX time the instance started.")
    last_heartbeat: float = Field(0.0, description="Wall-clock UNIX time of this record's write.")
    heartbeat_interval_s: float = 1.0
    ttl_s: int = Field(3, description="The record disappears this long after the last heartbeat.")
    metrics: MetricsSnapshot | None = None
    config_hash: str = Field("", description="sha256 of the instance's effective configuration (redacted).")

    @field_validator("service")
    @classmethod
    def _service_is_token(cls, value: str) -> str:
        return _token(value, "service name")

    @field_validator("instance_id")
    @classmethod
    def _instance_is_token(cls, value: str) -> str:
        return _token(value, "instance id")

    @property
    def key(self) -> str:
        """The record's key in the instances bucket."""
        return f"{self.service}.{self.instance_id}"


class DefinitionRevision(BaseModel):
    """One kept revision of a service definition, as the definitions bucket stores it (it keeps the last 5 per
    service, deletes and purges included), so an operator can see what changed and when."""

    model_config = ConfigDict(frozen=True)

    revision: int = Field(description="KV revision (stream sequence) of this entry.")
    operation: Literal["PUT", "DEL", "PURGE"] = Field(
        description="A value, a delete marker or a purge marker."
    )
    time: float = Field(description="UNIX time the server stored the entry (the server's clock).")
    value: ServiceDefinition | None = Field(None, description="The definition written; None for DEL/PURGE.")


LeadershipKind = Literal["acquire", "release", "lose", "expire"]


class LeadershipChange(BaseModel):
    """One change of leadership in a single-active group, as the instance that saw it published it (stream
    ``AEGIS_LEADERSHIP``, subject ``aegis.leadership.<service>.<group>``; :mod:`aegis.sdk.leadership`).

    ``instance_id`` and ``epoch`` are the publisher's own: the instance that acquired (its new epoch), released
    or lost (the epoch it held). ``expire`` is published by the NEW active when it took over a key its previous
    holder did not release (the key expired, or stayed silent for a lease): ``previous_instance_id`` and
    ``previous_epoch`` then name that holder, when the new active knew it. Records are best effort: an instance
    that crashes publishes nothing, which its successor's ``expire`` makes up for.
    """

    model_config = ConfigDict(frozen=True)

    service: str
    group: str
    instance_id: str
    kind: LeadershipKind
    epoch: int = Field(description="The lease epoch acquired, released or lost (the publisher's).")
    at: float = Field(description="Wall-clock UNIX time the publisher saw the change.")
    reason: str = Field("", max_length=200, description="Why, in a few words.")
    previous_instance_id: str | None = Field(None, description="The holder before, when known.")
    previous_epoch: int | None = Field(None, description="The epoch of the holder before, when known.")

    @field_validator("service")
    @classmethod
    def _service_is_token(cls, value: str) -> str:
        return _token(value, "service name")

    @field_validator("group")
    @classmethod
    def _group_is_token(cls, value: str) -> str:
        return _token(value, "group")

    @field_validator("instance_id")
    @classmethod
    def _instance_is_token(cls, value: str) -> str:
        return _token(value, "instance id")


class SettingValue(BaseModel):
    """One setting of an instance and where its value came from."""

    model_config = ConfigDict(frozen=True)

    value: Any
    source: Literal["default", "env", "file", "override"]
    secret: bool = False
    """True when ``value`` is redacted."""


class EffectiveConfig(BaseModel):
    """An instance's settings as it runs with them, secrets redacted (FR6)."""

    model_config = ConfigDict(frozen=True)

    service: str
    instance_id: str
    config_hash: str
    settings: dict[str, SettingValue]


# --- Management service: accounts, API keys, tokens, audit (aegis/management/) --------------------------------------
#
# Stored records (``UserRecord``, ``ApiKeyRecord``) travel on NATS only: they hold hashes and never leave the service.
# What HTTP clients send (``*Create``, ``PasswordChange``, ``RoleChange``) and get back (``UserInfo``, ``ApiKeyInfo``,
# ``ApiKeyCreated``, ``TokenResponse``, ``AuditPage``) are separate models, so a hash cannot leak by a shared field.

Scope = Literal[
    "services:read",
    "services:write",
    "instances:read",
    "metrics:read",
    "config:read",
    "audit:read",
    "admin",
]
"""An OAuth2 scope of the management API; what each role grants is in ``aegis.management.auth``."""


class Role(StrEnum):
    """What a user may do, as a set of scopes (``aegis.management.auth.ROLE_SCOPES``)."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"


_NAME_FIELD = Field(
    min_length=1,
    max_length=64,
    description="One token: letters, digits, '-', '_' or '=' (no dots or spaces).",
)
_PASSWORD_FIELD = Field(
    min_length=12,
    max_length=1024,
    description="At least 12 characters; stored only as an Argon2 hash, never returned.",
)


class UserRecord(BaseModel):
    """A user as stored in the users bucket under ``user.<name>``: the Argon2 hash, never the password."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    role: Role
    password_hash: str
    token_version: int = Field(
        0, description="Bumped by a password or role change: tokens issued before stop working."
    )
    created_at: float = 0.0
    updated_at: float = 0.0
    created_by: str = ""


class UserInfo(BaseModel):
    """A user as the API shows it."""

    model_config = ConfigDict(frozen=True)

    name: str
    role: Role
    scopes: list[Scope]
    created_at: float
    updated_at: float
    created_by: str
    revision: int = Field(description="KV revision of the record.")


class UserCreate(BaseModel):
    """Body of ``POST /api/users``."""

    model_config = ConfigDict(extra="forbid")

    name: str = _NAME_FIELD
    password: SecretStr = _PASSWORD_FIELD
    role: Role = Role.VIEWER

    @field_validator("name")
    @classmethod
    def _name_is_token(cls, value: str) -> str:
        return _token(value, "user name")


class PasswordChange(BaseModel):
    """Body of ``PUT /api/users/{name}/password``."""

    model_config = ConfigDict(extra="forbid")

    password: SecretStr = _PASSWORD_FIELD


class RoleChange(BaseModel):
    """Body of ``PUT /api/users/{name}/role``."""

    model_config = ConfigDict(extra="forbid")

    role: Role


class ApiKeyRecord(BaseModel):
    """An API key as stored under ``key.<id>``: the SHA-256 of the key, never the key."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    name: str
    scopes: list[Scope]
    key_hash: str = Field(description="Hex SHA-256 of the whole key.")
    created_at: float
    created_by: str
    revoked_at: float | None = None
    revoked_by: str = ""
    last_used_at: float | None = Field(
        None, description="Recorded at most once per interval (a minute by default), not per request."
    )


class ApiKeyInfo(BaseModel):
    """An API key as the API shows it (no hash, no key)."""

    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    scopes: list[Scope]
    created_at: float
    created_by: str
    revoked_at: float | None
    revoked_by: str
    last_used_at: float | None
    revision: int


class ApiKeyCreate(BaseModel):
    """Body of ``POST /api/keys``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        min_length=1, max_length=100, pattern=r"^[\w .:@/-]+$", description="A label for people."
    )
    scopes: list[Scope] = Field(min_length=1)


class ApiKeyCreated(ApiKeyInfo):
    """Answer of ``POST /api/keys``: the only time the key itself is shown."""

    key: str = Field(description="Send it as the X-API-Key header. It cannot be shown again.")


class TokenResponse(BaseModel):
    """Answer of ``POST /api/token`` (RFC 6749 section 5.1)."""

    model_config = ConfigDict(frozen=True)

    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="Seconds until the token expires.")
    scope: str = Field(description="The granted scopes, space-separated.")


class AuditEntry(BaseModel):
    """One entry of the append-only audit log (stream ``AEGIS_AUDIT``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    seq: int = Field(0, description="Stream sequence; set when read, 0 in the stored message.")
    time: float = Field(description="Wall-clock UNIX time of the append.")
    actor: str = Field(max_length=200, description='Who acted: "user:<name>", "key:<id>" or "anonymous".')
    action: str = Field(max_length=100, description='What happened, e.g. "login.failed", "user.create".')
    target: str = Field(max_length=300, description='What it happened to, e.g. "user:alice".')
    before_revision: int | None = Field(None, description="KV revision of the target before the change.")
    after_revision: int | None = Field(None, description="KV revision of the target after the change.")
    request_id: str = Field("", max_length=128)
    detail: str = Field("", max_length=1000)


class AuditPage(BaseModel):
    """A page of the audit log, oldest first."""

    model_config = ConfigDict(frozen=True)

    entries: list[AuditEntry]
    next_cursor: int | None = Field(
        description="Pass as ?cursor= for the next page; null when this page reached the end of the log."
    )
    last_seq: int = Field(description="Sequence of the newest entry in the log (0 when empty).")
