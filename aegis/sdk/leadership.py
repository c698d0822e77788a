"""The leadership log of single-active groups on NATS: the ``AEGIS_LEADERSHIP`` stream, the publisher the
single-active driver uses, and the reader operators use.

Every change of leadership is one :class:`~aegis.sdk.schema.LeadershipChange` on subject
``aegis.leadership.<service>.<group>`` of the R3 stream ``AEGIS_LEADERSHIP``, bounded by age and by count per
group. The driver (:mod:`aegis.sdk.single_active`) publishes "acquire" when its campaign wins, "release" after a
graceful stop, "lose" when a renewal is refused, and, as the new active, "expire" when it took over a key its
holder did not release.

Publishing must never slow the election or the serving path down: :class:`LeadershipLog` queues the record
(bounded, no await) and one background task per instance publishes the queue in order, each publish bounded by a
timeout; failures are logged at debug and the record is dropped. The log is therefore best effort, not a ledger:
the election key is the truth, this is its story. Reading::

    for change in await leadership_history(pool, "ledger", "default", limit=20):
        print(change.at, change.kind, change.instance_id, change.epoch, change.previous_instance_id)
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import uuid
import weakref
from collections import deque

from nats.js import api
from nats.js.errors import NotFoundError
from nats.js.errors import ServiceUnavailableError as JsServiceUnavailableError
from pydantic import ValidationError

from . import wire
from .connection import ConnectionPool
from .errors import AegisError, BadRequest, RpcTimeout
from .jetstream import default_replicas, ensure_stream, js_publish, retry_transient
from .nats_errors import jetstream_error
from .schema import LeadershipChange

log = logging.getLogger(__name__)

LEADERSHIP_MAX_AGE_S = 30 * 24 * 3600.0
"""Records older than this (30 days) are dropped."""
LEADERSHIP_MAX_PER_GROUP = 1000
"""At most this many records are kept per group (subject); the oldest go first."""
LEADERSHIP_MAX_BYTES = 64 * 1024 * 1024
PUBLISH_TIMEOUT_S = 1.0
"""Bound on one record's publish (retries included); then it is dropped."""
QUEUE_LIMIT = 64
"""Records waiting to be published per instance; beyond it the oldest waiting one is dropped."""
_FETCH_BATCH = 256

_ready: weakref.WeakSet[ConnectionPool] = weakref.WeakSet()
_ready_lock = asyncio.Lock()


async def ensure_leadership_stream(pool: ConnectionPool, replicas: int | None = None) -> None:
    """Create (or bring up to date) the ``AEGIS_LEADERSHIP`` stream; once per pool."""
    if pool in _ready:
        return
    async with _ready_lock:
        if pool in _ready:
            return
        await ensure_stream(
            pool,
            api.StreamConfig(
                name=wire.LEADERSHIP_STREAM,
                subjects=[f"{wire.LEADERSHIP_PREFIX}.>"],
                storage=api.StorageType.FILE,
                retention=api.RetentionPolicy.LIMITS,
                discard=api.DiscardPolicy.OLD,
                max_age=LEADERSHIP_MAX_AGE_S,
                max_msgs_per_subject=LEADERSHIP_MAX_PER_GROUP,
                max_bytes=LEADERSHIP_MAX_BYTES,
                num_replicas=default_replicas(pool, replicas),
            ),
        )
        _ready.add(pool)


class LeadershipLog:
    """Publishes one instance's leadership changes, in order, without ever making the caller wait.

    :meth:`record` only appends to a bounded queue and makes sure a drain task runs: no await, no I/O, safe to
    call from the election driver's step. :meth:`flush` lets a graceful stop give the last records (its
    "release") a bounded chance to leave before the process goes.
    """

    def __init__(self, pool: ConnectionPool, *, timeout: float = PUBLISH_TIMEOUT_S) -> None:
        self.pool = pool
        self.timeout = timeout
        self.published = 0
        self.dropped = 0
        self._queue: deque[LeadershipChange] = deque()
        self._task: asyncio.Task[None] | None = None

    async def open(self, timeout: float = 5.0) -> None:
        """Make sure the stream exists, best effort (bounded; a failure is logged and retried by the first
        publish)."""
        try:
            await asyncio.wait_for(ensure_leadership_stream(self.pool), timeout)
        except (AegisError, TimeoutError) as exc:
            log.warning("leadership stream not ready (%s); records are published best effort", exc)

    def record(self, change: LeadershipChange) -> None:
        """Queue ``change`` for publishing; returns at once."""
        if len(self._queue) >= QUEUE_LIMIT:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(change)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._drain(), name="leadership log")

    async def flush(self, timeout: float | None = None) -> None:
        """Wait (at most ``timeout``, default one publish timeout per queued record, capped at 2) until the
        queued records are published or dropped."""
        task = self._task
        if task is None or task.done():
            return
        bound = timeout if timeout is not None else min(2.0, self.timeout * max(1, len(self._queue)))
        await asyncio.wait([task], timeout=bound)

    async def close(self) -> None:
        """Stop publishing; records still queued are dropped."""
        task, self._task = self._task, None
        self.dropped += len(self._queue)
        self._queue.clear()
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _drain(self) -> None:
        while self._queue:
            change = self._queue.popleft()
            try:
                await asyncio.wait_for(self._publish(change), self.timeout + 0.5)
                self.published += 1
            except Exception as exc:  # best effort: never let a record take anything down
                self.dropped += 1
                log.debug("leadership record %s/%s not published: %r", change.kind, change.instance_id, exc)

    async def _publish(self, change: LeadershipChange) -> None:
        if self.pool not in _ready:
            await ensure_leadership_stream(self.pool)
        await js_publish(
            self.pool,
            wire.leadership_subject(change.service, change.group),
            change.model_dump_json().encode(),
            {wire.MSG_ID_HEADER: uuid.uuid4().hex},
            self.timeout,
            "leadership record",
        )


