"""The sticky single-active election as a pure, sans-IO state machine (the ``Lease`` TLA+ spec, in Python).

No asyncio, no NATS: the driver (:mod:`aegis.sdk.single_active`) or the simulator (``aegis/sim/``) feeds it events with the
instance's own monotonic time, and carries out the actions it returns. One instance, one machine::

    m = Election(ElectionParams())
    actions = m.start(now, KeyState(rev=0, kind="none"))     # -> [Campaign... Write(op="acquire", expected=0)]
    actions = m.write_ok(now, rev=7)                          # -> [StartServing(epoch=7), Timer(...)]
    m.serving(now)                                            # True while the lease window lasts

Names follow ``aegis/spec/tla/Lease.tla``: ``role`` (standby/active/releasing), ``epoch`` (revision of the write that
made this instance active: its fencing token), ``my_rev`` (revision of its last acknowledged write),
``deadline`` (it serves only while ``now < deadline``), ``last_send`` (renewal schedule), ``seen``/``seen_at``
(the key state a standby goes by and when it learnt it, on its own clock), ``wpos`` (the newest revision its
watch delivered: the watch cursor, kept apart from ``seen``). One request is in flight at a time.

The rules, briefly (aegis/spec/README.md has the full argument):

* A standby campaigns when the key is absent or a delete/expiry marker, or when it has seen no new revision for
  ``lease_s`` on its own clock: a create (expected revision 0) or a compare-and-set on the revision it saw.
* A successful write opens a serving window of ``window_s = lease_s * (1 - rho) / (1 + rho)`` counted from when
  the write was *sent* (the KV may have applied it late): a slow active and a fast standby can then never
  overlap, for clock rates within ``1 +/- rho``.
* The active renews by compare-and-set every ``renew_s``; a failed compare-and-set means it lost: it stops at
  once. A timeout (outcome unknown, e.g. no stream leader) keeps it active: it retries on the same revision and
  serves until its window ends, then resumes on the first renewal that lands.
* Before campaigning, a standby probes the KV (a scratch write, then a read of the key through the stream leader)
  and campaigns only if the KV takes writes and the key has not moved. If the probe (or a campaign) times out, the
  KV is unavailable, not necessarily the active dead: after the next successful probe the standby waits a whole
  lease, so the incumbent (renewing every ``renew_s``) keeps the key when the KV returns. The probe costs one
  round trip per takeover.
* A graceful stop stops serving, then deletes the key by compare-and-set; standbys take over at once on the marker.
* Stale knowledge never wins: a watch delivery, a probe's read or a failed campaign's answer counts only if its
  revision is newer than ``seen`` ("absent" from a failed campaign counts only if nothing newer arrived since
  the campaign left); the watch cursor ``wpos`` is kept apart from ``seen``. A timeout puts a standby in probe
  mode only if it learnt nothing newer since the request left.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from .kv_types import KeyState
from .trace_events import ELECTION_KINDS, KeyKind
from .trace_events import Action as Step
from .trace_events import Op as StepOp

Role = Literal["standby", "active", "releasing"]
Op = Literal["acquire", "renew", "release"]


@dataclass(frozen=True, slots=True)
class ElectionParams:
    """Timing of one single-active group. Seconds of the instance's monotonic clock.

    ``drift`` is rho: the bound on how much any clock's rate may differ from real time (0.05 = 5 %).
    """

    lease_s: float = 0.9
    renew_s: float = 0.25
    drift: float = 0.05
    write_timeout_s: float = 0.25

    def __post_init__(self) -> None:
        if not 0 <= self.drift < 0.5:
            raise ValueError(f"drift must be in [0, 0.5), got {self.drift}")
        if self.lease_s <= 0 or self.renew_s <= 0 or self.write_timeout_s <= 0:
            raise ValueError("lease_s, renew_s and write_timeout_s must be > 0")
        if self.renew_s * 3 > self.lease_s:
            raise ValueError(
                f"renew_s ({self.renew_s}) must be at most lease_s / 3 ({self.lease_s / 3:.3f}):"
                " the active must renew several times per lease"
            )
        if self.renew_s + self.write_timeout_s >= self.window_s:
            raise ValueError(
                f"renew_s + write_timeout_s ({self.renew_s + self.write_timeout_s:.3f}) must be below the serving"
                f" window ({self.window_s:.3f}), or a renewal cannot land before the window ends"
            )

    @property
    def window_s(self) -> float:
        """How long a write keeps its writer serving, from its send time."""
        return self.lease_s * (1 - self.drift) / (1 + self.drift)


# --- actions ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Write:
    """Publish to the election key: create (``expected`` 0) or compare-and-set on ``expected``.

    ``op`` "acquire" and "renew" write a value with the TTL header; "release" writes a delete marker.
    """

    op: Op
    expected: int
    epoch: int
    req: int
    """Request id: pass it back with the answer (a late answer to an older request is ignored)."""


@dataclass(frozen=True, slots=True)
class Probe:
    """Check that the KV takes writes again (a write to a scratch key beside the election key), then read the
    election key and report it with :meth:`Election.read_done` (``write_timeout`` on failure)."""

    req: int


@dataclass(frozen=True, slots=True)
class StartServing:
    epoch: int


@dataclass(frozen=True, slots=True)
class StopServing:
    reason: str


@dataclass(frozen=True, slots=True)
class Timer:
    """Call :meth:`Election.tick` at local time ``at`` (replaces any earlier timer)."""

    at: float


@dataclass(frozen=True, slots=True)
class Exit:
    """The graceful stop is complete (whatever the release's outcome)."""


@dataclass(frozen=True, slots=True)
class TraceStep:
    """A step of the spec the machine just took, for the driver's trace: write it as one trace line (see
    :mod:`aegis.sdk.trace_events`) stamped with the local time of the event that returned it, in the order the
    effects come. The machine alone decides what is traced, so every driver writes the same trace for the
    same inputs: an answer or a timeout only when the machine takes it (not one for a request it already gave
    up on), an observation only when it moved the watch cursor or what the standby goes by."""

    step: Step
    rev: int = 0
    epoch: int = 0
    op: StepOp | None = None
    kind: KeyKind | None = None


Effect = Write | Probe | StartServing | StopServing | Timer | Exit | TraceStep
"""What the machine asks its driver to do; every event method returns a list of them."""


def holds_own_record(write: Write, current: KeyState, holder: str | None, holder_epoch: int, me: str) -> bool:
    """The rule for a lost compare-and-set of a renewal or release: the key still holds this instance's own
    record (``holder`` is ``me``) of the write's epoch, i.e. an earlier renewal of ours that timed out was
    stored after all. Drivers read the record and pass the answer to :meth:`Election.write_failed` as ``ours``."""
    return (
        write.op in ("renew", "release")
        and current.kind == "val"
        and holder == me
        and holder_epoch == write.epoch
    )


@dataclass(slots=True)
class _Request:
    op: Op | Literal["read"]
    expected: int
    sent_at: float
    id: int
    epoch: int = 0


@dataclass(slots=True)
class Election:
    """One instance's election state; see the module docstring. Every method returns the actions to carry out."""

    params: ElectionParams = field(default_factory=ElectionParams)
    role: Role = "standby"
    epoch: int = 0
    my_rev: int = 0
    deadline: float = -math.inf
    last_send: float = -math.inf
    seen: KeyState = field(default_factory=lambda: KeyState(0, "none"))
    seen_at: float = 0.0
    wpos: int = 0
    request: _Request | None = None
    started: bool = False
    stopping: bool = False
    requests_sent: int = 0
    probe: bool = False
    """A probe or campaign timed out (KV unavailable): after the next successful probe, wait a whole lease."""
    _was_serving: bool = False

    # -- queries -------------------------------------------------------------------------------------------

    def serving(self, now: float) -> bool:
        """True while this instance may answer exclusive calls: it holds the lease and its window lasts."""
        return self.role == "active" and now < self.deadline

    def may_reply(self, now: float, epoch: int) -> bool:
        """An exclusive call admitted under ``epoch`` may send its outcome now: the instance still serves, and
        under that same epoch (a lease lost and won again since is a different epoch). The reply carries
        ``epoch``, never the instance's newer knowledge (the spec's ``Complete`` step)."""
        return self.epoch == epoch and self.serving(now)

    def reply_epoch(self, now: float, admitted: int, known: int) -> int | None:
        """The epoch the outcome of an exclusive call admitted under ``admitted`` goes out stamped with, when its
        handler finishes at ``now``; None: the outcome is withheld (the caller hears ``LeaseLost``). The rule of
        the spec's ``Complete`` step (``ReplyRule = "fenced"``): the admission epoch, and only while the instance
        still serves under it (:meth:`may_reply`). Never ``known``, the newest epoch the instance has learnt
        (its own, or a successor's that its watch delivered while the handler ran): a reply stamped with a
        successor's epoch passes for the successor's, one sent after the lease was lost for a fenced one (the
        SDK before issue 12). The SDK's ``Service`` and the simulator's instances both ask this at completion."""
        if not self.may_reply(now, admitted):
            return None
        return admitted

    def ready(self, now: float) -> bool:
        """A standby may campaign: the key is gone or a marker, or silent for a whole lease on our clock.
        While the KV is unavailable it only probes, every ``renew_s``."""
        if self.probe:
            return now - self.seen_at >= self.params.renew_s
        return self.seen.kind != "val" or now - self.seen_at >= self.params.lease_s

    # -- events --------------------------------------------------------------------------------------------

    def start(self, now: float, key: KeyState) -> list[Effect]:
        """The process starts: it read the key (``KeyState(0, "none")`` if absent)."""
        self.started = True
        self.role = "standby"
        self.request = None
        self.seen = key
        self.seen_at = now
        self.wpos = key.rev  # a new watch starts at the key's current entry
        return [TraceStep(Step.START, rev=key.rev, kind=ELECTION_KINDS[key.kind]), *self._step(now)]

    def observe(self, now: float, key: KeyState) -> list[Effect]:
        """The watch delivered a revision of the key. A standby's watch cursor (``wpos``) moves to a revision
        newer than any it delivered before; the standby goes by it (restarts its timer, ends probe mode: the KV
        took a write) only if it is also newer than what it knows (a probe's read or a failed campaign's answer
        may have told it already). An active ignores the watch, and so does a process that has exited (its watch
        may still deliver, e.g. its own delete marker, until the driver closes it)."""
        out: list[Effect] = []
        if self.started and self.role == "standby" and key.kind != "none" and key.rev > self.wpos:
            self.wpos = key.rev
            self._learn(now, key)
            out.append(_observed(key))
        return [*out, *self._step(now)]

    def write_ok(self, now: float, rev: int, req: int) -> list[Effect]:
        """The request in flight was stored at revision ``rev``."""
        request = self._take(req)
        if request is None:
            return self._step(now)
        if request.op == "release":
            return [TraceStep(Step.RELEASE, rev=rev), *self._exited(now)]
        if request.op == "read":
            return self._step(now)
        traced = (
            TraceStep(Step.ACQUIRE, rev=rev, epoch=rev)
            if request.op == "acquire"
            else TraceStep(Step.RENEW, rev=rev, epoch=request.epoch)
        )
        if request.op == "acquire" or self.role == "active":
            if request.op == "acquire":
                self.epoch = rev
                self.last_send = request.sent_at
            self.role = "active"
            self.my_rev = rev
            self.deadline = request.sent_at + self.params.window_s
        return [traced, *self._step(now)]

    def write_failed(self, now: float, current: KeyState, req: int, *, ours: bool = False) -> list[Effect]:
        """The compare-and-set lost: the key is at ``current`` (someone else wrote, or it expired).

        ``ours``: the key still holds this instance's own record and epoch. That happens when an earlier renewal
        timed out but was stored after all: nobody else wrote since, so the active keeps the lease, continues
        from ``current.rev`` and renews at once (its window still counts from its last *acknowledged* write);
        a release deletes again on ``current.rev``.
        """
        request = self._take(req)
        if request is None:
            return self._step(now)
        if request.op == "release" and ours and current.kind == "val":
            # Our own lost renewal is in the key: delete again on its revision, so standbys need not
            # wait out the lease (the spec's graceful-stop rule). The retry's request line says so.
            return [*self._send(now, "release", current.rev), *self._step(now)]
        if request.op == "release":
            return [TraceStep(Step.RELEASE, rev=0), *self._exited(now)]
        if request.op == "read":
            return self._step(now)
        traced = (
            TraceStep(Step.OUTBID, rev=current.rev, kind=ELECTION_KINDS[current.kind])
            if request.op == "acquire"
            else TraceStep(Step.ADOPT if ours else Step.LOSE, rev=current.rev, epoch=request.epoch)
        )
        if ours and request.op == "renew" and self.role == "active" and current.kind == "val":
            self.my_rev = current.rev
            self.last_send = -math.inf
            return [traced, *self._step(now)]
        if self.stopping:  # lost while stopping (a renewal, or a campaign): nothing to hand over, exit
            return [traced, *self._exited(now)]
        # Lost. Restart the timer from this answer, unless the watch already told a standby something newer.
        if (
            self.role != "standby"
            or current.rev > self.seen.rev
            or (current.rev == 0 and self.seen.rev <= request.expected)
        ):
            self.seen = current
            self.seen_at = now
        self.role = "standby"
        return [traced, *self._step(now)]

    def write_timeout(self, now: float, req: int) -> list[Effect]:
        """No answer to the request in flight: its outcome is unknown (KV without a leader, connection lost)."""
        request = self._take(req)
        if request is None:
            return self._step(now)
        # A probe's timeout has no op: the spec's probe is silent, the line lets a checker explain the outage.
        traced = TraceStep(
            Step.TIMEOUT, rev=request.expected, op=None if request.op == "read" else StepOp(request.op)
        )
        if request.op == "release" or (self.stopping and self.role == "standby"):
            # (a campaign that timed out while stopping may still land, like a crashed process's last write)
            return [traced, *self._exited(now)]
        if request.op in ("acquire", "read") and self.role == "standby" and self.seen.rev == request.expected:
            # The KV is unavailable, not (necessarily) the active dead. Campaigning again as soon as it
            # returns would race the incumbent's renewal: first read the key, then wait a whole lease.
            # (Unless the watch delivered something newer meanwhile: the KV took a write, stale news loses.)
            self.probe = True
            self.seen_at = now
        return [traced, *self._step(now)]

    def read_done(self, now: float, key: KeyState, req: int) -> list[Effect]:
        """The key read that a :class:`Probe` asked for: the KV answers again. The lease timer restarts now,
        so an incumbent that renews within a lease keeps the key."""
        request = self._take(req)
        if request is None or request.op != "read":
            return self._step(now)
        recovering = self.probe
        out: list[Effect] = []
        if self._learn(now, key):  # the probe saw the key move: to the spec, an observation
            out.append(_observed(key))
        elif recovering:  # (a newer revision restarts the timer anyway)
            self.seen_at = now  # the KV was down until now: give the incumbent a whole lease to renew
        self.probe = False
        # Campaign only if still ready: the watch may have delivered a newer revision meanwhile.
        if self.role == "standby" and not self.stopping and not recovering and self.ready(now):
            out.extend(self._send(now, "acquire", self.seen.rev))
        out.extend(self._step(now))
        return out

    def tick(self, now: float) -> list[Effect]:
        """The timer fired (or the driver wants the machine to look at the time). A request without an
        answer for ``write_timeout_s`` counts as timed out; a late answer to it is then ignored."""
        if self.request is not None and now >= self.request.sent_at + self.params.write_timeout_s:
            return self.write_timeout(now, self.request.id)
        return self._step(now)

    def stop(self, now: float) -> list[Effect]:
        """Graceful stop: stop serving at once, release the key when no request is in flight. A standby exits
        at once, unless a campaign of its is in flight: it waits for the answer (won: it releases the key
        without serving; lost or timed out: it exits), so that a stop does not leave the key to a process
        that is gone."""
        self.stopping = True
        if self.role == "standby" and self.request is not None and self.request.op == "acquire":
            return self._step(now)
        if self.role != "active":
            self.role = "standby"
            return [*self._serving_change(now), Exit()]
        return self._step(now)

    def crash(self) -> None:
        """The process died (for simulators): everything in memory is gone; :meth:`start` begins afresh."""
        fresh = Election(self.params)
        for name in self.__slots__:  # type: ignore[attr-defined]
            if name != "requests_sent":  # ids stay unique across restarts of one object
                setattr(self, name, getattr(fresh, name))

    # -- internals -----------------------------------------------------------------------------------------

    def _learn(self, now: float, key: KeyState) -> bool:
        """A standby learns a revision newer than what it knows (from its watch or its probe's read; "absent"
        has no revision and never counts): it goes by it from now, and leaves probe mode. True if it did."""
        if self.role != "standby" or key.kind == "none" or key.rev <= self.seen.rev:
            return False
        self.seen, self.seen_at, self.probe = key, now, False
        return True

    def _take(self, req: int) -> _Request | None:
        """The request in flight if ``req`` names it; None for an answer to an older request (ignored)."""
        if self.request is None or self.request.id != req:
            return None
        request, self.request = self.request, None
        return request

    def _exited(self, now: float) -> list[Effect]:
        self.role = "standby"
        self.started = False
        return [*self._serving_change(now), Exit()]

    def _send(self, now: float, op: Op, expected: int) -> list[Effect]:
        epoch = self.epoch if op != "acquire" else 0
        self.request = _Request(op, expected, now, self._next_id(), epoch)
        if op == "renew":
            self.last_send = now
        return [
            TraceStep(Step.REQUEST, rev=expected, epoch=epoch, op=StepOp(op)),
            Write(op, expected, epoch, self.request.id),
        ]

    def _next_id(self) -> int:
        self.requests_sent += 1
        return self.requests_sent

    def _step(self, now: float) -> list[Effect]:
        out: list[Effect] = []
        p = self.params
        if self.started and self.request is None:
            if self.role == "active" and self.stopping:
                self.role = "releasing"
                out.extend(self._serving_change(now))
                out.extend(self._send(now, "release", self.my_rev))
            elif self.role == "active" and now - self.last_send >= p.renew_s:
                out.extend(self._send(now, "renew", self.my_rev))
            elif self.role == "standby" and not self.stopping and self.ready(now):
                # Probe first: a campaign sent while the KV cannot commit may land much later, after the
                # incumbent's renewal attempts failed, and depose it for nothing.
                self.request = _Request("read", self.seen.rev, now, self._next_id())
                out.append(Probe(self.request.id))
        out.extend(self._serving_change(now))
        if self.started:
            out.append(Timer(self._next_wakeup(now)))
        return out

    def _serving_change(self, now: float) -> list[Effect]:
        serving = self.serving(now)
        if serving == self._was_serving:
            return []
        self._was_serving = serving
        if serving:
            return [StartServing(self.epoch)]
        reason = (
            "lost the lease"
            if self.role == "standby"
            else "releasing"
            if self.role == "releasing"
            else "lease window ended before a renewal landed"
        )
        return [StopServing(reason)]

    def _next_wakeup(self, now: float) -> float:
        p = self.params
        times = []
        if self.request is not None:
            times.append(self.request.sent_at + p.write_timeout_s)
        elif self.role == "active":
            times.append(self.last_send + p.renew_s)
        elif self.role == "standby" and self.probe:
            times.append(self.seen_at + p.renew_s)
        elif self.role == "standby" and self.seen.kind == "val":
            times.append(self.seen_at + p.lease_s)
        if self.role == "active" and now < self.deadline:
            times.append(self.deadline)
        future = [t for t in times if t > now]
        return min(future) if future else now + p.renew_s


def _observed(key: KeyState) -> TraceStep:
    return TraceStep(Step.OBSERVE, rev=key.rev, kind=ELECTION_KINDS[key.kind])
