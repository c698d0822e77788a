"""Windowed metrics: each feed's snapshot carries the calls finished since that feed's previous snapshot, while the
top-level figures stay lifetime figures (aegis/sdk/metrics.py). Unit tests on a fake clock, then the two real feeds
(registry heartbeat, AEGIS_METRICS history) on the 3-node cluster."""

from __future__ import annotations

import json
import random
import uuid
from typing import Any

import pytest
from waiting import wait_until_async

from aegis.sdk import wire
from aegis.sdk.connection import ConnectionPool
from aegis.sdk.metrics import FEED_HEARTBEAT, FEED_HISTORY, InstanceMetrics
from aegis.sdk.registry import Registry
from aegis.sdk.rpc import RpcClient, Service
from aegis.sdk.schema import MetricsSnapshot


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _metrics() -> tuple[InstanceMetrics, FakeClock]:
    clock = FakeClock()
    return InstanceMetrics("svc", "i1", clock=clock), clock


def test_window_p99_follows_the_last_window_while_the_lifetime_keeps_both() -> None:
    metrics, clock = _metrics()
    price = metrics.method("price")
    for _ in range(100):  # window 1: slow
        price.record(0.080)
    clock.now += 10
    first = metrics.snapshot(FEED_HEARTBEAT)
    for _ in range(100):  # window 2: fast, one error
        price.record(0.002)
    price.record(0.002, error="boom")
    clock.now += 5
    second = metrics.snapshot(FEED_HEARTBEAT)

    w1, w2 = first.methods["price"].window, second.methods["price"].window
    assert w1 is not None and w2 is not None
    assert (first.window_s, second.window_s) == (10, 5)
    assert w1.requests == 100 and w1.p99_ms == pytest.approx(80, rel=1e-3)
    assert (w2.requests, w2.errors, w2.window_s) == (101, 1, 5)
    assert w2.p50_ms == pytest.approx(2, rel=1e-3) and w2.p99_ms == pytest.approx(2, rel=1e-3)
    assert w2.max_ms == pytest.approx(2, rel=1e-3)
    assert w2.rate_per_s == pytest.approx(101 / 5) and w2.error_rate == pytest.approx(1 / 101)
    lifetime = second.methods["price"]  # unchanged meaning: since the start
    assert lifetime.requests == 201 and lifetime.errors == 1
    assert lifetime.p99_ms == pytest.approx(80, rel=1e-3) and lifetime.max_ms == pytest.approx(80, rel=1e-3)
    assert lifetime.p50_ms == pytest.approx(2, rel=1e-3)


def test_two_feeds_do_not_disturb_each_other() -> None:
    metrics, clock = _metrics()
    m = metrics.method("book")
    beats = []
    for second in range(1, 11):  # a heartbeat every second, `second` calls in each
        for _ in range(second):
            m.record(second / 1000)
        clock.now += 1
        beats.append(metrics.snapshot(FEED_HEARTBEAT))
    history = metrics.snapshot(FEED_HISTORY)  # one history snapshot over the same 10 s

    assert [b.methods["book"].window.requests for b in beats] == list(range(1, 11))  # type: ignore[union-attr]
    assert all(b.window_s == 1 for b in beats)
    assert beats[-1].methods["book"].window.p99_ms == pytest.approx(10, rel=1e-3)  # type: ignore[union-attr]
    h = history.methods["book"].window
    assert history.window_s == 10 and h is not None
    assert h.requests == 55 and h.rate_per_s == pytest.approx(5.5)
    assert h.p50_ms == pytest.approx(7, rel=1e-3) and h.max_ms == pytest.approx(10, rel=1e-3)
    # and the history snapshot did not reset the heartbeat's window
    m.record(0.001)
    clock.now += 1
    assert metrics.snapshot(FEED_HEARTBEAT).methods["book"].window.requests == 1  # type: ignore[union-attr]


def test_a_window_without_calls_has_zero_requests_and_rate() -> None:
    metrics, clock = _metrics()
    m = metrics.method("idle")
    m.record(0.003)
    clock.now += 1
    metrics.snapshot(FEED_HEARTBEAT)
    clock.now += 2
    snap = metrics.snapshot(FEED_HEARTBEAT)
    w = snap.methods["idle"].window
    assert w is not None and snap.window_s == 2
    assert (w.requests, w.errors, w.rate_per_s, w.error_rate, w.p50_ms, w.p99_ms, w.max_ms) == (
        0,
        0,
        0,
        0,
        0,
        0,
        0,
    )
    assert snap.methods["idle"].requests == 1  # the lifetime still has it


