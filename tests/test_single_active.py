"""SingleActiveService and StickyClient in-process on the real 3-node cluster (the subprocess faults are in
tests/test_failover.py)."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from waiting import wait_until_async

from aegis.harness.cluster.local import LocalCluster
from aegis.sdk import wire
from aegis.sdk.config import load_settings
from aegis.sdk.connection import ConnectionPool
from aegis.sdk.discovery import InstanceWatch
from aegis.sdk.election import ElectionParams, Write
from aegis.sdk.errors import NotActive, ServiceUnavailable
from aegis.sdk.kv import bucket, kv_write
from aegis.sdk.rpc import CallContext, RpcClient
from aegis.sdk.schema import InstanceStatus
from aegis.sdk.single_active import (
    LeaderRecord,
    SingleActiveService,
    ensure_election_bucket,
    leader_key,
    parse_leader,
)
from aegis.sdk.sticky import StickyClient


def _ledger(name: str, instance_id: str) -> SingleActiveService:
    svc = SingleActiveService(name, instance_id=instance_id)

    @svc.exclusive_rpc("book")
    async def book(req: int, ctx: CallContext) -> str:
        return ctx.instance_id

    @svc.rpc("whoami")
    async def whoami(req: None, ctx: CallContext) -> str:
        return ctx.instance_id

    return svc


async def _group(pool: ConnectionPool, n: int = 3) -> tuple[str, list[SingleActiveService]]:
    name = f"ledger-{uuid.uuid4().hex[:8]}"
    services = [_ledger(name, f"l{i}") for i in range(n)]
    for svc in services:
        await svc.start(pool)
    await wait_until_async(lambda: sum(s.is_active for s in services) == 1, 5, "one active instance")
    return name, services


def _active(services: list[SingleActiveService]) -> SingleActiveService:
    (active,) = [s for s in services if s.is_active]
    return active


async def test_one_active_standbys_answer_not_active_with_the_epoch(pool: ConnectionPool) -> None:
    name, services = await _group(pool)
    try:
        active = _active(services)
        rpc = RpcClient(pool)
        msg = await rpc.request(name, "book", 1, instance=active.instance_id)
        assert msg.headers[wire.EPOCH_HEADER] == str(active.election.epoch) and active.election.epoch > 0
        for standby in (s for s in services if s is not active):
            with pytest.raises(NotActive) as exc:
                await rpc.call(name, "book", 1, instance=standby.instance_id)
            assert exc.value.epoch == active.election.epoch
            assert await rpc.call(name, "whoami", instance=standby.instance_id) == standby.instance_id
        assert await StickyClient(pool).call_active(name, "book", 7) == active.instance_id
    finally:
        for svc in services:
            await svc.stop()


async def test_registry_shows_roles_and_epoch_right_after_a_handover(pool: ConnectionPool) -> None:
    name, services = await _group(pool)
    watch = InstanceWatch(pool, name)
    await watch.start()
    try:

        def statuses() -> dict[str, tuple[InstanceStatus, int | None]]:
            return {r.instance_id: (r.status, r.epoch) for r in watch.records(name)}

        old = _active(services)
        await watch.wait_for(lambda: statuses().get(old.instance_id, (None,))[0] is InstanceStatus.ACTIVE)
        stopped = time.monotonic()
        await old.stop()
        rest = [s for s in services if s is not old]
        await wait_until_async(lambda: any(s.is_active for s in rest), 2, "a successor to take over")
        new = _active(rest)
        # every record of the group shows the new epoch: the new active's, and the other standby's (its record
        # changes when its own watch learns the epoch, which may be a moment after the active's record lands)
        await watch.wait_for(
            lambda: (
                statuses().get(new.instance_id) == (InstanceStatus.ACTIVE, new.election.epoch)
                and [statuses().get(s.instance_id) for s in rest if s is not new]
                == [(InstanceStatus.STANDBY, new.election.epoch)]
            ),
            timeout=2,
        )
        shown = time.monotonic() - stopped
        assert new.election.epoch > old.election.epoch
        print(
            f"graceful handover: new ACTIVE with epoch {new.election.epoch} in the registry after {shown * 1000:.0f} ms"
        )
    finally:
        await watch.stop()
        for svc in services:
            await svc.stop()


async def test_sticky_client_rides_a_graceful_handover_and_rejects_stale_epochs(pool: ConnectionPool) -> None:
    name, services = await _group(pool, 2)
    client = StickyClient(pool)
    try:
        first = await client.call_active(name, "book", 1)
        await _active(services).stop()
        second = await client.call_active(name, "book", 2, timeout=3)
        assert {first, second} == {"l0", "l1"}
        key = leader_key(name, "default")
        group = client._groups[key]
        assert group.view.accepted == _active([s for s in services if s.instance_id == second]).election.epoch
    finally:
        await client.close()
        for svc in services:
            await svc.stop()


async def test_no_instance_raises_service_unavailable_at_the_deadline(pool: ConnectionPool) -> None:
    client = StickyClient(pool)
    started = time.monotonic()
    with pytest.raises(ServiceUnavailable, match="no active instance .* within 0.500s; tried: no leader"):
        await client.call_active(f"nobody-{uuid.uuid4().hex[:6]}", "book", 1, timeout=0.5)
    took = time.monotonic() - started
    await client.close()
    print(f"\nno instance: ServiceUnavailable after {took:.3f} s (deadline 0.5 s)")  # benchmark output
    # Not before its 0.5 s deadline; and it is that deadline that ends it, not the configured default
    # (rpc_timeout_s, 5 s), which a call ignoring its timeout would wait for: load only adds to `took`.
    assert 0.45 <= took < pool.settings.timeout_for("nobody", "book")


async def test_takeover_over_an_expiry_marker(pool: ConnectionPool) -> None:
    """A key that expired leaves a MaxAge marker; a new instance must win by CAS on the marker's revision."""
    name = f"ledger-{uuid.uuid4().hex[:8]}"
    key = leader_key(name, "default")
    await ensure_election_bucket(pool)
    marker = asyncio.Event()

    async def on_msg(msg) -> None:  # type: ignore[no-untyped-def]
        if (msg.headers or {}).get(wire.MARKER_REASON_HEADER):
            marker.set()

    sub = await pool.js.subscribe(f"$KV.{wire.ELECTION_BUCKET}.{key}", cb=on_msg, ordered_consumer=True)
    rev = await kv_write(pool, wire.ELECTION_BUCKET, key, b'{"instance_id": "ghost"}', revision=0, ttl_s=1)
    await asyncio.wait_for(marker.wait(), 5)
    svc = _ledger(name, "fresh")
    try:
        await svc.start(pool)
        # at once, not after a lease: the marker says the key is free
        await wait_until_async(lambda: svc.is_active, 0.8, "the new instance to take the free key", step=0.01)
        assert svc.election.epoch > rev + 1
    finally:
        await sub.unsubscribe()
        await svc.stop()


