"""Commands: durable, once-processed work items with progress updates and a typed result.

A worker (any number of instances)::

    worker = CommandWorker(pool)

    async def rebalance(req: RebalanceRequest, ctx: CommandContext) -> RebalanceReport:
        for i, book in enumerate(req.books):
            ...
            await ctx.progress((i + 1) / len(req.books), f"book {book} done")
        return RebalanceReport(...)

    await worker.handle("risk", "rebalance", rebalance)

A caller::

    commands = CommandClient(pool)
    call = await commands.send("risk", "rebalance", RebalanceRequest(books=["eu", "us"]), timeout=60)
    async for p in call.progress():        # optional
        print(f"{p.fraction:.0%} {p.message}")
    report = await call.result(RebalanceReport)   # or raises CommandFailed / RpcTimeout / ...

Commands are stored in the work-queue stream ``AEGIS_COMMANDS`` on ``aegis.cmd.<service>.<command>``, so a
command sent while no worker runs waits there, and each is taken by one worker (one durable pull consumer
per service and command, shared by all instances). Progress and the result travel over core NATS to a
per-call inbox named in the ``Aegis-Reply-To`` header: they never enter the stream, and the stream holds
only commands not yet acknowledged. The caller subscribes to its inbox before it publishes.

Deadlines: the caller's budget travels in ``Aegis-Timeout-Ms`` and counts from the moment the stream stored
the command (its JetStream timestamp; worker and servers need roughly synchronised clocks). A worker does
not start a command whose deadline has passed; it answers ``DeadlineExceeded`` and acknowledges it. The
command also gets a per-message TTL of the budget plus a second, so a command nobody took in time does not
linger in the stream.

Delivery and once-only completion: a command is redelivered after ``ack_wait`` when its worker died or went
silent (paused, cut off) while running it, up to ``max_deliver`` deliveries, after which the caller gets a
:class:`CommandFailed`; ``ctx.delivered`` > 1 tells the handler. While a handler runs, the worker tells the
server every ``ack_wait / 3`` that it is still busy, so long commands are not redelivered.

What makes a command *complete* once, across workers, is its record in the R3 KV bucket ``aegis_commands``
(key ``<service>.<command>.<call id>``, history 1, per-key TTL):

* before running, a worker **claims** the call id: it creates the record (compare-and-set on "no record"),
  or takes over a claim that expired (its holder stopped renewing it for ``ceil(ack_wait)`` seconds) or was
  released. While another worker's claim lives, a delivery of the same call id waits (kept in progress)
  until that worker finishes or its claim expires.
* while the handler runs, the claim's TTL is renewed with the in-progress ack (compare-and-set on the
  claim's revision); ``ctx.token`` is the claim's fencing token (its revision: a later claim of the call
  id has a higher one) for handlers that change other systems, ``ctx.superseded`` tells that another worker
  took over.
* the outcome (result or error) is stored by a compare-and-set of the claim into a **done** record that
  holds it for ``dedupe_s`` (1 h; the once-only promise holds within it). Only one compare-and-set per call
  id can win: a worker that was paused or cut off past its claim, and whose call id another worker claimed
  or finished meanwhile, discards its result and sends nothing (it hands its delivery back). The winner
  sends the result, then acknowledges the command (waiting for the server's confirmation). A command that reached ``max_deliver`` deliveries gets
  its :class:`CommandFailed` stored as its outcome the same way.
* a delivery whose call id is done (a redelivery after a lost ack, a re-send of the call id) is answered
  with the stored outcome and acknowledged without running the handler.

So a handler may *start* more than once for one call id (its worker was killed or paused mid-run), but the
call completes once and every answer for the call id is that one outcome. A result must leave
:data:`RECORD_OVERHEAD` bytes of the payload limit for the record's headers. A command without a call id
is de-duplicated by its stream sequence (its own redeliveries only).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription
from nats.js import api
from nats.js.errors import NotFoundError
from pydantic import ValidationError

from . import wire
from .codec import decode, encode, payload_parser
from .connection import ConnectionPool
from .consumer import ConsumerLoop, consumer_name
from .errors import (
    AegisError,
    BadRequest,
    CommandFailed,
    Conflict,
    DeadlineExceeded,
    PayloadTooLarge,
    RemoteError,
    RpcTimeout,
    error_from_wire,
)
from .jetstream import PublishAck, default_replicas, ensure_stream, js_publish
from .kv import kv_stream_config, kv_subject, kv_write
from .metrics import InstanceMetrics
from .nats_errors import jetstream_error

log = logging.getLogger(__name__)

CommandHandler = Callable[..., Awaitable[Any]]

_PROGRESS = "progress"
_RESULT = "result"


async def ensure_command_stream(pool: ConnectionPool, replicas: int | None = None) -> None:
    """Create or update the work-queue stream ``AEGIS_COMMANDS`` (file storage, per-message TTL allowed) and the
    KV bucket ``aegis_commands`` of call-id records (history 1, per-key TTL, no expiry markers);
    ``replicas`` defaults to min(3, cluster size). Idempotent."""
    n = default_replicas(pool, replicas)
    await ensure_stream(
        pool,
        api.StreamConfig(
            name=wire.COMMAND_STREAM,
            subjects=[f"{wire.COMMAND_PREFIX}.>"],
            storage=api.StorageType.FILE,
            retention=api.RetentionPolicy.WORK_QUEUE,
            num_replicas=n,
            duplicate_window=120.0,
            allow_msg_ttl=True,
        ),
    )
    # No expiry markers: a marker is proposed from the leader's applied state and purges the key
    # (Nats-Rollup: sub), so one proposed while a later write of the key waits for its quorum lands after
    # that write and wipes it (tests/test_command_record_race.py). An expired claim simply disappears.
    await ensure_stream(pool, kv_stream_config(wire.COMMANDS_BUCKET, n, 1, None, per_key_ttl=True))


# --------------------------------------------------------------------------------------------------
# Caller side
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Progress:
    """One progress update of a running command."""

    fraction: float
    """Done so far, 0.0 .. 1.0."""
    message: str = ""


_END = object()


def _command_error(code: int, message: str) -> AegisError:
    """Known codes keep their type (DeadlineExceeded, BadRequest, ...); a handler failure is CommandFailed."""
    err = error_from_wire(code, message)
    return CommandFailed(message, code) if type(err) is RemoteError else err


class CommandCall:
    """A sent command: iterate :meth:`progress`, await :meth:`result`; made by :meth:`CommandClient.send`."""

    def __init__(
        self, client: CommandClient, service: str, command: str, call_id: str, timeout: float
    ) -> None:
        self.service = service
        self.command = command
        self.call_id = call_id
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        """``time.monotonic()`` value at which the call gives up with :class:`RpcTimeout`."""
        self.ack: PublishAck | None = None
        """The stream's acknowledgement of the command (set once :meth:`CommandClient.send` returns)."""
        self._client = client
        self._updates: asyncio.Queue[Any] = asyncio.Queue()
        self._done = asyncio.Event()
        self._data: bytes = b""
        self._error: AegisError | None = None
        self._sub: NatsSubscription | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._closing: asyncio.Task[None] | None = None

    @property
    def done(self) -> bool:
        """True once the result (or error, or timeout) is in."""
        return self._done.is_set()

    async def _on_reply(self, msg: Msg) -> None:
        if self._done.is_set():
            return
        headers = msg.headers or {}
        if headers.get(wire.REPLY_KIND_HEADER) == _PROGRESS:
            try:
                body = json.loads(msg.data)
                self._updates.put_nowait(Progress(float(body["fraction"]), str(body.get("message", ""))))
            except (ValueError, KeyError, TypeError):
                log.debug("bad progress message for call %s", self.call_id)
            return
        code = headers.get(wire.ERROR_CODE_HEADER)
        if code is not None:
            self._finish(error=_command_error(int(code), headers.get(wire.ERROR_HEADER, "")))
        else:
            self._finish(data=msg.data)

    def _expire(self) -> None:
        self._finish(
            error=RpcTimeout(
                f"command {self.service}.{self.command} (call {self.call_id}) got no result within"
                f" {self.timeout:.3f}s"
            )
        )

    def _finish(self, *, data: bytes = b"", error: AegisError | None = None) -> None:
        if self._done.is_set():
            return
        self._data, self._error = data, error
        self._done.set()
        self._updates.put_nowait(_END)
        if self._timer is not None:
            self._timer.cancel()
        # Not awaited here: unsubscribing from inside the subscription's own callback would cancel it.
        self._closing = asyncio.get_running_loop().create_task(self.close())

    async def progress(self) -> AsyncIterator[Progress]:
        """Progress updates as they come; ends when the result (or an error, or the deadline) is in."""
        while True:
            item = await self._updates.get()
            if item is _END:
                self._updates.put_nowait(_END)  # a second iteration ends at once too
                return
            yield item

    async def result(self, model: Any = None) -> Any:
        """The handler's return value, decoded into ``model`` (default: plain JSON; ``bytes``: raw).

        Raises :class:`CommandFailed` (the handler raised; ``code``/``message`` as sent),
        :class:`DeadlineExceeded` (the deadline passed before a worker took it), :class:`BadRequest`,
        :class:`PayloadTooLarge` (typed codes as sent), or :class:`RpcTimeout` at the deadline.
        """
        await self._done.wait()
        if self._error is not None:
            raise self._error
        return decode(self._data, model)

    async def close(self) -> None:
        """Stop listening for progress and result (done automatically when the result arrives)."""
        sub, self._sub = self._sub, None
        if sub is not None:
            try:
                await sub.unsubscribe()
            except Exception:  # connection closed: nothing to unsubscribe
                log.debug("unsubscribe of call inbox failed", exc_info=True)


