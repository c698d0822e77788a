"""Campaign workloads: each generates operations and writes them into the run's
:class:`~aegis.harness.campaign.history.History` as :class:`~aegis.harness.campaign.history.Call` records (monotonic
send/receive time, outcome, instance, epoch, key; ``client`` names the workload) for the checkers. The
split-brain prober, the other workload of the single-active group, is :mod:`aegis.harness.campaign.prober`.

* :class:`StickyWorkload` calls the single-active group's ``book`` back to back through a
  :class:`~aegis.sdk.sticky.StickyClient` (client ``sticky``); the runner's waits (the active now, a new epoch, steady
  again) read its operations as they come.
* :class:`RpcWorkload` calls ``quotes.price`` (the demo service, ``python -m aegis.harness.demo serve`` processes) at
  a steady rate through the SDK's :class:`~aegis.sdk.rpc.RpcClient` (client ``rpc``).
* :class:`EventWorkload` publishes events with their own ids and retries a failed publish with the same id (the
  stream de-duplicates; client ``events``), while a durable consumer in this process records every id it
  receives (:class:`~aegis.harness.campaign.history.Delivery`): an id the stream acknowledged and nobody received is
  a lost event.
* :class:`CommandWorkload` sends commands to worker processes (:mod:`aegis.harness.campaign.command_worker`) and re-sends a
  failed one with the same call id (the SDK's idempotency key; client ``commands``); the workers journal every
  handler start and every stored outcome, copied into the history (:class:`~aegis.harness.campaign.history.JournalLine`)
  when the workload closes: a call id *completed* twice, by any workers, is a duplicate.

Each workload writes into the history it is given (its own when none is). Every loop is bounded by its stop
event and by ``max_run_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import select
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aegis.harness.campaign.checkers import longest_gap
from aegis.harness.campaign.command_worker import COMMAND
from aegis.harness.campaign.group import RigParams
from aegis.harness.campaign.history import Call, Delivery, History, JournalLine
from aegis.harness.cluster.gids import allocate_gids
from aegis.harness.cluster.processes import spawn, wait_stopped
from aegis.harness.demo.services import ACTIVE_SERVICE, SERVICE, BookRequest, Quote, QuoteRequest
from aegis.sdk.commands import CommandClient
from aegis.sdk.connection import ConnectionPool
from aegis.sdk.errors import AegisError
from aegis.sdk.events import EventBus, EventContext, EventSubscription
from aegis.sdk.rpc import RpcClient
from aegis.sdk.sticky import StickyClient

ROOT = Path(__file__).resolve().parents[3]


class StickyWorkload:
    """Calls ``service.book`` on the single-active group's active back to back through a
    :class:`~aegis.sdk.sticky.StickyClient` on ``pool``, writing every call into ``history`` (client ``sticky``), and
    answers the runner's questions about what the client sees: :meth:`active`, :meth:`wait_new_epoch`,
    :meth:`wait_recovered`. Bounded by its stop event, by ``params.max_run_s`` and a call count."""

    client_name = "sticky"

    def __init__(
        self,
        pool: ConnectionPool,
        *,
        history: History,
        service: str = ACTIVE_SERVICE,
        params: RigParams | None = None,
    ) -> None:
        self.history = history
        self.service = service
        self.params = params or RigParams()
        self.client = StickyClient(
            pool, attempt_timeout_s=self.params.attempt_timeout_s, election=self.params.protocol
        )
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def calls(self) -> list[Call]:
        """The calls so far, in completion order (the history's live view)."""
        return self.history.calls(self.client_name)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="sticky workload")

    async def _run(self) -> None:
        n = 0
        end = time.monotonic() + self.params.max_run_s
        add = self.history.add
        # Bounded by the stop event, and by time and count as backstops.
        while not self._stop.is_set() and n < 10_000_000 and time.monotonic() < end:
            n += 1
            sent = time.monotonic()
            try:
                reply = await self.client.call_active(
                    self.service,
                    "book",
                    BookRequest(ref=f"w{n}", amount=n),
                    timeout=self.params.call_timeout_s,
                )
            except AegisError as exc:
                add(Call(sent, time.monotonic(), False, error=f"{type(exc).__name__}: {exc}"))
                await asyncio.sleep(0.01)  # an error that comes back at once must not spin
                continue
            add(Call(sent, time.monotonic(), True, reply["instance"], int(reply["epoch"])))

    async def stop(self) -> None:
        """Stop calling (the call in flight gets its timeout and 2 s)."""
        self._stop.set()
        if self._task is not None:
            await end_loop(self._task, self.params.call_timeout_s + 2)
            self._task = None

    async def close(self) -> None:
        """:meth:`stop`, then close the sticky client (its watch)."""
        await self.stop()
        with contextlib.suppress(Exception):
            await self.client.close()

    # -- what the client sees --------------------------------------------------------------------------------

    def last_ok(self) -> Call | None:
        calls = self.calls
        for c in reversed(calls[-1000:]):
            if c.ok:
                return c
        return None

    async def active(self, timeout: float = 10.0, fresh_s: float = 0.2) -> tuple[str, int]:
        """(instance, epoch) of the active as the sticky client sees it: its last success, if recent."""
        deadline = time.monotonic() + timeout
        while True:
            c = self.last_ok()
            if c is not None and time.monotonic() - c.received <= fresh_s:
                return c.instance, c.epoch
            if time.monotonic() > deadline:
                calls = self.calls
                last = calls[-1].error if calls else "no calls yet"
                raise TimeoutError(f"no recent successful call to {self.service}.book ({last})")
            await asyncio.sleep(0.01)

    async def wait_new_epoch(self, since: float, old_epoch: int, timeout: float = 15.0) -> Call | None:
        """The first successful sticky reply received after ``since`` from an epoch newer than ``old_epoch``."""
        deadline = time.monotonic() + timeout
        calls = self.calls
        start = 0
        # calls complete in order, so the scan can start near the fault
        for i in range(len(calls) - 1, -1, -1):
            if calls[i].received < since:
                start = i
                break
        while time.monotonic() < deadline:
            for i in range(start, len(calls)):
                c = calls[i]
                if c.ok and c.received > since and c.epoch > old_epoch:
                    return c
            start = max(start, len(calls) - 1)
            await asyncio.sleep(0.005)
        return None

    async def wait_recovered(self, since: float, *, min_s: float, steady_s: float, timeout: float) -> bool:
        """Wait at least ``min_s`` after ``since``, then until the last ``steady_s`` had no 0.3 s without a
        success. False on timeout."""
        deadline = since + timeout
        while time.monotonic() < deadline:
            now = time.monotonic()
            if now - since >= min_s and longest_gap(self.calls[-20000:], now - steady_s, now) < 0.3:
                return True
            await asyncio.sleep(0.05)
        return False


