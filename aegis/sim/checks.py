"""What every run checks (the spec's safety properties) and measures (failover times, false failovers).

Safety, as ``aegis/spec/tla/Lease.tla`` states it:

* ``NoOverlap``: never two instances serving at the same real time. An instance serves when its process is up
  and *its own state machine* says ``serving(local now)`` (as the SDK's guarded handler asks it), paused or not.
  Serving can only begin at one of the instance's own events (between events a machine's ``serving`` can only
  end, when its window runs out), so checking the others whenever a serving instance has an event finds every
  overlap.
* ``ServingHoldsNewestEpoch`` / ``EpochsStrictlyIncrease``: whoever serves holds the newest epoch that ever
  served; a new serving period has a larger epoch.
* ``RepliesHoldTheirEpoch``: a call's successful outcome goes out stamped with its admission epoch, only while
  its sender still serves under that epoch, the newest that served (a handler that outlives its instance's lease
  has its outcome withheld: "lease-lost"). Such a reply is *fenced* (the spec's ``Fenced``); the checker hands
  the reply a ghost flag saying so, which travels with it to the client.
* ``AcceptedRepliesFenced``: every success a client accepts is fenced (the spec's property of the same name;
  implied by the one above while runs stop at their first violation, checked on the client's side as the spec
  states it).
* ``ClientNeverGoesBack``: no client accepts a reply from an epoch older than one it accepted (on the checker's
  own record of what it accepted).

Measurements: a crash or graceful stop of the serving instance opens a :class:`Failover`; it closes at the first
``StartServing`` of a newer epoch (``serve_s``) and the first client reply accepted from a newer epoch
(``client_s``). A new epoch that starts serving while its predecessor's process is still up and was not asked
to stop is a **false failover** (a pause, slow network or KV outage cost the incumbent its lease).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aegis.sim.instance import SimInstance


@dataclass(frozen=True, slots=True)
class Violation:
    """A broken safety property: which, when (real time), and the log tail that led to it."""

    prop: str
    t: float
    message: str
    trace: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "property": self.prop,
            "t": round(self.t, 6),
            "message": self.message,
            "trace": list(self.trace),
        }


class ViolationFound(Exception):
    """Raised inside the simulation to end a run at its first violation."""

    def __init__(self, violation: Violation) -> None:
        super().__init__(violation.message)
        self.violation = violation


@dataclass(slots=True)
class Failover:
    """One crash/stop of the serving instance and how long until a newer epoch served."""

    cause: str
    at: float
    old_epoch: int
    serve_s: float | None = None
    client_s: float | None = None
    disturbed: bool = False
    """Another fault (outage, pause, ...) happened before it completed: not a clean sample."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "cause": self.cause,
            "at": round(self.at, 6),
            "old_epoch": self.old_epoch,
            "serve_s": None if self.serve_s is None else round(self.serve_s, 6),
            "client_s": None if self.client_s is None else round(self.client_s, 6),
            "disturbed": self.disturbed,
        }


@dataclass(slots=True)
class FalseFailover:
    """A takeover while the previous holder was alive; ``cause``: the latest fault before it, if recent."""

    at: float
    old_epoch: int
    new_epoch: int
    cause: str


