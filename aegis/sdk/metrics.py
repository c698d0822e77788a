"""Per-method instance metrics: an HDR latency histogram, counts and in-flight, with a snapshot API.

Lifetime figures and windows
----------------------------
Each handler has one HdrHistogram that is never reset, so :class:`~aegis.sdk.schema.MethodStats`' top-level
p50/p99 are lifetime figures. "Is it slow now" needs windows: a snapshot taken for a **feed** (a named consumer
of snapshots: :data:`FEED_HEARTBEAT`, the registry record every ``heartbeat_interval_s``; :data:`FEED_HISTORY`,
the ``AEGIS_METRICS`` stream every ``metrics_history_interval_s``) also carries, per method, the calls that
finished since that feed's previous snapshot (:class:`~aegis.sdk.schema.WindowStats`).

How: a window is a *difference of two readings* of the lifetime histogram and counters, like a rate over a
Prometheus counter. Each feed keeps a mark per method (a copy of the histogram's counts array and the
counters, taken at its previous snapshot); the window is now minus the mark. Why this and not a second,
resettable histogram per window:

* per call it costs **nothing**: :meth:`MethodMetrics.record` is unchanged (no second histogram record, no lock,
  no allocation), which matters on the RPC hot path;
* feeds cannot disturb each other: there is nothing shared to reset, each feed only moves its own marks, and a
  snapshot without a feed (``snapshot()``, tests, tools) moves none;
* the window keeps the lifetime histogram's resolution (3 significant digits).

The price is paid at snapshot time, once per feed period, and in memory: a mark holds a copy of the counts
array (172 KB per handler and feed, copied by a C memcpy), and a window is found by comparing 2 KB slices of it
(C memcmp) and reading in Python only the slices that differ (a few, as latencies cluster; about 1 ms per
handler measured for a wide spread, at worst one pass over the array). The alternative, one extra record per
call into an interval histogram that each snapshot harvests and merges into per-feed accumulators, costs ~3 us
per call in this pure-Python HdrHistogram and still needs a reset (a Python loop over the array) per window.
No lock is needed: recording and snapshots run on the one event loop thread, and a snapshot has no await inside.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from hdrh.histogram import HdrHistogram

from .schema import MethodStats, MetricsSnapshot, WindowStats

# Latencies are recorded in microseconds, 1 us .. 10 min, 3 significant digits.
_LOWEST_US = 1
_HIGHEST_US = 600_000_000
_DIGITS = 3

FEED_HEARTBEAT = "heartbeat"
"""The registry record's feed (:mod:`aegis.sdk.heartbeat`): a window per ``heartbeat_interval_s``."""
FEED_HISTORY = "history"
"""The ``AEGIS_METRICS`` history stream's feed: a window per ``metrics_history_interval_s``."""

_CHUNK_WORDS = 256
"""Counters compared at once when looking for the part of a histogram that changed (2 KB of 8-byte words)."""
_WORD_FORMATS = {2: "H", 4: "I", 8: "Q"}


class MethodMetrics:
    """Counters and histogram of one handler. ``record`` costs well under a microsecond.

    ``record`` puts a value in the histogram's counts itself instead of calling ``HdrHistogram.record_value``
    (pure Python, about 2 us a value: it finds the bucket through ``len(bin(value))`` and three method calls):
    the same index arithmetic with ``int.bit_length`` and the histogram's constants read once here, then the
    same updates of the counts, total, min and max. ``tests/test_metrics_window.py`` checks both agree.
    """

    __slots__ = (
        "kind",
        "hist",
        "requests",
        "errors",
        "in_flight",
        "last_error",
        "total_us",
        "_counts",
        "_mask",
        "_shift",
        "_unit",
        "_half_mag",
        "_half_count",
    )

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.hist = h = HdrHistogram(_LOWEST_US, _HIGHEST_US, _DIGITS)
        self.requests = 0
        self.errors = 0
        self.in_flight = 0
        self.last_error = ""
        self.total_us = 0
        # HdrHistogram's index arithmetic (_counts_index_for), its constants read once
        self._counts = h.counts
        self._mask = h.sub_bucket_mask
        self._shift = h.unit_magnitude + h.sub_bucket_half_count_magnitude + 1
        self._unit = h.unit_magnitude
        self._half_mag = h.sub_bucket_half_count_magnitude
        self._half_count = h.sub_bucket_half_count

    def record(self, seconds: float, error: str | None = None) -> None:
        """Count one finished call that took ``seconds``; ``error`` is its error text if it failed."""
        us = int(seconds * 1e6)
        if us < _LOWEST_US:
            us = _LOWEST_US
        elif us > _HIGHEST_US:
            us = _HIGHEST_US
        bucket = (us | self._mask).bit_length() - self._shift
        self._counts[((bucket + 1) << self._half_mag) + (us >> (bucket + self._unit)) - self._half_count] += 1
        h = self.hist
        h.total_count += 1
        if us < h.min_value:
            h.min_value = us
        if us > h.max_value:
            h.max_value = us
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


