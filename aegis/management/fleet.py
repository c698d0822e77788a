"""The management service's picture of the fleet: definitions, instances and single-active groups, kept by watches.

One :class:`Fleet` per server process mirrors the buckets of definitions, instance records and election keys (the
single-bucket lease's, and the quorum lease's three: a quorum group's active is the holder of the newest ballot
claimed in a majority of them, :func:`~aegis.sdk.quorum_election.active_claim`) with one watch each
(:class:`~aegis.management.kv_mirror.KvMirror`). Every HTTP read is served from it, so a request
costs no NATS round trip, and every change is announced once to :attr:`Fleet.on_event` (the live event stream).

An instance whose record was deleted (graceful stop) or expired (its heartbeats stopped) stays listed as *down*
for ``down_retention_s`` with how it ended. Health is re-judged once a second (:meth:`Fleet.tick`): staleness comes
from the passing of time, not from a message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from aegis.sdk import wire
from aegis.sdk.connection import ConnectionPool
from aegis.sdk.quorum_driver import parse_claim
from aegis.sdk.quorum_election import Claim, active_claim
from aegis.sdk.schema import InstanceStatus, ServiceDefinition, ServiceInstance
from aegis.sdk.single_active import LeaderRecord

from .api_models import GroupView, Health, InstanceView
from .health import Thresholds, judge
from .kv_mirror import Change, KvMirror
from .settings import ManagementSettings

log = logging.getLogger(__name__)

EventSink = Callable[[str, dict[str, Any]], None]
"""``(event type, JSON-able data)``: what the fleet announces (``instance``, ``health``, ``leadership``,
``definition``)."""

# Fields whose change is worth an event; a heartbeat that only refreshes metrics is not.
_ANNOUNCED = ("status", "role", "epoch", "version", "config_hash", "group")


@dataclass(slots=True)
class _Live:
    record: ServiceInstance
    revision: int
    arrived_mono: float
    raw: bytes
    """The record's JSON as the KV holds it (validated on arrival): served as is by ``GET /api/metrics``."""


@dataclass(slots=True)
class _Gone:
    record: ServiceInstance
    revision: int
    ended: str
    ended_wall: float
    ended_mono: float


@dataclass(slots=True)
class _Leader:
    instance_id: str | None
    epoch: int | None
    revision: int
    since: float | None