@dataclass
class _Loop:
    """A steady-rate loop of one operation, writing a :class:`Call` per operation into ``history`` as
    ``client``."""

    rate: float
    max_run_s: float = 3600.0
    history: History = field(default_factory=History)
    client_name: str = ""
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    @property
    def calls(self) -> list[Call]:
        """The operations so far, in completion order (the history's live view)."""
        return self.history.calls(self.client_name)

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
                err = f"{type(exc).__name__}: {exc}"
                self.history.add(Call(sent, time.monotonic(), False, error=err, client=self.client_name))
            else:
                self.history.add(
                    Call(sent, time.monotonic(), True, instance, key=key, client=self.client_name)
                )
            await asyncio.sleep(max(0.0, sent + period - time.monotonic()))

    def _start(self, op: Callable[[int], Awaitable[tuple[str, str]]], name: str) -> None:
        self._task = asyncio.create_task(self._run(op), name=name)

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop the loop (the operation in flight gets ``timeout`` seconds)."""
        self._stop.set()
        if self._task is not None:
            await end_loop(self._task, timeout)

    async def close(self) -> None:
        """Stop and release what the workload holds (consumers, workers)."""
        await self.stop()


class RpcWorkload(_Loop):
    """``rate`` calls per second of ``quotes.price`` to whichever instance the subject reaches."""

    def __init__(
        self,
        pool: ConnectionPool,
        rate: float,
        *,
        history: History | None = None,
        timeout: float = 1.0,
        max_run_s: float = 3600,
    ) -> None:
        super().__init__(rate, max_run_s, history or History(), "rpc")
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

    :attr:`acked`: ids the stream acknowledged, in order (the keys of the successful publishes); :attr:`received`:
    ids the consumer handled (with repeats: delivery is at least once). A publish that fails is retried with the
    same id until ``publish_timeout_s`` has passed since its first attempt; one that never got an
    acknowledgement is a failed operation, not an event sent.
    """

    def __init__(
        self,
        pool: ConnectionPool,
        rate: float,
        *,
        history: History | None = None,
        topic: str | None = None,
        publish_timeout_s: float = 10.0,
        max_run_s: float = 3600,
    ) -> None:
        super().__init__(rate, max_run_s, history or History(), "events")
        self.topic = topic or f"campaign.{uuid.uuid4().hex[:8]}"
        self.bus = EventBus(pool, instance_id=f"campaign-{uuid.uuid4().hex[:6]}")
        self.publish_timeout_s = publish_timeout_s
        self._sub: EventSubscription | None = None

    @property
    def acked(self) -> list[str]:
        """Ids the stream acknowledged, in order."""
        return [c.key for c in self.calls if c.ok]

    @property
    def received(self) -> list[str]:
        """Ids the consumer received, in order (repeats included)."""
        return [d.key for d in self.history.of(Delivery) if d.client == self.client_name]

    async def start(self) -> None:
        await self.bus.ensure_streams()

        async def on_event(event: Any, ctx: EventContext) -> None:
            self.history.add(Delivery(ctx.event_id, time.monotonic(), self.client_name))

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


