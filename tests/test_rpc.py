"""RPC on the real 3-node cluster: typed calls, typed errors on the wire, deadlines, payload limits."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
from pydantic import BaseModel
from waiting import wait_until_async

from aegis.sdk import wire
from aegis.sdk.codec import decode, encode
from aegis.sdk.connection import ConnectionPool
from aegis.sdk.errors import (
    BadRequest,
    DeadlineExceeded,
    NotActive,
    PayloadTooLarge,
    RemoteError,
    RpcTimeout,
    ServiceUnavailable,
    UnknownMethod,
)
from aegis.sdk.rpc import CallContext, RpcClient, Service, current_call


class AddRequest(BaseModel):
    a: int
    b: int


class AddReply(BaseModel):
    total: int


def _name() -> str:
    return f"svc-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def pool_settings() -> dict[str, Any]:
    """The pools of this module refuse payloads above 64 KiB, so that the limits are tested on a small figure."""
    return {"max_payload_bytes": 64 * 1024}


@pytest.fixture
async def client(pool: ConnectionPool) -> RpcClient:
    return RpcClient(pool)


async def _started(pool: ConnectionPool, svc: Service) -> Service:
    await svc.start(pool)
    return svc


async def test_typed_call_round_trip(pool: ConnectionPool, client: RpcClient) -> None:
    svc = Service(_name())

    @svc.rpc("add")
    async def add(req: AddRequest, ctx: CallContext) -> AddReply:
        return AddReply(total=req.a + req.b)

    @svc.rpc("raw")
    async def raw(data: bytes) -> bytes:
        return data[::-1]

    @svc.rpc("untyped")
    async def untyped(data):  # noqa: ANN001, ANN202 - plain JSON in and out
        return {"keys": sorted(data)}

    @svc.rpc("numbers")
    async def numbers(n: int) -> list[int]:
        return list(range(n))

    await _started(pool, svc)
    try:
        reply = await client.call(svc.name, "add", AddRequest(a=2, b=40), response_model=AddReply)
        assert reply == AddReply(total=42)
        assert await client.call(svc.name, "add", {"a": 1, "b": 1}) == {"total": 2}
        assert await client.call(svc.name, "raw", b"abc", response_model=bytes) == b"cba"
        assert await client.call(svc.name, "untyped", {"z": 1, "a": 2}) == {"keys": ["a", "z"]}
        assert await client.call(svc.name, "numbers", 3, response_model=list[int]) == [0, 1, 2]
    finally:
        await svc.stop()


async def test_handler_exception_becomes_error_reply_with_code(
    pool: ConnectionPool, client: RpcClient
) -> None:
    svc = Service(_name())

    @svc.rpc("boom")
    async def boom(req: AddRequest) -> AddReply:
        raise RuntimeError("disk on fire")

    @svc.rpc("reject")
    async def reject(req: AddRequest) -> AddReply:
        raise RemoteError("limit breached", code=422)

    @svc.rpc("standby")
    async def standby(req: AddRequest) -> AddReply:
        raise NotActive(epoch=7)

    await _started(pool, svc)
    try:
        with pytest.raises(RemoteError) as err:
            await client.call(svc.name, "boom", {"a": 1, "b": 2}, timeout=2)
        assert err.value.code == 500 and "disk on fire" in err.value.message
        with pytest.raises(RemoteError) as err:
            await client.call(svc.name, "reject", {"a": 1, "b": 2}, timeout=2)
        assert err.value.code == 422 and err.value.message == "limit breached"
        with pytest.raises(NotActive) as na:
            await client.call(svc.name, "standby", {"a": 1, "b": 2}, timeout=2)
        assert na.value.code == 421
        stats = svc.metrics.snapshot().methods
        assert stats["boom"].errors == 1 and "disk on fire" in stats["boom"].last_error
    finally:
        await svc.stop()


async def test_errors_travel_as_micro_headers(pool: ConnectionPool) -> None:
    svc = Service(_name())

    @svc.rpc("boom")
    async def boom(req: AddRequest) -> AddReply:
        raise RemoteError("nope", code=409)

    await _started(pool, svc)
    try:
        msg = await pool.primary.request(wire.rpc_subject(svc.name, "boom"), b'{"a":1,"b":2}', timeout=2)
        assert msg.headers[wire.ERROR_HEADER] == "nope"
        assert msg.headers[wire.ERROR_CODE_HEADER] == "409"
    finally:
        await svc.stop()


async def test_invalid_request_and_unknown_method(pool: ConnectionPool, client: RpcClient) -> None:
    svc = Service(_name())

    @svc.rpc("add")
    async def add(req: AddRequest) -> AddReply:
        return AddReply(total=req.a + req.b)

    await _started(pool, svc)
    try:
        with pytest.raises(BadRequest, match=r"a: Input should be a valid integer"):
            await client.call(svc.name, "add", {"a": "x", "b": 1}, timeout=2)
        with pytest.raises(BadRequest):
            await client.call(svc.name, "add", b"not json", timeout=2)
        with pytest.raises(UnknownMethod, match="no method 'mul'"):
            await client.call(svc.name, "mul", {"a": 1, "b": 1}, timeout=2)
    finally:
        await svc.stop()


async def test_no_responders_is_service_unavailable_after_a_short_retry(client: RpcClient) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(ServiceUnavailable, match="no instance"):
        await client.call(_name(), "add", {"a": 1}, timeout=2)
    took = loop.time() - start
    print(f"\nno responders: ServiceUnavailable after {took:.3f} s")  # benchmark output
    # Retried for unavailable_retry_s (0.5 s), then given up: before the call's 2 s timeout, which is what
    # a call that kept retrying would reach (load only makes `took` longer, towards that bound).
    assert 0.3 < took < 2.0


async def test_call_waits_for_an_instance_that_starts_within_the_retry_window(
    pool: ConnectionPool, client: RpcClient
) -> None:
    svc = Service(_name())

    @svc.rpc("late")
    async def late(req: None) -> str:
        return "here"

    call = asyncio.create_task(client.call(svc.name, "late", None, timeout=2))
    # Not a wait for an event: the instance starts a moment after the call, well inside the window in which a
    # call nobody received is retried (unavailable_retry_s).
    await asyncio.sleep(pool.settings.unavailable_retry_s / 5)
    await svc.start(pool)
    try:
        assert await call == "here"
    finally:
        await svc.stop()


async def test_timeout_raises_rpc_timeout_at_the_deadline(pool: ConnectionPool, client: RpcClient) -> None:
    svc = Service(_name())
    release = asyncio.Event()

    @svc.rpc("slow")
    async def slow(req: AddRequest) -> AddReply:
        await release.wait()
        return AddReply(total=0)

    await _started(pool, svc)
    try:
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(RpcTimeout, match="did not answer within 0.300s"):
            await client.call(svc.name, "slow", {"a": 1, "b": 2}, timeout=0.3)
        elapsed = loop.time() - start
        assert elapsed >= 0.3
        assert svc.metrics.snapshot().in_flight == 1  # the handler is still running
    finally:
        release.set()
        await svc.stop()
    assert svc.metrics.snapshot().in_flight == 0


async def test_deadline_propagates_to_handler_and_nested_calls(
    pool: ConnectionPool, client: RpcClient
) -> None:
    inner, outer = Service(_name()), Service(_name())
    seen: dict[str, float] = {}

    @inner.rpc("leaf")
    async def leaf(req: AddRequest, ctx: CallContext) -> float:
        seen["leaf"] = ctx.remaining()
        return ctx.remaining()

    @outer.rpc("root")
    async def root(req: AddRequest, ctx: CallContext) -> float:
        assert current_call() is ctx
        seen["root"] = ctx.remaining()
        seen["root_at"] = time.monotonic()
        await asyncio.sleep(0.2)
        # No timeout given: the default (5 s) is capped by what is left of the caller's 1 s budget.
        return await client.call(inner.name, "leaf", req, response_model=float)

    @outer.rpc("late")
    async def late(req: AddRequest, ctx: CallContext) -> float:
        await asyncio.sleep(0.15)
        ctx.check_deadline()
        return 0.0

    await _started(pool, inner)
    await _started(pool, outer)
    try:
        called_at = time.monotonic()
        await client.call(outer.name, "root", {"a": 1, "b": 2}, timeout=1.0)
        # The handler's budget is the caller's 1 s less the time spent before the handler ran (the budget
        # travels as milliseconds left at sending, so transit is not charged): exact whatever the load.
        assert 1.0 - (seen["root_at"] - called_at) - 0.01 <= seen["root"] <= 1.0
        assert 0 < seen["leaf"] <= seen["root"] - 0.2
        with pytest.raises(RpcTimeout):
            await client.call(outer.name, "late", {"a": 1, "b": 2}, timeout=0.1)

        # The handler goes on after the caller gave up; its check_deadline() fails it once its sleep is over.
        def late_failed() -> bool:
            late = outer.metrics.snapshot().methods.get("late")
            return late is not None and late.errors > 0

        await wait_until_async(late_failed, 5, "the late handler to fail its deadline check")
        assert "deadline" in outer.metrics.snapshot().methods["late"].last_error
    finally:
        await inner.stop()
        await outer.stop()


async def test_nested_call_with_no_time_left_fails_fast(pool: ConnectionPool, client: RpcClient) -> None:
    svc = Service(_name())

    @svc.rpc("spent")
    async def spent(req: AddRequest, ctx: CallContext) -> str:
        ctx.deadline = 0.0  # as if the budget were used up
        try:
            await client.call("anything", "x", None)
        except DeadlineExceeded as exc:
            return exc.message
        return "called"

    await _started(pool, svc)
    try:
        assert "no time left" in await client.call(svc.name, "spent", {"a": 1, "b": 2}, timeout=2)
    finally:
        await svc.stop()


async def test_oversized_payloads_are_rejected(pool: ConnectionPool, client: RpcClient) -> None:
    svc = Service(_name())

    @svc.rpc("echo")
    async def echo(data: bytes) -> bytes:
        return data

    @svc.rpc("blowup")
    async def blowup(data: bytes) -> bytes:
        return b"x" * (pool.max_payload + 1)

    await _started(pool, svc)
    try:
        assert pool.max_payload == 64 * 1024
        with pytest.raises(PayloadTooLarge, match="limit is 65536"):
            await client.call(svc.name, "echo", b"x" * (pool.max_payload + 1), timeout=2)
        assert svc.metrics.snapshot().methods["echo"].requests == 0  # never sent
        assert (
            await client.call(svc.name, "echo", b"x" * 1000, response_model=bytes, timeout=2) == b"x" * 1000
        )
        with pytest.raises(PayloadTooLarge, match="reply of 65537 bytes"):
            await client.call(svc.name, "blowup", b"", timeout=2)
    finally:
        await svc.stop()


async def test_direct_call_reaches_the_named_instance_and_queue_spreads(
    pool: ConnectionPool, client: RpcClient
) -> None:
    name = _name()
    instances = [Service(name, instance_id=f"i{n}") for n in range(2)]
    for svc in instances:

        @svc.rpc("who")
        async def who(req: None, ctx: CallContext) -> str:
            return ctx.instance_id

        await svc.start(pool)
    try:
        for _ in range(5):
            assert await client.call(name, "who", None, instance="i1", timeout=2) == "i1"
        seen = {await client.call(name, "who", None, timeout=2) for _ in range(40)}
        assert seen == {"i0", "i1"}
    finally:
        for svc in instances:
            await svc.stop()


async def test_concurrent_calls_are_served_concurrently(pool: ConnectionPool, client: RpcClient) -> None:
    svc = Service(_name())
    gate = asyncio.Event()
    started = 0

    @svc.rpc("wait")
    async def wait(req: None) -> int:
        nonlocal started
        started += 1
        if started == 10:
            gate.set()
        await asyncio.wait_for(gate.wait(), 5)
        return started

    await _started(pool, svc)
    try:
        results = await asyncio.gather(*(client.call(svc.name, "wait", None, timeout=6) for _ in range(10)))
        assert results == [10] * 10  # all ten were inside the handler at once
        snap = svc.metrics.snapshot()
        assert snap.methods["wait"].requests == 10 and snap.methods["wait"].p99_ms > 0
        assert snap.service == svc.name and snap.queue_depth == 0
    finally:
        await svc.stop()


async def test_max_concurrency_bounds_handlers_and_the_rest_wait_in_the_queue(
    pool: ConnectionPool, client: RpcClient
) -> None:
    svc = Service(_name(), max_concurrency=2)
    inside = 0
    peak = 0
    release = asyncio.Event()

    @svc.rpc("hold")
    async def hold(req: None) -> int:
        nonlocal inside, peak
        inside += 1
        peak = max(peak, inside)
        await release.wait()
        inside -= 1
        return peak

    await _started(pool, svc)
    try:
        calls = [asyncio.create_task(client.call(svc.name, "hold", None, timeout=5)) for _ in range(5)]
        await wait_until_async(lambda: svc.metrics.snapshot().queue_depth == 3, 5, "three calls in the queue")
        snap = svc.metrics.snapshot()
        assert (snap.in_flight, snap.queue_depth) == (2, 3)
        release.set()
        assert max(await asyncio.gather(*calls)) == 2
    finally:
        await svc.stop()
    with pytest.raises(ValueError, match="max_concurrency"):
        Service(_name(), max_concurrency=0)


async def test_stop_lets_calls_in_flight_finish(pool: ConnectionPool, client: RpcClient) -> None:
    svc = Service(_name())

    @svc.rpc("slow")
    async def slow(req: None) -> str:
        await asyncio.sleep(0.3)
        return "done"

    await _started(pool, svc)
    call = asyncio.create_task(client.call(svc.name, "slow", None, timeout=3))
    await wait_until_async(lambda: svc.metrics.snapshot().in_flight == 1, 2, "the call to be in the handler")
    await svc.stop()
    assert await call == "done"
    assert not svc.running
    with pytest.raises(ServiceUnavailable):
        await client.call(svc.name, "slow", None, timeout=1)


def test_registration_errors() -> None:
    svc = Service(_name())
    with pytest.raises(ValueError, match="invalid method name"):
        svc.rpc("bad.name")
    with pytest.raises(ValueError, match="invalid service name"):
        Service("has space")
    with pytest.raises(TypeError, match="async"):
        svc.rpc("sync")(lambda req: req)

    @svc.rpc("once")
    async def once(req: None) -> None:
        return None

    with pytest.raises(ValueError, match="already has a handler"):
        svc.rpc("once")(once)


def test_encode_decode() -> None:
    assert encode(None) == b"" and decode(b"") is None
    assert decode(encode({"a": [1, 2]})) == {"a": [1, 2]}
    assert decode(encode(AddReply(total=1)), AddReply) == AddReply(total=1)
    assert decode(b"[1,2]", list[int]) == [1, 2]
    assert decode(b"abc", bytes) == b"abc"


HEADER_BLOCKS = [
    b"Aegis-Timeout-Ms: 5000\r\n\r\n",
    b"Aegis-Timeout-Ms:5000\r\nAegis-Call-Id:\tabc \r\n\r\n",
    b"Bad Name: x\r\nGood: y\r\n\r\n",
    b"Tab\tName: x\r\nUnit\x1fSep: z\r\nOk: 1\r\n\r\n",
    b"NoColon\r\n: empty name\r\nK: a: b\r\n\r\n",
    b"Caf\xc3\xa9: x\r\nV: caf\xc3\xa9 \xff\r\n\r\n",
    b"Dup: 1\r\nDup: 2\r\n\r\n",
    b"",
    b"\r\n\r\n",
]


@pytest.mark.parametrize("raw", HEADER_BLOCKS)
def test_the_sdk_connection_parses_headers_exactly_as_nats_py(raw: bytes) -> None:
    from nats.aio.client import Client

    from aegis.sdk.connection import _Client

    assert _Client._parse_header_lines(raw) == Client._parse_header_lines(raw)


async def test_workers_take_calls_from_both_subscriptions_and_uncount_their_bytes(
    pool: ConnectionPool, client: RpcClient
) -> None:
    """The workers read nats-py's pending queue of both call subscriptions (shared and direct); what they take no
    longer counts as pending, or nats-py would call the instance a slow consumer once 64 MB had passed."""
    svc = Service(_name())

    @svc.rpc("echo")
    async def echo(req: bytes) -> bytes:
        return req

    await _started(pool, svc)
    try:
        for i in range(20):
            body = b"x" * 1000 + str(i).encode()
            assert await client.call(svc.name, "echo", body, response_model=bytes) == body
            assert (
                await client.call(svc.name, "echo", body, response_model=bytes, instance=svc.instance_id)
                == body
            )
        shared, direct = svc._subs[0], svc._subs[1]
        assert (shared.pending_bytes, direct.pending_bytes) == (0, 0)
        assert shared.delivered == 20 and direct.delivered == 20
        assert svc.metrics.snapshot().methods["echo"].requests == 40
    finally:
        await svc.stop()


HEADER_DICTS = [
    {"Aegis-Timeout-Ms": "5000"},
    {"Aegis-Timeout-Ms": "12", "Aegis-Call-Id": " id-1 ", " Spaced ": "v"},
    {"": "skipped", "K": "line\r\nbreak\rand\nmore"},
    {"Unicode": "café ☕", "Nats-Msg-Id": "abc"},
]


async def _hpub_bytes(client_class: type, headers: dict[str, str]) -> bytes:
    """What ``client_class`` queues for a publish with ``headers`` (no connection: the command is captured)."""
    nc = client_class()
    sent: list[bytes] = []

    async def capture(cmd: bytes, priority: bool = False) -> None:
        sent.append(cmd)

    nc._send_command = capture
    nc._flush_queue = None
    await nc._send_publish("aegis.rpc.svc.m", "_INBOX.x.y", b'{"a":1}', 7, headers)
    return b"".join(sent)


@pytest.mark.parametrize("headers", HEADER_DICTS)
async def test_the_sdk_connection_sends_the_same_header_bytes_as_nats_py(headers: dict[str, str]) -> None:
    from nats.aio.client import Client

    from aegis.sdk.connection import _Client

    ours = await _hpub_bytes(_Client, headers)
    assert ours.startswith(b"HPUB aegis.rpc.svc.m _INBOX.x.y ")
    assert ours == await _hpub_bytes(Client, headers)


async def test_a_bad_header_name_is_refused_as_nats_py_refuses_it() -> None:
    from nats.errors import BadHeaderError

    from aegis.sdk.connection import _Client

    with pytest.raises(BadHeaderError):
        await _hpub_bytes(_Client, {"Bad Name": "x"})
    with pytest.raises(BadHeaderError):
        await _hpub_bytes(_Client, {"Bad:Name": "x"})


async def test_the_inbox_takes_over_what_a_subscription_already_holds() -> None:
    """_Inbox.attach: a message nats-py delivered before the inbox took over its pending queue is not lost."""
    from types import SimpleNamespace

    from aegis.sdk.rpc import _Inbox

    early = SimpleNamespace(_sid=1, data=b"12345")
    sub = SimpleNamespace(_id=1, _pending_queue=asyncio.Queue(maxsize=10), _pending_size=5)
    sub._pending_queue.put_nowait(early)
    inbox = _Inbox()
    inbox.attach(sub)
    assert sub._pending_queue is inbox and inbox.maxsize == 10
    msg = inbox.get_nowait()
    assert msg is early
    inbox.taken(msg)
    assert sub._pending_size == 0


async def test_a_burst_wakes_one_worker_and_a_waiting_handler_hands_the_rest_on() -> None:
    """_Inbox's wake-up rule: handlers that never wait are served back to back by the one worker a burst woke; when
    that worker waits inside a handler, the others take the rest within a loop turn."""
    from aegis.sdk.rpc import _Inbox

    inbox = _Inbox()
    taken: list[tuple[int, int]] = []
    release = asyncio.Event()
    waits = False

    async def worker(n: int) -> None:
        while True:
            msg = await inbox.get()
            taken.append((n, msg))
            if waits:
                await release.wait()

    workers = [asyncio.create_task(worker(n)) for n in range(4)]
    try:
        await asyncio.sleep(0)  # all four wait in get()
        for i in range(6):
            inbox.put_nowait(i)
        assert len(inbox._getters) == 3  # the burst woke one of the four idle workers
        for _ in range(5):
            await asyncio.sleep(0)
        assert [m for _, m in taken] == list(range(6))
        assert len({n for n, _ in taken}) == 1, taken  # one worker served the whole burst

        taken.clear()
        waits = True
        for i in range(3):
            inbox.put_nowait(i)
        for _ in range(5):
            await asyncio.sleep(0)
        assert sorted(m for _, m in taken) == [0, 1, 2]
        assert len({n for n, _ in taken}) == 3, taken  # each waiting handler got its own worker
    finally:
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)


async def test_the_sdk_connection_s_requests_keep_nats_py_s_contract_and_leave_nothing_behind(
    pool: ConnectionPool,
) -> None:
    """_Client.request (a counter token, a loop timer): every reply reaches its own request, a timeout raises
    nats-py's TimeoutError, nobody listening its NoRespondersError, and no outcome (answered, timed out,
    cancelled, no responders) leaves an entry in the response map."""
    import nats.errors

    nc = pool.primary
    subject, silent = f"echo.{uuid.uuid4().hex[:8]}", f"silent.{uuid.uuid4().hex[:8]}"
    replies_to: list[str] = []

    async def echo(msg: Any) -> None:
        replies_to.append(msg.reply)
        await msg.respond(msg.data)

    subs = [await nc.subscribe(subject, cb=echo), await nc.subscribe(silent)]
    try:
        await nc.flush()
        answers = await asyncio.gather(*(nc.request(subject, b"%d" % i, timeout=5) for i in range(50)))
        assert [a.data for a in answers] == [b"%d" % i for i in range(50)]
        assert len(set(replies_to)) == 50
        with pytest.raises(nats.errors.TimeoutError):
            await nc.request(silent, b"x", timeout=0.2)
        with pytest.raises(nats.errors.NoRespondersError):
            await nc.request(f"nobody.{uuid.uuid4().hex[:8]}", b"x", timeout=5)
        waiting = asyncio.create_task(nc.request(silent, b"x", timeout=5))
        await asyncio.sleep(0.05)
        assert len(nc._resp_map) == 1
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert nc._resp_map == {}
    finally:
        for sub in subs:
            await sub.unsubscribe()


async def test_a_lone_request_is_written_at_once_and_requests_sent_together_are_batched(
    pool: ConnectionPool,
) -> None:
    """_Client.write_now: with no other request in flight, a request's bytes are on the socket when its publish
    returns (no wait for the flusher task); with others in flight they stay buffered for the flusher's one
    write."""
    nc = pool.primary
    silent = f"silent.{uuid.uuid4().hex[:8]}"
    sub = await nc.subscribe(silent)
    await nc.flush()
    first = asyncio.create_task(nc.request(silent, b"1", timeout=5))
    await asyncio.sleep(0)  # first's step ran: published and waiting; the flusher has not run yet
    assert len(nc._resp_map) == 1 and nc._pending_data_size == 0
    second = asyncio.create_task(nc.request(silent, b"2", timeout=5))
    await asyncio.sleep(0)
    assert len(nc._resp_map) == 2 and nc._pending_data_size > 0  # left for the flusher
    await asyncio.sleep(0.05)
    assert nc._pending_data_size == 0
    for task in (first, second):
        task.cancel()
    await asyncio.gather(first, second, return_exceptions=True)
    await sub.unsubscribe()