@dataclass
class Checker:
    """Safety checks and failover bookkeeping for one run."""

    instances: list[SimInstance] = field(default_factory=list)
    hi_served: int = 0
    hi_holder: SimInstance | None = None
    violations: list[Violation] = field(default_factory=list)
    violation_count: int = 0
    """All violations found (``violations`` keeps the first 20 of each property)."""
    failovers: list[Failover] = field(default_factory=list)
    false_failovers: list[FalseFailover] = field(default_factory=list)
    last_fault: tuple[float, str] = (-1e9, "")
    stop_on_violation: bool = True
    tail: Any = None
    """Callable returning the log tail (list of lines) to attach to a violation."""
    open_failovers: list[Failover] = field(default_factory=list)
    accepted: dict[str, int] = field(default_factory=dict)
    """Per client, the newest epoch of a success it accepted (the checker's own record)."""

    # -- safety ----------------------------------------------------------------------------------------------

    def violate(self, prop: str, t: float, message: str) -> None:
        """Record a violation (and end the run if ``stop_on_violation``)."""
        self.violation_count += 1
        if sum(1 for v in self.violations if v.prop == prop) >= 20:
            return  # keep the first 20 of each kind
        v = Violation(prop, t, message, tuple(self.tail() if self.tail else ()))
        self.violations.append(v)
        if self.stop_on_violation:
            raise ViolationFound(v)

    def after_event(self, inst: SimInstance, t: float) -> None:
        """``inst`` just handled an event at real time ``t``: if it serves, nobody else may, and its epoch must
        be the newest that ever served."""
        if not inst.serving_at(t):
            return
        for other in self.instances:
            if other is not inst and other.serving_at(t):
                self.violate(
                    "NoOverlap",
                    t,
                    f"{inst.name} (epoch {inst.machine.epoch}) and {other.name} (epoch {other.machine.epoch})"
                    f" serve at once at t={t:.4f}",
                )
        epoch = inst.machine.epoch
        if epoch < self.hi_served:
            self.violate(
                "ServingHoldsNewestEpoch",
                t,
                f"{inst.name} serves epoch {epoch} after epoch {self.hi_served} served",
            )
        elif epoch > self.hi_served:
            self._new_epoch(inst, epoch, t)

    def reply_sent(self, inst: SimInstance, admitted: int, epoch: int, t: float) -> bool:
        """``inst`` sends the successful outcome of a call admitted under ``admitted``, stamped ``epoch``, at real
        time ``t``. Returns the reply's ghost: whether it is *fenced* (the spec's ``Fenced``): stamped with its
        admission epoch, produced while its sender still serves under it, and that epoch the newest that ever
        served. A success that is not fenced breaks ``RepliesHoldTheirEpoch`` at once (whether or not a client
        ever takes it); the ghost travels with the reply for ``AcceptedRepliesFenced`` on the client's side."""
        self.after_event(inst, t)
        serving = inst.serving_at(t)
        fenced = epoch == admitted and serving and inst.machine.epoch == epoch and epoch == self.hi_served
        if not fenced:
            self.violate(
                "RepliesHoldTheirEpoch",
                t,
                f"{inst.name} sends an outcome stamped epoch {epoch} of a call admitted under epoch {admitted}"
                f" while it {'serves epoch ' + str(inst.machine.epoch) if serving else 'does not serve'}"
                f" (newest epoch served: {self.hi_served})",
            )
        return fenced

    def client_accepted(self, client: str, epoch: int, fenced: bool, t: float) -> None:
        """A client accepted a success stamped ``epoch``; ``fenced`` is the reply's ghost (:meth:`reply_sent`).
        The spec's client properties, on the checker's own record of what the client accepted before (not the
        client's, which a broken client core would keep wrong): ``ClientNeverGoesBack`` (never an epoch below
        one accepted before) and ``AcceptedRepliesFenced`` (every accepted success fenced)."""
        before = self.accepted.get(client, 0)
        self.accepted[client] = max(before, epoch)
        if epoch < before:
            self.violate(
                "ClientNeverGoesBack",
                t,
                f"client {client} accepted a reply from epoch {epoch} after one from epoch {before}",
            )
        if not fenced:
            self.violate(
                "AcceptedRepliesFenced",
                t,
                f"client {client} accepted a success stamped epoch {epoch} that was not produced inside that"
                " epoch's tenure",
            )
        for fo in self.open_failovers:
            if fo.client_s is None and epoch > fo.old_epoch:
                fo.client_s = t - fo.at
        self.open_failovers = [fo for fo in self.open_failovers if fo.client_s is None]

    # -- failovers -------------------------------------------------------------------------------------------

    def fault(self, kind: str, t: float) -> None:
        """A fault hit (any kind): open failovers are no longer clean samples."""
        self.last_fault = (t, kind)
        for fo in self.open_failovers:
            fo.disturbed = True

    def holder_gone(self, inst: SimInstance, cause: str, t: float) -> None:
        """The serving instance crashed (``cause`` "crash") or was asked to stop ("stop")."""
        self.fault(cause, t)
        fo = Failover(cause, t, inst.machine.epoch)
        self.failovers.append(fo)
        self.open_failovers.append(fo)

    def _new_epoch(self, inst: SimInstance, epoch: int, t: float) -> None:
        prev, prev_epoch = self.hi_holder, self.hi_served
        self.hi_served, self.hi_holder = epoch, inst
        if prev is None:
            return
        for fo in self.open_failovers:
            if fo.serve_s is None and epoch > fo.old_epoch:
                fo.serve_s = t - fo.at
        if prev is not inst and prev.alive_since_serving(prev_epoch):
            when, kind = self.last_fault
            cause = kind if t - when < 15.0 and kind else "none"
            self.false_failovers.append(FalseFailover(t, prev_epoch, epoch, cause))
