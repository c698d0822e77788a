"""Events: durable publish/subscribe on JetStream, with retries, back-off and a dead-letter queue.

Publishing::

    bus = EventBus(pool, instance_id="pricer-1")
    await bus.ensure_streams()                        # once, at deploy or start-up; idempotent
    ack = await bus.publish("orders.created", OrderCreated(id=7), event_id="order-7")
    ack.seq, ack.duplicate                            # a re-publish with the same event_id is a duplicate

Subscribing::

    async def on_order(event: OrderCreated, ctx: EventContext) -> None:
        ...                                           # raise to have the event redelivered later

    sub = await bus.subscribe("orders.>", on_order, group="billing")                    # one of the group
    sub = await bus.subscribe("orders.>", on_order, group="cache", mode="broadcast")    # every instance
    ...
    await bus.close()

Events live in the stream ``AEGIS_EVENTS`` (subjects ``aegis.evt.>``); topic ``orders.created`` is subject
``aegis.evt.orders.created``. Each event carries ``Nats-Msg-Id`` (its event id), so a re-publish within the
stream's duplicate window is stored once: after a timeout, publishing again with the same ``event_id`` is
always safe.

Delivery is at least once. A handler that raises gets the event again after a back-off that grows with the
delivery count; after ``max_deliver`` failed deliveries, or at once when the payload does not validate
against the handler's model (a poison event that can never succeed), the event is copied to the
dead-letter stream ``AEGIS_DLQ`` on ``aegis.dlq.<original subject>`` with the last error in the headers,
then terminated. The delivery limit is enforced here, not by the server (the consumer's own
``max_deliver`` is unlimited): an event whose deliveries ran out through ack timeouts (a handler that hung,
an instance that died) still ends up in the DLQ instead of sitting unprocessed in the stream.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, TypeVar

from nats.aio.msg import Msg
from nats.js import api
from pydantic import ValidationError

from . import wire
from .codec import encode, payload_parser
from .connection import ConnectionPool
from .consumer import ConsumerLoop, consumer_name
from .errors import AegisError, PayloadTooLarge
from .jetstream import PublishAck, default_replicas, ensure_stream, js_publish
from .metrics import InstanceMetrics

log = logging.getLogger(__name__)

T = TypeVar("T")

EventHandler = Callable[..., Awaitable[Any]]
Mode = Literal["compete", "broadcast"]

DEFAULT_BACKOFF: tuple[float, ...] = (0.1, 0.5, 2.0, 5.0, 15.0)
"""Seconds before redelivery after the 1st, 2nd, ... failed delivery (the last value repeats)."""


@dataclass(slots=True)
class EventContext:
    """What an event handler knows about the delivery it is handling."""

    subject: str
    topic: str
    event_id: str
    delivered: int
    """1 on the first delivery, 2 on the first redelivery, ..."""
    stream_seq: int
    published_at: datetime
    consumer: str
    group: str
    headers: dict[str, str] = field(default_factory=dict)
    _msg: Msg | None = field(default=None, repr=False)

    async def in_progress(self) -> None:
        """Tell the server the handler is still working, so ``ack_wait`` does not cause a redelivery."""
        if self._msg is not None:
            await self._msg.in_progress()


async def _quiet(op: Awaitable[None]) -> None:
    try:
        await op
    except Exception:  # best effort: the server redelivers after ack_wait anyway
        log.debug("ack operation failed", exc_info=True)


def _header_text(text: str, limit: int = 1024) -> str:
    """Header values cannot hold line breaks; keep them short."""
    return " ".join(text.split())[:limit]


class EventSubscription:
    """A running subscription of :class:`EventBus`; stop it with :meth:`unsubscribe`."""

    def __init__(
        self,
        bus: EventBus,
        topic: str,
        group: str,
        mode: Mode,
        handler: EventHandler,
        validator: Callable[[bytes], Any],
        wants_ctx: bool,
        *,
        max_deliver: int,
        backoff: Sequence[float],
        metric: str,
    ) -> None:
        self.bus = bus
        self.topic = topic
        self.group = group
        self.mode: Mode = mode
        self._handler = handler
        self._validator = validator
        self._wants_ctx = wants_ctx
        self.max_deliver = max_deliver
        self._backoff = tuple(backoff)
        self._stats = bus.metrics.method(metric, "event")
        self._loop: ConsumerLoop | None = None
        self._depth_source: Callable[[], int] | None = None

    @property
    def consumer(self) -> str:
        """Name of the JetStream consumer behind this subscription."""
        return self._loop.name if self._loop else ""

    @property
    def pending(self) -> int:
        """Events waiting for this subscription (cached, see :attr:`ConsumerLoop.depth`)."""
        return self._loop.depth if self._loop else 0

    async def _start(self, loop: ConsumerLoop) -> None:
        self._loop = loop
        await loop.start()
        self._depth_source = lambda: loop.depth
        self.bus.metrics.add_queue_depth_source(self._depth_source)

    async def unsubscribe(self, grace: float = 5.0) -> None:
        """Stop taking events. A broadcast consumer is deleted; a compete (group) consumer is kept."""
        loop, self._loop = self._loop, None
        if loop is None:
            return
        if self._depth_source is not None:
            self.bus.metrics.remove_queue_depth_source(self._depth_source)
        if self in self.bus._subs:
            self.bus._subs.remove(self)
        await loop.stop(delete=self.mode == "broadcast", grace=grace)

    def _delay(self, delivered: int) -> float:
        if not self._backoff:
            return 0.0
        return self._backoff[min(delivered, len(self._backoff)) - 1]

    async def _on_message(self, msg: Msg) -> bool:
        """Handle one delivery; False when the event was handed back for redelivery."""
        start = time.monotonic()
        md = msg.metadata
        delivered = md.num_delivered
        headers = msg.headers or {}
        stats = self._stats
        if delivered > self.max_deliver:
            # The last allowed delivery timed out (handler hung or instance died): give up on it.
            error = f"no successful handling after {self.max_deliver} deliveries (ack timeouts)"
            settled = await self._dead_letter(msg, error, 408)
            stats.record(time.monotonic() - start, error)
            return settled
        try:
            event = self._validator(msg.data)
        except (ValidationError, ValueError) as exc:
            error = f"invalid payload for {self.topic}: {_header_text(str(exc), 400)}"
            settled = await self._dead_letter(msg, error, 400)
            stats.record(time.monotonic() - start, error)
            return settled
        stats.in_flight += 1
        error_text: str | None = None
        settled = True
        try:
            if self._wants_ctx:
                subject = msg.subject
                ctx = EventContext(
                    subject=subject,
                    topic=subject[len(wire.EVENT_PREFIX) + 1 :],
                    event_id=headers.get(wire.MSG_ID_HEADER, ""),
                    delivered=delivered,
                    stream_seq=md.sequence.stream,
                    published_at=md.timestamp,
                    consumer=md.consumer,
                    group=self.group,
                    headers=headers,
                    _msg=msg,
                )
                await self._handler(event, ctx)
            else:
                await self._handler(event)
        except asyncio.CancelledError:
            # Stopped past the grace period: hand the event back at once rather than after ack_wait.
            await asyncio.shield(_quiet(msg.nak()))
            raise
        except Exception as exc:
            error_text = f"{type(exc).__name__}: {exc}"
            code = exc.code if isinstance(exc, AegisError) else 500
            if delivered >= self.max_deliver:
                settled = await self._dead_letter(msg, error_text, code)
            else:
                log.debug("handler for %s failed (delivery %d): %s", msg.subject, delivered, error_text)
                await msg.nak(delay=self._delay(delivered))
                settled = False
        else:
            await msg.ack()
        finally:
            stats.in_flight -= 1
        stats.record(time.monotonic() - start, error_text)
        return settled

    async def _dead_letter(self, msg: Msg, error: str, code: int) -> bool:
        """Copy the event to the DLQ and terminate it; False if the DLQ failed and it was handed back."""
        md = msg.metadata
        headers = dict(msg.headers or {})
        event_id = headers.pop(wire.MSG_ID_HEADER, "")
        headers.update(
            {
                # Re-dead-lettering after a lost term() is de-duplicated by the DLQ stream.
                wire.MSG_ID_HEADER: f"dlq:{md.stream}:{md.sequence.stream}:{md.consumer}",
                wire.DLQ_SUBJECT_HEADER: msg.subject,
                wire.DLQ_EVENT_ID_HEADER: event_id,
                wire.DLQ_DELIVERIES_HEADER: str(md.num_delivered),
                wire.DLQ_STREAM_SEQ_HEADER: str(md.sequence.stream),
                wire.DLQ_CONSUMER_HEADER: md.consumer,
                wire.ERROR_HEADER: _header_text(error),
                wire.ERROR_CODE_HEADER: str(code),
            }
        )
        dlq = wire.dlq_subject(msg.subject)
        try:
            await js_publish(self.bus.pool, dlq, msg.data, headers, self.bus.timeout, f"dead-letter {dlq}")
        except AegisError as exc:
            # Keep the event: it comes back after the back-off and we try the DLQ again.
            log.warning("cannot dead-letter %s (%s); will retry", msg.subject, exc)
            await msg.nak(delay=self._backoff[-1] if self._backoff else 1.0)
            return False
        log.warning("event %s (id %r) dead-lettered to %s: %s", msg.subject, event_id, dlq, error)
        await msg.term()
        return True


class EventBus:
    """Publishes and subscribes to events over a :class:`ConnectionPool`; see the module docstring."""

    def __init__(
        self,
        pool: ConnectionPool,
        *,
        metrics: InstanceMetrics | None = None,
        instance_id: str | None = None,
        timeout: float | None = None,
    ) -> None:
        self.pool = pool
        self.instance_id = wire.check_token("instance id", instance_id or uuid.uuid4().hex[:12])
        self.metrics = metrics or InstanceMetrics("events", self.instance_id)
        self.timeout = timeout if timeout is not None else pool.settings.rpc_timeout_s
        """Default time for a publish to be acknowledged, retries included."""
        self._subs: list[EventSubscription] = []
        self._topics: set[str] = set()
        # Event ids: a random per-bus prefix and a counter. Unique like a uuid4, without its
        # os.urandom call on every publish (the publish hot path is benchmarked against raw nats-py).
        self._id_prefix = uuid.uuid4().hex[:20]
        self._id_counter = itertools.count(1)
        self._streams_ready = False

    async def ensure_streams(
        self,
        replicas: int | None = None,
        *,
        max_age: float = 7 * 24 * 3600.0,
        dlq_max_age: float = 30 * 24 * 3600.0,
        duplicate_window: float = 120.0,
    ) -> None:
        """Create or update ``AEGIS_EVENTS`` and ``AEGIS_DLQ`` (file storage, ``replicas`` defaults to
        min(3, cluster size)); idempotent and safe to call from many instances at once."""
        n = default_replicas(self.pool, replicas)
        for name, prefix, age in (
            (wire.EVENT_STREAM, wire.EVENT_PREFIX, max_age),
            (wire.DLQ_STREAM, wire.DLQ_PREFIX, dlq_max_age),
        ):
            await ensure_stream(
                self.pool,
                api.StreamConfig(
                    name=name,
                    subjects=[f"{prefix}.>"],
                    storage=api.StorageType.FILE,
                    retention=api.RetentionPolicy.LIMITS,
                    num_replicas=n,
                    max_age=age,
                    duplicate_window=duplicate_window,
                ),
            )
        self._streams_ready = True

    def _new_id(self) -> str:
        return f"{self._id_prefix}{next(self._id_counter):012x}"

    def _encode(self, topic: str, payload: Any) -> bytes:
        if topic not in self._topics:
            wire.check_topic(topic)
            if len(self._topics) > 10_000:  # topics with ids in them must not grow the cache forever
                self._topics.clear()
            self._topics.add(topic)
        data = encode(payload)
        limit = self.pool.max_payload
        if len(data) > limit:
            raise PayloadTooLarge(f"event on {topic!r} is {len(data)} bytes; limit is {limit}")
        return data

    async def publish(
        self,
        topic: str,
        payload: Any,
        *,
        event_id: str | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> PublishAck:
        """Store one event; return once the stream has acknowledged it (replicated to a quorum).

        ``payload``: a pydantic model, JSON-able data or bytes. ``event_id`` (default: a new unique id) is the
        de-duplication key. Raises ``ValueError`` for an invalid topic, :class:`PayloadTooLarge` before
        sending, :class:`RpcTimeout` / :class:`ServiceUnavailable` when the stream does not acknowledge.
        """
        data = self._encode(topic, payload)
        hdrs = {wire.MSG_ID_HEADER: event_id or self._new_id()}
        if headers:
            hdrs.update(headers)
        subject = f"{wire.EVENT_PREFIX}.{topic}"
        return await js_publish(
            self.pool, subject, data, hdrs, self.timeout if timeout is None else timeout, subject
        )

    async def publish_batch(
        self,
        events: Iterable[tuple[str, Any] | tuple[str, Any, str | None]],
        *,
        timeout: float | None = None,
    ) -> list[PublishAck]:
        """Publish many events pipelined (all in flight at once, stored in order); acks in input order.

        Each item is ``(topic, payload)`` or ``(topic, payload, event_id)``. Everything is validated and
        encoded before the first send. If some publishes fail, the first error is raised after all
        have finished; re-publishing the batch with the same event ids then stores each event once.
        """
        prepared: list[tuple[str, bytes, dict[str, str]]] = []
        for item in events:
            topic, payload = item[0], item[1]
            event_id = item[2] if len(item) > 2 else None  # type: ignore[misc]
            data = self._encode(topic, payload)
            prepared.append(
                (f"{wire.EVENT_PREFIX}.{topic}", data, {wire.MSG_ID_HEADER: event_id or self._new_id()})
            )
        t = self.timeout if timeout is None else timeout
        nc = self.pool.next()  # one connection: the stream stores the batch in order (barring retries)
        results = await asyncio.gather(
            *(js_publish(self.pool, s, d, h, t, s, nc) for s, d, h in prepared), return_exceptions=True
        )
        for r in results:
            if isinstance(r, BaseException):
                raise r
        return results  # type: ignore[return-value]

    async def subscribe(
        self,
        topic: str,
        handler: EventHandler,
        *,
        group: str,
        mode: Mode = "compete",
        model: Any = None,
        max_deliver: int = 5,
        backoff: Sequence[float] = DEFAULT_BACKOFF,
        ack_wait: float = 30.0,
        concurrency: int = 1,
        deliver: Literal["new", "all"] = "new",
        inactive_threshold: float | None = None,
        name: str | None = None,
    ) -> EventSubscription:
        """Handle the events of ``topic`` (wildcards ``*`` and a final ``>`` allowed) with ``handler``.

        ``mode="compete"``: one durable consumer per (``group``, ``topic``) shared by all instances, each
        event handled by one of them; it survives restarts (events published meanwhile are delivered
        later). ``mode="broadcast"``: a consumer per instance, every instance handles every event; it is
        deleted by :meth:`EventSubscription.unsubscribe` / :meth:`close`, and by the server after
        ``inactive_threshold`` seconds (default 60) without this instance pulling (a killed instance).

        The handler is ``async def h(event, ctx: EventContext)`` (``ctx`` optional); the event is
        validated into ``model``, else into the annotation of the handler's first parameter (``bytes``:
        raw payload; none: plain JSON). ``deliver`` chooses where a *new* consumer starts: only events
        published from now on, or everything still in the stream. ``concurrency`` events are handled
        at once (1: in order). ``name`` names the handler in the metrics (default: the topic).
        """
        wire.check_topic(topic, wildcards=True)
        wire.check_token("group", group)
        if mode not in ("compete", "broadcast"):
            raise ValueError(f"mode must be 'compete' or 'broadcast', got {mode!r}")
        if max_deliver < 1:
            raise ValueError(f"max_deliver must be >= 1, got {max_deliver}")
        validator, wants_ctx = payload_parser(handler, model, kind="an event handler")
        if not self._streams_ready:
            await self.ensure_streams()
        if mode == "compete":
            cname = consumer_name(group, topic)
            threshold = inactive_threshold
        else:
            cname = consumer_name(group, self.instance_id, topic)
            threshold = inactive_threshold if inactive_threshold is not None else 60.0
        metadata = {"aegis.group": group, "aegis.mode": mode, "aegis.max_deliver": str(max_deliver)}
        if mode == "broadcast":
            metadata["aegis.instance"] = self.instance_id
        config = api.ConsumerConfig(
            name=cname,
            durable_name=cname,
            filter_subject=f"{wire.EVENT_PREFIX}.{topic}",
            deliver_policy=api.DeliverPolicy.NEW if deliver == "new" else api.DeliverPolicy.ALL,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=ack_wait,
            max_deliver=-1,  # enforced by EventSubscription, see the module docstring
            max_ack_pending=max(1000, concurrency * 4),
            inactive_threshold=threshold,
            metadata=metadata,
        )
        sub = EventSubscription(
            self,
            topic,
            group,
            mode,
            handler,
            validator,
            wants_ctx,
            max_deliver=max_deliver,
            backoff=backoff,
            metric=name or topic,
        )
        loop = ConsumerLoop(
            self.pool,
            wire.EVENT_STREAM,
            config,
            sub._on_message,
            concurrency=concurrency,
            expires=max(1.0, min(5.0, (threshold or 20.0) / 4)),
        )
        await sub._start(loop)
        self._subs.append(sub)
        return sub

    async def close(self, grace: float = 5.0) -> None:
        """Stop every subscription (handlers get ``grace`` seconds to finish); delete broadcast consumers.

        The pool is not closed: it belongs to the caller.
        """
        subs, self._subs = list(self._subs), []
        await asyncio.gather(*(s.unsubscribe(grace) for s in subs))


__all__ = [
    "DEFAULT_BACKOFF",
    "EventBus",
    "EventContext",
    "EventSubscription",
    "PublishAck",
]
