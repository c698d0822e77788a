"""Campaign workloads besides the sticky calls of :class:`~harness.failover.FailoverRig`: plain RPCs, events and
commands, each recording its history as :class:`~harness.checkers.Call` records (monotonic send/receive time,
outcome, instance, key) for the checkers.

* :class:`RpcWorkload` calls ``quotes.price`` (the demo service, ``python -m harness.demo serve`` processes) at
  a steady rate through the SDK's :class:`~sdk.rpc.RpcClient`.
* :class:`EventWorkload` publishes events with their own ids and retries a failed publish with the same id (the
  stream de-duplicates), while a durable consumer in this process records every id it receives: an id the
  stream acknowledged and nobody received is a lost event.
* :class:`CommandWorkload` sends commands to a worker in this process and re-sends a failed one with the same
  call id (the SDK's idempotency key): a call id the worker *processed* twice is a duplicate.

Every loop is bounded by its stop event and by ``max_run_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from harness.checkers import Call
from harness.demo import SERVICE, Quote, QuoteRequest
from sdk.commands import CommandClient, CommandContext, CommandWorker
from sdk.connection import ConnectionPool
from sdk.errors import AegisError
from sdk.events import EventBus, EventContext, EventSubscription
from sdk.rpc import RpcClient


@dataclass
class _Loop:
    """A steady-rate loop of one operation, recording a :class:`Call` per operation."""

    rate: float
    max_run_s: float = 3600.0
    calls: list[Call] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    async def _run(self, op: Callable[[int], Awaitable[tuple[str, str]]]) -> None:
        period = 1.0 / self.rate
        end = time.monotonic() + self.max_run_s
        n = 0
        while not self._stop.is_set() and time.monotonic() < end:
            n += 1
            sent = time.monotonic()
            try:
                instance, key = await op(n)
            except AegisError as exc:
                self.calls.append(Call(sent, time.monotonic(), False, error=f"{type(exc).__name__}: {exc}"))
            else:
                self.calls.append(Call(sent, time.monotonic(), True, instance, key=key))
            await asyncio.sleep(max(0.0, sent + period - time.monotonic()))

    def _start(self, op: Callable[[int], Awaitable[tuple[str, str]]], name: str) -> None:
        self._task = asyncio.create_task(self._run(op), name=name)

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop the loop (the operation in flight gets ``timeout`` seconds)."""
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def close(self) -> None:
        """Stop and release what the workload holds (consumers, workers)."""
        await self.stop()


class RpcWorkload(_Loop):
    """``rate`` calls per second of ``quotes.price`` to whichever instance the subject reaches."""

    def __init__(
        self, pool: ConnectionPool, rate: float, *, timeout: float = 1.0, max_run_s: float = 3600
    ) -> None:
        super().__init__(rate, max_run_s)
        self.client = RpcClient(pool)
        self.timeout = timeout

    async def start(self) -> None:
        async def op(n: int) -> tuple[str, str]:
            q = await self.client.call(
                SERVICE,
                "price",
                QuoteRequest(symbol="EURUSD", qty=n),
                timeout=self.timeout,
                response_model=Quote,
            )
            return q.instance, f"r{n}"

        self._start(op, "rpc workload")


class EventWorkload(_Loop):
    """Publishes ``rate`` events per second on ``topic`` and consumes them (durable, group ``campaign``).

    ``acked``: ids the stream acknowledged, in order; ``received``: ids the consumer handled (with repeats:
    delivery is at least once). A publish that fails is retried with the same id until ``publish_timeout_s``
    has passed since its first attempt; one that never got an acknowledgement is not counted as sent.
    """

    def __init__(
        self,
        pool: ConnectionPool,
        rate: float,
        *,
        topic: str | None = None,
        publish_timeout_s: float = 10.0,
        max_run_s: float = 3600,
    ) -> None:
        super().__init__(rate, max_run_s)
        self.topic = topic or f"campaign.{uuid.uuid4().hex[:8]}"
        self.bus = EventBus(pool, instance_id=f"campaign-{uuid.uuid4().hex[:6]}")
        self.publish_timeout_s = publish_timeout_s
        self.acked: list[str] = []
        self.received: list[str] = []
        self._sub: EventSubscription | None = None

    async def start(self) -> None:
        await self.bus.ensure_streams()

        async def on_event(event: Any, ctx: EventContext) -> None:
            self.received.append(ctx.event_id)

        self._sub = await self.bus.subscribe(self.topic, on_event, group="campaign", deliver="all")
        run = self.topic.rsplit(".", 1)[-1]

        async def op(n: int) -> tuple[str, str]:
            event_id = f"{run}-{n}"
            first = time.monotonic()
            while True:
                try:
                    await self.bus.publish(self.topic, {"n": n}, event_id=event_id, timeout=1.0)
                    break
                except AegisError:
                    if time.monotonic() - first > self.publish_timeout_s or self._stop.is_set():
                        raise
                    await asyncio.sleep(0.05)
            self.acked.append(event_id)
            return "", event_id

        self._start(op, "event workload")

    async def drain(self, timeout: float = 30.0) -> None:
        """Wait (bounded) until every acknowledged event was received."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if set(self.acked) <= set(self.received):
                return
            await asyncio.sleep(0.1)

    async def close(self) -> None:
        await self.stop()
        await self.bus.close()


class CommandWorkload(_Loop):
    """Sends ``rate`` commands per second to a worker in this process; a failed send or result is re-sent
    with the same call id until ``retry_s`` has passed. ``processed``: call ids in the order the worker ran
    them (a repeat is a duplicate); ``completed``: call ids whose result came back."""

    def __init__(
        self, pool: ConnectionPool, rate: float, *, retry_s: float = 10.0, max_run_s: float = 3600
    ) -> None:
        super().__init__(rate, max_run_s)
        self.service = f"campaign-{uuid.uuid4().hex[:8]}"
        self.client = CommandClient(pool)
        self.worker = CommandWorker(pool, instance_id=f"worker-{uuid.uuid4().hex[:6]}")
        self.retry_s = retry_s
        self.processed: list[str] = []
        self.completed: list[str] = []

    async def start(self) -> None:
        async def apply(req: dict[str, Any], ctx: CommandContext) -> dict[str, Any]:
            self.processed.append(ctx.call_id)
            await asyncio.sleep(random.uniform(0, 0.002))  # some work between taking and acknowledging
            return {"n": req["n"]}

        await self.worker.handle(self.service, "apply", apply)

        async def op(n: int) -> tuple[str, str]:
            call_id = f"{self.service}-{n}"
            first = time.monotonic()
            while True:
                try:
                    call = await self.client.send(
                        self.service, "apply", {"n": n}, timeout=2.0, call_id=call_id
                    )
                    await call.result()
                    break
                except AegisError:
                    if time.monotonic() - first > self.retry_s or self._stop.is_set():
                        raise
                    await asyncio.sleep(0.05)
            self.completed.append(call_id)
            return self.worker.instance_id, call_id

        self._start(op, "command workload")

    async def close(self) -> None:
        await self.stop()
        await self.worker.close()
