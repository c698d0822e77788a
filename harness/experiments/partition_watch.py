"""Partition experiment for the quorum lease (issue 18): cut the routes of the active's node for 5 s, heal, and record
what the buckets' stream leaders, the instances and a sticky client did. Needs root (nftables) and nats-server, like
the partition campaigns.

    .venv/bin/python harness/experiments/partition_watch.py                      # one run, printed
    .venv/bin/python harness/experiments/partition_watch.py --runs 2 --json reports/partition-heal.json

Without ``--replicas`` / ``--client`` every combination runs: the quorum buckets as shipped (R3, leaders spread over
the three nodes) and as three R1 buckets pinned one to each node (server tags); the sticky client on the active's
node (``same``), on another one (``other``), or with a pool of two connections, one on each (``both``). Instance
``Lk`` connects to node ``n(k+1)`` only: what each sees is what that node sees. A third connection, to the node neither cut nor the client's, polls the
buckets' stream leaders every 0.1 s. Bounded: 16 s of calls per run, then everything stops.

What it showed (README, "Partitions"): nats-server's Raft has no pre-vote, so the cut node, a follower of the other
buckets' streams, campaigns with ever higher terms while cut and, once healed, deposes their leaders: two buckets
leaderless at once for a new election (4-9 s), which no majority of R3 buckets survives. R1 buckets have no Raft
group to depose.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from nats.js import api

from aegis.harness.cluster.local import LocalCluster, node_tag
from aegis.harness.faults.fault import Fault
from aegis.harness.faults.nemesis import Nemesis
from aegis.sdk import quorum_buckets
from aegis.sdk.config import load_settings
from aegis.sdk.connection import ConnectionPool
from aegis.sdk.jetstream import ensure_stream
from aegis.sdk.rpc import CallContext
from aegis.sdk.single_active import SingleActiveService
from aegis.sdk.sticky import StickyClient

RUN_S, CUT_AT_S, HEAL_AT_S = 16.0, 2.0, 7.0
CLIENTS = ("other", "same", "both")
"""Where the sticky client's connections are: on a node not cut, on the cut node, one on each (a pool of two)."""
CALL_TIMEOUT_S = 2.0


def _service(name: str, instance_id: str) -> SingleActiveService:
    svc = SingleActiveService(name, instance_id=instance_id, election="quorum")

    @svc.exclusive_rpc("book")
    async def book(req: int, ctx: CallContext) -> str:
        return ctx.instance_id

    return svc


async def _pool(urls: list[str], name: str, replicas: int) -> ConnectionPool:
    pool = await ConnectionPool.connect(load_settings(servers=urls, name=name, pool_size=len(urls)))
    if replicas == 1:  # the buckets exist, pinned: keep the SDK from bringing them to its R3 configuration
        quorum_buckets._ready.add(pool)
    return pool


async def _pin_r1_buckets(cluster: LocalCluster) -> dict[str, str]:
    """Create the three quorum buckets with one replica each, bucket k on node k (its server tag)."""
    where = {}
    pool = await ConnectionPool.connect(load_settings(servers=[cluster.nodes[0].url], name="setup"))
    try:
        for k, b in enumerate(quorum_buckets.BUCKETS):
            config = quorum_buckets.quorum_bucket_config(b, 1)
            config.placement = api.Placement(tags=[node_tag(cluster.nodes[k].name)])
            info = await ensure_stream(pool, config)
            where[b] = info.cluster.leader if info.cluster else None
    finally:
        await pool.close()
    return where


def _longest_gap(calls: list[tuple[float, float, str]], cut_at: float) -> float:
    """The longest time without a successful call, from the last success before the cut to the end of the run."""
    ok = [done for _, done, outcome in calls if outcome.startswith("L")]
    before = [t for t in ok if t <= cut_at]
    times = ([before[-1]] if before else [cut_at]) + [t for t in ok if t > cut_at] + [RUN_S]
    return max(b - a for a, b in zip(times, times[1:], strict=False))


def _leaderless_after_heal(
    log: list[tuple[float, dict[str, str | None]]], heal_at: float
) -> dict[str, float]:
    """Per bucket: seconds without a stream leader that began after the heal (0 when it kept one)."""
    out: dict[str, float] = {}
    for b in quorum_buckets.BUCKETS:
        worst, since = 0.0, None
        for at, seen in log + [(RUN_S, {})]:
            if seen.get(b) is None and since is None and at >= heal_at:
                since = at
            elif seen.get(b) is not None and since is not None:
                worst, since = max(worst, at - since), None
        if since is not None:
            worst = max(worst, RUN_S - since)
        out[b] = round(worst, 3)
    return out


