"""The client process of the soak benchmark (:mod:`aegis.harness.bench.soak`): RPCs and events at a steady rate.

Run as ``python -m aegis.harness.bench.soak_client PLAN_JSON URL [URL ...]`` (``PLAN_JSON``: the fields of
:class:`ClientPlan`). Prints ``ready`` once connected, waits for one line on stdin (go), then drives the load and
prints JSON lines: a ``progress`` line every second, a ``window`` line at the end of each measuring window (its
latencies as an encoded HDR histogram), and a last ``done`` line; it exits after ``done``.

Open loop at a steady rate: a ticker every few milliseconds starts the calls and publishes that are due by the
clock (``rate * elapsed``), each as its own task, with at most ``max_in_flight`` of each kind at once (``behind``:
the largest backlog of calls that could not start on time because of that; 0 means the rate was held). Latency is
measured per call from its start to its answer, in microseconds. The first ``warmup_s`` seconds go into a
warm-up histogram of their own; after them, windows of ``window_s`` seconds each get a histogram that is encoded,
printed and reset when the window ends, so the process holds the same few histograms for the whole run.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import dataclass
from typing import Any

from hdrh.histogram import HdrHistogram

from aegis.harness.bench.soak_service import METHOD, SERVICE, TOPIC, Quote
from aegis.sdk.config import load_settings
from aegis.sdk.connection import ConnectionPool
from aegis.sdk.events import EventBus
from aegis.sdk.rpc import RpcClient

TICK_S = 0.005


@dataclass(frozen=True)
class ClientPlan:
    calls: int
    events: int
    rate: float
    """RPCs per second; events go at ``rate * events / calls``."""
    warmup_s: float
    window_s: float
    max_in_flight: int = 256
    timeout_s: float = 5.0


def hist() -> HdrHistogram:
    return HdrHistogram(1, 60_000_000, 3)


class Kind:
    """One kind of operation (rpc or event): its schedule, counters and histograms."""

    def __init__(self, name: str, total: int, rate: float) -> None:
        self.name, self.total, self.rate = name, total, rate
        self.started = self.done = self.errors = self.behind = self.in_flight = 0
        self.error_kinds: dict[str, int] = {}
        self.warmup = hist()
        self.window = hist()

    def due(self, elapsed: float) -> int:
        return min(self.total, int(elapsed * self.rate))


def emit(line: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


async def drive(plan: ClientPlan, urls: list[str]) -> None:
    pool = await ConnectionPool.connect(load_settings(servers=urls, pool_size=1))
    client = RpcClient(pool)
    bus = EventBus(pool)
    await bus.ensure_streams()
    quote = Quote(symbol="EURUSD", price=1.08532, qty=1_000_000, side="buy")
    # One call before "ready": the first call pays for the responder's interest reaching our server.
    await client.call(SERVICE, METHOD, quote, timeout=10, response_model=Quote)
    emit({"ready": True})
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)

    rpc = Kind("rpc", plan.calls, plan.rate)
    ev = Kind("event", plan.events, plan.rate * plan.events / plan.calls if plan.calls else 0.0)
    kinds = (rpc, ev)
    clock = time.perf_counter
    t0 = clock()
    warm_until = t0 + plan.warmup_s
    window_index, window_start = -1, t0  # -1: warm-up
    tasks: set[asyncio.Task[None]] = set()

    async def rpc_op() -> None:
        await client.call(SERVICE, METHOD, quote, timeout=plan.timeout_s, response_model=Quote)

    async def event_op() -> None:
        await bus.publish(TOPIC, quote)

    ops = {"rpc": rpc_op, "event": event_op}

    async def one(kind: Kind) -> None:
        kind.in_flight += 1
        start = clock()
        try:
            await ops[kind.name]()
        except Exception as exc:  # counted, never fatal: the soak reports errors
            kind.errors += 1
            name = type(exc).__name__
            kind.error_kinds[name] = kind.error_kinds.get(name, 0) + 1
        else:
            us = max(1, int((clock() - start) * 1e6))
            (kind.warmup if window_index < 0 else kind.window).record_value(us)
        finally:
            kind.in_flight -= 1
            kind.done += 1

    def close_window(end: float) -> None:
        for kind in kinds:
            h = kind.window
            emit(
                {
                    "window": window_index,
                    "kind": kind.name,
                    "start_s": round(window_start - t0, 3),
                    "end_s": round(end - t0, 3),
                    "count": h.get_total_count(),
                    "hdr": h.encode().decode() if h.get_total_count() else "",
                }
            )
            h.reset()

    next_progress = t0 + 1.0
    while any(k.done < k.total for k in kinds):
        now = clock()
        if window_index < 0 and now >= warm_until:
            window_index, window_start = 0, now
        elif window_index >= 0 and now >= window_start + plan.window_s:
            close_window(now)
            window_index, window_start = window_index + 1, now
        for kind in kinds:
            due = kind.due(now - t0)
            while kind.started < due:
                if kind.in_flight >= plan.max_in_flight:
                    kind.behind = max(kind.behind, due - kind.started)
                    break
                kind.started += 1
                task = asyncio.create_task(one(kind))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        if now >= next_progress:
            next_progress += 1.0
            emit(
                {
                    "progress": round(now - t0, 3),
                    **{f"{k.name}_done": k.done for k in kinds},
                    **{f"{k.name}_errors": k.errors for k in kinds},
                    **{f"{k.name}_in_flight": k.in_flight for k in kinds},
                }
            )
        await asyncio.sleep(TICK_S)
    end = clock()
    if window_index >= 0:
        close_window(end)
    emit(
        {
            "done": True,
            "elapsed_s": round(end - t0, 3),
            "cpu_s": time.process_time(),
            **{
                k.name: {
                    "done": k.done,
                    "errors": k.errors,
                    "error_kinds": k.error_kinds,
                    "behind": k.behind,
                    "rate": k.rate,
                    "warmup_count": k.warmup.get_total_count(),
                    "warmup_hdr": k.warmup.encode().decode() if k.warmup.get_total_count() else "",
                }
                for k in kinds
            },
        }
    )
    await bus.close()
    await pool.close()


if __name__ == "__main__":
    import uvloop

    uvloop.run(drive(ClientPlan(**json.loads(sys.argv[1])), sys.argv[2:]))
