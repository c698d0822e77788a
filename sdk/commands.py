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

Delivery: the worker acknowledges (and waits for the server to confirm) *before* it sends the result, so a
command is not run twice because a result went out and the ack was lost; a command whose worker died
mid-run is redelivered after ``ack_wait`` (``ctx.delivered`` > 1 tells the handler), up to ``max_deliver``
deliveries, after which the caller gets a :class:`CommandFailed`. While a handler runs, the worker tells the
server every ``ack_wait / 3`` that it is still busy, so long commands are not redelivered.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription
from nats.js import api
from pydantic import ValidationError

from . import wire
from .connection import ConnectionPool
from .errors import (
    AegisError,
    BadRequest,
    CommandFailed,
    DeadlineExceeded,
    PayloadTooLarge,
    RemoteError,
    RpcTimeout,
    error_from_wire,
)
from .events import ConsumerLoop, consumer_name
from .jetstream import PublishAck, default_replicas, ensure_stream, js_publish
from .metrics import InstanceMetrics
from .rpc import decode, encode, payload_parser

log = logging.getLogger(__name__)

CommandHandler = Callable[..., Awaitable[Any]]

_PROGRESS = "progress"
_RESULT = "result"


async def ensure_command_stream(pool: ConnectionPool, replicas: int | None = None) -> None:
    """Create or update the work-queue stream ``AEGIS_COMMANDS`` (file storage, per-message TTL allowed,
    ``replicas`` defaults to min(3, cluster size)); idempotent."""
    await ensure_stream(
        pool,
        api.StreamConfig(
            name=wire.COMMAND_STREAM,
            subjects=[f"{wire.COMMAND_PREFIX}.>"],
            storage=api.StorageType.FILE,
            retention=api.RetentionPolicy.WORK_QUEUE,
            num_replicas=default_replicas(pool, replicas),
            duplicate_window=120.0,
            allow_msg_ttl=True,
        ),
    )


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
        new uuid) travels in ``Aegis-Call-Id``: a worker that already finished a command with that id
        answers a re-send with the same result instead of running it again. Raises ``ValueError`` for
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

    def remaining(self) -> float:
        """Seconds left before the caller's deadline (negative once it passed)."""
        return self.deadline - time.monotonic()

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
    loop: ConsumerLoop | None = None