class Fleet:
    """Watch-fed caches of definitions, instances and election keys; see the module docstring."""

    def __init__(self, pool: ConnectionPool, settings: ManagementSettings, on_event: EventSink) -> None:
        self.settings = settings
        self.on_event = on_event
        self.defaults = Thresholds(settings.degraded_error_rate, settings.degraded_p99_ms)
        self.definitions: dict[str, tuple[ServiceDefinition, int]] = {}
        self._live: dict[str, _Live] = {}
        self._gone: dict[str, _Gone] = {}
        self._leaders: dict[tuple[str, str], _Leader] = {}
        self._claims: dict[tuple[str, str], list[Claim | None]] = {}
        """Quorum groups: the record of each of the three buckets."""
        self._health: dict[str, Health] = {}
        self.mirrors = {
            "definitions": KvMirror(pool, wire.DEFINITIONS_BUCKET, self._on_definition),
            "instances": KvMirror(pool, wire.INSTANCES_BUCKET, self._on_instance),
            "election": KvMirror(pool, wire.ELECTION_BUCKET, self._on_election, keys="leader.>"),
            **{
                f"election_q{b}": KvMirror(pool, name, self._on_quorum_of(b), keys="leader.>")
                for b, name in enumerate(wire.QUORUM_ELECTION_BUCKETS)
            },
        }

    async def start(self) -> None:
        """Load the three buckets' current state (bounded by ``warm_timeout_s`` each)."""
        for mirror in self.mirrors.values():
            await mirror.start(self.settings.warm_timeout_s)

    async def stop(self) -> None:
        for mirror in self.mirrors.values():
            await mirror.stop()

    @property
    def ready(self) -> dict[str, bool]:
        """Whether each cache has loaded its bucket."""
        return {name: m.ready for name, m in self.mirrors.items()}

    # -- reads ---------------------------------------------------------------------------------------

    def instances(self, service: str | None = None, health: Health | None = None) -> list[InstanceView]:
        """Live and recently gone instances, sorted by service then instance id."""
        now = time.monotonic()
        views = [self._view(k, live=v, now=now) for k, v in self._live.items()]
        views += [self._view(k, gone=g, now=now) for k, g in self._gone.items()]
        views = [
            v
            for v in views
            if (service is None or v.instance.service == service) and (health is None or v.health == health)
        ]
        return sorted(views, key=lambda v: (v.instance.service, v.instance.instance_id))

    def instance(self, service: str, instance_id: str) -> InstanceView | None:
        """One instance (live or recently gone); None when unknown."""
        key = f"{service}.{instance_id}"
        now = time.monotonic()
        if key in self._live:
            return self._view(key, live=self._live[key], now=now)
        if key in self._gone:
            return self._view(key, gone=self._gone[key], now=now)
        return None

    def live_records(self, service: str | None = None) -> list[ServiceInstance]:
        """The live records as the KV holds them (Story 4.1's ``GET /api/metrics``)."""
        out = [v.record for v in self._live.values() if service is None or v.record.service == service]
        return sorted(out, key=lambda r: (r.service, r.instance_id))

    def live_records_json(self, service: str | None = None) -> bytes:
        """:meth:`live_records` as a JSON array, built from the records' own JSON: nothing is serialized per
        request (the hot path of dashboards and scrapers polling every instance)."""
        rows = sorted(
            ((v.record.service, v.record.instance_id), v.raw)
            for v in self._live.values()
            if service is None or v.record.service == service
        )
        return b"[" + b",".join(raw for _, raw in rows) + b"]"

    def groups(self) -> list[GroupView]:
        """Every single-active group known from its election key or its instances' records."""
        standbys: dict[tuple[str, str], list[str]] = {}
        for v in self._live.values():
            r = v.record
            if r.group is not None and r.role != "active":
                standbys.setdefault((r.service, r.group), []).append(r.instance_id)
        names = sorted(set(self._leaders) | set(standbys))
        out = []
        for service, group in names:
            leader = self._leaders.get((service, group)) or _Leader(None, None, 0, None)
            out.append(
                GroupView(
                    service=service,
                    group=group,
                    active_instance_id=leader.instance_id,
                    epoch=leader.epoch,
                    since=leader.since,
                    standbys=sorted(i for i in standbys.get((service, group), []) if i != leader.instance_id),
                    revision=leader.revision,
                )
            )
        return out

    def _view(
        self, key: str, *, now: float, live: _Live | None = None, gone: _Gone | None = None
    ) -> InstanceView:
        if gone is not None:
            return InstanceView(
                instance=gone.record,
                revision=gone.revision,
                health=Health.DOWN,
                reasons=[f"record {gone.ended}"],
                heartbeat_age_s=round(now - gone.ended_mono, 3),
                ended=gone.ended,  # type: ignore[arg-type]
                ended_at=gone.ended_wall,
            )
        assert live is not None
        age = now - live.arrived_mono
        health, reasons = self._judge(live, age)
        return InstanceView(
            instance=live.record,
            revision=live.revision,
            health=health,
            reasons=reasons,
            heartbeat_age_s=round(age, 3),
        )

    def _judge(self, live: _Live, age: float) -> tuple[Health, list[str]]:
        definition = self.definitions.get(live.record.service)
        thresholds = Thresholds.of(definition[0] if definition else None, self.defaults)
        return judge(live.record, age, thresholds, self.settings.stale_factor)

    # -- time ----------------------------------------------------------------------------------------

    def tick(self) -> None:
        """Re-judge every instance (announcing health changes) and forget instances gone for too long."""
        now = time.monotonic()
        for key, live in list(self._live.items()):
            self._announce_health(key, live.record, self._judge(live, now - live.arrived_mono)[0])
        horizon = now - self.settings.down_retention_s
        for key, gone in list(self._gone.items()):
            if gone.ended_mono < horizon:
                del self._gone[key]
                self._health.pop(key, None)

    def _announce_health(self, key: str, record: ServiceInstance, health: Health) -> None:
        before = self._health.get(key)
        if before == health:
            return
        self._health[key] = health
        self.on_event(
            "health",
            {
                "service": record.service,
                "instance_id": record.instance_id,
                "health": health.value,
                "previous": before.value if before else None,
            },
        )

    # -- watch callbacks ------------------------------------------------------------------------------

    def _on_definition(self, c: Change) -> None:
        if c.kind == "val":
            try:
                definition = ServiceDefinition.model_validate_json(c.data)
            except ValidationError as exc:
                log.warning("definition %s is not valid, ignored: %s", c.key, exc)
                return
            existed = c.key in self.definitions
            self.definitions[c.key] = (definition, c.revision)
            action = "updated" if existed else "created"
        else:
            if self.definitions.pop(c.key, None) is None:
                return
            action = "deleted"
        if not c.initial:
            self.on_event("definition", {"name": c.key, "action": action, "revision": c.revision})

    def _on_instance(self, c: Change) -> None:
        if c.kind == "val":
            try:
                record = ServiceInstance.model_validate_json(c.data)
            except ValidationError as exc:
                log.warning("instance record %s is not valid, ignored: %s", c.key, exc)
                return
            before = self._live.get(c.key)
            self._live[c.key] = _Live(record, c.revision, c.arrived_mono, c.data)
            came_back = self._gone.pop(c.key, None) is not None
            changed = before is None or any(
                getattr(before.record, f) != getattr(record, f) for f in _ANNOUNCED
            )
            if changed or came_back:
                self.on_event(
                    "instance", _instance_event(record, "registered" if before is None else "changed")
                )
            self._announce_health(c.key, record, self._judge(self._live[c.key], 0.0)[0])
            return
        live = self._live.pop(c.key, None)
        if live is None:
            return  # a marker of an instance that left before we started
        ended = "deleted" if c.kind == "del" else "expired"
        self._gone[c.key] = _Gone(live.record, c.revision, ended, c.arrived_wall, c.arrived_mono)
        self.on_event("instance", _instance_event(live.record, ended))
        self._announce_health(c.key, live.record, Health.DOWN)

    def _on_election(self, c: Change) -> None:
        group = _group_of(c.key)
        if group is None:
            return
        holder: str | None = None
        epoch: int | None = None
        if c.kind == "val":
            try:
                value = LeaderRecord.model_validate_json(c.data)
            except ValidationError as exc:
                log.warning("election key %s is not valid, ignored: %s", c.key, exc)
                return
            holder, epoch = value.instance_id, value.epoch or c.revision
        self._set_leader(group, holder, epoch, c)

    def _on_quorum_of(self, b: int) -> Callable[[Change], None]:
        def on_change(c: Change) -> None:
            group = _group_of(c.key)
            if group is None:
                return
            claims = self._claims.setdefault(group, [None] * len(wire.QUORUM_ELECTION_BUCKETS))
            claims[b] = parse_claim(c.data) if c.kind == "val" else None
            won = active_claim(claims)
            if won is None:
                self._set_leader(group, None, None, c)
            else:
                self._set_leader(group, won.holder, won.ballot, c)

        return on_change

    def _set_leader(self, group: tuple[str, str], holder: str | None, epoch: int | None, c: Change) -> None:
        """The group's active is now ``holder`` under ``epoch`` (None: nobody), as ``c`` showed; announced when
        it changed."""
        before = self._leaders.get(group)
        same = before is not None and (before.instance_id, before.epoch) == (holder, epoch)
        since = before.since if same and before is not None else (c.arrived_wall if holder else None)
        self._leaders[group] = _Leader(holder, epoch, c.revision, since)
        if not same:
            service, name = group
            self.on_event(
                "leadership",
                {
                    "service": service,
                    "group": name,
                    "instance_id": holder,
                    "epoch": epoch,
                    "previous_instance_id": before.instance_id if before else None,
                    "previous_epoch": before.epoch if before else None,
                },
            )


def _group_of(key: str) -> tuple[str, str] | None:
    """``leader.<service>.<group>`` -> (service, group); None for other keys."""
    _, _, rest = key.partition(".")
    service, _, group = rest.partition(".")
    return (service, group) if service and group else None


def _instance_event(record: ServiceInstance, action: str) -> dict[str, Any]:
    return {
        "service": record.service,
        "instance_id": record.instance_id,
        "action": action,
        "status": record.status.value if isinstance(record.status, InstanceStatus) else str(record.status),
        "role": record.role,
        "epoch": record.epoch,
    }
