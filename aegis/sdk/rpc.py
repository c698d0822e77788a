"""Request/reply RPC: services declare typed handlers, clients call them with a deadline.

A service::

    calc = Service("calc")

    @calc.rpc("add")
    async def add(req: AddRequest, ctx: CallContext) -> AddReply:
        return AddReply(total=req.a + req.b)

    await calc.start(pool)

A client::

    client = RpcClient(pool)
    reply = await client.call("calc", "add", AddRequest(a=1, b=2), response_model=AddReply)

Handlers get their request validated against the first parameter's annotation (any pydantic-supported
type; ``bytes`` passes the raw payload) and their return value serialised from the return annotation.
A handler that raises becomes an error reply (``Nats-Service-Error`` / ``Nats-Service-Error-Code``);
an :class:`~aegis.sdk.errors.AegisError` keeps its code, anything else is code 500. The caller's remaining time
budget travels in ``Aegis-Timeout-Ms``; handlers read it from ``ctx.remaining()`` and nested calls made
inside a handler never outlive it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from time import monotonic
from typing import Any, Protocol, TypeVar, cast, get_type_hints

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import ConnectionReconnectingError, FlushTimeoutError, NoRespondersError
from pydantic import ValidationError

from . import wire
from .codec import decoder, encode, payload_parser, payload_renderer
from .connection import ConnectionPool
from .deadline import SERVING_CALL, effective_timeout
from .effective_config import effective_config
from .errors import (
    AegisError,
    BadRequest,
    ConfigError,
    DeadlineExceeded,
    LeaseLost,
    NoResponders,
    NotActive,
    NotFound,
    PayloadTooLarge,
    UnknownMethod,
    error_from_wire,
)
from .heartbeat import Heartbeat
from .metrics import InstanceMetrics, MethodMetrics
from .micro import MicroResponder
from .nats_errors import request_error
from .registry import Registry, ensure_registry
from .schema import EffectiveConfig

log = logging.getLogger(__name__)

T = TypeVar("T")
Handler = Callable[..., Awaitable[Any]]


class Fence(Protocol):
    """Who decides whether an exclusive call admitted under an epoch may still have an outcome
    (:class:`~aegis.sdk.single_active.SingleActiveService`)."""

    def holds_epoch(self, epoch: int) -> bool:
        """True while this instance serves under ``epoch``."""
        ...

    def reply_epoch(self, epoch: int) -> int | None:
        """The epoch the outcome of a call admitted under ``epoch`` goes out stamped with, now; None: withheld
        (:meth:`aegis.sdk.election.Election.reply_epoch`)."""
        ...

    def lease_lost(self, epoch: int) -> AegisError:
        """The error that replaces the outcome of a call admitted under ``epoch`` that no longer holds."""
        ...


@dataclass(slots=True)
class CallContext:
    """What a handler knows about the call it serves.

    For an exclusive method of a single-active service, ``epoch`` is the epoch the call was admitted under:
    the fencing token to hand to downstream systems (a ledger that rejects writes from an older epoch than
    one it has seen). ``still_serving()`` says whether the instance still serves under it; check it right
    before a side effect::

        @svc.exclusive_rpc("place")
        async def place(order: Order, ctx: CallContext) -> Ack:
            price = await pricer.quote(order)          # may take long; the lease may be lost meanwhile
            if not ctx.still_serving():
                raise LeaseLost(epoch=ctx.epoch)       # or let the SDK withhold the outcome
            return await ledger.book(order, fencing_token=ctx.epoch, key=ctx.call_id)

    Whatever the handler does, its outcome reaches the caller only if the instance still serves under
    ``epoch`` when the reply is sent; otherwise the caller gets :class:`~aegis.sdk.errors.LeaseLost`.
    """

    service: str
    method: str
    instance_id: str
    call_id: str
    deadline: float
    """``time.monotonic()`` value after which the caller has given up."""
    headers: dict[str, str] = field(default_factory=dict)
    epoch: int = 0
    """Epoch the call was admitted under (exclusive methods of a single-active service; 0 otherwise)."""
    fence: Fence | None = None

    def still_serving(self) -> bool:
        """True while this instance still serves under the call's admission epoch (always True for a call
        that is not exclusive)."""
        return self.fence is None or self.fence.holds_epoch(self.epoch)

    def remaining(self) -> float:
        """Seconds left before the caller's deadline (negative once it passed)."""
        return self.deadline - time.monotonic()

    @property
    def expired(self) -> bool:
        return time.monotonic() >= self.deadline

    def check_deadline(self) -> None:
        """Raise :class:`DeadlineExceeded` if the caller has already given up."""
        if self.expired:
            raise DeadlineExceeded(f"deadline of {self.service}.{self.method} passed")


