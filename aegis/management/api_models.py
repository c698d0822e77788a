"""The management API's HTTP bodies: requests kept apart from stored records, and the views it serves.

The editable fields of a definition are :class:`~aegis.sdk.schema.DefinitionFields` (``PUT``'s body); a create
adds the name; the stored record (:class:`~aegis.sdk.schema.ServiceDefinition`) adds the registry's timestamps.

What travels on NATS (definitions, instance records, metrics, leadership changes) is defined once in
:mod:`aegis.sdk.schema`; the models here wrap those records with what only the API knows (KV revision, derived
health, this server's clock). Request models forbid unknown fields and carry no timestamps: the registry sets them.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, Field

from aegis.sdk.schema import DefinitionFields, ServiceDefinition, ServiceInstance

NAME_PATTERN = r"^[-_=a-zA-Z0-9]+$"
"""One NATS subject token: the form of service names, instance ids and groups."""
IF_MATCH_PATTERN = r'^(W/)?"?[0-9]{1,19}"?$'
"""An ``If-Match`` this API understands: the revision from an ``ETag``, quoted or not."""


class DefinitionCreate(DefinitionFields):
    """``POST /api/services``: a new definition."""

    name: str = Field(min_length=1, max_length=128, pattern=NAME_PATTERN, description="One subject token.")

    def to_definition(self) -> ServiceDefinition:
        return ServiceDefinition(**self.model_dump())


class DefinitionOut(BaseModel):
    """A stored definition and the KV revision it was read at (also its ``ETag``)."""

    definition: ServiceDefinition
    revision: int


class ErrorBody(BaseModel):
    """Every error the API answers: what went wrong, in words an operator can act on."""

    detail: str
    current_revision: int | None = Field(
        None, description="412/409: the definition's current revision (re-read it, then retry)."
    )


AUTH_RESPONSES: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorBody, "description": "No credentials, or bad ones (see WWW-Authenticate)."},
    403: {
        "model": ErrorBody,
        "description": "The credentials lack a scope this route needs (insufficient_scope).",
    },
}
"""Responses every protected route may give."""


class Health(StrEnum):
    """Health of one instance, derived by the management service."""

    HEALTHY = "healthy"
    DEGRADED = "degraded"
    """Error rate or p99 over the thresholds (of the definition, else the settings), or the instance says so."""
    STALE = "stale"
    """No heartbeat for longer than its interval x the stale factor, on the management server's clock."""
    DOWN = "down"
    """The record is gone: deleted by a graceful stop, or expired (TTL) after heartbeats stopped."""


class InstanceView(BaseModel):
    """An instance record with what the management service derived from it."""

    instance: ServiceInstance
    revision: int = Field(description="KV revision of the record.")
    health: Health
    reasons: list[str] = Field(default_factory=list, description="Why the health is not healthy.")
    heartbeat_age_s: float = Field(description="Seconds since the record arrived here (this server's clock).")
    ended: Literal["deleted", "expired"] | None = Field(
        None, description="Down instances: how the record ended."
    )
    ended_at: float | None = Field(None, description="Down instances: wall-clock UNIX time it ended (here).")


class GroupView(BaseModel):
    """A sticky single-active group: who serves, under which epoch, since when, and who stands by."""

    service: str
    group: str
    active_instance_id: str | None = Field(description="None while no instance holds the lease.")
    epoch: int | None
    since: float | None = Field(description="Wall-clock UNIX time this server first saw the epoch.")
    standbys: list[str] = Field(default_factory=list)
    revision: int = Field(description="KV revision of the election key.")


class StreamReplica(BaseModel):
    """One replica of a stream: whether it keeps up with the leader."""

    name: str
    current: bool
    offline: bool = False
    lag: int = 0
    active_s: float | None = Field(None, description="Seconds since the leader last heard from it.")


class StreamView(BaseModel):
    """An Aegis stream or KV bucket as JetStream reports it."""

    stream: str
    leader: str | None
    replicas: list[StreamReplica] = Field(default_factory=list)
    messages: int = 0
    error: str | None = Field(None, description="Set when JetStream did not answer for this stream.")


class NodeView(BaseModel):
    """A NATS node as seen from the streams it serves (leader or replica)."""

    name: str
    up: bool
    leads: list[str] = Field(default_factory=list)
    behind: list[str] = Field(default_factory=list, description="Streams whose replica here is not current.")


class ClusterView(BaseModel):
    """``GET /api/cluster``: the NATS cluster as the management service reads it over NATS."""

    connected_url: str | None
    meta_leader: str | None = Field(
        description=(
            "JetStream meta leader, from a node's monitoring /jsz (AEGIS_MGMT_MONITOR_URLS) or the system "
            "account; None when neither answers (meta_leader_note says why)."
        )
    )
    meta_leader_note: str = ""
    meta_leader_from: str | None = Field(
        default=None, description="Where meta_leader was read: a monitoring URL, or 'system account'."
    )
    nodes: list[NodeView]
    streams: list[StreamView]
    quorum_leaders_distinct: bool | None = Field(
        default=None,
        description=(
            "The quorum lease's three election buckets have their stream leaders on three different nodes (what"
            " lets it ride through a node crash); None when the buckets do not exist (no quorum group ran)."
        ),
    )
    quorum_leaders_note: str = Field(
        default="", description="Which buckets share a leader node, or lack a leader, when not distinct."
    )


class Readiness(BaseModel):
    """``GET /readyz``."""

    ready: bool
    nats_connected: bool
    caches: dict[str, bool]
