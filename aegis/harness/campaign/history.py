"""The history of a run: one list of typed records, in the order they were written, that the workloads, the
rig and the runner write while the run goes on and the checkers (:mod:`aegis.harness.campaign.checkers`) read after
it (the Jepsen shape: generators and a nemesis write a history, checkers judge it).

Records (frozen dataclasses; times are this host's monotonic clock, ``wall`` is ``time.time()``):

=====================  ==========================================================================================
:class:`Call`          a client operation, invoked at ``sent`` and completed at ``received``, ``ok`` or failed
                       (``error``); ``client`` names the workload (``sticky``, ``rpc``, ``events``, ``commands``)
:class:`Hit`           a successful direct probe of an instance (the split-brain prober's evidence; its failures
                       prove nothing and are not recorded)
:class:`Delivery`      an event the events workload's consumer received
:class:`JournalLine`   a command worker's journal line (a handler start, a stored outcome, a discarded run)
:class:`ProcessEvent`  what the rig did to an instance process, timed just before it did it (a signal) or when it
                       happened (``start``, ``ready``)
:class:`FaultStart`    the runner is about to inject a fault (with the active and epoch the client saw then)
:class:`FaultApplied`  the nemesis applied it (resolved target, details: pids, cut chain, old/new leader, ...)
:class:`FaultSkipped`  it could not be applied (partitions without nftables, a target that never resolved)
:class:`FaultRecovered` the sticky client is steady again (or the runner gave up waiting: ``recovered`` False)
:class:`FaultHealed`   the fault is healed and every instance is back
=====================  ==========================================================================================

A fault's records share its ``n`` (its 1-based position in the schedule); :meth:`History.fault_runs` groups
them. Appending is thread-safe (the nemesis' worker thread records process events); the per-kind views
(:meth:`History.calls`, :attr:`History.hits`, :meth:`History.of`) are live lists in write order, so a wait can
poll them while the run goes on.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aegis.harness.faults.fault import Fault

__all__ = [
    "Call",
    "Delivery",
    "FaultApplied",
    "FaultHealed",
    "FaultRecovered",
    "FaultRun",
    "FaultSkipped",
    "FaultStart",
    "Hit",
    "History",
    "JournalLine",
    "ProcessEvent",
    "Record",
]


@dataclass(frozen=True, slots=True)
class Call:
    """One client operation (a sticky call, an RPC, an event publish, a command): invoked at ``sent``, completed
    at ``received``, ``ok`` or failed with ``error``; who answered in which epoch, and its key (idempotency key,
    event or call id). ``client``: the workload that made it."""

    sent: float
    received: float
    ok: bool
    instance: str = ""
    epoch: int = 0
    error: str = ""
    key: str = ""
    client: str = "sticky"


@dataclass(frozen=True, slots=True)
class Hit:
    """One successful direct probe of an instance: the epoch of the reply's ``Aegis-Epoch`` header (the epoch
    the call was admitted under) and the node the probe went through."""

    sent: float
    received: float
    instance: str
    epoch: int
    node: str = ""


@dataclass(frozen=True, slots=True)
class Delivery:
    """An event (``key``: its id) the consumer of ``client`` received at ``at`` (at least once: repeats happen)."""

    key: str
    at: float
    client: str = "events"


@dataclass(frozen=True, slots=True)
class JournalLine:
    """One line of a command worker's journal (see :mod:`aegis.harness.campaign.command_worker`): ``ev`` is ``start``,
    ``complete`` (its outcome was stored) or ``discard`` (another worker had taken the call id over)."""

    ev: str
    call_id: str
    worker: str
    pid: int
    mono: float
    wall: float
    token: int = 0


@dataclass(frozen=True, slots=True)
class ProcessEvent:
    """What the rig did to an instance process: ``SIGKILL``, ``SIGTERM``, ``SIGSTOP``, ``SIGCONT`` (stamped
    just before the signal went out: the fault's own time), ``start`` (spawned) or ``ready`` (it said so)."""

    instance: str
    action: str
    at: float


@dataclass(frozen=True, slots=True)
class FaultStart:
    """Fault ``n`` of the schedule is about to be injected; ``active`` / ``epoch``: the active the sticky client
    saw just before (the fault's "old epoch")."""

    n: int
    fault: Fault
    at: float
    wall: float
    active: str
    epoch: int


@dataclass(frozen=True, slots=True)
class FaultApplied:
    """The nemesis applied fault ``n`` to ``target`` (resolved); ``details`` as the nemesis recorded them."""

    n: int
    target: str
    at: float
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FaultSkipped:
    """Fault ``n`` was not applied; ``reason`` says why (as the report's ``skipped`` lists it)."""

    n: int
    at: float
    reason: str


@dataclass(frozen=True, slots=True)
class FaultRecovered:
    """The sticky client is steady again after fault ``n`` (``recovered`` False: the runner gave up waiting)."""

    n: int
    at: float
    recovered: bool


@dataclass(frozen=True, slots=True)
class FaultHealed:
    """Fault ``n`` is healed (restarted, resumed, uncut) and its instance is back."""

    n: int
    at: float
    wall: float


Record = (
    Call
    | Hit
    | Delivery
    | JournalLine
    | ProcessEvent
    | FaultStart
    | FaultApplied
    | FaultSkipped
    | FaultRecovered
    | FaultHealed
)
R = TypeVar("R", bound=Record)


@dataclass(frozen=True, slots=True)
class FaultRun:
    """The records of one fault, grouped: its start, then either applied (with recovery and heal) or skipped."""

    start: FaultStart
    applied: FaultApplied | None = None
    skipped: FaultSkipped | None = None
    recovered: FaultRecovered | None = None
    healed: FaultHealed | None = None


class History:
    """The records of one run, in write order, with live per-kind views. ``started`` / ``started_wall``: the
    run's time origin (a report's ``at_s`` and ``took_s`` count from it)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.started = clock()
        self.started_wall = time.time()
        self.records: list[Record] = []
        self._by_type: defaultdict[type, list[Any]] = defaultdict(list)
        self._calls: defaultdict[str, list[Call]] = defaultdict(list)
        self._lock = threading.Lock()

    def add(self, record: Record) -> None:
        """Append ``record`` (any thread)."""
        with self._lock:
            self.records.append(record)
            self._by_type[type(record)].append(record)
            if isinstance(record, Call):
                self._calls[record.client].append(record)

    def of(self, kind: type[R]) -> list[R]:
        """Every record of type ``kind``, in write order (a live list: do not modify it)."""
        with self._lock:  # the first look-up creates the list: not while another thread adds to it
            return self._by_type[kind]

    def calls(self, client: str = "sticky") -> list[Call]:
        """The operations of one client workload, in completion order (a live list: do not modify it)."""
        with self._lock:
            return self._calls[client]

    @property
    def hits(self) -> list[Hit]:
        """The prober's successes, in completion order (a live list)."""
        return self.of(Hit)

    def fault_runs(self) -> list[FaultRun]:
        """Every fault started, in schedule order, with its records."""
        runs: dict[int, dict[str, Any]] = {}
        for rec in self.of(FaultStart):
            runs[rec.n] = {"start": rec}
        for kind, key in (
            (FaultApplied, "applied"),
            (FaultSkipped, "skipped"),
            (FaultRecovered, "recovered"),
            (FaultHealed, "healed"),
        ):
            for rec in self.of(kind):
                if rec.n in runs:
                    runs[rec.n][key] = rec
        return [FaultRun(**parts) for _, parts in sorted(runs.items())]

    def process_events(self, instance: str, since: float, until: float = float("inf")) -> list[ProcessEvent]:
        """What the rig did to ``instance`` within ``[since, until]``."""
        return [e for e in self.of(ProcessEvent) if e.instance == instance and since <= e.at <= until]