def current_call() -> CallContext | None:
    """The call being served by the current task, if any."""
    return cast("CallContext | None", SERVING_CALL.get())


@dataclass(slots=True)
class _Endpoint:
    name: str
    func: Handler
    parse: Callable[[bytes], Any] | None
    """Turns the request payload into the handler's argument (raises ValidationError); None: the raw bytes."""
    render: Callable[[Any], bytes]
    """Turns the handler's return value into the reply payload (a ``bytes`` value goes out as it is)."""
    wants_ctx: bool
    stats: MethodMetrics


def _endpoint(name: str, func: Handler, stats: MethodMetrics) -> _Endpoint:
    parse, wants_ctx = payload_parser(func, kind=f"handler for {name!r}")
    render = payload_renderer(get_type_hints(func).get("return"))
    return _Endpoint(name, func, None if parse is bytes else parse, render, wants_ctx, stats)


class _Inbox(asyncio.Queue):  # type: ignore[type-arg]
    """The queue a service instance's workers take calls from, filled directly by nats-py's reader.

    It stands in for the pending queue of each of the instance's call subscriptions (subscribed without a
    callback, so nats-py runs no task of its own for them): nats-py puts every message there and counts
    its bytes per subscription; :meth:`taken` uncounts them, as nats-py's own consumers do, so the
    slow-consumer limits keep their meaning. ``maxsize`` is nats-py's pending-messages limit.

    Waking workers: a burst of messages (one socket read holds up to a few dozen at 64 in flight) wakes ONE
    idle worker, not one per message. That worker takes the next message as soon as it is done with one, without
    suspending while any are left, so handlers that finish without waiting on anything are served back to back
    in one task step, as a raw nats-py subscription's single task serves them. When a worker takes a message
    and more are left, it also schedules a kick for the loop's next turn; by then the worker has either emptied
    the inbox (the kick finds nothing to do) or is waiting inside a handler, and the kick wakes one idle worker
    per message left, so a handler that waits never holds up the calls behind it for longer than one turn.
    """

    def __init__(self, maxsize: int = 0) -> None:
        super().__init__(maxsize)
        self._subs: dict[int, Subscription] = {}
        self._waking = False
        """A worker was woken for new messages and has not run yet: further messages need not wake another."""
        self._kick: asyncio.Handle | None = None

    def attach(self, *subs: Subscription) -> None:
        """Make this the pending queue of ``subs`` (subscribed without a callback); a message already delivered
        to one of them moves over."""
        for sub in subs:
            before = sub._pending_queue
            self._maxsize = max(self._maxsize, before.maxsize)
            sub._pending_queue = self
            self._subs[sub._id] = sub
            while not before.empty():
                self.put_nowait(before.get_nowait())

    def taken(self, msg: Msg) -> None:
        """A worker took ``msg``: it no longer counts as pending on its subscription."""
        sub = self._subs.get(msg._sid)
        if sub is not None:
            sub._pending_size -= len(msg.data)

    def put_nowait(self, item: Msg) -> None:
        if self.full():
            raise asyncio.QueueFull
        self._put(item)
        self._unfinished_tasks += 1
        self._finished.clear()
        if not self._waking:
            self._waking = self._wake(1) > 0

    def _wake(self, n: int) -> int:
        """Wake up to ``n`` idle workers; how many were woken."""
        woken = 0
        getters = self._getters
        while woken < n and getters:
            getter = getters.popleft()
            if not getter.done():
                getter.set_result(None)
                woken += 1
        return woken

    def _on_kick(self) -> None:
        self._kick = None
        if self._queue:  # the worker that took before is waiting in a handler: hand the rest to others
            self._waking = self._wake(len(self._queue)) > 0 or self._waking

    async def get(self) -> Msg:
        queue = self._queue
        while not queue:
            getter = asyncio.get_running_loop().create_future()
            self._getters.append(getter)
            try:
                await getter
            except BaseException:
                getter.cancel()
                with contextlib.suppress(ValueError):
                    self._getters.remove(getter)
                if queue and not getter.cancelled():
                    self._wake(1)
                raise
            self._waking = False
        item = queue.popleft()
        if queue and self._kick is None:
            self._kick = asyncio.get_running_loop().call_soon(self._on_kick)
        return item