class CommandJournals:
    """Reads the workers' journal files as they grow (thread-safe): the checkers' view of who ran what."""

    def __init__(self, paths: dict[str, Path]) -> None:
        self.paths = paths
        self.lines: list[JournalLine] = []
        self._offsets = dict.fromkeys(paths, 0)
        self._open: dict[tuple[str, int], Counter[str]] = {}  # (worker, pid) -> call ids started, not ended
        self._lock = threading.Lock()

    def refresh(self) -> list[JournalLine]:
        """Read what was appended since the last call (complete lines only); every line so far."""
        with self._lock:
            for name, path in self.paths.items():
                try:
                    with path.open("rb") as f:
                        f.seek(self._offsets[name])
                        chunk = f.read()
                except FileNotFoundError:
                    continue
                end = chunk.rfind(b"\n") + 1
                self._offsets[name] += end
                for raw in chunk[:end].splitlines():
                    d = json.loads(raw)
                    x = JournalLine(
                        d["ev"], d["call_id"], d["worker"], d["pid"], d["mono"], d["wall"], d.get("token", 0)
                    )
                    self.lines.append(x)
                    held = self._open.setdefault((x.worker, x.pid), Counter())
                    if x.ev == "start":
                        held[x.call_id] += 1
                    elif held[x.call_id] > 0:
                        held[x.call_id] -= 1
            return list(self.lines)

    def call_ids(self, ev: str) -> list[str]:
        """Call ids of every ``ev`` line (``start``, ``complete``, ``discard``), in time order."""
        return [x.call_id for x in sorted(self.refresh(), key=lambda x: x.mono) if x.ev == ev]

    def holding(self, worker: str, pid: int | None) -> list[str]:
        """Call ids process ``pid`` of ``worker`` started and has not finished (completed or discarded)."""
        if pid is None:
            return []
        self.refresh()
        with self._lock:
            return [c for c, n in self._open.get((worker, pid), Counter()).items() if n > 0]


