"""The responder process of ``aegis bench``: a raw nats-py echo and an SDK service, side by side.

Run as ``python -m aegis.harness.bench.server URL``; prints ``ready`` once both listen, exits on stdin EOF.
The two never run at the same time during a measurement, so they do not compete for the CPU.

The SDK service joins the registry as any service does (heartbeat with metrics snapshot every second,
micro and effective-config responders), and appends its metrics history every second instead of every ten,
so the discovery row of the bench measures calls with all of that running. Its raw neighbour shares the
process, so the background work costs both sides alike.
"""

from __future__ import annotations

import asyncio
import sys

import nats
from pydantic import BaseModel

from aegis.sdk.config import load_settings
from aegis.sdk.connection import ConnectionPool
from aegis.sdk.rpc import CallContext, Service

RAW_SUBJECT = "bench.raw.echo"
SERVICE = "bench"
METHOD = "echo"
INSTANCE = "bench1"
METRICS_HISTORY_INTERVAL_S = 1.0


class Quote(BaseModel):
    """A payload shaped like a small market-data request."""

    symbol: str
    price: float
    qty: int
    side: str


def service() -> Service:
    """The SDK service used by the benchmark."""
    svc = Service(SERVICE, instance_id=INSTANCE)

    @svc.rpc(METHOD)
    async def echo(req: Quote, ctx: CallContext) -> Quote:
        return req

    return svc


async def serve(url: str) -> None:
    raw = await nats.connect(url)

    async def echo(msg: nats.aio.msg.Msg) -> None:
        await msg.respond(msg.data)

    await raw.subscribe(RAW_SUBJECT, queue="bench", cb=echo)
    settings = load_settings(
        servers=[url], pool_size=1, metrics_history_interval_s=METRICS_HISTORY_INTERVAL_S
    )
    pool = await ConnectionPool.connect(settings)
    svc = service()
    await svc.start(pool, register=True)  # registry record, heartbeats, metrics history
    await raw.flush()
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    await svc.stop()
    await pool.close()
    await raw.close()


if __name__ == "__main__":
    import uvloop  # the bench client runs on uvloop too

    uvloop.run(serve(sys.argv[1]))
