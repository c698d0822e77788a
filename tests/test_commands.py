"""Commands on the real 3-node cluster: progress and results, queueing, typed errors, deadlines, once-only."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from pydantic import BaseModel
from waiting import wait_until_async

from aegis.sdk import wire
from aegis.sdk.commands import (
    CommandClient,
    CommandContext,
    CommandWorker,
    Progress,
    ensure_command_stream,
    record_key,
)
from aegis.sdk.connection import ConnectionPool
from aegis.sdk.errors import (
    BadRequest,
    CommandFailed,
    DeadlineExceeded,
    NotActive,
    PayloadTooLarge,
    RemoteError,
    RpcTimeout,
)

MAX_PAYLOAD = 64 * 1024


class Rebalance(BaseModel):
    books: list[str]


class Report(BaseModel):
    moved: int
    worker: str = ""


def _svc() -> str:
    return f"risk-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def pool_settings() -> dict[str, Any]:
    """The pools of this module (conftest's ``pool`` and ``connect_pool``) refuse payloads above MAX_PAYLOAD,
    so that the limits are tested on a small figure."""
    return {"max_payload_bytes": MAX_PAYLOAD}


@pytest.fixture
async def pool(pool: ConnectionPool) -> ConnectionPool:
    """conftest's pool, with the command stream in place."""
    await ensure_command_stream(pool)
    return pool


@pytest.fixture
async def client(pool: ConnectionPool) -> CommandClient:
    return CommandClient(pool)


@pytest.fixture
async def worker(pool: ConnectionPool) -> AsyncIterator[CommandWorker]:
    w = CommandWorker(pool, instance_id="w1")
    yield w
    await w.close()


async def _waiting(pool: ConnectionPool, service: str) -> int:
    """Commands of ``service`` stored in the work-queue stream."""
    info = await pool.js.stream_info(wire.COMMAND_STREAM, subjects_filter=f"aegis.cmd.{service}.>")
    return sum((info.state.subjects or {}).values())


async def _assert_drained(pool: ConnectionPool, service: str, timeout: float = 3.0) -> None:
    """The work queue holds no command of ``service`` (removal after the ack is asynchronous in a
    cluster: the consumer leader proposes the delete to the stream's replicas, so allow a moment)."""

    async def drained() -> bool:
        return await _waiting(pool, service) == 0

    await wait_until_async(drained, timeout, f"the work queue to hold no command of {service}", step=0.02)


async def rebalance(req: Rebalance, ctx: CommandContext) -> Report:
    for i, book in enumerate(req.books):
        await asyncio.sleep(0.01)
        await ctx.progress((i + 1) / len(req.books), f"book {book} done")
    return Report(moved=len(req.books), worker=ctx.instance_id)


async def test_command_reports_progress_then_result(
    worker: CommandWorker, client: CommandClient, pool: ConnectionPool
) -> None:
    service = _svc()
    await worker.handle(service, "rebalance", rebalance)
    call = await client.send(service, "rebalance", Rebalance(books=["eu", "us", "asia"]), timeout=5)
    assert call.ack.stream == wire.COMMAND_STREAM
    updates = [p async for p in call.progress()]
    assert updates == [
        Progress(1 / 3, "book eu done"),
        Progress(2 / 3, "book us done"),
        Progress(1.0, "book asia done"),
    ]
    assert [p async for p in call.progress()] == []  # a finished call's progress ends at once
    assert call.done
    assert await call.result(Report) == Report(moved=3, worker="w1")
    stats = worker.metrics.snapshot().methods[f"{service}.rebalance"]
    assert stats.kind == "command" and stats.requests == 1 and stats.errors == 0
    await _assert_drained(pool, service)


async def test_command_sent_before_any_worker_runs_is_processed_when_one_starts(
    worker: CommandWorker, client: CommandClient, pool: ConnectionPool
) -> None:
    service = _svc()
    call = await client.send(service, "rebalance", {"books": ["eu", "us"]}, timeout=10)

    async def stored() -> bool:
        return await _waiting(pool, service) == 1

    await wait_until_async(stored, 5, "the command to wait in the stream")
    assert not call.done
    await worker.handle(service, "rebalance", rebalance)
    updates = [p.fraction async for p in call.progress()]
    assert updates == [0.5, 1.0]
    assert await call.result() == {"moved": 2, "worker": "w1"}
    await _assert_drained(pool, service)


async def test_handler_errors_reach_the_caller_typed(worker: CommandWorker, client: CommandClient) -> None:
    service = _svc()

    async def explode(req: Rebalance) -> None:  # a handler may skip the context
        raise RuntimeError("book eu is locked")

    async def not_active(req: dict, ctx: CommandContext) -> None:
        raise NotActive(epoch=7)

    await worker.handle(service, "explode", explode)
    await worker.handle(service, "standby", not_active)

    with pytest.raises(CommandFailed) as info:
        await (await client.send(service, "explode", Rebalance(books=[]), timeout=5)).result()
    assert info.value.code == 500 and info.value.message == "RuntimeError: book eu is locked"
    assert isinstance(info.value, RemoteError)

    with pytest.raises(BadRequest, match="books"):  # the payload does not validate
        await (await client.send(service, "explode", {"books": 3}, timeout=5)).result()

    with pytest.raises(NotActive):  # an SDK error keeps its code and type
        await client.call(service, "standby", {}, timeout=5)

    stats = worker.metrics.snapshot().methods[f"{service}.explode"]
    assert stats.requests == 2 and stats.errors == 2


async def test_command_without_a_worker_times_out_at_its_deadline(
    client: CommandClient, pool: ConnectionPool
) -> None:
    service = _svc()
    call = await client.send(service, "rebalance", {"books": []}, timeout=0.5)
    start = time.monotonic()
    assert [p async for p in call.progress()] == []  # ends at the deadline
    with pytest.raises(RpcTimeout, match="no result within 0.500s"):
        await call.result()
    # Ended by the client's deadline timer, not by anything later: the command's own TTL (budget + 1 s)
    # would remove it only at 1.5 s. (How close to 0.5 s it ends is scheduling, not a property.)
    assert time.monotonic() - start < 1.5
    # Nobody took it: its TTL (budget + 1 s) removes it from the work queue.
    assert await _waiting(pool, service) == 1
    await _assert_drained(pool, service, timeout=5)


async def test_worker_does_not_run_a_command_whose_deadline_passed(
    worker: CommandWorker, pool: ConnectionPool
) -> None:
    service = _svc()
    ran: list[str] = []

    async def handler(req: dict) -> str:
        ran.append("ran")
        return "done"

    # A caller that keeps listening past its budget (e.g. a monitor) hears DeadlineExceeded.
    nc = pool.primary
    inbox = nc.new_inbox()
    replies: asyncio.Queue = asyncio.Queue()

    async def on_reply(msg) -> None:  # noqa: ANN001
        replies.put_nowait(msg)

    await nc.subscribe(inbox, cb=on_reply)
    budget_ms = 200
    headers = {
        wire.CALL_ID_HEADER: "late-1",
        wire.TIMEOUT_HEADER: str(budget_ms),
        wire.REPLY_TO_HEADER: inbox,
        wire.MSG_ID_HEADER: uuid.uuid4().hex,
    }
    await pool.js.publish(wire.command_subject(service, "cmd"), b"{}", headers=headers)
    # Not a wait for an event: the budget has to run out before any worker exists. The worker counts it from
    # the message's stream timestamp; twice the budget leaves the publish's own time and clock steps no say.
    await asyncio.sleep(2 * budget_ms / 1000)
    await worker.handle(service, "cmd", handler)
    msg = await asyncio.wait_for(replies.get(), 5)
    assert msg.headers[wire.ERROR_CODE_HEADER] == str(DeadlineExceeded.code)
    assert msg.headers[wire.CALL_ID_HEADER] == "late-1"
    assert ran == []
    await _assert_drained(pool, service)  # acknowledged: gone from the work queue


async def test_work_queue_is_empty_after_commands_complete(
    worker: CommandWorker, client: CommandClient, pool: ConnectionPool
) -> None:
    service = _svc()
    await worker.handle(service, "rebalance", rebalance, concurrency=4)
    calls = [await client.send(service, "rebalance", {"books": ["a", "b"]}, timeout=10) for _ in range(8)]
    results = await asyncio.gather(*(c.result(Report) for c in calls))
    assert all(r.moved == 2 for r in results)
    await _assert_drained(pool, service)
    info = await pool.js.consumer_info(
        wire.COMMAND_STREAM, worker._handlers[(service, "rebalance")].loop.name
    )  # type: ignore[union-attr]
    assert info.num_pending == 0 and info.num_ack_pending == 0


async def test_two_workers_process_each_command_exactly_once(
    worker: CommandWorker,
    client: CommandClient,
    connect_pool: Callable[..., Awaitable[ConnectionPool]],
    pool: ConnectionPool,
) -> None:
    service = _svc()
    runs: Counter[str] = Counter()
    by_worker: Counter[str] = Counter()

    async def work(req: dict, ctx: CommandContext) -> str:
        runs[ctx.call_id] += 1
        by_worker[ctx.instance_id] += 1
        await asyncio.sleep(0.01)
        return ctx.instance_id

    other_pool = await connect_pool()
    other = CommandWorker(other_pool, instance_id="w2")
    try:
        await worker.handle(service, "work", work)
        await other.handle(service, "work", work)
        calls = [await client.send(service, "work", {"n": i}, timeout=10) for i in range(30)]
        answers = await asyncio.gather(*(c.result() for c in calls))
        # No second run can follow: a run starts from a delivery before its ack, and once the work queue is
        # drained every command was acknowledged and removed, so the server has nothing left to deliver.
        await _assert_drained(pool, service)
        assert sorted(runs) == sorted(c.call_id for c in calls)
        assert set(runs.values()) == {1}
        assert by_worker["w1"] > 0 and by_worker["w2"] > 0, by_worker
        assert Counter(answers) == by_worker
    finally:
        await other.close()
        await other_pool.close()


async def test_resent_call_id_gets_the_same_result_without_a_second_run(
    worker: CommandWorker, client: CommandClient
) -> None:
    service = _svc()
    runs: list[int] = []

    async def once(req: dict) -> dict:
        runs.append(1)
        return {"run": len(runs)}

    await worker.handle(service, "once", once)
    first = await (await client.send(service, "once", {}, call_id="order-77", timeout=5)).result()
    again = await (await client.send(service, "once", {}, call_id="order-77", timeout=5)).result()
    assert first == again == {"run": 1} and runs == [1]


async def test_command_limits_and_names_are_checked(worker: CommandWorker, client: CommandClient) -> None:
    service = _svc()
    with pytest.raises(PayloadTooLarge):
        await client.send(service, "rebalance", b"x" * (MAX_PAYLOAD + 1), timeout=1)
    with pytest.raises(ValueError, match="invalid command name"):
        await client.send(service, "re.balance", {}, timeout=1)
    with pytest.raises(ValueError, match="timeout"):
        await client.send(service, "rebalance", {}, timeout=0)

    async def big(req: bytes) -> bytes:
        return b"y" * (MAX_PAYLOAD + 1)

    await worker.handle(service, "big", big)
    with pytest.raises(ValueError, match="already has a handler"):
        await worker.handle(service, "big", big)
    with pytest.raises(TypeError):
        await worker.handle(service, "sync", lambda req: None)
    with pytest.raises(PayloadTooLarge):  # an oversized result becomes a typed error for the caller
        await client.call(service, "big", b"raw", timeout=5)


async def test_long_command_is_kept_alive_and_not_redelivered(
    worker: CommandWorker, client: CommandClient
) -> None:
    service = _svc()
    runs: list[int] = []

    async def slow(req: dict, ctx: CommandContext) -> int:
        runs.append(ctx.delivered)
        await asyncio.sleep(1.2)  # more than twice ack_wait, without reporting progress
        assert 0 < ctx.remaining() < 10
        return len(runs)

    await worker.handle(service, "slow", slow, ack_wait=0.5, concurrency=2)
    assert await client.call(service, "slow", {}, timeout=10) == 1
    assert runs == [1]


async def test_command_of_a_dead_worker_is_redelivered_to_another(
    client: CommandClient, connect_pool: Callable[..., Awaitable[ConnectionPool]], pool: ConnectionPool
) -> None:
    service = _svc()
    started = asyncio.Event()
    seen: list[tuple[str, int]] = []
    doomed_runs = 0

    async def work(req: dict, ctx: CommandContext) -> str:
        nonlocal doomed_runs
        seen.append((ctx.instance_id, ctx.delivered))
        if ctx.instance_id == "doomed":
            doomed_runs += 1
            if doomed_runs == 2:  # both commands are running on the doomed worker
                started.set()
            await asyncio.sleep(3600)
        return ctx.instance_id

    doomed_pool = await connect_pool()
    doomed = CommandWorker(doomed_pool, instance_id="doomed")
    survivor = CommandWorker(pool, instance_id="survivor")
    try:
        await doomed.handle(service, "work", work, ack_wait=0.5)
        await doomed.handle(service, "exhaust", work, ack_wait=0.5, max_deliver=1)
        first = await client.send(service, "work", {}, timeout=10)
        second = await client.send(service, "exhaust", {}, timeout=10)
        await asyncio.wait_for(started.wait(), 5)
        await doomed_pool.close()  # dies mid-run: no ack, no result
        await survivor.handle(service, "work", work, ack_wait=0.5)
        await survivor.handle(service, "exhaust", work, ack_wait=0.5, max_deliver=1)
        assert await first.result() == "survivor"
        assert ("survivor", 2) in seen
        with pytest.raises(CommandFailed, match="not completed after 1 deliveries"):
            await second.result()
        await _assert_drained(pool, service)
    finally:
        await doomed.close(grace=0.1)
        await survivor.close()


async def test_rejected_command_send_raises_a_typed_error(client: CommandClient) -> None:
    service = _svc()
    with pytest.raises(RemoteError) as info:
        await client.send(service, "cmd", {}, timeout=2, headers={"Nats-Expected-Stream": "NOT_THIS_ONE"})
    assert info.value.code == 400


async def test_closing_a_worker_mid_command_hands_it_to_another_at_once(
    client: CommandClient, connect_pool: Callable[..., Awaitable[ConnectionPool]], pool: ConnectionPool
) -> None:
    service = _svc()
    started = asyncio.Event()

    async def work(req: dict, ctx: CommandContext) -> str:
        if ctx.instance_id == "leaving":
            started.set()
            await asyncio.sleep(3600)
        return f"{ctx.instance_id}:{ctx.delivered}"

    leaving_pool = await connect_pool()
    leaving = CommandWorker(leaving_pool, instance_id="leaving")
    staying = CommandWorker(pool, instance_id="staying")
    try:
        await leaving.handle(service, "work", work)  # ack_wait 30 s
        call = await client.send(service, "work", {}, timeout=10)
        await asyncio.wait_for(started.wait(), 5)
        await staying.handle(service, "work", work)
        start = time.monotonic()
        await leaving.close(grace=0.1)
        # The call's budget (10 s) is a third of ack_wait (30 s): a result at all means the closing worker
        # handed the command back at once, not that the server redelivered it after ack_wait.
        assert await call.result() == "staying:2"
        print(f"handed back and finished by the other worker {time.monotonic() - start:.2f}s after close")
    finally:
        await staying.close()
        await leaving_pool.close()


async def test_a_call_id_done_on_one_worker_is_answered_from_its_record_by_another(
    client: CommandClient, connect_pool: Callable[..., Awaitable[ConnectionPool]], pool: ConnectionPool
) -> None:
    service = _svc()
    runs: list[str] = []

    async def once(req: dict, ctx: CommandContext) -> dict:
        runs.append(ctx.instance_id)
        if req.get("fail"):
            raise RuntimeError("book locked")
        return {"by": ctx.instance_id}

    first_pool = await connect_pool()
    first = CommandWorker(first_pool, instance_id="first")
    second = CommandWorker(pool, instance_id="second")
    try:
        await first.handle(service, "once", once)
        done = await (await client.send(service, "once", {}, call_id="order-9", timeout=15)).result()
        with pytest.raises(CommandFailed, match="book locked"):
            await (await client.send(service, "once", {"fail": 1}, call_id="order-10", timeout=15)).result()
        await first.close()
        await first_pool.close()
        # A worker that never saw these call ids answers re-sends from their records, without running them.
        await second.handle(service, "once", once)
        again = await (await client.send(service, "once", {}, call_id="order-9", timeout=15)).result()
        with pytest.raises(CommandFailed, match="book locked"):
            await (await client.send(service, "once", {"fail": 1}, call_id="order-10", timeout=15)).result()
        assert done == again == {"by": "first"} and runs == ["first", "first"]
    finally:
        await second.close()
        await first.close()
        await first_pool.close()


async def test_a_run_whose_claim_was_taken_over_is_discarded_and_the_next_claim_has_a_higher_token(
    worker: CommandWorker, client: CommandClient, pool: ConnectionPool
) -> None:
    service = _svc()
    runs: list[tuple[int, int, bool]] = []
    first: list[CommandContext] = []
    started = asyncio.Event()
    gate = asyncio.Event()

    async def work(req: dict, ctx: CommandContext) -> dict:
        if not runs:
            first.append(ctx)
            started.set()
            await gate.wait()
        runs.append((ctx.delivered, ctx.token, ctx.superseded))
        return {"token": ctx.token}

    await worker.handle(service, "work", work, ack_wait=1.0)
    call = await client.send(service, "work", {}, call_id="fence-1", timeout=20)
    await asyncio.wait_for(started.wait(), 5)
    # Another worker takes the call id over (as after this one was paused past its claim): its claim lives 3 s.
    key = record_key(service, "work", "fence-1")
    await pool.js.publish(
        f"$KV.{wire.COMMANDS_BUCKET}.{key}",
        b"",
        headers={
            wire.COMMAND_STATE_HEADER: "claimed",
            wire.COMMAND_CLAIM_HEADER: "intruder",
            wire.INSTANCE_HEADER: "intruder",
            wire.MSG_TTL_HEADER: "3",
        },
    )
    # The worker notices at its next renewal (every ack_wait / 3); it must do so while the intruder's claim
    # lives (3 s), or it would find the record expired and take it back.
    await wait_until_async(lambda: first[0].superseded, 2.0, "the running worker to see its claim taken over")
    gate.set()
    result = await call.result()
    # The first run's result was discarded (its completion lost the compare-and-set); once the intruder's
    # claim expired, the command ran again under a new claim with a higher fencing token, and that completed.
    assert len(runs) == 2, runs
    (d1, t1, lost1), (d2, t2, lost2) = runs
    assert lost1 and not lost2
    assert d1 == 1 and d2 == 2 and 0 < t1 < t2
    assert result == {"token": t2}


def test_record_keys_are_kv_keys_whatever_the_call_id() -> None:
    assert record_key("risk", "rebalance", "order-77") == "risk.rebalance.order-77"
    odd = record_key("risk", "rebalance", "desk eu/order 77.1")
    assert odd.startswith("risk.rebalance.sha256-") and " " not in odd and "/" not in odd
    assert record_key("risk", "rebalance", "x" * 200) != record_key("risk", "rebalance", "x" * 201)
