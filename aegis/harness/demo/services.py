"""The demo that ``aegis up`` runs on the local cluster: a quote service, a single-active ledger, clients.

``python -m aegis.harness.demo serve --instance q1 URL [URL ...]`` runs one instance of the ``quotes`` service
until SIGTERM. :class:`DemoClient` produces steady traffic against it and keeps the figures the live status
line shows.

``python -m aegis.harness.demo serve-active --instance L1 URL [URL ...]`` runs one instance of the single-active
``ledger`` group: its exclusive ``book`` answers only on the active instance with who answered and in which
epoch; ``whoami`` answers everywhere. It prints ``ready`` once started and stops gracefully (releasing the
election key) on SIGTERM, SIGINT or, when stdin is a pipe, when stdin closes. :class:`StickyDemoClient` calls
``book`` at a steady rate through the sticky client. :mod:`aegis.harness.campaign.group` kills and stops these
processes (``aegis failover``, ``aegis campaign``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import stat
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from hdrh.histogram import HdrHistogram
from pydantic import BaseModel, Field

from aegis.sdk.config import load_settings
from aegis.sdk.connection import ConnectionPool
from aegis.sdk.election import ElectionParams
from aegis.sdk.errors import AegisError
from aegis.sdk.rpc import CallContext, RpcClient, Service
from aegis.sdk.single_active import SingleActiveService
from aegis.sdk.sticky import StickyClient
from aegis.sdk.trace_events import TraceParams, TraceWriter

SERVICE = "quotes"
ACTIVE_SERVICE = "ledger"


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
            from aegis.sdk.errors import RemoteError

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


class BookRequest(BaseModel):
    ref: str = ""
    amount: int = 0
    hold_ms: int = Field(0, ge=0, le=60_000)
    """How long ``book`` awaits before it answers (a handler waiting on a downstream system; fault tests)."""


def ledger_service(
    instance_id: str,
    *,
    name: str = ACTIVE_SERVICE,
    group: str = "default",
    params: ElectionParams | None = None,
    ttl_s: int = 10,
    trace: TraceWriter | None = None,
    election: Literal["lease", "quorum"] = "lease",
) -> SingleActiveService:
    """The single-active demo: ``book`` runs on the active instance only and says who answered in which epoch
    (the reply's ``Aegis-Epoch`` header carries the epoch too); ``whoami`` answers on every instance."""
    svc = SingleActiveService(
        name,
        instance_id=instance_id,
        group=group,
        params=params or ElectionParams(),
        ttl_s=ttl_s,
        trace=trace,
        election=election,
    )

    @svc.exclusive_rpc("book")
    async def book(req: BookRequest | None, ctx: CallContext) -> dict[str, Any]:
        if req is not None and req.hold_ms:
            await asyncio.sleep(req.hold_ms / 1000)
        return {"instance": ctx.instance_id, "epoch": ctx.epoch, "call_id": ctx.call_id}

    @svc.rpc("whoami")
    async def whoami(req: None, ctx: CallContext) -> dict[str, Any]:
        return {"instance": ctx.instance_id, "active": svc.is_active, "epoch": svc.known_epoch}

    return svc


def _stop_on_stdin_eof(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """When stdin is a pipe, its closing (the parent went away or asked us to stop) stops the instance.

    Only for pipes: a child started with stdin=/dev/null would otherwise read EOF at once and stop.
    """
    try:
        if not stat.S_ISFIFO(os.fstat(sys.stdin.fileno()).st_mode):
            return
    except (OSError, ValueError):
        return

    class _Eof(asyncio.Protocol):
        def connection_lost(self, exc: Exception | None) -> None:
            stop.set()

    loop.create_task(loop.connect_read_pipe(_Eof, sys.stdin))


async def serve_active(
    instance_id: str,
    urls: list[str],
    *,
    service: str = ACTIVE_SERVICE,
    group: str = "default",
    params: ElectionParams | None = None,
    ttl_s: int = 10,
    trace: Path | None = None,
    election: Literal["lease", "quorum"] = "lease",
) -> None:
    """Run one ledger instance until SIGTERM/SIGINT/stdin EOF; then stop gracefully (releases the key).
    ``trace``: append the spec's NDJSON election trace to this file."""
    params = params or ElectionParams()
    writer = (
        None
        if trace is None
        else TraceWriter(
            trace,
            params=TraceParams(
                lease=params.lease_s, drift=params.drift, ttl=ttl_s, renew=params.renew_s, election=election
            ),
        )
    )
    pool = await ConnectionPool.connect(load_settings(servers=urls, name=f"{service}-{instance_id}"))
    svc = ledger_service(
        instance_id, name=service, group=group, params=params, ttl_s=ttl_s, trace=writer, election=election
    )
    await svc.start(pool)
    print("ready", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    _stop_on_stdin_eof(loop, stop)
    await stop.wait()
    await svc.stop()
    await pool.close()
    if writer is not None:
        writer.close()


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


@dataclass
class StickyStats:
    """What the sticky demo client saw: counts and who answered last in which epoch."""

    ok: int = 0
    failed: int = 0
    last_error: str = ""
    instance: str = "-"
    epoch: int = 0
    hist: HdrHistogram = field(default_factory=lambda: HdrHistogram(1, 60_000_000, 3))

    def line(self) -> str:
        p99 = self.hist.get_value_at_percentile(99) / 1000 if self.ok else 0.0
        err = f" last error: {self.last_error}" if self.failed else ""
        return (
            f"active {self.instance} epoch {self.epoch}  sticky ok {self.ok}  failed {self.failed}"
            f"  p99 {p99:.2f} ms{err}"
        )


class StickyDemoClient:
    """Steady traffic to the active ledger instance: ``rate`` ``book`` calls per second via StickyClient."""

    def __init__(self, pool: ConnectionPool, rate: float = 50.0, service: str = ACTIVE_SERVICE) -> None:
        self.client = StickyClient(pool)
        self.rate = rate
        self.service = service
        self.stats = StickyStats()

    async def run(self, stop: asyncio.Event) -> None:
        period = 1.0 / self.rate
        n = 0
        try:
            while not stop.is_set():
                t = time.perf_counter()
                n += 1
                try:
                    reply = await self.client.call_active(
                        self.service, "book", BookRequest(ref=f"up-{n}", amount=n), timeout=2.0
                    )
                    self.stats.ok += 1
                    self.stats.hist.record_value(max(1, int((time.perf_counter() - t) * 1e6)))
                    self.stats.instance, self.stats.epoch = reply["instance"], int(reply["epoch"])
                except AegisError as exc:
                    self.stats.failed += 1
                    self.stats.last_error = f"{type(exc).__name__}: {exc.message}"
                await asyncio.sleep(max(0.0, period - (time.perf_counter() - t)))
        finally:
            await self.client.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="one instance of the quotes service")
    s.add_argument("--instance", required=True)
    s.add_argument("urls", nargs="+")
    a = sub.add_parser("serve-active", help="one instance of the single-active ledger group")
    a.add_argument("--instance", required=True)
    a.add_argument("--service", default=ACTIVE_SERVICE, help="service name (tests use a unique one)")
    a.add_argument("--group", default="default")
    defaults = ElectionParams()
    a.add_argument("--lease", type=float, default=defaults.lease_s, help="lease_s")
    a.add_argument("--renew", type=float, default=defaults.renew_s, help="renew_s")
    a.add_argument("--drift", type=float, default=defaults.drift, help="drift bound rho")
    a.add_argument("--write-timeout", type=float, default=defaults.write_timeout_s, help="write_timeout_s")
    a.add_argument("--ttl", type=int, default=10, help="election key TTL backstop, whole seconds")
    a.add_argument("--trace", type=Path, help="append the election's NDJSON trace events to this file")
    a.add_argument("--election", choices=("lease", "quorum"), default="lease", help="election protocol")
    a.add_argument("urls", nargs="+")
    args = parser.parse_args()
    if args.cmd == "serve":
        asyncio.run(serve(args.instance, args.urls))
        return
    params = ElectionParams(
        lease_s=args.lease, renew_s=args.renew, drift=args.drift, write_timeout_s=args.write_timeout
    )
    asyncio.run(
        serve_active(
            args.instance,
            args.urls,
            service=args.service,
            group=args.group,
            params=params,
            ttl_s=args.ttl,
            trace=args.trace,
            election=args.election,
        )
    )


if __name__ == "__main__":
    main()