async def leadership_history(
    pool: ConnectionPool,
    service: str,
    group: str,
    since: float | None = None,
    limit: int = 100,
    *,
    timeout: float = 5.0,
) -> list[LeadershipChange]:
    """The newest ``limit`` (1..1000) leadership changes of ``service``'s group ``group``, oldest first; with
    ``since`` (UNIX seconds) only those the stream stored at or after it. BadRequest for invalid names or limit;
    an empty list when nothing was recorded (or the stream does not exist yet); RpcTimeout when the records
    could not all be read within ``timeout``.

    Reads with a short-lived consumer (at most :data:`LEADERSHIP_MAX_PER_GROUP` records per group, so a read is
    bounded); a record that cannot be parsed is skipped.
    """
    wire.check_token("service name", service)
    wire.check_token("group", group)
    if not isinstance(limit, int) or not 1 <= limit <= LEADERSHIP_MAX_PER_GROUP:
        raise BadRequest(f"invalid limit {limit!r}: use 1..{LEADERSHIP_MAX_PER_GROUP}")
    subject = wire.leadership_subject(service, group)
    config = api.ConsumerConfig(
        name=f"leadership-{uuid.uuid4().hex}",
        filter_subject=subject,
        ack_policy=api.AckPolicy.NONE,
        deliver_policy=api.DeliverPolicy.ALL if since is None else api.DeliverPolicy.BY_START_TIME,
        opt_start_time=None if since is None else datetime.datetime.fromtimestamp(since, datetime.UTC),
        inactive_threshold=max(10.0, timeout * 2),
        mem_storage=True,
        num_replicas=1,
    )
    js = pool.js
    what = f"read leadership history of {service}.{group}"
    try:
        info = await retry_transient(lambda: js.add_consumer(wire.LEADERSHIP_STREAM, config), what)
    except NotFoundError:  # no stream yet: nothing was ever recorded
        return []
    except AegisError:
        raise
    except Exception as exc:
        raise jetstream_error(exc, what) from exc
    out: deque[LeadershipChange] = deque(maxlen=limit)
    try:
        pending = info.num_pending or 0
        if not pending:
            return []
        sub = await js.pull_subscribe_bind(info.name, stream=wire.LEADERSHIP_STREAM)
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while pending > 0 and loop.time() < deadline:
                try:
                    msgs = await sub.fetch(
                        min(pending, _FETCH_BATCH), timeout=max(0.1, deadline - loop.time())
                    )
                except (TimeoutError, JsServiceUnavailableError):
                    # a new consumer answers "no responders" (503) until it is placed: ask again
                    await asyncio.sleep(0.02)
                    continue
                for msg in msgs:
                    pending = msg.metadata.num_pending
                    try:
                        out.append(LeadershipChange.model_validate_json(msg.data))
                    except ValidationError:
                        log.debug("skipped a malformed leadership record at %s", msg.metadata.sequence.stream)
            if pending > 0:
                raise RpcTimeout(f"{what}: {pending} records still unread after {timeout:.1f}s")
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
    except AegisError:
        raise
    except Exception as exc:
        raise jetstream_error(exc, what) from exc
    finally:
        with contextlib.suppress(Exception):
            await js.delete_consumer(wire.LEADERSHIP_STREAM, info.name)
    return list(out)


__all__ = [
    "LEADERSHIP_MAX_AGE_S",
    "LEADERSHIP_MAX_PER_GROUP",
    "LeadershipLog",
    "ensure_leadership_stream",
    "leadership_history",
]
