"""The leadership log (AEGIS_LEADERSHIP) on the real 3-node cluster: what single-active instances publish when
the lease changes hands gracefully, after a crash, and when a renewal is refused; and its reader."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import pytest
from waiting import wait_until_async

from aegis.sdk import wire
from aegis.sdk.connection import ConnectionPool
from aegis.sdk.errors import BadRequest, Conflict
from aegis.sdk.kv import bucket, kv_write
from aegis.sdk.leadership import leadership_history
from aegis.sdk.registry import Registry
from aegis.sdk.rpc import CallContext
from aegis.sdk.schema import LeadershipChange
from aegis.sdk.single_active import LeaderRecord, SingleActiveService

Connect = Callable[..., Awaitable[ConnectionPool]]


def _ledger(name: str, instance_id: str) -> SingleActiveService:
    svc = SingleActiveService(name, instance_id=instance_id)

    @svc.exclusive_rpc("book")
    async def book(req: int, ctx: CallContext) -> str:
        return ctx.instance_id

    return svc


async def _changes_until(
    pool: ConnectionPool, name: str, done: Callable[[list[LeadershipChange]], bool], what: str
) -> list[LeadershipChange]:
    found: list[LeadershipChange] = []

    async def check() -> bool:
        nonlocal found
        found = await leadership_history(pool, name, "default")
        return done(found)

    await wait_until_async(check, 10, what, step=0.1)
    return found


def _kinds(changes: list[LeadershipChange]) -> set[tuple[str, str]]:
    return {(c.kind, c.instance_id) for c in changes}


async def _start_pair(connect_pool: Connect) -> tuple[str, SingleActiveService, SingleActiveService]:
    name = f"lead-{uuid.uuid4().hex[:8]}"
    a, b = _ledger(name, "a"), _ledger(name, "b")
    await a.start(await connect_pool())
    await wait_until_async(lambda: a.is_active, 5, "a to become active")
    await b.start(await connect_pool())
    await wait_until_async(lambda: b.leader == "a", 5, "b to know a as the holder")
    return name, a, b


async def test_a_graceful_stop_records_release_by_the_old_and_acquire_by_the_new(
    pool: ConnectionPool, connect_pool: Connect
) -> None:
    name, a, b = await _start_pair(connect_pool)
    try:
        e1 = a.election.epoch
        assert (await Registry(pool).get_instance(name, "b")).group == "default"
        await a.stop()
        await wait_until_async(lambda: b.is_active, 5, "b to take the released key")
        e2 = b.election.epoch
        wanted = {("acquire", "a"), ("release", "a"), ("acquire", "b")}
        changes = await _changes_until(pool, name, lambda cs: _kinds(cs) >= wanted, "the three records")
        by = {(c.kind, c.instance_id): c for c in changes}
        assert len(changes) == 3, changes  # no expire, no lose: the key was handed over
        assert by[("acquire", "a")].epoch == by[("release", "a")].epoch == e1
        new = by[("acquire", "b")]
        assert new.epoch == e2 > e1
        assert (new.previous_instance_id, new.previous_epoch) == ("a", e1)
        assert all(c.service == name and c.group == "default" and c.at > 0 for c in changes)
        assert [c.kind for c in changes if c.instance_id == "a"] == ["acquire", "release"]
    finally:
        await b.stop()
        await a.stop()


async def test_a_crashed_active_is_named_by_its_successors_expire(
    pool: ConnectionPool, connect_pool: Connect
) -> None:
    name, a, b = await _start_pair(connect_pool)
    try:
        e1 = a.election.epoch
        assert a._pool is not None
        await a._pool.close()  # a "dies": no release, its connections are gone
        await wait_until_async(lambda: b.is_active, 10, "b to take over the unrenewed key")
        e2 = b.election.epoch
        wanted = {("acquire", "a"), ("expire", "b"), ("acquire", "b")}
        changes = await _changes_until(
            pool, name, lambda cs: _kinds(cs) >= wanted, "acquire, expire, acquire"
        )
        assert not any(c.instance_id == "a" and c.kind != "acquire" for c in changes), changes
        expire = next(c for c in changes if c.kind == "expire")
        acquire = next(c for c in changes if c.kind == "acquire" and c.instance_id == "b")
        assert (expire.previous_instance_id, expire.previous_epoch) == ("a", e1)
        assert expire.epoch == acquire.epoch == e2 > e1
        assert (acquire.previous_instance_id, acquire.previous_epoch) == ("a", e1)
        order = [(c.kind, c.instance_id) for c in changes]
        assert order.index(("expire", "b")) < order.index(("acquire", "b"))  # one publisher, in order
    finally:
        await b.stop()
        await a.stop()


async def test_a_refused_renewal_is_recorded_as_lose(pool: ConnectionPool) -> None:
    """Someone else writes the key (a foreign holder, by compare-and-set): the active's next renewal is refused.
    It records "lose"; when the foreign holder never renews, it takes the key back and records the expiry."""
    name = f"lead-{uuid.uuid4().hex[:8]}"
    a = _ledger(name, "a")
    await a.start(pool)
    try:
        await wait_until_async(lambda: a.is_active, 5, "a to become active")
        e1 = a.election.epoch
        kv = bucket(pool, wire.ELECTION_BUCKET, direct=False)
        ghost = LeaderRecord(instance_id="ghost", epoch=0).model_dump_json().encode()
        for _ in range(20):  # a renews every 0.25 s: take the revision it is at, retry if it moved meanwhile
            rev = (await kv.get(a.key)).revision or 0
            try:
                await kv_write(pool, wire.ELECTION_BUCKET, a.key, ghost, revision=rev, ttl_s=30)
                break
            except Conflict:
                continue
        else:
            pytest.fail("could not overwrite the election key")
        changes = await _changes_until(
            pool,
            name,
            lambda cs: ("lose", "a") in _kinds(cs) and ("expire", "a") in _kinds(cs),
            "lose, then expire",
        )
        lose = next(c for c in changes if c.kind == "lose")
        assert lose.epoch == e1 and "refused" in lose.reason
        expire = next(c for c in changes if c.kind == "expire")
        assert expire.previous_instance_id == "ghost" and expire.epoch > e1
    finally:
        await a.stop()


async def test_the_reader_validates_input_and_filters(pool: ConnectionPool) -> None:
    for bad in ("has.dot", "star*", ""):
        with pytest.raises(BadRequest, match="invalid service name"):
            await leadership_history(pool, bad, "default")
        with pytest.raises(BadRequest, match="invalid group"):
            await leadership_history(pool, "svc", bad)
    for limit in (0, -1, 100_000):
        with pytest.raises(BadRequest, match="invalid limit"):
            await leadership_history(pool, "svc", "default", limit=limit)
    assert await leadership_history(pool, f"none-{uuid.uuid4().hex[:8]}", "default") == []

    name = f"lead-{uuid.uuid4().hex[:8]}"
    a = _ledger(name, "a")
    await a.start(pool)
    try:
        await wait_until_async(lambda: a.is_active, 5, "a to become active")
    finally:
        await a.stop()
    both = await _changes_until(pool, name, lambda cs: len(cs) == 2, "acquire and release")
    assert [c.kind for c in both] == ["acquire", "release"]
    assert [c.kind for c in await leadership_history(pool, name, "default", limit=1)] == ["release"]
    assert await leadership_history(pool, name, "default", since=both[-1].at + 3600) == []
    assert len(await leadership_history(pool, name, "default", since=both[0].at - 3600)) == 2
