"""Discovery on the real 3-node cluster: the watch-fed cache, routing strategies, and faults."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter

from waiting import wait_until_async

from aegis.harness.cluster.local import LocalCluster
from aegis.sdk import wire
from aegis.sdk.config import load_settings
from aegis.sdk.connection import ConnectionPool
from aegis.sdk.discovery import DiscoveryClient, InstanceWatch
from aegis.sdk.errors import AegisError
from aegis.sdk.rpc import CallContext, Service


def _who(name: str, instance_id: str, hold: asyncio.Event | None = None) -> Service:
    """A service whose ``who`` method answers with the instance id; ``"hold"`` waits for ``hold``."""
    svc = Service(name, instance_id=instance_id)

    @svc.rpc("who")
    async def who(req: str, ctx: CallContext) -> str:
        if req == "hold" and hold is not None:
            await hold.wait()
        return ctx.instance_id

    return svc


async def _group(
    pool: ConnectionPool, n: int, hold: asyncio.Event | None = None
) -> tuple[str, list[Service]]:
    name = f"disc-{uuid.uuid4().hex[:8]}"
    services = [_who(name, f"i{k}", hold) for k in range(n)]
    for svc in services:
        await svc.start(pool)
    return name, services


async def _client(pool: ConnectionPool, name: str, n: int, strategy: str = "round_robin") -> DiscoveryClient:
    client = await DiscoveryClient(pool, strategy=strategy).start()  # type: ignore[arg-type]
    await client.watch.wait_for(lambda: len(client.watch.routable(name)) == n)
    return client


async def test_watch_sees_new_and_removed_instances_within_milliseconds(pool: ConnectionPool) -> None:
    name = f"disc-{uuid.uuid4().hex[:8]}"
    watch = InstanceWatch(pool, name)
    await watch.start()
    svc = _who(name, "late")
    started = time.monotonic()
    await svc.start(pool)
    await watch.wait_for(lambda: bool(watch.routable(name)), timeout=2)
    seen = time.monotonic() - started
    stopping = time.monotonic()
    await svc.stop()
    await watch.wait_for(lambda: not watch.routable(name), timeout=2)
    gone = time.monotonic() - stopping
    await watch.stop()
    print(f"watch delay: new instance seen after {seen * 1000:.1f} ms, removal after {gone * 1000:.1f} ms")
    # The printed figures are the measurement. The bound is the model's: the watch delivers the record's
    # first write and its deletion as they land, long before the next heartbeat rewrite would show them.
    assert seen < pool.settings.heartbeat_interval_s and gone < pool.settings.heartbeat_interval_s


async def test_round_robin_spreads_calls_evenly(pool: ConnectionPool) -> None:
    name, services = await _group(pool, 3)
    client = await _client(pool, name, 3)
    try:
        answers = Counter([await client.call(name, "who", "x") for _ in range(30)])
        assert answers == {"i0": 10, "i1": 10, "i2": 10}
        assert client.fallbacks == 0
    finally:
        await client.close()
        for svc in services:
            await svc.stop()


async def test_random_reaches_every_instance(pool: ConnectionPool) -> None:
    name, services = await _group(pool, 3)
    client = await _client(pool, name, 3, "random")
    try:
        answers = Counter([await client.call(name, "who", "x") for _ in range(150)])
        assert set(answers) == {"i0", "i1", "i2"}  # P(an instance never chosen) ~ 3 * (2/3)^150
        assert max(answers.values()) < 100
    finally:
        await client.close()
        for svc in services:
            await svc.stop()


async def test_least_in_flight_avoids_a_busy_instance(pool: ConnectionPool) -> None:
    hold = asyncio.Event()
    name, services = await _group(pool, 2, hold)
    client = await _client(pool, name, 2, "least_in_flight")
    try:
        busy_call = asyncio.create_task(client.call(name, "who", "hold", timeout=5))
        await wait_until_async(lambda: 1 in client.in_flight.values(), 5, "the held call to be in flight")
        busy = next(k for k, v in client.in_flight.items() if v == 1)
        answers = Counter([await client.call(name, "who", "x") for _ in range(10)])
        assert len(answers) == 1 and f"{name}.{next(iter(answers))}" != busy
        # round-robin would have sent half of them to the busy instance
        hold.set()
        assert f"{name}.{await busy_call}" == busy
    finally:
        hold.set()
        await client.close()
        for svc in services:
            await svc.stop()


async def test_no_call_reaches_a_deregistered_instance(pool: ConnectionPool) -> None:
    """Deregister one instance but keep it listening: after the watch delay no call may reach it."""
    name, (a, b) = await _group(pool, 2)
    client = await _client(pool, name, 2)
    try:
        assert a.heartbeat is not None
        await a.heartbeat.stop()  # record removed; a still answers on its own subject
        removed = time.monotonic()
        await client.watch.wait_for(lambda: len(client.watch.routable(name)) == 1, timeout=2)
        delay = time.monotonic() - removed
        answers = Counter([await client.call(name, "who", "x") for _ in range(40)])
        assert answers == {"i1": 40}
        print(f"deregistration seen by the client after {delay * 1000:.1f} ms")
    finally:
        await client.close()
        for svc in (a, b):
            await svc.stop()


async def test_dead_instance_with_a_live_record_costs_no_failed_call(pool: ConnectionPool) -> None:
    """An instance that crashed has a record until its TTL: calls routed to it are retried elsewhere."""
    name, (a, b) = await _group(pool, 2)
    client = await _client(pool, name, 2)
    try:
        assert a.heartbeat is not None
        for task in a.heartbeat._tasks:  # crash: no more heartbeats, no deregistration
            task.cancel()
        for sub in a._subs:
            await sub.unsubscribe()
        a._subs = []
        answers = Counter([await client.call(name, "who", "x", timeout=2) for _ in range(20)])
        assert answers == {"i1": 20}
        assert len(client.watch.routable(name)) == 1  # the dead one is suspected until its record changes
    finally:
        await client.close()
        a.heartbeat = None
        await b.stop()


async def test_no_known_instance_falls_back_to_the_shared_subject(pool: ConnectionPool) -> None:
    name = f"disc-{uuid.uuid4().hex[:8]}"
    svc = _who(name, "unregistered")
    await svc.start(pool, register=False)
    client = await DiscoveryClient(pool).start()
    try:
        assert await client.call(name, "who", "x") == "unregistered"
        assert client.fallbacks == 1
    finally:
        await client.close()
        await svc.stop()


async def test_discovery_keeps_the_last_known_list_while_kv_is_down(cluster: LocalCluster) -> None:
    """No quorum (two nodes killed): records go stale, routing continues on the last known list."""
    keep = cluster.nodes[0]
    pool = await ConnectionPool.connect(load_settings(servers=[keep.url]))
    name, services = await _group(pool, 2)
    client = await _client(pool, name, 2)
    victims = [n.name for n in cluster.nodes[1:]]
    try:
        for victim in victims:
            cluster.kill(victim)
        ttl = pool.settings.instance_ttl_s
        await asyncio.sleep(ttl + 1.5)  # every record is stale now
        answers = Counter([await client.call(name, "who", "x", timeout=2) for _ in range(20)])
        assert answers == {"i0": 10, "i1": 10} and client.fallbacks == 0
    finally:
        for victim in victims:
            cluster.restart(victim)
        await client.close()
        for svc in services:
            await svc.stop()
        await pool.close()


async def test_discovery_survives_killing_the_kv_stream_leader(cluster: LocalCluster) -> None:
    stream = f"KV_{wire.INSTANCES_BUCKET}"
    pool = await ConnectionPool.connect(load_settings(servers=cluster.urls))
    name, services = await _group(pool, 1)
    client = await _client(pool, name, 1)
    leader = cluster.stream_leader(stream)
    assert leader is not None
    failed = 0
    late: Service | None = None
    try:
        cluster.kill(leader)
        killed = time.monotonic()
        late = _who(name, "late")
        await late.start(pool)  # its first heartbeat may fail; it keeps retrying until a leader exists
        seen = None
        while time.monotonic() - killed < 30:
            try:
                await client.call(name, "who", "x", timeout=2)
            except AegisError:
                failed += 1
            if seen is None and len(client.watch.routable(name)) == 2:
                seen = time.monotonic() - killed
                break
            await asyncio.sleep(0.05)
        print(f"stream leader {leader} killed: new instance seen after {seen}s; failed calls {failed}")
        assert seen is not None
        assert failed == 0
    finally:
        cluster.restart(leader)
        await client.close()
        for svc in [*services, *([late] if late else [])]:
            await svc.stop()
        await pool.close()
