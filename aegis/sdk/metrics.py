"""Per-method instance metrics: an HDR latency histogram, counts and in-flight, with a snapshot API."""

from __future__ import annotations

import time
from collections.abc import Callable

from hdrh.histogram import HdrHistogram

from .schema import MethodStats, MetricsSnapshot

# Latencies are recorded in microseconds, 1 us .. 10 min, 3 significant digits.
_LOWEST_US = 1
_HIGHEST_US = 600_000_000
_DIGITS = 3


class MethodMetrics:
    """Counters and histogram of one handler. ``record`` costs a few microseconds."""

    __slots__ = ("kind", "hist", "requests", "errors", "in_flight", "last_error", "total_us")

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.hist = HdrHistogram(_LOWEST_US, _HIGHEST_US, _DIGITS)
        self.requests = 0
        self.errors = 0
        self.in_flight = 0
        self.last_error = ""
        self.total_us = 0

    def record(self, seconds: float, error: str | None = None) -> None:
        """Count one finished call that took ``seconds``; ``error`` is its error text if it failed."""
        us = max(_LOWEST_US, min(_HIGHEST_US, int(seconds * 1e6)))
        self.hist.record_value(us)
        self.total_us += us
        self.requests += 1
        if error is not None:
            self.errors += 1
            self.last_error = error

    def stats(self) -> MethodStats:
        h = self.hist
        n = self.requests
        return MethodStats(
            kind=self.kind,
            requests=n,
            errors=self.errors,
            error_rate=self.errors / n if n else 0.0,
            in_flight=self.in_flight,
            p50_ms=h.get_value_at_percentile(50) / 1000 if n else 0.0,
            p90_ms=h.get_value_at_percentile(90) / 1000 if n else 0.0,
            p99_ms=h.get_value_at_percentile(99) / 1000 if n else 0.0,
            max_ms=h.get_max_value() / 1000 if n else 0.0,
            mean_ms=self.total_us / n / 1000 if n else 0.0,
            last_error=self.last_error,
        )


class InstanceMetrics:
    """All handlers' metrics of one instance. Queue depth comes from callbacks the handlers register."""

    def __init__(self, service: str, instance_id: str) -> None:
        self.service = service
        self.instance_id = instance_id
        self.started = time.monotonic()
        self.methods: dict[str, MethodMetrics] = {}
        self._depth_sources: list[Callable[[], int]] = []

    def method(self, name: str, kind: str = "rpc") -> MethodMetrics:
        """The metrics of handler ``name``, created on first use."""
        m = self.methods.get(name)
        if m is None:
            m = self.methods[name] = MethodMetrics(kind)
        return m

    def add_queue_depth_source(self, source: Callable[[], int]) -> None:
        """Register a callable returning messages waiting for this instance (a subscription's pending)."""
        self._depth_sources.append(source)

    def remove_queue_depth_source(self, source: Callable[[], int]) -> None:
        if source in self._depth_sources:
            self._depth_sources.remove(source)

    def queue_depth(self) -> int:
        total = 0
        for source in self._depth_sources:
            try:
                total += int(source())
            except Exception:  # a closed subscription has no depth
                continue
        return total

    def snapshot(self) -> MetricsSnapshot:
        """A consistent copy of the current numbers."""
        methods = {name: m.stats() for name, m in self.methods.items()}
        return MetricsSnapshot(
            service=self.service,
            instance_id=self.instance_id,
            taken_at=time.time(),
            uptime_s=time.monotonic() - self.started,
            methods=methods,
            in_flight=sum(m.in_flight for m in self.methods.values()),
            queue_depth=self.queue_depth(),
        )