@dataclass(frozen=True, slots=True)
class _Mark:
    """One method's lifetime readings at a feed's previous snapshot."""

    counts: bytes
    requests: int
    errors: int


@dataclass(slots=True)
class _Feed:
    at: float
    """Monotonic time of the feed's previous snapshot (the instance's start before the first)."""
    marks: dict[str, _Mark] = field(default_factory=dict)


def _changes(hist: HdrHistogram, before: bytes | None) -> list[tuple[int, int]]:
    """(counts index, calls added) of every histogram bucket that grew since ``before`` (a copy of its counts
    array; None: since it was empty), in index (= latency) order."""
    now = memoryview(hist.counts).cast("B")
    word = now.nbytes // hist.counts_len
    base = memoryview(before if before is not None else bytes(now.nbytes))
    now_words, base_words = now.cast(_WORD_FORMATS[word]), base.cast(_WORD_FORMATS[word])
    step = _CHUNK_WORDS * word
    out = []
    for offset in range(0, now.nbytes, step):
        if now[offset : offset + step] == base[offset : offset + step]:  # memcmp: nothing recorded here
            continue
        first = offset // word
        for i in range(first, min(first + _CHUNK_WORDS, hist.counts_len)):
            added = now_words[i] - base_words[i]
            if added > 0:
                out.append((i, added))
    return out


def _window_stats(m: MethodMetrics, mark: _Mark | None, window_s: float) -> tuple[WindowStats, _Mark]:
    """The calls ``m`` finished since ``mark`` (None: since it was created) over ``window_s`` seconds, and the
    mark to measure the next window from. Percentiles follow HdrHistogram's definition (the highest value
    equivalent to the bucket holding the nearest-rank count), so a window and a lifetime agree on one call."""
    hist = m.hist
    changes = _changes(hist, mark.counts if mark is not None else None)
    n = sum(added for _, added in changes)
    found: dict[float, int] = {}
    targets = {p: max(1, int(p * n / 100 + 0.5)) for p in (50.0, 99.0)}
    seen = 0
    for index, added in changes:
        seen += added
        for p, target in targets.items():
            if p not in found and seen >= target:
                found[p] = hist.get_highest_equivalent_value(hist.get_value_from_index(index))
    top = hist.get_highest_equivalent_value(hist.get_value_from_index(changes[-1][0])) if changes else 0
    requests = m.requests - (mark.requests if mark is not None else 0)
    errors = m.errors - (mark.errors if mark is not None else 0)
    stats = WindowStats(
        window_s=window_s,
        requests=requests,
        errors=errors,
        error_rate=errors / requests if requests else 0.0,
        p50_ms=found.get(50.0, 0) / 1000,
        p99_ms=found.get(99.0, 0) / 1000,
        max_ms=top / 1000,
        rate_per_s=requests / window_s if window_s > 0 else 0.0,
    )
    return stats, _Mark(bytes(memoryview(hist.counts).cast("B")), m.requests, m.errors)


class InstanceMetrics:
    """All handlers' metrics of one instance. Queue depth comes from callbacks the handlers register.

    ``snapshot(feed)`` adds windows (see the module docstring); ``clock`` is the monotonic clock windows and
    uptime are measured with (tests pass their own).
    """

    def __init__(
        self, service: str, instance_id: str, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.service = service
        self.instance_id = instance_id
        self.clock = clock
        self.started = clock()
        self.methods: dict[str, MethodMetrics] = {}
        self._depth_sources: list[Callable[[], int]] = []
        self._feeds: dict[str, _Feed] = {}

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

    def snapshot(self, feed: str | None = None) -> MetricsSnapshot:
        """A consistent copy of the current numbers.

        With ``feed`` (e.g. :data:`FEED_HEARTBEAT`) every method also gets its window: the calls finished since
        this feed's previous snapshot (since the start for its first), and the snapshot's ``window_s`` says how
        long that was. Each feed has its own windows; a snapshot without a feed has none and moves none::

            metrics.snapshot(FEED_HEARTBEAT).methods["price"].window.p99_ms   # p99 of the last second or so
        """
        now = self.clock()
        methods = {name: m.stats() for name, m in self.methods.items()}
        window_s = None
        if feed is not None:
            state = self._feeds.get(feed)
            if state is None:
                state = self._feeds[feed] = _Feed(self.started)
            window_s = max(0.0, now - state.at)
            for name, m in self.methods.items():
                window, state.marks[name] = _window_stats(m, state.marks.get(name), window_s)
                methods[name] = methods[name].model_copy(update={"window": window})
            state.at = now
        return MetricsSnapshot(
            service=self.service,
            instance_id=self.instance_id,
            taken_at=time.time(),
            uptime_s=now - self.started,
            methods=methods,
            in_flight=sum(m.in_flight for m in self.methods.values()),
            queue_depth=self.queue_depth(),
            window_s=window_s,
        )