def test_timing_parameters_are_validated_against_each_other() -> None:
    with pytest.raises(ValueError, match="lease_s / 3"):
        ElectionParams(lease_s=0.9, renew_s=0.5)
    with pytest.raises(ValueError, match="serving window"):
        ElectionParams(lease_s=0.9, renew_s=0.3, write_timeout_s=0.6)
    with pytest.raises(ValueError, match="ttl_s"):
        SingleActiveService("x", params=ElectionParams(lease_s=3, renew_s=0.5), ttl_s=2)


async def test_kv_outage_stops_serving_and_resumes_without_a_leader_change(cluster: LocalCluster) -> None:
    keep = cluster.nodes[0]
    pool = await ConnectionPool.connect(load_settings(servers=[keep.url]))
    name, services = await _group(pool)
    active = _active(services)
    epoch = active.election.epoch
    victims = [n.name for n in cluster.nodes[1:]]
    try:
        for victim in victims:  # in a thread: the instances' timers must keep running meanwhile
            await asyncio.to_thread(cluster.kill, victim)
        # it cannot renew: it fences itself
        await wait_until_async(lambda: not active.is_active, 3, "the active to stop serving")
        assert not any(s.is_active for s in services)
    finally:
        for victim in victims:
            await asyncio.to_thread(cluster.restart, victim)
    try:
        await wait_until_async(lambda: any(s.is_active for s in services), 15, "an active instance again")
        assert _active(services) is active and active.election.epoch == epoch  # the incumbent renewed
    finally:
        for svc in services:
            await svc.stop()
        await pool.close()


