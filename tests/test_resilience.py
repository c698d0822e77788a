"""Node faults during continuous RPC: how many calls fail and how long the longest gap is (NFR8).

The figures are printed (run with ``-s`` to see them). The asserts bound them loosely: a broken
reconnect shows up as a gap of a whole call timeout (2 s here) or more, far above the bounds.
"""

from __future__ import annotations

import asyncio
import time
import uuid

from harness.cluster import LocalCluster
from sdk.config import load_settings
from sdk.connection import ConnectionPool
from sdk.errors import AegisError
from sdk.rpc import RpcClient, Service


async def _continuous_calls(client: RpcClient, service: str, seconds: float, fault) -> dict[str, float]:
    """Call back to back for ``seconds``; run ``fault()`` once a third of the way in."""
    ok = failed = 0
    last_ok = time.monotonic()
    longest_gap = 0.0
    errors: set[str] = set()
    start = time.monotonic()
    faulted = False
    while time.monotonic() - start < seconds:
        if not faulted and time.monotonic() - start > seconds / 3:
            await asyncio.to_thread(fault)
            faulted = True
        try:
            await client.call(service, "ping", None, timeout=2.0)
            now = time.monotonic()
            longest_gap = max(longest_gap, now - last_ok)
            last_ok = now
            ok += 1
        except AegisError as exc:
            failed += 1
            errors.add(type(exc).__name__)
            await asyncio.sleep(0.001)
    return {"ok": ok, "failed": failed, "longest_gap_s": longest_gap, "errors": sorted(errors)}


async def _service_on(servers: list[str]) -> tuple[Service, ConnectionPool]:
    pool = await ConnectionPool.connect(load_settings(servers=servers, pool_size=1))
    svc = Service(f"ping-{uuid.uuid4().hex[:6]}")

    @svc.rpc("ping")
    async def ping(req: None) -> str:
        return "pong"

    await svc.start(pool)
    return svc, pool


async def test_killing_the_clients_node_costs_under_a_second(cluster: LocalCluster) -> None:
    urls = cluster.urls
    client_pool = await ConnectionPool.connect(load_settings(servers=urls, pool_size=1))
    victim = cluster.node_for_url(client_pool.connected_urls[0]).name
    # The service sits on another node, so only the client's connection is hit.
    svc, svc_pool = await _service_on([next(u for u in urls if cluster.node_for_url(u).name != victim)])
    try:
        result = await _continuous_calls(RpcClient(client_pool), svc.name, 3.0, lambda: cluster.kill(victim))
        print(f"\nclient's node killed: {result}, pool {client_pool.stats}")
        assert client_pool.stats.disconnects >= 1 and client_pool.stats.reconnects >= 1
        assert result["ok"] > 100
        assert result["longest_gap_s"] < 1.0
        assert set(result["errors"]) <= {"ConnectionLost", "ServiceUnavailable", "RpcTimeout"}
    finally:
        await svc.stop()
        await svc_pool.close()
        await client_pool.close()
        await asyncio.to_thread(cluster.restart, victim)


async def test_killing_the_services_node_costs_under_a_second(cluster: LocalCluster) -> None:
    urls = cluster.urls
    svc, svc_pool = await _service_on(urls[1:] + urls[:1])
    victim = cluster.node_for_url(svc_pool.connected_urls[0]).name
    other = next(u for u in urls if cluster.node_for_url(u).name != victim)
    client_pool = await ConnectionPool.connect(load_settings(servers=[other], pool_size=1))
    try:
        result = await _continuous_calls(RpcClient(client_pool), svc.name, 3.0, lambda: cluster.kill(victim))
        print(f"\nservice's node killed: {result}, service pool {svc_pool.stats}")
        assert svc_pool.stats.reconnects >= 1
        assert result["ok"] > 100
        assert result["longest_gap_s"] < 1.0
    finally:
        await svc.stop()
        await svc_pool.close()
        await client_pool.close()
        await asyncio.to_thread(cluster.restart, victim)