async def _run(
    cluster: LocalCluster, nemesis: Nemesis, replicas: int, where: str, verbose: bool
) -> dict[str, Any]:
    name = f"px{uuid.uuid4().hex[:5]}"
    pools: list[ConnectionPool] = []
    services: list[SingleActiveService] = []
    if replicas == 1:
        print("R1 buckets on", await _pin_r1_buckets(cluster))
    for k, node in enumerate(cluster.nodes):
        pool = await _pool([node.url], f"{name}-L{k}", replicas)
        svc = _service(name, f"L{k}")
        await svc.start(pool)
        pools.append(pool)
        services.append(svc)
    await asyncio.sleep(1.0)
    if replicas == 3:
        print(await quorum_buckets.spread_quorum_leaders(pools[0], timeout=15))
    active = next(k for k, s in enumerate(services) if s.is_active)
    other = (active + 1) % len(cluster.nodes)
    urls = {
        "same": [cluster.nodes[active].url],
        "other": [cluster.nodes[other].url],
        "both": [cluster.nodes[active].url, cluster.nodes[other].url],
    }[where]
    cpool = await _pool(urls, f"{name}-c", replicas)
    pools.append(cpool)
    client = StickyClient(cpool, election="quorum", attempt_timeout_s=1.0)
    print(f"active L{active} on {cluster.nodes[active].name}; client ({where}) on {cpool.connected_urls}")
    # The buckets' stream leaders as the node neither cut nor the client's sees them
    watcher_node = cluster.nodes[(active + 2) % len(cluster.nodes)]
    wpool = await _pool([watcher_node.url], f"{name}-w", replicas)
    pools.append(wpool)
    t0 = time.monotonic()
    calls: list[tuple[float, float, str]] = []
    leader_log: list[tuple[float, dict[str, str | None]]] = []

    async def caller() -> None:
        while time.monotonic() - t0 < RUN_S:
            sent = time.monotonic() - t0
            try:
                outcome = await client.call_active(name, "book", 1, timeout=CALL_TIMEOUT_S)
            except Exception as exc:
                outcome = type(exc).__name__
            calls.append((sent, time.monotonic() - t0, outcome))
            await asyncio.sleep(0.05)

    async def leaders() -> None:
        while time.monotonic() - t0 < RUN_S:
            seen = await quorum_buckets.quorum_leaders(wpool)
            if not leader_log or leader_log[-1][1] != seen:
                leader_log.append((round(time.monotonic() - t0, 3), seen))
            await asyncio.sleep(0.1)

    tasks = [asyncio.create_task(caller()), asyncio.create_task(leaders())]
    await asyncio.sleep(CUT_AT_S)
    cut = await asyncio.to_thread(
        nemesis.apply, Fault(kind="partition-node", target=cluster.nodes[active].name, duration_s=5.0)
    )
    cut_at = time.monotonic() - t0
    healed_at = None
    # each change: [t, [[instance, role, serving, epoch, held buckets], ...], the client's leader@epoch]
    changes: list[list[Any]] = []
    while (now := time.monotonic() - t0) < RUN_S:
        if healed_at is None and now > HEAL_AT_S and cut is not None:
            await asyncio.to_thread(nemesis.heal, cut)
            healed_at = time.monotonic() - t0
        state = [
            [
                s.instance_id,
                s.election.role,
                s.is_active,
                s.election.epoch,
                "".join("x" if h else "-" for h in s.election.held),
            ]
            for s in services
        ]
        view = next(iter(client._groups.values())).view if client._groups else None
        seen = [state, f"{view.leader}@{view.epoch}" if view else None]
        if not changes or changes[-1][1:] != seen:
            changes.append([round(now, 3), *seen])
            if verbose:
                print(f"{now:6.2f}", *seen)
        await asyncio.sleep(0.02)
    await asyncio.gather(*tasks)
    for svc in services:
        await svc.stop()
    for pool in pools:
        await pool.close()
    heal_at = healed_at if healed_at is not None else HEAL_AT_S
    return {
        "replicas": replicas,
        "client": where,
        "cut_at_s": round(cut_at, 3),
        "heal_at_s": round(heal_at, 3),
        "client_gap_s": round(_longest_gap(calls, cut_at), 3),
        "leaderless_after_heal_s": _leaderless_after_heal(leader_log, heal_at),
        "leaders": [{"at_s": at, "leaders": seen} for at, seen in leader_log],
        "states": changes,
        "calls": [[round(s, 3), round(d, 3), o] for s, d, o in calls],  # sent, done (s), outcome
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", type=int, choices=(1, 3), action="append", help="default: both")
    parser.add_argument("--client", choices=CLIENTS, action="append", help="default: all")
    parser.add_argument("--runs", type=int, default=1, help="runs per combination (1-5)")
    parser.add_argument("--json", type=Path, help="write the runs here")
    parser.add_argument("--verbose", action="store_true", help="print every change of the instances' state")
    args = parser.parse_args()
    if not 1 <= args.runs <= 5:
        parser.error("--runs must be 1-5")
    runs: list[dict[str, Any]] = []
    started = time.time()
    for replicas in args.replicas or (3, 1):
        for where in args.client or CLIENTS:
            for _ in range(args.runs):
                # a fresh cluster per run: a run's cut must not meet the previous run's elections
                with LocalCluster(
                    3,
                    node_gids=True,
                    sync_interval="always",
                    node_tags=True,
                    extra_config='ping_interval: "1s"',
                ) as cluster:
                    nemesis = Nemesis(cluster, None, firewall="auto")
                    try:
                        run = asyncio.run(_run(cluster, nemesis, replicas, where, args.verbose))
                    finally:
                        nemesis.heal_all()
                        nemesis.close()
                runs.append(run)
                print(
                    f"R{replicas} client {where}: client gap {run['client_gap_s']:.2f} s, buckets leaderless after"
                    f" the heal {run['leaderless_after_heal_s']}"
                )
    if args.json:
        command = " ".join([".venv/bin/python", *sys.argv])
        report = {"command": command, "took_s": round(time.time() - started, 1), "runs": runs}
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
