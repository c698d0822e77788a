"""Partition experiment for the quorum lease (issue 18): cut the routes of the active's node for 5 s and print, at
every change, each instance's role, serving flag, epoch and held buckets and the sticky client's view of the
leader; then the outcomes of the client's calls. Needs root (nftables) and nats-server, like the partition campaigns.

    .venv/bin/python harness/experiments/partition_watch.py same    # the client on the active's node
    .venv/bin/python harness/experiments/partition_watch.py other   # the client on another node

Instance ``Lk`` connects to node ``n(k+1)`` only, the client to one node only: what each sees is what that node
sees. Bounded: 16 s of calls, then everything stops.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from typing import Any

from aegis.harness.cluster.local import LocalCluster
from aegis.harness.faults.fault import Fault
from aegis.harness.faults.nemesis import Nemesis
from aegis.sdk.config import load_settings
from aegis.sdk.connection import ConnectionPool
from aegis.sdk.quorum_buckets import spread_quorum_leaders
from aegis.sdk.rpc import CallContext
from aegis.sdk.single_active import SingleActiveService
from aegis.sdk.sticky import StickyClient

RUN_S, CUT_AT_S, HEAL_AT_S = 16.0, 2.0, 7.0


def _service(name: str, instance_id: str) -> SingleActiveService:
    svc = SingleActiveService(name, instance_id=instance_id, election="quorum")

    @svc.exclusive_rpc("book")
    async def book(req: int, ctx: CallContext) -> str:
        return ctx.instance_id

    return svc


async def _run(cluster: LocalCluster, nemesis: Nemesis, client_on_active: bool) -> None:
    name = f"px{uuid.uuid4().hex[:5]}"
    pools: list[ConnectionPool] = []
    services: list[SingleActiveService] = []
    for k, node in enumerate(cluster.nodes):
        pool = await ConnectionPool.connect(load_settings(servers=[node.url], name=f"{name}-L{k}"))
        svc = _service(name, f"L{k}")
        await svc.start(pool)
        pools.append(pool)
        services.append(svc)
    await asyncio.sleep(1.0)
    print(await spread_quorum_leaders(pools[0], timeout=15))
    active = next(k for k, s in enumerate(services) if s.is_active)
    client_node = active if client_on_active else (active + 1) % len(cluster.nodes)
    cpool = await ConnectionPool.connect(
        load_settings(servers=[cluster.nodes[client_node].url], name=f"{name}-c")
    )
    pools.append(cpool)
    client = StickyClient(cpool, election="quorum", attempt_timeout_s=1.0)
    print(f"active L{active} on {cluster.nodes[active].name}; client on {cluster.nodes[client_node].name}")
    t0 = time.monotonic()
    calls: list[tuple[float, float, str]] = []

    async def caller() -> None:
        while time.monotonic() - t0 < RUN_S:
            sent = time.monotonic() - t0
            try:
                outcome = await client.call_active(name, "book", 1, timeout=2.0)
            except Exception as exc:
                outcome = type(exc).__name__
            calls.append((sent, time.monotonic() - t0, outcome))
            await asyncio.sleep(0.05)

    task = asyncio.create_task(caller())
    await asyncio.sleep(CUT_AT_S)
    cut = await asyncio.to_thread(
        nemesis.apply, Fault(kind="partition-node", target=cluster.nodes[active].name, duration_s=5.0)
    )
    print(f"cut {cluster.nodes[active].name} at {time.monotonic() - t0:.2f}")
    healed, last = False, None
    while (now := time.monotonic() - t0) < RUN_S:
        if not healed and now > HEAL_AT_S and cut is not None:
            await asyncio.to_thread(nemesis.heal, cut)
            healed = True
            print(f"healed at {now:.2f}")
        state: Any = tuple(
            (
                s.instance_id,
                s.election.role,
                s.is_active,
                s.election.epoch,
                tuple(bool(h) for h in s.election.held),
            )  # type: ignore[union-attr]
            for s in services
        )
        view = next(iter(client._groups.values())).view if client._groups else None
        seen = (state, (view.leader, view.epoch) if view else None)
        if seen != last:
            print(f"{now:6.2f}", *seen)
            last = seen
        await asyncio.sleep(0.02)
    await task
    previous = None
    for sent, done, outcome in calls:
        if outcome != previous:
            print(f"call {sent:6.2f} -> {done:6.2f} {outcome}")
            previous = outcome
    for svc in services:
        await svc.stop()
    for pool in pools:
        await pool.close()


def main() -> None:
    client_on_active = sys.argv[1:] == ["same"]
    with LocalCluster(
        3, node_gids=True, sync_interval="always", extra_config='ping_interval: "1s"'
    ) as cluster:
        nemesis = Nemesis(cluster, None, firewall="auto")
        try:
            asyncio.run(_run(cluster, nemesis, client_on_active))
        finally:
            nemesis.heal_all()
            nemesis.close()


if __name__ == "__main__":
    main()