async def test_a_conflict_from_a_replica_behind_the_last_write_is_not_adopted(pool: ConnectionPool) -> None:
    """A stream leader deposed by a partition that has not noticed yet answers a compare-and-set with "wrong
    last sequence: <its stale revision>", and its replica still holds our own older record. Seen in the
    partition campaign (the trace check rejected it): the renewal was adopted at a revision the key had left.
    That answer says nothing about the key now, so the outcome is unknown (None: handled as a timeout). So is a
    conflict no replica can confirm (a lagging replica made an active lose its own landed renewal)."""
    name, services = await _group(pool, 1)
    (svc,) = services
    try:
        mine = svc.election.my_rev
        stale = Write(op="renew", expected=mine + 5, epoch=svc.election.epoch, req=-1)
        assert await svc._after_conflict(pool, stale, mine) is None
        # a read never moves past `expected` (far ahead: the bucket's revision is shared by every key, and other
        # groups' renewals move it meanwhile)
        far = Write(op="renew", expected=mine + 10**9, epoch=svc.election.epoch, req=-1)
        assert await svc._after_conflict(pool, far, None) is None
        # no replica, the stream leader included, has reached the conflict's revision: unknown too (it was
        # "someone else's value": an active whose own lost renewal had landed stepped down for nothing)
        assert await svc._after_conflict(pool, stale, mine + 1000) is None
        # a conflict at or above `expected` is the key's real state: here, our own record
        fresh = Write(op="renew", expected=mine, epoch=svc.election.epoch, req=-1)
        current, ours = await svc._after_conflict(pool, fresh, mine) or (None, False)
        assert current is not None and current.rev >= mine and ours
    finally:
        await svc.stop()


async def test_a_graceful_stop_never_erases_a_successors_record(pool: ConnectionPool) -> None:
    """An active deposed while it could not notice (paused, or just between renewals: an active goes by its own
    writes, not the watch) is stopped. Its release is a compare-and-set on its own last revision, so it fails,
    and the successor's record stays in the key; a delete without compare-and-set would erase it (the
    successor's next renewal then fails, and a third instance may campaign over the marker)."""
    name = f"ledger-{uuid.uuid4().hex[:8]}"
    # renewals a second apart: the successor's write and the stop fit between two of them
    svc = SingleActiveService(name, instance_id="old", params=ElectionParams(lease_s=3.0, renew_s=1.0))
    await svc.start(pool)
    key = leader_key(name, "default")
    stopped = False
    try:
        await wait_until_async(lambda: svc.is_active, 5, "the instance to become active")
        m = svc.election
        # right after a renewal landed (nothing in flight, the next one most of a second away)
        await wait_until_async(
            lambda: m.request is None and time.monotonic() - m.last_send < 0.3,
            5,
            "a fresh renewal",
            step=0.005,
        )
        mine, epoch = m.my_rev, m.epoch
        record = LeaderRecord(instance_id="successor").model_dump_json().encode()
        rev = await kv_write(pool, wire.ELECTION_BUCKET, key, record, revision=mine, ttl_s=10)
        assert m.role == "active" and m.my_rev == mine  # it has not noticed: it would renew on `mine`
        await svc.stop()
        stopped = True
        entry = await bucket(pool, wire.ELECTION_BUCKET).get(key)
        assert entry.revision == rev, f"the successor's record (rev {rev}) was replaced: rev {entry.revision}"
        held = parse_leader(entry.value or b"")
        assert held is not None and held.instance_id == "successor"
        assert svc.election.epoch == epoch and not svc.is_active
    finally:
        if not stopped:
            await svc.stop()
