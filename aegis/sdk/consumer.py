"""The pull-consumer engine under events and commands: :class:`ConsumerLoop` pulls from one durable JetStream
consumer and feeds each message to a handler; :func:`consumer_name` makes consumer names.

SDK-internal: :class:`~aegis.sdk.events.EventBus` and :class:`~aegis.sdk.commands.CommandWorker` build on it. It sits on the
JetStream plumbing (:mod:`aegis.sdk.jetstream`, :mod:`aegis.sdk.nats_errors`) and must not import the modules that use it
(events, commands) or any other module above it (rpc, registry, discovery, single_active).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import re
import time
from collections.abc import Awaitable, Callable

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription
from nats.errors import ConnectionClosedError
from nats.js import api
from nats.js.errors import APIError, NotFoundError

from .connection import ConnectionPool
from .errors import AegisError
from .jetstream import retry_transient
from .nats_errors import jetstream_error

log = logging.getLogger(__name__)

_FIRST_RETRY_S = 0.05
_STATUS = "Status"
_DESCRIPTION = "Description"


def consumer_name(*parts: str) -> str:
    """A valid consumer name from ``parts`` (readable prefix + hash, so distinct inputs never collide)."""
    readable = "_".join(
        re.sub(r"[^-_a-zA-Z0-9]", "_", p.replace(">", "all").replace("*", "any")) for p in parts
    )
    digest = hashlib.sha1("\x00".join(parts).encode()).hexdigest()[:10]
    return f"{readable[:120]}_{digest}"


class ConsumerLoop:
    """Continuous pull from one durable JetStream consumer, feeding each message to ``handle``.

    SDK-internal building block of :class:`~aegis.sdk.events.EventBus` and :class:`~aegis.sdk.commands.CommandWorker`.
    ``handle`` settles each message (ack/nak/term) itself and returns False when it handed the message
    back for redelivery (so a re-created consumer resumes from it).

    Why pull and not push: a pull consumer is shared by any number of instances without a deliver
    group, an instance only asks for what it can take (``concurrency``), so no messages sit in the buffer
    of a busy or dying instance, and an inactive pull consumer is removed by the server after
    ``inactive_threshold``.

    We pull with our own request loop instead of nats-py's ``fetch``: one lingering request of
    ``expires`` seconds with idle heartbeats, re-issued as soon as it is used up. A request without any
    answer for 1.5 s (missing heartbeats: the consumer leader died or moved, or the consumer was deleted)
    or a 503/409 status (the consumer is gone: deleted, or removed for inactivity while the connection
    was down) makes the loop check the consumer, re-create it if it is gone (from the oldest stream
    sequence this instance has not settled, so nothing published meanwhile is skipped) and pull again.
    At stop, messages not yet handled are nak'ed, so another instance gets them at once instead of after
    ``ack_wait``, and so is every message that arrives later: the inbox stays subscribed until the last
    pull request has expired (``expires`` and a heartbeat), because a request outlives the stop. The server
    drops a request whose reply subject has lost interest, but only once it has heard of the unsubscribe:
    in a cluster the consumer's leader may sit on another node and deliver an event published right after
    the stop into an inbox that is gone (seen in clean-clone runs: the event waited out ``ack_wait``).
    """

    def __init__(
        self,
        pool: ConnectionPool,
        stream: str,
        config: api.ConsumerConfig,
        handle: Callable[[Msg], Awaitable[bool | None]],
        *,
        concurrency: int = 1,
        expires: float = 5.0,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        assert config.name is not None
        self.pool = pool
        self.stream = stream
        self.name: str = config.name
        self.config = config
        self._handle = handle
        self._concurrency = concurrency
        self._expires = expires
        self._heartbeat = min(0.5, expires / 4)
        self.num_pending = 0
        """Messages in the consumer not yet delivered, as of the last message received (cached)."""
        self._queue: asyncio.Queue[Msg | None] = asyncio.Queue()
        self._sub: NatsSubscription | None = None
        self._task: asyncio.Task[None] | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._freed = asyncio.Event()
        self._stop = asyncio.Event()
        self._inbox = ""
        self._buffered = 0  # JetStream messages in _queue
        self._max_seen = 0  # highest stream sequence delivered to this loop
        self._unsettled: set[int] = set()  # stream sequences handed back for redelivery
        self._refreshed = time.monotonic()
        self._refresh: asyncio.Task[None] | None = None
        self._linger: asyncio.Task[None] | None = None  # the inbox's unsubscribe after stop
        self._next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{self.name}"

    @property
    def depth(self) -> int:
        """Messages waiting: undelivered in the consumer plus received here and not yet handled.

        Cached: refreshed from each delivered message and, when read more than a second after the last
        refresh, by a consumer-info request in the background (so a blocked handler does not freeze it).
        """
        now = time.monotonic()
        if now - self._refreshed > 1.0 and self._refresh is None and not self._stop.is_set():
            self._refreshed = now
            self._refresh = asyncio.get_running_loop().create_task(self._refresh_pending())
        return self.num_pending + self._buffered

    async def _refresh_pending(self) -> None:
        try:
            info = await self.pool.js.consumer_info(self.stream, self.name, timeout=2.0)
            self.num_pending = info.num_pending or 0
        except Exception:  # metrics only: try again on the next read
            log.debug("consumer info of %s failed", self.name, exc_info=True)
        finally:
            self._refresh = None

    async def ensure_consumer(self) -> api.ConsumerInfo:
        """Create the consumer or update its config (an incompatible existing one is kept as it is),
        then wait (briefly) until it has a leader: a pull request sent before that is lost."""
        js = self.pool.js
        what = f"create consumer {self.name}"
        try:
            info = await retry_transient(lambda: js.add_consumer(self.stream, config=self.config), what)
        except APIError as exc:
            try:
                info = await retry_transient(lambda: js.consumer_info(self.stream, self.name), what)
            except Exception:
                raise jetstream_error(exc, what) from exc
            log.warning("consumer %s exists with a config that cannot change (%s); using it", self.name, exc)
        except Exception as exc:
            raise jetstream_error(exc, what) from exc
        return await self.ensure_consumer_leader(info)

    async def ensure_consumer_leader(self, info: api.ConsumerInfo | None = None) -> api.ConsumerInfo:
        """Wait (up to 5 s) until the consumer has a leader; return its latest info."""
        js = self.pool.js
        deadline = time.monotonic() + 5.0
        while True:
            if info is not None and (
                info.cluster is None or info.cluster.leader or time.monotonic() > deadline
            ):
                return info
            if info is not None:
                await asyncio.sleep(0.05)
            what = f"consumer info {self.name}"
            try:
                info = await retry_transient(lambda: js.consumer_info(self.stream, self.name), what)
            except Exception as exc:
                raise jetstream_error(exc, what) from exc

    async def start(self) -> None:
        """Create the consumer and start pulling."""
        info = await self.ensure_consumer()
        self.num_pending = info.num_pending or 0
        # Where a re-created consumer must resume. With nothing outstanding the consumer's delivered
        # sequence is safe; otherwise its ack floor (may redeliver some: at least once, never lost).
        clean = not info.num_ack_pending and not info.num_redelivered
        floor = info.delivered if clean else info.ack_floor
        self._max_seen = floor.stream_seq if floor is not None else 0
        nc = self.pool.primary
        self._inbox = nc.new_inbox()
        self._sub = await nc.subscribe(self._inbox, cb=self._on_msg)
        self._task = asyncio.create_task(self._run(), name=f"aegis-pull-{self.name}")

    async def _on_msg(self, msg: Msg) -> None:
        if self._stop.is_set():  # delivered to a pull request that outlived the stop: hand it back at once
            if msg.reply:
                with contextlib.suppress(Exception):  # the server redelivers after ack_wait anyway
                    await msg.nak()
            return
        if msg.reply:
            self._buffered += 1
        self._queue.put_nowait(msg)

    def _request(self, batch: int) -> bytes:
        return b'{"batch":%d,"expires":%d,"idle_heartbeat":%d}' % (
            batch,
            int(self._expires * 1e9),
            int(self._heartbeat * 1e9),
        )

    async def _run(self) -> None:
        nc = self.pool.primary
        retry = _FIRST_RETRY_S
        while not self._stop.is_set():
            if nc.is_closed:
                return
            free = self._concurrency - len(self._handlers)
            if free <= 0:
                self._freed.clear()
                await self._freed.wait()
                continue
            try:
                await nc.publish(self._next_subject, self._request(free), reply=self._inbox)
                outcome = await self._receive(free)
            except ConnectionClosedError:
                return
            except Exception:  # never let the loop die: log, pause, go on
                log.exception("pull loop of consumer %s failed; retrying", self.name)
                outcome = "pause"
            if outcome == "stop":
                return
            if outcome in ("recreate", "silent"):
                # Consumer gone, or without leader (a pull request to a consumer deleted a moment ago can
                # vanish without an answer): re-create it, pausing longer each time in a row.
                await self._sleep(retry)
                retry = min(2.0, retry * 2)
                if not self._stop.is_set():
                    try:
                        await self._recover()
                    except AegisError as exc:
                        log.warning("consumer %s unavailable (%s); retrying", self.name, exc)
                continue
            retry = _FIRST_RETRY_S
            if outcome == "pause":
                await self._sleep(0.2)

    async def _receive(self, want: int) -> str:
        """Take the answers to one pull request; returns why it ended."""
        got = 0
        answered = False
        while got < want:
            try:
                msg = await asyncio.wait_for(self._queue.get(), self._heartbeat * 3)
            except TimeoutError:
                return "done" if answered else "silent"
            if msg is None:
                return "stop"
            answered = True
            if not msg.reply:  # a status message of the pull request
                headers = msg.headers or {}
                status = headers.get(_STATUS)
                if status == "100":  # idle heartbeat
                    continue
                if status in ("404", "408"):  # no messages / request expired: ask again
                    return "done"
                desc = str(headers.get(_DESCRIPTION, ""))
                if status == "503" or "Deleted" in desc:
                    return "recreate"
                log.debug("consumer %s: pull status %s %s", self.name, status, desc)
                return "pause"
            got += 1
            self._buffered -= 1
            try:
                self.num_pending = msg.metadata.num_pending
                self._refreshed = time.monotonic()
            except Exception:  # not a JetStream message: cannot be acked, skip it
                continue
            if self._concurrency == 1:
                await self._guarded(msg)
            else:
                task = asyncio.create_task(self._guarded(msg))
                self._handlers.add(task)
                task.add_done_callback(self._done)
        return "done"

    def _done(self, task: asyncio.Task[None]) -> None:
        self._handlers.discard(task)
        self._freed.set()

    async def _guarded(self, msg: Msg) -> None:
        seq = msg.metadata.sequence.stream
        if seq > self._max_seen:
            self._max_seen = seq
        settled: bool | None = False
        try:
            settled = await self._handle(msg)
        except Exception:
            log.exception("consumer %s: message handling failed", self.name)
        if settled is False:
            self._unsettled.add(seq)
        else:
            self._unsettled.discard(seq)

    @property
    def resume_seq(self) -> int:
        """First stream sequence a re-created consumer must deliver: the oldest message handed back
        for redelivery (nak), else the one after the newest seen."""
        return min(self._unsettled, default=self._max_seen + 1)

    async def _recover(self) -> None:
        """The consumer did not answer: wait for its leader, or re-create it where we left off."""
        js = self.pool.js
        try:
            await js.consumer_info(self.stream, self.name, timeout=2.0)
        except NotFoundError:
            start = self.resume_seq
            config = dataclasses.replace(
                self.config, deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start
            )
            log.warning("consumer %s is gone; re-creating it from stream sequence %d", self.name, start)
            try:
                await js.add_consumer(self.stream, config=config)
            except NotFoundError:  # the stream itself is gone
                await self.ensure_consumer()  # raises the typed error
                return
            except Exception as exc:
                raise jetstream_error(exc, f"re-create consumer {self.name}") from exc
        except Exception as exc:
            raise jetstream_error(exc, f"consumer info {self.name}") from exc
        await self.ensure_consumer_leader()

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stop.wait(), seconds)
        except TimeoutError:
            pass

    async def stop(self, *, delete: bool = False, grace: float = 5.0) -> None:
        """Stop pulling; let handlers finish (up to ``grace`` s); nak what was not handled; maybe delete."""
        self._stop.set()
        self._freed.set()
        self._queue.put_nowait(None)
        if self._refresh is not None:
            self._refresh.cancel()
        running = [t for t in (self._task, *self._handlers) if t is not None]
        if running:
            _, late = await asyncio.wait(running, timeout=grace)
            for task in late:
                task.cancel()
            if late:
                await asyncio.gather(*late, return_exceptions=True)
        if self._sub is not None:
            sub, self._sub = self._sub, None
            if delete:  # no consumer, no more deliveries
                await _unsubscribe(sub, self.name)
            else:
                self._linger = asyncio.create_task(
                    _unsubscribe(sub, self.name, after=self._expires + self._heartbeat),
                    name=f"aegis-pull-{self.name}-linger",
                )
        while not self._queue.empty():
            msg = self._queue.get_nowait()
            if msg is not None and msg.reply:
                try:
                    await msg.nak()
                except Exception:  # the server redelivers after ack_wait anyway
                    break
        if delete:
            try:
                await self.pool.js.delete_consumer(self.stream, self.name)
            except NotFoundError:
                pass
            except Exception:  # the server removes it after inactive_threshold
                log.debug("delete of consumer %s failed", self.name, exc_info=True)


async def _unsubscribe(sub: NatsSubscription, name: str, *, after: float = 0.0) -> None:
    """Unsubscribe a pull loop's inbox, ``after`` seconds from now."""
    if after:
        await asyncio.sleep(after)
    try:
        await sub.unsubscribe()
    except Exception:  # connection already closed
        log.debug("unsubscribe of %s failed", name, exc_info=True)


__all__ = ["ConsumerLoop", "consumer_name"]