async def end_loop(task: asyncio.Task[None], grace_s: float) -> None:
    """End a workload's loop whose stop was asked: it gets ``grace_s`` to finish the operation in flight, then
    it is cancelled and reaped."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(task), grace_s)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def _wait_ready(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """Wait (bounded, blocking) for the worker process's ``ready`` line."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return bool(ready) and proc.stdout.readline().strip() == b"ready"


class CommandWorkload(_Loop):
    """Sends ``rate`` commands per second, each with its own call id, to ``workers`` worker processes
    (``python -m aegis.harness.campaign.command_worker``, children that die with this process); a failed send or result is
    re-sent with the same call id until ``retry_s`` has passed.

    Each worker journals the handler starts and the ends of its runs (:class:`CommandJournals`):
    :attr:`completions` are the call ids whose outcome a worker stored (the SDK's compare-and-set won; a call
    id in it twice was *completed* twice, which must never happen), :attr:`starts` the handler starts (a
    call id started twice ran again after its worker was killed or paused mid-command: expected under
    faults). :attr:`completed`: call ids whose result reached this client. When it closes, every journal line
    goes into the history (:class:`~aegis.harness.campaign.history.JournalLine`), where the checkers read them.

    It is also the nemesis's control of the worker processes (:class:`~aegis.harness.faults.nemesis.InstanceControl`
    plus :meth:`holding`): ``active()`` is a worker that holds a command now, ``kill``/``signal``/``restart``
    act on the processes. Those methods block; the nemesis calls them from its worker thread.
    """

    def __init__(
        self,
        pool: ConnectionPool,
        rate: float,
        urls: list[str],
        *,
        log_dir: Path,
        workers: int = 2,
        ack_wait: float = 2.0,
        work_ms: tuple[float, float] = (20.0, 100.0),
        timeout: float = 2.0,
        retry_s: float = 10.0,
        history: History | None = None,
        gids: bool = False,
        worker_cmd: list[str] | None = None,
        max_run_s: float = 3600,
    ) -> None:
        super().__init__(rate, max_run_s, history or History(), "commands")
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.service = f"campaign-{uuid.uuid4().hex[:8]}"
        self.urls = list(urls)
        self.client = CommandClient(pool)
        self.worker_names = [f"W{n + 1}" for n in range(workers)]
        self.ack_wait = ack_wait
        self.work_ms = work_ms
        self.timeout = timeout
        self.retry_s = retry_s
        self.worker_cmd = worker_cmd or [sys.executable, "-m", "aegis.harness.campaign.command_worker"]
        """How to start a worker process (its arguments follow); a test may run a different worker class."""
        self.log_dir = log_dir / f"commands-{self.service}"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.journals = CommandJournals({n: self.log_dir / f"{n}.ndjson" for n in self.worker_names})
        self.gids: dict[str, int] = (
            dict(zip(self.worker_names, allocate_gids(workers), strict=True)) if gids else {}
        )
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._proc_lock = threading.Lock()

    # -- what happened -------------------------------------------------------------------------------------

    @property
    def completed(self) -> list[str]:
        """Call ids whose result reached this client, in order (the keys of the successful operations)."""
        return [c.key for c in self.calls if c.ok]

    @property
    def completions(self) -> list[str]:
        """Call ids whose outcome a worker stored, in time order (repeats: completed twice)."""
        return self.journals.call_ids("complete")

    @property
    def starts(self) -> list[str]:
        """Call ids of every handler start, in time order (repeats: started again after a fault)."""
        return self.journals.call_ids("start")

    @property
    def discards(self) -> list[str]:
        """Call ids of runs whose result was dropped because another worker had taken the call id over."""
        return self.journals.call_ids("discard")

    # -- processes -----------------------------------------------------------------------------------------

    def _spawn(self, name: str) -> subprocess.Popen[bytes]:
        args = [
            *self.worker_cmd,
            "--instance",
            name,
            "--service",
            self.service,
            "--journal",
            str(self.journals.paths[name]),
            "--ack-wait",
            str(self.ack_wait),
            "--work-ms",
            str(self.work_ms[0]),
            str(self.work_ms[1]),
            *self.urls,
        ]
        extra = {"group": self.gids[name]} if name in self.gids else {}
        with (self.log_dir / f"{name}.log").open("ab") as log:
            proc = spawn(args, stdout=subprocess.PIPE, stderr=log, cwd=ROOT, **extra)
        with self._proc_lock:
            self.procs[name] = proc
        return proc

    def _start_one(self, name: str, timeout: float = 30.0) -> None:
        proc = self._spawn(name)
        if not _wait_ready(proc, timeout):
            proc.kill()
            proc.wait(5)
            tail = (self.log_dir / f"{name}.log").read_text(errors="replace").splitlines()[-10:]
            raise RuntimeError(f"command worker {name} did not start; its log ends:\n" + "\n".join(tail))

    async def start(self) -> None:
        """Start the worker processes (each said ready), then the client loop."""
        await asyncio.gather(*(asyncio.to_thread(self._start_one, n) for n in self.worker_names))

        async def op(n: int) -> tuple[str, str]:
            call_id = f"{self.service}-{n}"
            first = time.monotonic()
            while True:
                try:
                    call = await self.client.send(
                        self.service, COMMAND, {"n": n}, timeout=self.timeout, call_id=call_id
                    )
                    answer = await call.result()
                    break
                except AegisError:
                    if time.monotonic() - first > self.retry_s or self._stop.is_set():
                        raise
                    await asyncio.sleep(0.05)
            return str(answer.get("worker", "")), call_id

        self._start(op, "command workload")

    async def close(self) -> None:
        """Stop sending, stop the workers, copy their journals into the history."""
        await self.stop()
        await asyncio.to_thread(self._stop_workers)
        for line in sorted(self.journals.refresh(), key=lambda x: x.mono):
            self.history.add(line)

    def _stop_workers(self) -> None:
        with self._proc_lock:
            procs = list(self.procs.values())
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)  # a paused worker cannot act on SIGTERM
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            if proc.stdout is not None:
                proc.stdout.close()

    # -- the nemesis's control (blocking; called from its worker thread) ------------------------------------

    def names(self) -> list[str]:
        return list(self.worker_names)

    def pid(self, name: str) -> int | None:
        with self._proc_lock:
            proc = self.procs.get(name)
        return proc.pid if proc is not None and proc.poll() is None else None

    def gid(self, name: str) -> int | None:
        return self.gids.get(name)

    def holding(self, name: str) -> list[str]:
        """Call ids the running process of ``name`` started and has not finished."""
        pid = self.pid(name)
        return self.journals.holding(name, pid) if pid is not None else []

    def active(self, wait_s: float = 3.0) -> str | None:
        """A worker that holds a command now (polled for up to ``wait_s``), else None."""
        end = time.monotonic() + wait_s
        while True:
            busy = [n for n in self.worker_names if self.holding(n)]
            if busy:
                return busy[0]
            if time.monotonic() >= end:
                return None
            time.sleep(0.005)

    def kill(self, name: str) -> None:
        with self._proc_lock:
            proc = self.procs[name]
        proc.kill()
        proc.wait(10)

    def signal(self, name: str, sig: int) -> None:
        with self._proc_lock:
            proc = self.procs[name]
        if proc.poll() is None:
            proc.send_signal(sig)
            if sig == signal.SIGSTOP:
                wait_stopped(proc.pid)

    def restart(self, name: str) -> None:
        """Start the worker again under the same name (after a kill); return once it is ready."""
        with self._proc_lock:
            proc = self.procs[name]
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
        self._start_one(name)
