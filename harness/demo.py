"""The demo that ``aegis up`` runs on the local cluster: a quote service and a steady client.

``python -m harness.demo serve --instance q1 URL [URL ...]`` runs one instance of the ``quotes`` service
until stdin closes or SIGTERM. :class:`DemoClient` produces steady traffic against it and keeps the
figures the live status line shows.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import signal
import time
from dataclasses import dataclass, field

from hdrh.histogram import HdrHistogram
from pydantic import BaseModel

from sdk.config import load_settings
from sdk.connection import ConnectionPool
from sdk.errors import AegisError
from sdk.rpc import CallContext, RpcClient, Service

SERVICE = "quotes"


class QuoteRequest(BaseModel):
    symbol: str
    qty: int


class Quote(BaseModel):
    symbol: str
    bid: float
    ask: float
    qty: int
    instance: str


def quote_service(instance_id: str) -> Service:
    """The demo service: prices a quantity of a symbol around a fixed mid."""
    svc = Service(SERVICE, instance_id=instance_id, version="1.0.0")
    mids = {"EURUSD": 1.0850, "GBPUSD": 1.2650, "USDJPY": 151.20}

    @svc.rpc("price")
    async def price(req: QuoteRequest, ctx: CallContext) -> Quote:
        mid = mids.get(req.symbol)
        if mid is None:
            from sdk.errors import RemoteError

            raise RemoteError(f"unknown symbol {req.symbol!r}", code=404)
        spread = mid * 0.0001 * (1 + req.qty / 10_000_000)
        return Quote(
            symbol=req.symbol, bid=mid - spread, ask=mid + spread, qty=req.qty, instance=ctx.instance_id
        )

    return svc


async def serve(instance_id: str, urls: list[str]) -> None:
    pool = await ConnectionPool.connect(load_settings(servers=urls, name=f"{SERVICE}-{instance_id}"))
    svc = quote_service(instance_id)
    await svc.start(pool)
    print("ready", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await svc.stop()
    await pool.close()


@dataclass
class DemoStats:
    """What the client saw since it started."""

    ok: int = 0
    failed: int = 0
    last_error: str = ""
    by_instance: dict[str, int] = field(default_factory=dict)
    hist: HdrHistogram = field(default_factory=lambda: HdrHistogram(1, 60_000_000, 3))
    started: float = field(default_factory=time.monotonic)

    def line(self) -> str:
        rate = (self.ok + self.failed) / max(1e-9, time.monotonic() - self.started)
        p99 = self.hist.get_value_at_percentile(99) / 1000 if self.ok else 0.0
        spread = " ".join(f"{k}:{v}" for k, v in sorted(self.by_instance.items()))
        err = f" last error: {self.last_error}" if self.failed else ""
        return f"{rate:6.0f} calls/s  ok {self.ok}  failed {self.failed}  p99 {p99:.2f} ms  [{spread}]{err}"


class DemoClient:
    """Steady traffic: ``rate`` calls per second to ``quotes.price``, one at a time."""

    def __init__(self, pool: ConnectionPool, rate: float = 200.0) -> None:
        self.client = RpcClient(pool)
        self.rate = rate
        self.stats = DemoStats()

    async def run(self, stop: asyncio.Event) -> None:
        period = 1.0 / self.rate
        symbols = ["EURUSD", "GBPUSD", "USDJPY"]
        while not stop.is_set():
            t = time.perf_counter()
            try:
                q = await self.client.call(
                    SERVICE,
                    "price",
                    QuoteRequest(symbol=random.choice(symbols), qty=random.randint(1, 50) * 100_000),
                    timeout=1.0,
                    response_model=Quote,
                )
                self.stats.ok += 1
                self.stats.hist.record_value(max(1, int((time.perf_counter() - t) * 1e6)))
                self.stats.by_instance[q.instance] = self.stats.by_instance.get(q.instance, 0) + 1
            except AegisError as exc:
                self.stats.failed += 1
                self.stats.last_error = f"{type(exc).__name__}: {exc.message}"
            await asyncio.sleep(max(0.0, period - (time.perf_counter() - t)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--instance", required=True)
    s.add_argument("urls", nargs="+")
    args = parser.parse_args()
    asyncio.run(serve(args.instance, args.urls))


if __name__ == "__main__":
    main()