class Service:
    """An RPC service instance: a name, handlers, and the subscriptions that serve them.

    All instances of one service share a queue group, so a call on ``aegis.rpc.<service>.<method>`` reaches
    one of them; each instance also listens on ``aegis.direct.<service>.<instance_id>.<method>``.

    At most ``max_concurrency`` handlers run at once, on that many long-lived worker tasks; further calls
    wait in the instance's inbox (reported as queue depth). The workers take messages straight from the
    queue nats-py's reader fills for the instance's two subscriptions (:class:`_Inbox`): a call reaches its
    handler with one task switch, as a raw nats-py callback does, and each call still runs in a task of its
    own (its context variables, ``asyncio.current_task()`` and ``asyncio.timeout`` behave as in any task).
    Workers instead of a task per call: a task per call cost about 6 us of CPU per call on the benchmark
    machine; a further queue hand-off from a subscription callback to the workers cost about 3 us.
    """

    group: str | None = None
    """The single-active group the instance belongs to (set by SingleActiveService); shown in its record."""

    def __init__(
        self,
        name: str,
        *,
        instance_id: str | None = None,
        version: str = "0.0.0",
        description: str = "",
        max_concurrency: int = 64,
    ) -> None:
        if not 1 <= max_concurrency <= 10_000:
            raise ValueError(f"max_concurrency must be 1..10000, got {max_concurrency}")
        self.name = wire.check_token("service name", name)
        self.instance_id = wire.check_token("instance id", instance_id or uuid.uuid4().hex[:12])
        self.version = version
        self.description = description
        self.heartbeat: Heartbeat | None = None
        """The registry presence, once started with ``register=True``."""
        self.config: EffectiveConfig | None = None
        self.metrics = InstanceMetrics(self.name, self.instance_id)
        self.endpoints: dict[str, _Endpoint] = {}
        self._pool: ConnectionPool | None = None
        self._subs: list[Subscription] = []
        self.max_concurrency = max_concurrency
        self._inbox: _Inbox = _Inbox()
        self._nc: NatsClient | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._busy = 0
        self._idle = asyncio.Event()
        self._depth_sources: list[Callable[[], int]] = []
        self._reply_headers: dict[str, str] | None = None
        self._micro = MicroResponder(self)

    def rpc(self, method: str) -> Callable[[Handler], Handler]:
        """Decorator registering an async handler for ``method``."""
        wire.check_token("method name", method)

        def register(func: Handler) -> Handler:
            if method in self.endpoints:
                raise ValueError(f"{self.name}.{method} already has a handler")
            self.endpoints[method] = _endpoint(method, func, self.metrics.method(method, "rpc"))
            return func

        return register

    @property
    def running(self) -> bool:
        return bool(self._subs)

    async def start(self, pool: ConnectionPool, *, register: bool = True) -> None:
        """Subscribe and start serving; with ``register`` also join the registry (heartbeats).

        Besides its methods, the instance answers NATS micro discovery (``$SRV.PING|INFO|STATS``) and
        requests for its effective configuration. With the ``require_definition`` setting (strict mode) a
        service that has no definition in the registry refuses to start with :class:`ConfigError`.
        """
        if self._subs:
            return
        self.config = effective_config(pool.settings, self.name, self.instance_id)
        if register:
            await ensure_registry(pool)
            if pool.settings.require_definition:
                await self._check_definition(pool)
        self._pool = pool
        nc = self._nc = pool.primary
        inbox = self._inbox = _Inbox()
        # No callback: nats-py starts no task of its own for these two; the workers read their messages.
        shared = await nc.subscribe(f"{wire.RPC_PREFIX}.{self.name}.*", queue=self.name)
        direct = await nc.subscribe(f"{wire.DIRECT_PREFIX}.{self.name}.{self.instance_id}.*")
        inbox.attach(shared, direct)  # both deliver into the one inbox
        self._workers = [asyncio.create_task(self._work(inbox)) for _ in range(self.max_concurrency)]
        control = await nc.subscribe(
            wire.control_subject(self.name, self.instance_id, "config"), cb=self._on_config_request
        )
        self._subs = [shared, direct, control]
        self._depth_sources = [inbox.qsize]
        for source in self._depth_sources:
            self.metrics.add_queue_depth_source(source)
        await self._micro.start(nc)
        try:
            await nc.flush(timeout=2)
        except (FlushTimeoutError, ConnectionReconnectingError):
            # Reconnecting: nats-py replays the subscriptions once connected; callers that arrive
            # before that get no responders and retry (or try another instance).
            log.warning("%s.%s: subscriptions not confirmed (reconnecting)", self.name, self.instance_id)
        if register:
            self.heartbeat = Heartbeat(
                pool,
                self.metrics,
                version=self.version,
                config_hash=self.config.config_hash,
                group=self.group,
            )
            await self.heartbeat.start()

    async def _check_definition(self, pool: ConnectionPool) -> None:
        try:
            await Registry(pool).get_definition(self.name)
        except NotFound:
            raise ConfigError(
                f"service {self.name!r} has no definition in the registry and require_definition is on"
                " (strict mode): define it first, or turn strict mode off"
            ) from None

    async def _on_config_request(self, msg: Msg) -> None:
        if msg.reply and self.config is not None and self._pool is not None:
            await self._pool.primary.publish(msg.reply, self.config.model_dump_json().encode())

    async def stop(self, grace_s: float = 5.0) -> None:
        """Leave the registry, stop taking calls, let the calls in flight finish (up to ``grace_s``)."""
        heartbeat, self.heartbeat = self.heartbeat, None
        if heartbeat is not None:
            await heartbeat.stop()  # first, so discovery stops routing here before the subscriptions go
        await self._micro.stop()
        subs, self._subs = self._subs, []
        for sub in subs:
            try:
                await sub.unsubscribe()
            except Exception:  # connection already closed: nothing to unsubscribe
                log.debug("unsubscribe failed", exc_info=True)
        if self._busy or not self._inbox.empty():
            self._idle.clear()
            try:
                await asyncio.wait_for(self._idle.wait(), grace_s)
            except TimeoutError:
                log.warning(
                    "%s: %d calls still running after %.1fs; cancelling", self.name, self._busy, grace_s
                )
        workers, self._workers = self._workers, []
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        for source in self._depth_sources:
            self.metrics.remove_queue_depth_source(source)
        self._depth_sources = []

    async def _work(self, inbox: _Inbox) -> None:
        while True:
            msg = await inbox.get()
            inbox.taken(msg)
            self._busy += 1
            try:
                await self._serve(msg)
            except Exception:  # _serve answers every failure itself; this keeps the worker alive regardless
                log.exception("%s: serving %s failed", self.name, msg.subject)
            finally:
                inbox.task_done()
                self._busy -= 1
                if not self._busy and inbox.empty():
                    self._idle.set()

    async def _serve(self, msg: Msg) -> None:
        received = monotonic()
        subject = msg.subject
        method = subject[subject.rfind(".") + 1 :]
        ep = self.endpoints.get(method)
        if ep is None:
            await self._reply_error(msg, UnknownMethod(f"{self.name} has no method {method!r}"))
            return
        headers = msg.headers
        if headers:
            budget = headers.get(wire.TIMEOUT_HEADER)
            deadline = received + (int(budget) / 1000 if budget else 3600.0)
            call_id = headers.get(wire.CALL_ID_HEADER, "")
        else:
            headers, deadline, call_id = {}, received + 3600.0, ""
        stats = ep.stats
        stats.in_flight += 1
        ctx = CallContext(self.name, method, self.instance_id, call_id, deadline, headers)
        token = SERVING_CALL.set(ctx)
        error: AegisError | None = None
        try:
            arg = msg.data if ep.parse is None else ep.parse(msg.data)
            result = await (ep.func(arg, ctx) if ep.wants_ctx else ep.func(arg))
            data = result if result.__class__ is bytes else ep.render(result)
            if msg.reply:
                if len(data) > self._pool.max_payload:  # type: ignore[union-attr]
                    raise PayloadTooLarge(f"reply of {len(data)} bytes exceeds {self._max_payload()} bytes")
                reply_headers = self._reply_headers
                if ctx.fence is not None:
                    # Exclusive call: the outcome goes out only under the lease it was admitted under, and
                    # says so (the election's rule: Election.reply_epoch). No await between this check and the
                    # publish (it only queues the bytes).
                    stamp = ctx.fence.reply_epoch(ctx.epoch)
                    if stamp is None:
                        raise ctx.fence.lease_lost(ctx.epoch)
                    reply_headers = {**(reply_headers or {}), wire.EPOCH_HEADER: str(stamp)}
                nc = self._nc
                await nc.publish(msg.reply, data, headers=reply_headers)  # type: ignore[union-attr]
                if not self._inbox._queue:  # the last call of a burst: its replies go out now
                    nc.write_now()  # type: ignore[union-attr]
        except ValidationError as exc:
            error = BadRequest(f"invalid request for {self.name}.{method}: {_brief(exc)}")
        except AegisError as exc:
            error = exc
        except Exception as exc:
            log.exception("handler %s.%s failed", self.name, method)
            error = AegisError(f"{type(exc).__name__}: {exc}")
        finally:
            SERVING_CALL.reset(token)
            stats.in_flight -= 1
        if error is None:
            stats.record(monotonic() - received)
            return
        if ctx.fence is not None and not ctx.fence.holds_epoch(ctx.epoch):
            error = ctx.fence.lease_lost(ctx.epoch)  # a failure decided without the lease is withheld too
        await self._reply_error(msg, error, ctx.epoch)
        stats.record(monotonic() - received, error.message)

    def _max_payload(self) -> int:
        return self._pool.max_payload if self._pool else 1024 * 1024

    async def _reply_error(self, msg: Msg, error: AegisError, epoch: int = 0) -> None:
        """An error reply; ``epoch`` is the call's admission epoch (0: not an exclusive call)."""
        if not msg.reply or self._pool is None:
            return
        headers = {wire.ERROR_HEADER: error.message[:1024], wire.ERROR_CODE_HEADER: str(error.code)}
        if self._reply_headers:
            headers.update(self._reply_headers)
        if isinstance(error, NotActive | LeaseLost):
            headers[wire.EPOCH_HEADER] = str(error.epoch)
        elif epoch:
            headers[wire.EPOCH_HEADER] = str(epoch)
        if isinstance(error, LeaseLost):
            headers[wire.KNOWN_EPOCH_HEADER] = str(error.known_epoch)
        try:
            await self._pool.primary.publish(msg.reply, b"", headers=headers)
        except Exception:  # the caller's connection is gone; it will time out on its side
            log.debug("error reply failed", exc_info=True)


