"""Concurrent HTTP load on one route, bounded in count and time, with every latency kept.

``clients`` workers, each with its own :class:`httpx.AsyncClient` (its own keep-alive connection, as separate
dashboards or scrapers would have), send ``GET path`` until ``requests`` have been sent or ``duration_s`` has
passed, whichever comes first. A request is claimed before it is sent, so no more than ``requests`` are ever sent,
and none starts after the deadline.

Two shapes of load:

* back to back (``interval_s`` None): the saturation throughput. Its latency is mostly queueing: with N clients
  always waiting, latency is about N / throughput whatever the service does;
* paced (``interval_s``): each client polls once per interval (a dashboard or a scraper does), starting at a
  random phase. A latency is counted from when the request was *due*, not when it left, so a client that fell
  behind records the wait too (no coordinated omission).

Latencies are kept twice, for two readers: the exact samples (the printed p50/p99/max come from them through
:func:`aegis.stats.summary`, the project's one percentile definition, so they compare with every other figure in
the README) and an HDR histogram (3 significant digits), whose encoding goes into the report so the whole
distribution can be read back later (``HdrHistogram.decode``) without storing every sample.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
from hdrh.histogram import HdrHistogram

Progress = Callable[[str], None]

TIMEOUT_S = 30.0
"""Per-request timeout: far above any latency worth measuring, so a timeout is an error, not a figure."""
PROGRESS_EVERY_S = 0.5
MAX_ERRORS_KEPT = 20


@dataclass
class LoadResult:
    """What the load measured. ``requests`` counts answered and failed requests alike."""

    requests: int = 0
    errors: int = 0
    latencies_s: list[float] = field(default_factory=list)
    """One per successful (HTTP 200) request."""
    histogram: HdrHistogram = field(default_factory=lambda: HdrHistogram(1, 60_000_000, 3))
    """The same latencies in microseconds."""
    seconds: float = 0.0
    response_bytes: int = 0
    error_samples: list[str] = field(default_factory=list)

    @property
    def per_s(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def record(self, latency_s: float, ok: bool, size: int, error: str = "") -> None:
        self.requests += 1
        if not ok:
            self.errors += 1
            if len(self.error_samples) < MAX_ERRORS_KEPT:
                self.error_samples.append(error)
            return
        self.latencies_s.append(latency_s)
        self.histogram.record_value(max(1, round(latency_s * 1e6)))
        self.response_bytes += size


async def run_load(
    base_url: str,
    path: str,
    headers: dict[str, str],
    *,
    clients: int,
    requests: int,
    duration_s: float,
    interval_s: float | None = None,
    progress: Progress = lambda _: None,
) -> LoadResult:
    """Send at most ``requests`` GETs of ``path`` from ``clients`` workers for at most ``duration_s``, back to
    back or one per ``interval_s`` per client."""
    result = LoadResult()
    sent = 0
    clock = time.perf_counter
    # Made before the clock starts: building one costs tens of milliseconds of this loop (its TLS context), which
    # 50 clients building at once would have charged to the first requests' latency.
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    pool = [
        httpx.AsyncClient(
            base_url=base_url, headers=headers, timeout=TIMEOUT_S, limits=limits, trust_env=False
        )
        for _ in range(clients)
    ]
    start = clock()
    deadline = start + duration_s

    def claim() -> bool:
        nonlocal sent
        if sent >= requests or clock() >= deadline:
            return False
        sent += 1
        return True

    async def worker(client: httpx.AsyncClient) -> None:
        async with client:
            due = start + (random.uniform(0, interval_s) if interval_s else 0.0)
            while claim():
                if interval_s:
                    await asyncio.sleep(max(0.0, due - clock()))
                    t, due = due, due + interval_s
                else:
                    t = clock()
                try:
                    r = await client.get(path)
                    ok, size, error = r.status_code == 200, len(r.content), f"HTTP {r.status_code}"
                except httpx.HTTPError as exc:
                    ok, size, error = False, 0, f"{type(exc).__name__}: {exc}"
                result.record(clock() - t, ok, size, error)

    async def report() -> None:
        while True:
            await asyncio.sleep(PROGRESS_EVERY_S)
            progress(
                f"{result.requests}/{requests} requests, {result.errors} errors, {clock() - start:.0f} s"
            )

    reporter = asyncio.create_task(report())
    try:
        await asyncio.gather(*(worker(client) for client in pool))
    finally:
        reporter.cancel()
    result.seconds = clock() - start
    return result