async def _quiet_nak(msg: Msg) -> None:
    try:
        await msg.nak()
    except Exception:  # the server redelivers after ack_wait anyway
        log.debug("nak failed", exc_info=True)


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
        # Results of commands this worker finished lately, by call id: a redelivery (the ack was lost)
        # gets the same answer again instead of a second run.
        self._recent: OrderedDict[str, tuple[bytes, dict[str, str]]] = OrderedDict()

    async def ensure_stream(self, replicas: int | None = None) -> None:
        """Create or update ``AEGIS_COMMANDS`` (see :func:`ensure_command_stream`)."""
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
    ) -> None:
        """Start running ``handler`` for ``service.command``; commands already waiting are taken at once.

        ``handler`` is ``async def h(payload, ctx: CommandContext) -> result`` (``ctx`` optional); the payload
        is validated into ``model``, else into the annotation of the first parameter. The return value is
        sent as JSON (pydantic models, plain data) or as is (bytes). ``concurrency`` commands run at once
        on this instance.
        """
        wire.check_token("service name", service)
        wire.check_token("command name", command)
        key = (service, command)
        if key in self._handlers:
            raise ValueError(f"{service}.{command} already has a handler on this worker")
        validator, wants_ctx = payload_parser(handler, model, kind="a command handler")
        if not self._stream_ready:
            await self.ensure_stream()
        reg = _Registration(service, command, handler, validator, wants_ctx, max_deliver, ack_wait)
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

        async def on_message(msg: Msg) -> None:
            await self._run(reg, msg)

        loop = ConsumerLoop(self.pool, wire.COMMAND_STREAM, config, on_message, concurrency=concurrency)
        await loop.start()
        reg.loop = loop
        self._handlers[key] = reg
        self.metrics.method(f"{service}.{command}", "command")
        source = lambda: loop.depth  # noqa: E731
        self._depth_sources.append(source)
        self.metrics.add_queue_depth_source(source)

    async def close(self, grace: float = 5.0) -> None:
        """Stop taking commands; running handlers get ``grace`` seconds to finish. Consumers are kept."""
        regs, self._handlers = list(self._handlers.values()), {}
        for source in self._depth_sources:
            self.metrics.remove_queue_depth_source(source)
        self._depth_sources.clear()
        await asyncio.gather(*(r.loop.stop(grace=grace) for r in regs if r.loop is not None))

    async def _run(self, reg: _Registration, msg: Msg) -> None:
        start = time.monotonic()
        md = msg.metadata
        headers = msg.headers or {}
        call_id = headers.get(wire.CALL_ID_HEADER, "")
        stats = self.metrics.method(f"{reg.service}.{reg.command}", "command")
        cached = self._recent.get(call_id) if call_id else None
        if cached is not None:
            await self._ack(msg)
            await self._reply(headers, *cached)
            return
        budget = headers.get(wire.TIMEOUT_HEADER)
        remaining = 3600.0
        if budget:
            remaining = md.timestamp.timestamp() + int(budget) / 1000 - time.time()
        error: AegisError | None = None
        data = b""
        ran = False
        if remaining <= 0:
            error = DeadlineExceeded(
                f"command {reg.service}.{reg.command} reached a worker {-remaining:.3f}s after its deadline"
            )
        elif md.num_delivered > reg.max_deliver:
            error = CommandFailed(
                f"command {reg.service}.{reg.command} not completed after {reg.max_deliver} deliveries"
                " (workers died or timed out while running it)",
                500,
            )
        else:
            ran = True
            data, error = await self._invoke(reg, msg, headers, call_id, start + remaining, md.num_delivered)
        reply_headers = {
            wire.REPLY_KIND_HEADER: _RESULT,
            wire.CALL_ID_HEADER: call_id,
            wire.INSTANCE_HEADER: self.instance_id,
        }
        if error is not None:
            reply_headers[wire.ERROR_HEADER] = " ".join(error.message.split())[:1024]
            reply_headers[wire.ERROR_CODE_HEADER] = str(error.code)
            data = b""
        await self._ack(msg)
        if call_id and ran:
            self._recent[call_id] = (data, reply_headers)
            if len(self._recent) > 1024:
                self._recent.popitem(last=False)
        await self._reply(headers, data, reply_headers)
        stats.record(time.monotonic() - start, None if error is None else error.message)

    async def _invoke(
        self,
        reg: _Registration,
        msg: Msg,
        headers: dict[str, str],
        call_id: str,
        deadline: float,
        delivered: int,
    ) -> tuple[bytes, AegisError | None]:
        ctx = CommandContext(
            reg.service, reg.command, call_id, self.instance_id, deadline, delivered, headers, self, msg
        )
        stats = self.metrics.method(f"{reg.service}.{reg.command}", "command")
        stats.in_flight += 1
        keepalive = asyncio.create_task(self._keep_alive(msg, reg.ack_wait / 3))
        try:
            arg = reg.validator(msg.data)
            result = await (reg.handler(arg, ctx) if reg.wants_ctx else reg.handler(arg))
            data = encode(result)
            if len(data) > self.pool.max_payload:
                raise PayloadTooLarge(f"result of {len(data)} bytes exceeds {self.pool.max_payload} bytes")
            return data, None
        except asyncio.CancelledError:
            # Worker closing past its grace period: hand the command back so another worker takes it
            # now instead of after ack_wait.
            await asyncio.shield(_quiet_nak(msg))
            raise
        except ValidationError as exc:
            return b"", BadRequest(f"invalid payload for {reg.service}.{reg.command}: {exc.errors()[:3]}")
        except AegisError as exc:
            return b"", exc
        except Exception as exc:
            log.exception("command %s.%s failed", reg.service, reg.command)
            return b"", CommandFailed(f"{type(exc).__name__}: {exc}", 500)
        finally:
            keepalive.cancel()
            stats.in_flight -= 1

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
        # Confirmed ack: a work-queue message is deleted by it, and a lost ack would mean a second run.
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
    "CommandCall",
    "CommandClient",
    "CommandContext",
    "CommandWorker",
    "Progress",
    "ensure_command_stream",
]