def _error_reply(rh: dict[str, str]) -> AegisError:
    """The error an error reply's headers carry."""
    return error_from_wire(
        int(rh[wire.ERROR_CODE_HEADER]),
        rh.get(wire.ERROR_HEADER, ""),
        int(rh.get(wire.EPOCH_HEADER, 0) or 0),
        int(rh.get(wire.KNOWN_EPOCH_HEADER, 0) or 0),
    )


def _brief(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(p) for p in err["loc"]) or "(body)"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


class RpcClient:
    """Calls services over a :class:`ConnectionPool`.

    ``call`` raises :class:`RpcTimeout` at the deadline, :class:`ServiceUnavailable` when nobody listens,
    :class:`PayloadTooLarge` before sending an oversized request, and the handler's error otherwise.
    """

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool
        self._subjects: dict[tuple[str, str, str | None], str] = {}

    async def call(
        self,
        service: str,
        method: str,
        payload: Any = None,
        *,
        timeout: float | None = None,
        response_model: type[T] | Any = None,
        instance: str | None = None,
        call_id: str | None = None,
        headers: dict[str, str] | None = None,
        retry_no_responders: bool = True,
    ) -> Any:
        """Call ``service.method`` and return its reply decoded into ``response_model`` (see :meth:`request`)."""
        # request()'s steps spelt out here rather than awaited: one coroutine less per call on the hot path.
        subject, data, hdrs, timeout = self._prepare(
            service, method, payload, timeout, instance, call_id, headers
        )
        try:
            msg = await self.pool.next().request(subject, data, timeout=timeout, headers=hdrs)
        except Exception as exc:
            msg = await self._failed(exc, subject, data, timeout, hdrs, service, method, retry_no_responders)
        rh = msg.headers
        if rh and wire.ERROR_CODE_HEADER in rh:
            raise _error_reply(rh)
        return decoder(response_model)(msg.data)

    async def request(
        self,
        service: str,
        method: str,
        payload: Any = None,
        *,
        timeout: float | None = None,
        instance: str | None = None,
        call_id: str | None = None,
        headers: dict[str, str] | None = None,
        retry_no_responders: bool = True,
        nc: NatsClient | None = None,
    ) -> Msg:
        """Call ``service.method`` and return the raw reply message (headers included, e.g. its epoch).

        ``timeout`` defaults to the configured per-method timeout; inside a handler it is capped by the
        handler's own remaining time. ``instance`` sends to one instance directly. With
        ``retry_no_responders=False`` a call nobody received raises :class:`NoResponders` at once (discovery
        then tries another instance) instead of retrying for ``unavailable_retry_s``. ``nc``: send through this
        connection of the pool (default: the pool's connections in turn).
        """
        subject, data, hdrs, timeout = self._prepare(
            service, method, payload, timeout, instance, call_id, headers
        )
        try:
            msg = await (nc or self.pool.next()).request(subject, data, timeout=timeout, headers=hdrs)
        except Exception as exc:
            msg = await self._failed(exc, subject, data, timeout, hdrs, service, method, retry_no_responders)
        rh = msg.headers
        if rh and wire.ERROR_CODE_HEADER in rh:
            raise _error_reply(rh)
        return msg

    def _prepare(
        self,
        service: str,
        method: str,
        payload: Any,
        timeout: float | None,
        instance: str | None,
        call_id: str | None,
        headers: dict[str, str] | None,
    ) -> tuple[str, bytes, dict[str, str], float]:
        """Subject, payload bytes, headers and timeout of a call (raises before anything is sent)."""
        timeout = effective_timeout(self.pool, service, method, timeout)
        data = encode(payload)
        if len(data) > self.pool.max_payload:
            raise PayloadTooLarge(
                f"request to {service}.{method} is {len(data)} bytes; limit is {self.pool.max_payload}"
            )
        subject = self._subjects.get((service, method, instance)) or self._subject(service, method, instance)
        hdrs = {wire.TIMEOUT_HEADER: str(int(timeout * 1000) or 1)}
        if call_id is not None:
            hdrs[wire.CALL_ID_HEADER] = call_id
        if headers:
            hdrs.update(headers)
        return subject, data, hdrs, timeout

    async def _failed(
        self,
        exc: Exception,
        subject: str,
        data: bytes,
        timeout: float,
        hdrs: dict[str, str],
        service: str,
        method: str,
        retry_no_responders: bool,
    ) -> Msg:
        """A request raised ``exc``: retry it if nobody received it (and retrying is allowed), else raise the
        SDK's error for it."""
        if not isinstance(exc, NoRespondersError):
            raise request_error(exc, f"{service}.{method}", timeout) from None
        if not retry_no_responders:
            raise NoResponders(f"no instance of {service}.{method} is listening on {subject}") from None
        return await self._retry_no_responders(subject, data, timeout, hdrs, f"{service}.{method}")

    async def _retry_no_responders(
        self, subject: str, data: bytes, timeout: float, hdrs: dict[str, str], what: str
    ) -> Msg:
        """Retry a request nobody received, for up to ``unavailable_retry_s`` within the deadline.

        No responders means no instance got the request, so a retry is safe even for a handler that
        is not idempotent. It covers an instance that is restarting and a subscription that the other
        nodes of the cluster have not learnt yet.
        """
        loop = asyncio.get_running_loop()
        start = loop.time()
        give_up = start + min(timeout, self.pool.settings.unavailable_retry_s)
        delay = 0.005
        while True:
            now = loop.time()
            if now + delay >= give_up:
                raise NoResponders(f"no instance of {what} is listening")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)
            left = timeout - (loop.time() - start)
            hdrs[wire.TIMEOUT_HEADER] = str(int(left * 1000) or 1)
            try:
                return await self.pool.next().request(subject, data, timeout=left, headers=hdrs)
            except NoRespondersError:
                continue
            except Exception as exc:
                raise request_error(exc, what, timeout) from None

    def _subject(self, service: str, method: str, instance: str | None) -> str:
        wire.check_token("service name", service)
        wire.check_token("method name", method)
        if instance is None:
            subject = wire.rpc_subject(service, method)
        else:
            subject = wire.instance_rpc_subject(service, wire.check_token("instance id", instance), method)
        if len(self._subjects) < 10_000:  # bounded: callers may vary names without limit
            self._subjects[(service, method, instance)] = subject
        return subject