class CommandClient:
    """Sends commands over a :class:`ConnectionPool`; see the module docstring."""

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool

    async def send(
        self,
        service: str,
        command: str,
        payload: Any = None,
        *,
        timeout: float | None = None,
        call_id: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> CommandCall:
        """Store the command in the work queue and return its :class:`CommandCall`.

        Returns once the stream has acknowledged the command (not when it ran). ``timeout`` (default: the
        configured per-method timeout) is the whole budget, queueing included. ``call_id`` (default: a
        new uuid) travels in ``Aegis-Call-Id``: a worker that gets a command whose call id was already
        completed (by any worker, within its ``dedupe_s``) answers with the stored outcome instead of
        running it again. Raises ``ValueError`` for
        bad names, :class:`PayloadTooLarge` before sending, :class:`RpcTimeout` /
        :class:`ServiceUnavailable` when the stream does not acknowledge.
        """
        wire.check_token("service name", service)
        wire.check_token("command name", command)
        if timeout is None:
            timeout = self.pool.settings.timeout_for(service, command)
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0, got {timeout}")
        data = encode(payload)
        limit = self.pool.max_payload
        if len(data) > limit:
            raise PayloadTooLarge(f"command {service}.{command} is {len(data)} bytes; limit is {limit}")
        call = CommandCall(self, service, command, call_id or uuid.uuid4().hex, timeout)
        nc = self.pool.primary
        inbox = nc.new_inbox()
        hdrs = {
            # A fresh id per send: retries inside js_publish are de-duplicated, but a deliberate re-send
            # of the same call id must reach a worker, which answers it from its recent results.
            wire.MSG_ID_HEADER: uuid.uuid4().hex,
            wire.CALL_ID_HEADER: call.call_id,
            wire.TIMEOUT_HEADER: str(max(1, int(timeout * 1000))),
            wire.REPLY_TO_HEADER: inbox,
            wire.MSG_TTL_HEADER: str(max(1, math.ceil(timeout)) + 1),
        }
        if headers:
            hdrs.update(headers)
        # Listen before publishing: a fast worker may answer before js_publish returns.
        call._sub = await nc.subscribe(inbox, cb=call._on_reply)
        call._timer = asyncio.get_running_loop().call_later(timeout, call._expire)
        subject = wire.command_subject(service, command)
        try:
            call.ack = await js_publish(
                self.pool, subject, data, hdrs, timeout, f"command {service}.{command}"
            )
        except BaseException:
            call._timer.cancel()
            await call.close()
            raise
        return call

    async def call(
        self,
        service: str,
        command: str,
        payload: Any = None,
        *,
        timeout: float | None = None,
        model: Any = None,
    ) -> Any:
        """Send and wait for the result (progress ignored)."""
        c = await self.send(service, command, payload, timeout=timeout)
        return await c.result(model)


# --------------------------------------------------------------------------------------------------
# Worker side
# --------------------------------------------------------------------------------------------------

CLAIMED = "claimed"
DONE = "done"
FREE = "free"
"""States of a command record: a worker holds the call id (claimed), its outcome is stored (done), or
nobody holds it (no record, or a claim that expired or was released)."""

RELEASE_MARKER_TTL_S = 1
"""A released claim's removal marker ages out after this long."""
RECORD_OVERHEAD = 1024
"""Bytes kept free of a result for the done record's headers: a result is stored as the record's body."""
_RECORD_KEY_MAX = 128
_PLAIN_CALL_ID = re.compile(r"^[-_=a-zA-Z0-9]+$")


def record_key(service: str, command: str, call_id: str) -> str:
    """The ``aegis_commands`` key of one call id: ``<service>.<command>.<call id>``; a call id that is not a
    plain token (or is long) is replaced by its sha256."""
    if not (_PLAIN_CALL_ID.match(call_id) and len(call_id) <= _RECORD_KEY_MAX):
        call_id = "sha256-" + hashlib.sha256(call_id.encode()).hexdigest()
    return f"{service}.{command}.{call_id}"


@dataclass(slots=True)
class Claim:
    """This worker's hold on one call id: while it lasts no other worker runs the call, and only its holder
    can store the outcome."""

    key: str
    claim_id: str
    ttl_s: int
    token: int = 0
    """Fencing token: the KV revision at which the claim was taken. A later claim of the same call id (after
    this one expired) has a higher one, so a downstream system that remembers the highest token it saw can
    refuse the writes of a worker that was paused past its claim."""
    revision: int = 0
    """Last revision written (moves with each renewal); the completion is a compare-and-set on it."""
    lost: bool = False
    """Another worker took the call id over (this worker was paused or cut off past the claim's TTL)."""


@dataclass(frozen=True, slots=True)
class CommandRecord:
    """A call id's record in ``aegis_commands`` as read from the stream leader."""

    revision: int
    state: str
    claim_id: str = ""
    instance_id: str = ""
    data: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class CommandContext:
    """What a command handler knows about the command it runs."""

    service: str
    command: str
    call_id: str
    instance_id: str
    deadline: float
    """``time.monotonic()`` value after which the caller has given up."""
    delivered: int
    """1 on the first delivery; more when a previous worker died or timed out while running it."""
    headers: dict[str, str] = field(default_factory=dict)
    _worker: CommandWorker | None = field(default=None, repr=False)
    _msg: Msg | None = field(default=None, repr=False)
    _claim: Claim | None = field(default=None, repr=False)

    def remaining(self) -> float:
        """Seconds left before the caller's deadline (negative once it passed)."""
        return self.deadline - time.monotonic()

    @property
    def token(self) -> int:
        """Fencing token of this run's claim on the call id (see :attr:`Claim.token`); pass it to systems
        this handler changes, so they can refuse a stale run. 0 when there is no claim."""
        return self._claim.token if self._claim is not None else 0

    @property
    def superseded(self) -> bool:
        """True once another worker took this call id over: this run's result will be discarded."""
        return self._claim is not None and self._claim.lost

    async def progress(self, fraction: float, message: str = "") -> None:
        """Send a progress update to the caller (if it listens) and keep the command from redelivery."""
        fraction = min(1.0, max(0.0, float(fraction)))
        if self._msg is not None:
            try:
                await self._msg.in_progress()
            except Exception:  # connection trouble: the periodic keep-alive tries again
                log.debug("in_progress failed", exc_info=True)
        reply = self.headers.get(wire.REPLY_TO_HEADER)
        if reply and self._worker is not None:
            body = json.dumps({"fraction": fraction, "message": message}).encode()
            try:
                await self._worker.pool.primary.publish(
                    reply,
                    body,
                    headers={wire.REPLY_KIND_HEADER: _PROGRESS, wire.CALL_ID_HEADER: self.call_id},
                )
            except Exception:  # progress is best effort
                log.debug("progress publish failed", exc_info=True)


@dataclass(slots=True)
class _Registration:
    service: str
    command: str
    handler: CommandHandler
    validator: Callable[[bytes], Any]
    wants_ctx: bool
    max_deliver: int
    ack_wait: float
    dedupe_s: float
    loop: ConsumerLoop | None = None

    @property
    def claim_ttl_s(self) -> int:
        # Whole seconds (KV TTLs are); renewed every ack_wait / 3 with the in-progress ack.
        return max(1, math.ceil(self.ack_wait))


async def _quiet_nak(msg: Msg) -> None:
    try:
        await msg.nak()
    except Exception:  # the server redelivers after ack_wait anyway
        log.debug("nak failed", exc_info=True)


_REPLY_KEYS = (wire.ERROR_HEADER, wire.ERROR_CODE_HEADER, wire.INSTANCE_HEADER)


class CommandWorker:
    """Runs command handlers of one process; see the module docstring."""

    def __init__(
        self,
        pool: ConnectionPool,
        *,
        metrics: InstanceMetrics | None = None,
        instance_id: str | None = None,
    ) -> None:
        self.pool = pool
        self.instance_id = wire.check_token("instance id", instance_id or uuid.uuid4().hex[:12])
        self.metrics = metrics or InstanceMetrics("commands", self.instance_id)
        self._handlers: dict[tuple[str, str], _Registration] = {}
        self._depth_sources: list[Callable[[], int]] = []
        self._stream_ready = False
        # Outcomes this worker stored lately, by record key: a redelivery (the ack was lost) is answered
        # without reading the record.
        self._recent: OrderedDict[str, tuple[bytes, dict[str, str]]] = OrderedDict()

    async def ensure_stream(self, replicas: int | None = None) -> None:
        """Create or update ``AEGIS_COMMANDS`` and ``aegis_commands`` (see :func:`ensure_command_stream`)."""
        await ensure_command_stream(self.pool, replicas)
        self._stream_ready = True

    async def handle(
        self,
        service: str,
        command: str,
        handler: CommandHandler,
        *,
        model: Any = None,
        concurrency: int = 1,
        ack_wait: float = 30.0,
        max_deliver: int = 3,
        dedupe_s: float = 3600.0,
    ) -> None:
        """Start running ``handler`` for ``service.command``; commands already waiting are taken at once.

        ``handler`` is ``async def h(payload, ctx: CommandContext) -> result`` (``ctx`` optional); the payload
        is validated into ``model``, else into the annotation of the first parameter. The return value is
        sent as JSON (pydantic models, plain data) or as is (bytes). ``concurrency`` commands run at once
        on this instance. ``ack_wait`` is how long a silent worker keeps a command (and its claim on the
        call id, rounded up to whole seconds) before another may take it over; ``dedupe_s`` how long an
        outcome is kept to answer re-sends of its call id.
        """
        wire.check_token("service name", service)
        wire.check_token("command name", command)
        key = (service, command)
        if key in self._handlers:
            raise ValueError(f"{service}.{command} already has a handler on this worker")
        if dedupe_s < 1:
            raise ValueError(f"dedupe_s must be >= 1, got {dedupe_s}")
        validator, wants_ctx = payload_parser(handler, model, kind="a command handler")
        if not self._stream_ready:
            await self.ensure_stream()
        reg = _Registration(service, command, handler, validator, wants_ctx, max_deliver, ack_wait, dedupe_s)
        name = consumer_name("cmd", service, command)
        config = api.ConsumerConfig(
            name=name,
            durable_name=name,
            filter_subject=wire.command_subject(service, command),
            deliver_policy=api.DeliverPolicy.ALL,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=ack_wait,
            max_deliver=-1,  # the limit is enforced here, so the caller hears about the last failure
            max_ack_pending=max(1000, concurrency * 4),
            metadata={"aegis.service": service, "aegis.command": command},
        )

        async def on_message(msg: Msg) -> bool:
            return await self._run(reg, msg)

        loop = ConsumerLoop(self.pool, wire.COMMAND_STREAM, config, on_message, concurrency=concurrency)
        await loop.start()
        reg.loop = loop
        self._handlers[key] = reg
        self.metrics.method(f"{service}.{command}", "command")
        source = lambda: loop.depth  # noqa: E731
        self._depth_sources.append(source)
        self.metrics.add_queue_depth_source(source)

    async def close(self, grace: float = 5.0) -> None:
        """Stop taking commands; running handlers get ``grace`` seconds to finish, then hand their command
        (and claim) back. Consumers are kept."""
        regs, self._handlers = list(self._handlers.values()), {}
        for source in self._depth_sources:
            self.metrics.remove_queue_depth_source(source)
        self._depth_sources.clear()
        await asyncio.gather(*(r.loop.stop(grace=grace) for r in regs if r.loop is not None))

    # -- one delivery ------------------------------------------------------------------------------------

    async def _run(self, reg: _Registration, msg: Msg) -> bool:
        """Settle one delivery; False when it was handed back (nak) for another delivery."""
        start = time.monotonic()
        md = msg.metadata
        headers = msg.headers or {}
        call_id = headers.get(wire.CALL_ID_HEADER, "")
        stats = self.metrics.method(f"{reg.service}.{reg.command}", "command")
        # Without a call id, redeliveries of the one message are still recognised by its stream sequence.
        key = record_key(reg.service, reg.command, call_id or f"seq-{md.sequence.stream}")
        cached = self._recent.get(key)
        if cached is not None:
            await self._ack(msg)
            await self._reply(headers, *cached)
            return True
        budget = headers.get(wire.TIMEOUT_HEADER)
        remaining = 3600.0
        if budget:
            remaining = md.timestamp.timestamp() + int(budget) / 1000 - time.time()
        if remaining <= 0:
            late = DeadlineExceeded(
                f"command {reg.service}.{reg.command} reached a worker {-remaining:.3f}s after its deadline"
            )
            await self._ack(msg)
            await self._reply(headers, b"", self._reply_headers(call_id, late))
            stats.record(time.monotonic() - start, late.message)
            return True
        deadline = start + remaining
        keepalive = asyncio.create_task(self._keep_alive(msg, reg.ack_wait / 3))
        claim: Claim | None = None
        try:
            got = await self._acquire(reg, key, deadline)
            if isinstance(got, CommandRecord):  # done by a worker before: its outcome, not a second run
                data, reply_headers = got.data, self._stored_reply_headers(call_id, got)
                self._remember(key, data, reply_headers)
                await self._ack(msg)
                await self._reply(headers, data, reply_headers)
                return True
            if got is None:
                late = DeadlineExceeded(
                    f"command {reg.service}.{reg.command} (call {call_id}) was still held by another worker,"
                    " or its record could not be written, at its deadline"
                )
                await self._ack(msg)
                await self._reply(headers, b"", self._reply_headers(call_id, late))
                stats.record(time.monotonic() - start, late.message)
                return True
            claim = got
            error: AegisError | None
            if md.num_delivered > reg.max_deliver:
                data, error = (
                    b"",
                    CommandFailed(
                        f"command {reg.service}.{reg.command} not completed after {reg.max_deliver} deliveries"
                        " (workers died or timed out while running it)",
                        500,
                    ),
                )
            else:
                data, error = await self._invoke(
                    reg, msg, headers, call_id, deadline, md.num_delivered, claim
                )
            reply_headers = self._reply_headers(call_id, error)
            if error is not None:
                data = b""
            won = await self._complete(reg, claim, data, reply_headers)
            await self._settled(reg, call_id, claim, won)
            if not won:
                # Another worker holds or finished the call id: it answers. This delivery goes back, so
                # whoever gets it next answers its caller from the record.
                log.warning(
                    "command %s.%s call %s was taken over by another worker; this run's result is discarded",
                    reg.service,
                    reg.command,
                    call_id,
                )
                await _quiet_nak(msg)
                return False
            self._remember(key, data, reply_headers)
            # The outcome is stored: the caller hears it now, not after the ack's round trip (a redelivery,
            # should the ack be lost, is answered from the record).
            await self._reply(headers, data, reply_headers)
            stats.record(time.monotonic() - start, None if error is None else error.message)
            await self._ack(msg)
            return True
        except asyncio.CancelledError:
            # Worker closing past its grace period: give the claim and the command back so another worker
            # takes them now instead of after ack_wait.
            if claim is not None:
                await asyncio.shield(self._release(claim))
            await asyncio.shield(_quiet_nak(msg))
            raise
        finally:
            keepalive.cancel()

    async def _invoke(
        self,
        reg: _Registration,
        msg: Msg,
        headers: dict[str, str],
        call_id: str,
        deadline: float,
        delivered: int,
        claim: Claim,
    ) -> tuple[bytes, AegisError | None]:
        ctx = CommandContext(
            reg.service,
            reg.command,
            call_id,
            self.instance_id,
            deadline,
            delivered,
            headers,
            self,
            msg,
            claim,
        )
        stats = self.metrics.method(f"{reg.service}.{reg.command}", "command")
        stats.in_flight += 1
        renewal = asyncio.create_task(self._keep_claim(claim, reg.ack_wait / 3))
        try:
            arg = reg.validator(msg.data)
            result = await (reg.handler(arg, ctx) if reg.wants_ctx else reg.handler(arg))
            data = encode(result)
            limit = self.pool.max_payload - RECORD_OVERHEAD
            if len(data) > limit:
                raise PayloadTooLarge(f"result of {len(data)} bytes exceeds {limit} bytes")
            return data, None
        except ValidationError as exc:
            return b"", BadRequest(f"invalid payload for {reg.service}.{reg.command}: {exc.errors()[:3]}")
        except AegisError as exc:
            return b"", exc
        except Exception as exc:
            log.exception("command %s.%s failed", reg.service, reg.command)
            return b"", CommandFailed(f"{type(exc).__name__}: {exc}", 500)
        finally:
            renewal.cancel()
            await asyncio.gather(renewal, return_exceptions=True)  # no renewal in flight at completion
            stats.in_flight -= 1

    async def _settled(self, reg: _Registration, call_id: str, claim: Claim, won: bool) -> None:
        """Called once per run after the completion: ``won`` is True when this run's outcome was stored as
        the call's outcome, False when it was discarded (another worker took the call id over). A hook for
        subclasses (the fault-injection harness logs it); does nothing here."""

    def _reply_headers(self, call_id: str, error: AegisError | None) -> dict[str, str]:
        out = {
            wire.REPLY_KIND_HEADER: _RESULT,
            wire.CALL_ID_HEADER: call_id,
            wire.INSTANCE_HEADER: self.instance_id,
        }
        if error is not None:
            out[wire.ERROR_HEADER] = " ".join(error.message.split())[:1024]
            out[wire.ERROR_CODE_HEADER] = str(error.code)
        return out

    @staticmethod
    def _stored_reply_headers(call_id: str, record: CommandRecord) -> dict[str, str]:
        out = {wire.REPLY_KIND_HEADER: _RESULT, wire.CALL_ID_HEADER: call_id}
        out.update({k: record.headers[k] for k in _REPLY_KEYS if k in record.headers})
        return out

    def _remember(self, key: str, data: bytes, headers: dict[str, str]) -> None:
        self._recent[key] = (data, headers)
        if len(self._recent) > 1024:
            self._recent.popitem(last=False)

    # -- the call id's record: claim, keep, complete, release ---------------------------------------------

    async def _acquire(self, reg: _Registration, key: str, deadline: float) -> Claim | CommandRecord | None:
        """Claim ``key`` for this run, or find its outcome stored (a :class:`CommandRecord` in state done).

        A claim is created where there is none, or taken over where the last one expired (its holder
        stopped renewing) or was released. While another worker's claim lives, this waits (the delivery
        kept in progress) until that worker stores the outcome or its claim expires. None: the caller's
        ``deadline`` passed first (or the bucket took no write until then).
        """
        claim = Claim(key, uuid.uuid4().hex, reg.claim_ttl_s)
        expected = 0
        pause = 0.05
        while time.monotonic() < deadline:
            budget = max(0.5, min(5.0, deadline - time.monotonic()))
            try:
                rev = await self._put(
                    key,
                    b"",
                    self._claim_headers(claim),
                    revision=expected,
                    ttl_s=claim.ttl_s,
                    msg_id=f"{claim.claim_id}.{expected}",  # a retry that already landed is acknowledged
                    timeout=budget,
                )
                claim.token = claim.revision = rev
                return claim
            except Conflict:
                pass
            except AegisError as exc:  # the bucket takes no writes now (leader election): try again
                log.debug("claim of %s failed: %s", key, exc)
                await asyncio.sleep(pause)
                pause = min(1.0, pause * 2)
                continue
            try:
                rec = await self._read(key)
            except AegisError as exc:
                log.debug("read of %s failed: %s", key, exc)
                await asyncio.sleep(pause)
                pause = min(1.0, pause * 2)
                continue
            if rec.state == DONE:
                return rec
            if rec.state == FREE:
                if rec.revision == expected:  # a stale read (a deposed leader answered): let it catch up
                    await asyncio.sleep(pause)
                    pause = min(1.0, pause * 2)
                expected = rec.revision
                continue
            if rec.claim_id == claim.claim_id:  # our own write, whose answer was lost
                claim.token = claim.revision = rec.revision
                return claim
            await asyncio.sleep(pause)  # another worker's live claim
            pause = min(0.5, pause * 2)
        return None

    async def _keep_claim(self, claim: Claim, every: float) -> None:
        while not claim.lost:
            await asyncio.sleep(every)
            await self._renew(claim)

    async def _renew(self, claim: Claim) -> None:
        """Extend the claim's TTL (compare-and-set on its revision). A claim that expired meanwhile and that
        nobody took is taken again (with a new token); one another worker took is marked lost."""
        try:
            claim.revision = await self._rewrite_claim(claim, claim.revision)
            return
        except Conflict:
            pass
        except AegisError as exc:
            log.debug("renewal of %s failed: %s", claim.key, exc)
            return
        try:
            rec = await self._read(claim.key)
            if rec.state == CLAIMED and rec.claim_id == claim.claim_id:
                claim.revision = rec.revision  # an earlier renewal landed after all
            elif rec.state == FREE:
                rev = await self._rewrite_claim(claim, rec.revision)
                claim.token = claim.revision = rev
                log.warning("claim on %s had expired; taken again (token %d)", claim.key, rev)
            else:
                claim.lost = True
                log.warning(
                    "claim on %s was taken over by %s", claim.key, rec.instance_id or "another worker"
                )
        except Conflict:
            pass  # someone wrote meanwhile: the next round reads again
        except AegisError as exc:
            log.debug("renewal of %s failed: %s", claim.key, exc)

    async def _complete(
        self, reg: _Registration, claim: Claim, data: bytes, reply_headers: dict[str, str]
    ) -> bool:
        """Store this run's outcome as the call id's, by compare-and-set on the claim; True when it is.

        Only a record this run holds (its claim, or an expired or released one nobody took since) can
        become the outcome; a call id another worker claimed or finished meanwhile is left alone (False).
        Retries ride out a bucket leader election for a bounded time; past it the outcome is dropped as
        if lost (a retry of the same write that landed meanwhile is recognised on the next delivery).
        """
        headers = self._claim_headers(claim, DONE)
        headers.update({k: reply_headers[k] for k in _REPLY_KEYS if k in reply_headers})
        expected = claim.revision
        end = time.monotonic() + max(10.0, 2.0 * claim.ttl_s)
        pause = 0.05
        while time.monotonic() < end:
            try:
                await self._put(
                    claim.key,
                    data,
                    headers,
                    revision=expected,
                    ttl_s=max(1, math.ceil(reg.dedupe_s)),
                    msg_id=f"{claim.claim_id}.done.{expected}",
                    timeout=max(0.5, min(5.0, end - time.monotonic())),
                )
                return True
            except Conflict:
                pass
            except AegisError as exc:
                log.debug("completion of %s failed: %s", claim.key, exc)
                await asyncio.sleep(pause)
                pause = min(1.0, pause * 2)
                continue
            try:
                rec = await self._read(claim.key)
            except AegisError as exc:
                log.debug("read of %s failed: %s", claim.key, exc)
                await asyncio.sleep(pause)
                pause = min(1.0, pause * 2)
                continue
            if rec.state == DONE:
                return rec.claim_id == claim.claim_id  # ours landed on an attempt whose answer was lost
            if rec.state == FREE or rec.claim_id == claim.claim_id:
                if rec.revision == expected:  # a stale read: let it catch up
                    await asyncio.sleep(pause)
                    pause = min(1.0, pause * 2)
                expected = rec.revision
                continue
            claim.lost = True
            return False
        return False

    async def _release(self, claim: Claim) -> None:
        """Give the claim up (a removal marker by compare-and-set), so the next worker need not wait for
        its TTL; best effort, bounded."""
        try:
            await self._put(
                claim.key,
                b"",
                {wire.KV_OPERATION_HEADER: "PURGE", wire.ROLLUP_HEADER: "sub"},
                revision=claim.revision,
                ttl_s=RELEASE_MARKER_TTL_S,
                msg_id=uuid.uuid4().hex,
                timeout=1.0,
            )
        except Exception as exc:  # the claim expires on its own
            log.debug("release of %s failed: %s", claim.key, exc)

    async def _rewrite_claim(self, claim: Claim, revision: int) -> int:
        """Write ``claim`` again (a renewal, or taking it back) by compare-and-set on ``revision``."""
        return await self._put(
            claim.key,
            b"",
            self._claim_headers(claim),
            revision=revision,
            ttl_s=claim.ttl_s,
            msg_id=uuid.uuid4().hex,
            timeout=max(0.5, min(2.0, claim.ttl_s / 2)),
        )

    def _claim_headers(self, claim: Claim, state: str = CLAIMED) -> dict[str, str]:
        return {
            wire.COMMAND_STATE_HEADER: state,
            wire.COMMAND_CLAIM_HEADER: claim.claim_id,
            wire.COMMAND_TOKEN_HEADER: str(claim.token),
            wire.INSTANCE_HEADER: self.instance_id,
        }

    async def _put(
        self,
        key: str,
        data: bytes,
        headers: dict[str, str],
        *,
        revision: int,
        ttl_s: int,
        msg_id: str,
        timeout: float,
    ) -> int:
        """One compare-and-set write with a TTL in ``aegis_commands``; :class:`Conflict` when ``revision``
        is not the key's last one."""
        return await kv_write(
            self.pool,
            wire.COMMANDS_BUCKET,
            key,
            data,
            revision=revision,
            ttl_s=ttl_s,
            timeout=timeout,
            headers=headers,
            msg_id=msg_id,
        )

    async def _read(self, key: str) -> CommandRecord:
        """The key's last entry, from the stream leader (state ``free`` with revision 0 when none)."""
        try:
            raw = await self.pool.js.get_msg(
                f"KV_{wire.COMMANDS_BUCKET}", subject=kv_subject(wire.COMMANDS_BUCKET, key)
            )
        except NotFoundError:
            return CommandRecord(0, FREE)
        except Exception as exc:
            raise jetstream_error(exc, f"read {key}") from None
        headers = raw.headers or {}
        state = headers.get(wire.COMMAND_STATE_HEADER, FREE)
        if (
            wire.MARKER_REASON_HEADER in headers
            or headers.get(wire.KV_OPERATION_HEADER) in ("DEL", "PURGE")
            or state not in (CLAIMED, DONE)
        ):
            state = FREE
        return CommandRecord(
            raw.seq or 0,
            state,
            headers.get(wire.COMMAND_CLAIM_HEADER, ""),
            headers.get(wire.INSTANCE_HEADER, ""),
            raw.data or b"",
            headers,
        )

    @staticmethod
    async def _keep_alive(msg: Msg, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            try:
                await msg.in_progress()
            except Exception:  # connection trouble: try again next round
                log.debug("in_progress failed", exc_info=True)

    @staticmethod
    async def _ack(msg: Msg) -> None:
        # Confirmed ack: a work-queue message is deleted by it, and a lost ack would mean a redelivery.
        try:
            await msg.ack_sync(timeout=2.0)
        except Exception:
            log.warning("ack of command %s not confirmed; it may be redelivered", msg.subject, exc_info=True)

    async def _reply(self, cmd_headers: dict[str, str], data: bytes, headers: dict[str, str]) -> None:
        reply = cmd_headers.get(wire.REPLY_TO_HEADER)
        if not reply:
            return
        try:
            await self.pool.primary.publish(reply, data, headers=headers)
        except Exception:  # the caller times out on its side
            log.debug("result publish failed", exc_info=True)


__all__ = [
    "Claim",
    "CommandCall",
    "CommandClient",
    "CommandContext",
    "CommandRecord",
    "CommandWorker",
    "Progress",
    "ensure_command_stream",
    "record_key",
]
