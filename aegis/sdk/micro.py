"""NATS micro (ADR-32) discovery for Aegis RPC services: ``$SRV.PING``, ``$SRV.INFO`` and ``$SRV.STATS``.

Standard NATS tooling (``nats micro ls/info/stats``, nats-py's and nats.go's micro clients) finds services
by requesting ``$SRV.<VERB>``, ``$SRV.<VERB>.<name>`` or ``$SRV.<VERB>.<name>.<id>`` and collecting every
reply. :class:`MicroResponder` answers those nine subjects for one :class:`~aegis.sdk.rpc.Service` instance, in
the JSON shapes nats.go's ``micro`` package produces (``io.nats.micro.v1.*_response``)::

    micro = MicroResponder(svc)
    await micro.start(pool.primary)
    ...
    await micro.stop()

It only reads the instance's :class:`~aegis.sdk.metrics.InstanceMetrics` when asked, so serving RPC calls costs
nothing extra. ADR-32 v1 has no wire request to reset statistics, so there is none here either.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from . import wire

if TYPE_CHECKING:
    from .rpc import Service

log = logging.getLogger(__name__)

MICRO_PREFIX = "$SRV"
"""Root of the ADR-32 control subjects."""

PING_RESPONSE_TYPE = "io.nats.micro.v1.ping_response"
INFO_RESPONSE_TYPE = "io.nats.micro.v1.info_response"
STATS_RESPONSE_TYPE = "io.nats.micro.v1.stats_response"

VERBS = ("PING", "INFO", "STATS")


def micro_subject(verb: str, name: str | None = None, instance_id: str | None = None) -> str:
    """The ADR-32 subject of ``verb`` for all services, all instances of ``name``, or one instance."""
    if name is None:
        if instance_id is not None:
            raise ValueError("an instance id needs a service name")
        return f"{MICRO_PREFIX}.{verb}"
    if instance_id is None:
        return f"{MICRO_PREFIX}.{verb}.{name}"
    return f"{MICRO_PREFIX}.{verb}.{name}.{instance_id}"


def rfc3339_utc(unix_time: float) -> str:
    """``unix_time`` as RFC3339 in UTC with microseconds, e.g. ``2024-05-01T12:00:00.123456Z``.

    Always six fractional digits and a ``Z``: Go's ``time.Time`` parses any RFC3339, while nats-py's
    ``ServiceStats.from_dict`` insists on exactly ``%Y-%m-%dT%H:%M:%S.%fZ``.
    """
    return datetime.fromtimestamp(unix_time, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class MicroResponder:
    """Answers ADR-32 PING/INFO/STATS for one RPC service instance.

    Reads ``service.name``, ``instance_id``, ``version``, ``endpoints`` and ``metrics``, plus the optional
    attributes ``description`` (str) and ``metadata`` (dict of str) when the service has them. The
    endpoints reported are the shared subjects ``aegis.rpc.<service>.<method>`` with the service name as
    queue group, which is how :class:`~aegis.sdk.rpc.Service` subscribes.
    """

    def __init__(self, service: Service) -> None:
        self.service = service
        self._nc: NatsClient | None = None
        self._subs: list[Subscription] = []
        metrics = service.metrics
        # Counters start when the metrics object is created, so "started" is that moment on the wall
        # clock; fixed once here so every STATS reply reports the same instant.
        self._started = rfc3339_utc(time.time() - (time.monotonic() - metrics.started))
        self._ping: bytes = b""

    @property
    def running(self) -> bool:
        """Whether the responder is subscribed."""
        return bool(self._subs)

    async def start(self, nc: NatsClient) -> None:
        """Subscribe the nine control subjects on ``nc`` (no queue group: every instance answers)."""
        if self._subs:
            return
        self._nc = nc
        # PING never changes while running; encode it once.
        self._ping = _dumps(self.ping())
        handlers = {"PING": self._on_ping, "INFO": self._on_info, "STATS": self._on_stats}
        name, inst = self.service.name, self.service.instance_id
        subs: list[Subscription] = []
        try:
            for verb in VERBS:
                for subject in (
                    micro_subject(verb),
                    micro_subject(verb, name),
                    micro_subject(verb, name, inst),
                ):
                    subs.append(await nc.subscribe(subject, cb=handlers[verb]))
        except BaseException:
            for sub in subs:
                await _unsubscribe(sub)
            raise
        self._subs = subs

    async def stop(self) -> None:
        """Unsubscribe; the instance no longer answers PING/INFO/STATS. Safe to call twice."""
        subs, self._subs = self._subs, []
        for sub in subs:
            await _unsubscribe(sub)

    # --- Response bodies ---------------------------------------------------------------------------------

    def metadata(self) -> dict[str, str]:
        """Service metadata: Aegis routing facts, then any ``service.metadata`` (strings only, per ADR-32)."""
        svc = self.service
        meta = {
            "aegis.sdk": "python",
            "aegis.instance_subject_prefix": f"{wire.DIRECT_PREFIX}.{svc.name}.{svc.instance_id}",
        }
        concurrency = getattr(svc, "max_concurrency", None)
        if concurrency is not None:
            meta["aegis.max_concurrency"] = str(concurrency)
        extra = getattr(svc, "metadata", None)
        if isinstance(extra, dict):
            meta.update({str(k): str(v) for k, v in extra.items()})
        return meta

    def _identity(self, kind: str) -> dict[str, Any]:
        svc = self.service
        return {
            "type": kind,
            "name": svc.name,
            "id": svc.instance_id,
            "version": svc.version,
            "metadata": self.metadata(),
        }

    def _endpoint_base(self, method: str) -> dict[str, Any]:
        return {
            "name": method,
            "subject": wire.rpc_subject(self.service.name, method),
            "queue_group": self.service.name,
        }

    def ping(self) -> dict[str, Any]:
        """The ``io.nats.micro.v1.ping_response`` body."""
        return self._identity(PING_RESPONSE_TYPE)

    def info(self) -> dict[str, Any]:
        """The ``io.nats.micro.v1.info_response`` body."""
        svc = self.service
        body = self._identity(INFO_RESPONSE_TYPE)
        body["description"] = getattr(svc, "description", "") or ""
        body["endpoints"] = [
            {
                **self._endpoint_base(method),
                "metadata": {
                    "aegis.kind": "rpc",
                    "aegis.instance_subject": wire.instance_rpc_subject(svc.name, svc.instance_id, method),
                },
            }
            for method in list(svc.endpoints)
        ]
        return body

    def stats(self) -> dict[str, Any]:
        """The ``io.nats.micro.v1.stats_response`` body; durations are nanoseconds, as in Go."""
        svc = self.service
        body = self._identity(STATS_RESPONSE_TYPE)
        body["started"] = self._started
        endpoints = []
        for method in list(svc.endpoints):
            m = svc.metrics.methods.get(method)
            entry = self._endpoint_base(method)
            if m is None:  # registered but never created metrics: report zeros
                entry.update(
                    num_requests=0,
                    num_errors=0,
                    last_error="",
                    processing_time=0,
                    average_processing_time=0,
                    data={"in_flight": 0},
                )
            else:
                total_ns = m.total_us * 1000
                s = m.stats()
                entry.update(
                    num_requests=m.requests,
                    num_errors=m.errors,
                    last_error=m.last_error,
                    processing_time=total_ns,
                    # Integer division of the totals, like nats.go's reqHandler.
                    average_processing_time=total_ns // m.requests if m.requests else 0,
                    # ADR-32 lets an endpoint add its own statistics; the histogram is the useful part.
                    data={
                        "in_flight": s.in_flight,
                        "p50_ms": s.p50_ms,
                        "p90_ms": s.p90_ms,
                        "p99_ms": s.p99_ms,
                        "max_ms": s.max_ms,
                    },
                )
            endpoints.append(entry)
        body["endpoints"] = endpoints
        return body

    # --- Handlers -----------------------------------------------------------------------------------------

    async def _on_ping(self, msg: Msg) -> None:
        await self._respond(msg, lambda: self._ping)

    async def _on_info(self, msg: Msg) -> None:
        await self._respond(msg, lambda: _dumps(self.info()))

    async def _on_stats(self, msg: Msg) -> None:
        await self._respond(msg, lambda: _dumps(self.stats()))

    async def _respond(self, msg: Msg, body: Any) -> None:
        nc = self._nc
        if not msg.reply or nc is None:
            return
        headers = None
        try:
            data = body()
        except Exception as exc:  # answer like nats.go does (a 500 service error) rather than stay silent
            log.exception("micro %s response failed", msg.subject)
            data = b""
            headers = {
                wire.ERROR_HEADER: f"{type(exc).__name__}: {exc}"[:1024],
                wire.ERROR_CODE_HEADER: "500",
            }
        try:
            await nc.publish(msg.reply, data, headers=headers)
        except Exception:  # the requester's connection is gone; nothing to do
            log.debug("micro reply failed", exc_info=True)


def _dumps(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


async def _unsubscribe(sub: Subscription) -> None:
    try:
        await sub.unsubscribe()
    except Exception:  # connection already closed: nothing to unsubscribe
        log.debug("unsubscribe failed", exc_info=True)
