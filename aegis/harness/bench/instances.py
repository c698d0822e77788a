"""The registered instances of ``aegis bench --management``: N registry records kept alive by the real SDK heartbeat.

Run as ``python -m aegis.harness.bench.instances N URL [URL ...]``; prints ``ready N`` once every record is
written, then heartbeats until stdin closes, and removes the records on the way out.

Why a process of its own: N heartbeats (one KV compare-and-set each per ``heartbeat_interval_s``) cost CPU, and
on the bench process's event loop that CPU would land in the HTTP latencies being measured. Here it competes
for the machine as real instances would, not for the bench client's loop. The N instances share one connection
pool (a fleet of N processes would hold N pools; the management service sees the same records either way, and
the records are what it serves).

Each instance's :class:`~aegis.sdk.metrics.InstanceMetrics` holds one RPC method with a few recorded calls, so
its record carries method statistics the size a serving instance's does, not an empty ``methods`` map.
"""

from __future__ import annotations

import asyncio
import random
import sys

from aegis.sdk.config import load_settings
from aegis.sdk.connection import ConnectionPool
from aegis.sdk.heartbeat import Heartbeat
from aegis.sdk.metrics import InstanceMetrics

SERVICES = 10
"""The instances are spread over this many services (``mbench-0`` ...), as a fleet would be."""
METHOD = "quote"
CALLS_PER_INSTANCE = 50
"""Synthetic calls recorded once per instance at start (seeded): the record's method stats are not empty."""
START_BATCH = 20
"""Heartbeats started at once: bounds the burst of first writes."""
CONNECTION_NAME = "aegis-bench-instances"


def instance_metrics(index: int, rng: random.Random) -> InstanceMetrics:
    """The metrics of instance ``index``: one method with a few recorded calls (a lognormal around 1 ms)."""
    metrics = InstanceMetrics(f"mbench-{index % SERVICES}", f"i{index:04d}")
    method = metrics.method(METHOD)
    for _ in range(CALLS_PER_INSTANCE):
        method.record(rng.lognormvariate(-7, 0.5))
    return metrics


async def run(count: int, urls: list[str]) -> None:
    """Register ``count`` instances, say ``ready``, heartbeat until stdin closes, then remove them."""
    settings = load_settings(servers=urls, name=CONNECTION_NAME)
    pool = await ConnectionPool.connect(settings)
    rng = random.Random(1)
    beats = [Heartbeat(pool, instance_metrics(i, rng), version="bench") for i in range(count)]
    try:
        for i in range(0, count, START_BATCH):
            await asyncio.gather(*(hb.start() for hb in beats[i : i + START_BATCH]))
        unwritten = [hb.key for hb in beats if not hb.healthy]
        print(f"ready {count - len(unwritten)}", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    finally:
        await asyncio.gather(*(hb.stop() for hb in beats), return_exceptions=True)
        await pool.close()


if __name__ == "__main__":
    import uvloop

    uvloop.run(run(int(sys.argv[1]), sys.argv[2:]))
