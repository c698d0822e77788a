"""The registry on the real 3-node cluster: definitions with revisions, instance records with TTL heartbeats."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from typing import Any

import pytest
from waiting import wait_until_async

from aegis.harness.cluster.local import LocalCluster
from aegis.harness.cluster.processes import spawn
from aegis.sdk import wire
from aegis.sdk.config import load_settings
from aegis.sdk.connection import ConnectionPool
from aegis.sdk.discovery import InstanceWatch
from aegis.sdk.errors import BadRequest, ConfigError, Conflict, NotFound
from aegis.sdk.kv import kv_write
from aegis.sdk.registry import Registry, instance_key
from aegis.sdk.rpc import RpcClient, Service
from aegis.sdk.schema import InstanceStatus, MetricsSnapshot, ServiceDefinition


def _name(prefix: str = "svc") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def pool_settings() -> dict[str, Any]:
    """Metrics snapshots go to the history stream every 0.3 s (not every 10 s), so a test sees one at once."""
    return {"metrics_history_interval_s": 0.3}


def _echo(name: str, instance_id: str | None = None) -> Service:
    svc = Service(name, instance_id=instance_id, version="2.1.0")

    @svc.rpc("echo")
    async def echo(req: str) -> str:
        return req

    @svc.rpc("fail")
    async def fail(req: None) -> None:
        raise RuntimeError("boom")

    return svc


async def test_buckets_are_replicated_with_the_documented_limits(pool: ConnectionPool) -> None:
    await Registry(pool).open()
    defs = await pool.js.stream_info(f"KV_{wire.DEFINITIONS_BUCKET}")
    inst = await pool.js.stream_info(f"KV_{wire.INSTANCES_BUCKET}")
    metrics = await pool.js.stream_info(wire.METRICS_STREAM)
    assert defs.config.num_replicas == inst.config.num_replicas == metrics.config.num_replicas == 3
    assert defs.config.max_msgs_per_subject == 5 and not defs.config.allow_msg_ttl
    assert not defs.config.max_age
    assert inst.config.max_msgs_per_subject == 1 and inst.config.allow_msg_ttl
    assert inst.config.subject_delete_marker_ttl == 1
    assert metrics.config.max_age == 24 * 3600
    assert metrics.config.max_msgs_per_subject > 0 and metrics.config.max_bytes > 0


async def test_definitions_use_revisions_against_lost_updates(pool: ConnectionPool) -> None:
    reg = Registry(pool)
    name = _name()
    created = await reg.create_definition(ServiceDefinition(name=name, owner="fx", single_active=True))
    assert created.revision > 0 and created.value.created_at > 0
    with pytest.raises(Conflict) as dup:
        await reg.create_definition(ServiceDefinition(name=name))
    assert dup.value.revision == created.revision

    got = await reg.get_definition(name)
    assert got.value == created.value and got.revision == created.revision
    updated = await reg.update_definition(got.value.model_copy(update={"owner": "rates"}), got.revision)
    assert updated.revision > got.revision and updated.value.created_at == created.value.created_at

    with pytest.raises(Conflict) as stale:  # a second operator still holds the old revision
        await reg.update_definition(got.value.model_copy(update={"owner": "equities"}), got.revision)
    assert stale.value.revision == updated.revision and "re-read" in stale.value.message
    assert (await reg.get_definition(name)).value.owner == "rates"

    assert name in [d.value.name for d in await reg.list_definitions()]
    with pytest.raises(Conflict):
        await reg.delete_definition(name, revision=got.revision)
    await reg.delete_definition(name, revision=updated.revision)
    with pytest.raises(NotFound, match="no definition"):
        await reg.get_definition(name)
    assert name not in [d.value.name for d in await reg.list_definitions()]
    again = await reg.create_definition(ServiceDefinition(name=name, owner="new"))  # over the delete marker
    assert (await reg.get_definition(name)).revision == again.revision


async def test_invalid_names_are_rejected_with_a_clear_error(pool: ConnectionPool) -> None:
    reg = Registry(pool)
    for bad in ("has.dot", "has space", "star*", ""):
        with pytest.raises(BadRequest, match="invalid service name"):
            await reg.get_definition(bad)
    with pytest.raises(BadRequest, match="invalid instance id"):
        instance_key("quotes", "a.b")
    with pytest.raises(ValueError, match="invalid service name"):
        ServiceDefinition(name="a>b")
    with pytest.raises(NotFound):
        await reg.get_instance("quotes", "never-started")


async def test_instance_record_carries_status_and_live_metrics(pool: ConnectionPool) -> None:
    name = _name()
    svc = _echo(name)
    await svc.start(pool)
    try:
        reg = Registry(pool)
        rec = await reg.get_instance(name, svc.instance_id)
        assert rec.status is InstanceStatus.ACTIVE and rec.version == "2.1.0"
        assert rec.pid == os.getpid() and rec.host and rec.ttl_s == pool.settings.instance_ttl_s
        assert rec.config_hash == svc.config.config_hash and len(rec.config_hash) == 64
        client = RpcClient(pool)
        for i in range(20):
            await client.call(name, "echo", f"x{i}", instance=svc.instance_id)
        with pytest.raises(Exception, match="boom"):
            await client.call(name, "fail", instance=svc.instance_id)

        async def counted() -> bool:
            nonlocal rec
            rec = await reg.get_instance(name, svc.instance_id)
            return rec.metrics is not None and rec.metrics.methods["echo"].requests == 20

        bound = 3 * pool.settings.heartbeat_interval_s  # the next heartbeat carries them
        await wait_until_async(counted, bound, "a record whose metrics count the 20 calls", step=0.1)
        assert rec.metrics is not None
        echo, fail = rec.metrics.methods["echo"], rec.metrics.methods["fail"]
        assert echo.requests == 20 and echo.errors == 0 and echo.p99_ms > 0 and echo.max_ms >= echo.p50_ms
        assert fail.requests == 1 and fail.error_rate == 1.0 and "boom" in fail.last_error
        assert rec.last_heartbeat > rec.started_at

        # the same snapshots are appended to the metrics history stream
        sub = await pool.js.subscribe(
            wire.metrics_subject(name, svc.instance_id), ordered_consumer=True, deliver_policy="all"
        )
        msg = await sub.next_msg(timeout=3)
        snap = MetricsSnapshot.model_validate_json(msg.data)
        assert snap.service == name and snap.instance_id == svc.instance_id
        await sub.unsubscribe()
    finally:
        await svc.stop()
    with pytest.raises(NotFound):  # a graceful stop removes the record at once
        await reg.get_instance(name, svc.instance_id)


async def test_killed_instance_disappears_within_ttl_plus_half_a_second(
    pool: ConnectionPool, nats_urls: list[str]
) -> None:
    instance = f"q-{uuid.uuid4().hex[:8]}"
    watch = InstanceWatch(pool, "quotes")
    await watch.start()
    proc = spawn(
        [sys.executable, "-m", "aegis.harness.demo", "serve", "--instance", instance, *nats_urls],
        stdin=-1,
        stdout=-1,
    )
    try:
        assert proc.stdout.readline().strip() == b"ready"
        await watch.wait_for(lambda: any(r.instance_id == instance for r in watch.records("quotes")))
        proc.kill()
        killed = time.monotonic()
        await watch.wait_for(
            lambda: all(r.instance_id != instance for r in watch.records("quotes")), timeout=10
        )
        gone_after = time.monotonic() - killed
    finally:
        proc.kill()
        proc.wait()
        await watch.stop()
    ttl = pool.settings.instance_ttl_s
    print(f"record of the killed instance gone {gone_after:.2f}s after kill -9 (TTL {ttl}s)")
    # The TTL counts from the last heartbeat (written before the kill); the server scans for expired
    # messages every 250 ms (NATS_NOTES), and the watch delivers the marker as it lands: TTL + 0.25 s, plus
    # 0.25 s for the delivery and the scan's phase.
    assert gone_after <= ttl + 0.5


async def test_strict_mode_refuses_a_service_without_definition(nats_urls: list[str]) -> None:
    strict = await ConnectionPool.connect(load_settings(servers=nats_urls, require_definition=True))
    name = _name()
    try:
        svc = _echo(name)
        with pytest.raises(ConfigError, match=f"{name}.*no definition.*strict mode"):
            await svc.start(strict)
        assert not svc.running
        await Registry(strict).create_definition(ServiceDefinition(name=name))
        await svc.start(strict)
        assert (await Registry(strict).get_instance(name, svc.instance_id)).status is InstanceStatus.ACTIVE
        await svc.stop()
    finally:
        await strict.close()


async def test_heartbeat_survives_kv_outage_and_recovers(cluster: LocalCluster) -> None:
    """Two of three nodes down: no quorum, KV writes fail. The instance reports UNHEALTHY, keeps
    retrying, and is healthy with a fresh record once the nodes are back."""
    keep = cluster.nodes[0]
    pool = await ConnectionPool.connect(load_settings(servers=[keep.url], heartbeat_interval_s=0.2))
    name = _name()
    svc = _echo(name)
    await svc.start(pool)
    hb = svc.heartbeat
    assert hb is not None and hb.healthy
    victims = [n.name for n in cluster.nodes[1:]]
    try:
        for victim in victims:
            cluster.kill(victim)
        await wait_until_async(lambda: not hb.healthy, 10, "a failed heartbeat")
        assert hb.status is InstanceStatus.UNHEALTHY
        failures = hb.failures
        # Still trying: a failed write is retried after at most heartbeat_interval_s (0.2 s) and itself gives up
        # after max(0.2, heartbeat_interval_s) s, so another failure comes within half a second; 5 s is the bound.
        await wait_until_async(lambda: hb.failures > failures, 5, "another failed heartbeat write")
        # core NATS still serves the instance while KV is down
        assert await RpcClient(pool).call(name, "echo", "still here", timeout=2) == "still here"
    finally:
        for victim in victims:
            cluster.restart(victim)
    await wait_until_async(lambda: hb.healthy, 30, "a heartbeat write to work again")
    print(f"heartbeat: {hb.failures} failed writes during the outage, healthy again: {hb.healthy}")
    assert hb.healthy and hb.status is InstanceStatus.ACTIVE
    rec = await Registry(pool).get_instance(name, svc.instance_id)
    assert rec.status is InstanceStatus.ACTIVE and rec.last_heartbeat > time.time() - 2
    await svc.stop()
    await pool.close()


async def test_racing_creates_of_one_key_lose_with_conflict_only(pool: ConnectionPool) -> None:
    """Three creates of one key at once: one wins, the others get Conflict, including the clustered stream's
    refusal while the winner is still being replicated (err 10164, which names no revision)."""
    from aegis.sdk.single_active import ensure_election_bucket

    await ensure_election_bucket(pool)
    for _ in range(10):
        key = f"leader.{_name('race')}.default"
        outcomes = await asyncio.gather(
            *(
                kv_write(pool, wire.ELECTION_BUCKET, key, b"x", revision=0, ttl_s=10, timeout=1)
                for _ in range(3)
            ),
            return_exceptions=True,
        )
        wins = [o for o in outcomes if isinstance(o, int)]
        assert len(wins) == 1, outcomes
        assert all(isinstance(o, Conflict) for o in outcomes if not isinstance(o, int)), outcomes
