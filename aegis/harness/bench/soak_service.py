"""The service process of the soak benchmark (:mod:`aegis.harness.bench.soak`): one SDK instance under a long load.

Run as ``python -m aegis.harness.bench.soak_service URL [URL ...]``; prints ``ready`` once it serves, then one
JSON status line per second (calls and events handled, the footprint of its metrics), exits on stdin EOF after
a last status line.

The instance is a plain :class:`~aegis.sdk.rpc.Service` with one RPC method (``echo``, a pydantic model in and
out) and one compete event subscription through an :class:`~aegis.sdk.events.EventBus` that shares its
:class:`~aegis.sdk.metrics.InstanceMetrics`, registered like any service: heartbeat with a metrics snapshot every
second, metrics history every ``METRICS_HISTORY_INTERVAL_S`` (both windowed feeds run all along). What the
soak watches here is memory: the process's RSS is sampled from outside, and each status line carries
:func:`metrics_footprint`, which must not move with the call count.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from pydantic import BaseModel

from aegis.sdk.config import load_settings
from aegis.sdk.connection import ConnectionPool
from aegis.sdk.events import EventBus
from aegis.sdk.metrics import InstanceMetrics
from aegis.sdk.rpc import CallContext, Service

SERVICE = "soak"
METHOD = "echo"
INSTANCE = "soak1"
TOPIC = "soak.tick"
EVENT_GROUP = "soak"
METRICS_HISTORY_INTERVAL_S = 1.0


class Quote(BaseModel):
    """A payload shaped like a small market-data request (the one of ``aegis bench``)."""

    symbol: str
    price: float
    qty: int
    side: str


def metrics_footprint(metrics: InstanceMetrics) -> dict[str, int]:
    """What an instance's metrics hold, in numbers that grow if anything accumulates per call: the methods,
    the histogram buckets (fixed at creation), the feeds and their marks, and the bytes the marks copy."""
    marks = [mark for feed in metrics._feeds.values() for mark in feed.marks.values()]
    return {
        "methods": len(metrics.methods),
        "hist_buckets": sum(m.hist.counts_len for m in metrics.methods.values()),
        "feeds": len(metrics._feeds),
        "marks": len(marks),
        "mark_bytes": sum(len(mark.counts) for mark in marks),
        "depth_sources": len(metrics._depth_sources),
    }


async def serve(urls: list[str]) -> None:
    settings = load_settings(servers=urls, pool_size=1, metrics_history_interval_s=METRICS_HISTORY_INTERVAL_S)
    pool = await ConnectionPool.connect(settings)
    svc = Service(SERVICE, instance_id=INSTANCE)
    handled = {"calls": 0, "events": 0}

    @svc.rpc(METHOD)
    async def echo(req: Quote, ctx: CallContext) -> Quote:
        handled["calls"] += 1
        return req

    bus = EventBus(pool, metrics=svc.metrics, instance_id=INSTANCE)
    await bus.ensure_streams()

    async def on_tick(event: Quote) -> None:
        handled["events"] += 1

    await bus.subscribe(TOPIC, on_tick, group=EVENT_GROUP, concurrency=16)
    await svc.start(pool, register=True)
    print("ready", flush=True)

    def status() -> str:
        line: dict[str, Any] = {"t": time.monotonic(), **handled, "metrics": metrics_footprint(svc.metrics)}
        return json.dumps(line)

    async def report() -> None:
        while True:
            await asyncio.sleep(1.0)
            print(status(), flush=True)

    reporter = asyncio.create_task(report())
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    reporter.cancel()
    print(status(), flush=True)
    await bus.close()
    await svc.stop()
    await pool.close()


if __name__ == "__main__":
    import uvloop

    uvloop.run(serve(sys.argv[1:]))