def test_a_snapshot_without_a_feed_has_no_window_and_moves_none() -> None:
    metrics, clock = _metrics()
    m = metrics.method("x")
    m.record(0.001)
    clock.now += 3
    plain = metrics.snapshot()
    assert plain.window_s is None and plain.methods["x"].window is None
    m.record(0.001)
    clock.now += 1
    first = metrics.snapshot(FEED_HISTORY)  # a feed's first window starts at the instance's start
    assert first.window_s == 4 and first.methods["x"].window.requests == 2  # type: ignore[union-attr]


def test_a_window_agrees_with_the_histogram_on_its_percentiles() -> None:
    """Over the same calls (a first window, from an empty histogram), the window's p50/p99/max are HdrHistogram's."""
    metrics, clock = _metrics()
    m = metrics.method("spread")
    rng = random.Random(7)
    for _ in range(3000):
        m.record(rng.lognormvariate(-6, 1.5))
    clock.now += 1
    snap = metrics.snapshot(FEED_HEARTBEAT)
    w, life = snap.methods["spread"].window, snap.methods["spread"]
    assert w is not None
    assert (w.p50_ms, w.p99_ms, w.max_ms) == (life.p50_ms, life.p99_ms, life.max_ms)
    assert (m.hist.get_value_at_percentile(50) / 1000, m.hist.get_value_at_percentile(99) / 1000) == (
        w.p50_ms,
        w.p99_ms,
    )


def test_record_fills_the_histogram_exactly_as_hdrhistogram_does() -> None:
    """MethodMetrics.record does HdrHistogram's bucket arithmetic itself (the hot path): same counts array, total,
    min and max as ``record_value`` over every magnitude, both clamps, and bucket edges."""
    from hdrh.histogram import HdrHistogram

    from aegis.sdk.metrics import _DIGITS, _HIGHEST_US, _LOWEST_US, MethodMetrics

    m = MethodMetrics("rpc")
    ref = HdrHistogram(_LOWEST_US, _HIGHEST_US, _DIGITS)
    rng = random.Random(3)
    values_us = [
        0,
        1,
        2,
        1023,
        1024,
        2047,
        2048,
        2049,
        4095,
        4096,
        _HIGHEST_US - 1,
        _HIGHEST_US,
        _HIGHEST_US * 5,
    ]
    values_us += [2**k + d for k in range(1, 30) for d in (-1, 0, 1)]
    values_us += [int(rng.lognormvariate(5, 3)) for _ in range(20_000)]
    for us in values_us:
        seconds = us / 1e6
        m.record(seconds)
        ref.record_value(max(_LOWEST_US, min(_HIGHEST_US, int(seconds * 1e6))))  # what record did before
    assert bytes(memoryview(m.hist.counts).cast("B")) == bytes(memoryview(ref.counts).cast("B"))
    assert (m.hist.total_count, m.hist.min_value, m.hist.max_value) == (
        ref.total_count,
        ref.min_value,
        ref.max_value,
    )
    assert m.requests == len(values_us)
    assert m.hist.get_value_at_percentile(99) == ref.get_value_at_percentile(99)


# -- the two real feeds, on the cluster --------------------------------------------------------------------------


@pytest.fixture
def pool_settings() -> dict[str, Any]:
    """Heartbeats every 0.2 s, history every 2 s: the two windows differ by a factor of ten."""
    return {"heartbeat_interval_s": 0.2, "instance_ttl_s": 2, "metrics_history_interval_s": 2.0}


async def test_the_heartbeat_and_the_history_carry_their_own_windows(pool: ConnectionPool) -> None:
    name = f"win-{uuid.uuid4().hex[:8]}"
    svc = Service(name)

    @svc.rpc("echo")
    async def echo(req: int) -> int:
        return req

    await svc.start(pool)
    sub = await pool.js.subscribe(
        wire.metrics_subject(name, svc.instance_id), stream=wire.METRICS_STREAM, ordered_consumer=True
    )
    try:
        client = RpcClient(pool)
        for i in range(20):
            await client.call(name, "echo", i)
        history = MetricsSnapshot.model_validate(json.loads((await sub.next_msg(timeout=10)).data))
        reg = Registry(pool)

        async def record_has_window() -> bool:
            rec = await reg.get_instance(name, svc.instance_id)
            return rec.metrics is not None and rec.metrics.window_s is not None

        await wait_until_async(record_has_window, 5, "a heartbeat record with a window")
        record = (await reg.get_instance(name, svc.instance_id)).metrics
        assert record is not None and record.window_s is not None and history.window_s is not None
        # the history's window spans its own 2 s period: the heartbeats every 0.2 s did not cut it short
        assert history.window_s >= 1.5
        assert record.window_s < 1.5
        hw = history.methods["echo"].window
        assert hw is not None and hw.requests <= history.methods["echo"].requests
        assert hw.rate_per_s == pytest.approx(hw.requests / history.window_s)
    finally:
        await sub.unsubscribe()
        await svc.stop()
