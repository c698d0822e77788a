"""The quorum lease as a pure, sans-IO state machine: one instance's side of ``docs/quorum-lease.md``.

The single-bucket lease (:mod:`aegis.sdk.election`) cannot ride through a crash of the node that leads its bucket's
stream: NATS elects a new stream leader after 4-9 s. Here the lease lives in a **majority of three buckets** whose
stream leaders sit on different nodes: a crash stalls at most one bucket and the active keeps renewing the other
two. No asyncio, no NATS: the driver (:mod:`aegis.sdk.quorum_driver`) or the simulator feeds events with the
instance's own monotonic time and carries out the actions returned::

    m = QuorumElection("orders-1", ElectionParams())
    m.start(now, [Slot(0, None)] * 3)          # -> [Claim writes to the three buckets, Timer(...)]
    m.write_ok(now, bucket=0, rev=1, req=1)    # one acknowledgement: still a candidate
    m.write_ok(now, bucket=2, rev=1, req=3)    # a majority: StartServing(epoch=ballot)

The rules (numbered as in ``docs/quorum-lease.md``; the spec is ``aegis/spec/tla/QuorumLease.tla``):

1. A bucket is *free* in an instance's view when the key is absent, released, or its revision has not moved for a
   whole lease on the instance's own clock.
2. A standby that sees a majority free campaigns: ``ballot = 1 + the highest floor it knows`` (and above its own
   last ballot) and a compare-and-set of its claim to every free bucket (never to one that is not free); while a
   candidate, it also claims each bucket that becomes free, where the floor is below its ballot.
3. Acknowledged in a majority: active, epoch = ballot.
4. A candidate that can no longer reach a majority releases what it holds and backs off a random time in
   ``[0, renew_s)``.
5. The active renews every ``renew_s`` on each bucket it holds and claims each bucket that is free in its view and
   whose floor is not above its own ballot.
6. A refused compare-and-set loses that bucket; below a majority the active stops at once. Its serving deadline is
   the *second newest* acknowledged send over the buckets it holds + the window: it holds a majority exactly while
   two claims are unexpired. Stepping down (below a majority, or at the end of its window) it hands back the
   buckets it still holds.
7. A graceful stop stops serving and releases (by compare-and-set) every bucket it holds.
8. Replies carry the ballot they were admitted under; a standby tells clients only a ballot seen in a majority.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from .election import ElectionParams, Exit, StartServing, StopServing, Timer

QRole = Literal["standby", "candidate", "active", "releasing"]
QOp = Literal["claim", "renew", "release"]
QUORUM_BUCKETS = 3
QUORUM = 2


@dataclass(frozen=True, slots=True)
class Claim:
    """The record in one bucket's key: who claims it under which ballot, the bucket's ballot register
    (``floor``: the highest ballot ever written to this key there) and whether it was given back."""

    holder: str
    ballot: int
    floor: int
    released: bool = False


@dataclass(frozen=True, slots=True)
class Slot:
    """One bucket's key as an instance knows it: its revision there (0: never written) and its record (None when
    absent or unreadable)."""

    rev: int
    claim: Claim | None


@dataclass(frozen=True, slots=True)
class QWrite:
    """Compare-and-set ``claim`` into bucket ``bucket`` on revision ``expected`` (0: create). Answer with
    :meth:`QuorumElection.write_ok`, :meth:`~QuorumElection.write_failed` (with the key as it is now) or let the
    timer time it out."""

    bucket: int
    op: QOp
    expected: int
    claim: Claim
    req: int


@dataclass(frozen=True, slots=True)
class Leadership:
    """A change of leadership this instance took part in, for the leadership log (``acquire``, ``expire``: it took
    over a claim its holder never released, ``lose``, ``release``)."""

    kind: Literal["acquire", "expire", "lose", "release"]
    epoch: int
    reason: str
    previous: str | None = None
    previous_epoch: int | None = None


def majority_claim(claims: Sequence[Claim | None]) -> Claim | None:
    """Rule 8, for instances and clients alike: of the claims (one per bucket) whose holder and ballot appear in a
    majority of buckets, the one of the highest ballot, with ``released`` set when a majority released it; None
    when no ballot is in a majority. That is the newest ballot that may have served; a ballot in one bucket only
    (a partial claim) never served, and a client that trusted it would refuse the real active's replies."""
    count: dict[tuple[int, str], list[Claim]] = {}
    for claim in claims:
        if claim is not None:
            count.setdefault((claim.ballot, claim.holder), []).append(claim)
    won = [key for key, seen in count.items() if len(seen) >= QUORUM]
    if not won:
        return None
    ballot, holder = max(won)
    released = sum(c.released for c in count[(ballot, holder)]) >= QUORUM
    return Claim(holder, ballot, ballot, released)


def active_claim(claims: Sequence[Claim | None]) -> Claim | None:
    """Rule 8 as a client (or the management fleet) names the active: the :func:`majority_claim`, unless a
    majority released it; None when nobody serves as far as the buckets tell."""
    won = majority_claim(claims)
    return None if won is None or won.released else won


QEffect = QWrite | StartServing | StopServing | Timer | Exit | Leadership


@dataclass(slots=True)
class _Req:
    op: QOp
    expected: int
    sent_at: float
    id: int
    claim: Claim


@dataclass(slots=True)
class QuorumElection:
    """One instance's side of the quorum lease; see the module docstring. Event methods return the effects to
    carry out, in order."""

    me: str
    params: ElectionParams = field(default_factory=ElectionParams)
    rng: Callable[[], float] = random.random
    """Draws the back-off after a lost campaign, as a fraction of ``renew_s`` (seed it in simulations)."""
    role: QRole = "standby"
    ballot: int = 0
    """The ballot of this instance's current or last claim."""
    epoch: int = 0
    """The ballot it serves under while active (0 otherwise)."""
    seen: list[Slot] = field(default_factory=lambda: [Slot(0, None)] * QUORUM_BUCKETS)
    seen_at: list[float] = field(default_factory=lambda: [0.0] * QUORUM_BUCKETS)
    held: list[int] = field(default_factory=lambda: [0] * QUORUM_BUCKETS)
    """Per bucket: the revision of its own acknowledged write of ``ballot`` there (0: not held)."""
    sent: list[float] = field(default_factory=lambda: [-math.inf] * QUORUM_BUCKETS)
    """Per bucket: when the acknowledged write in ``held`` was sent (-inf: unknown, e.g. an adopted late write)."""
    requests: list[_Req | None] = field(default_factory=lambda: [None] * QUORUM_BUCKETS)
    last_round: float = -math.inf
    backoff_until: float = -math.inf
    started: bool = False
    stopping: bool = False
    requests_sent: int = 0
    _was_serving: bool = False
    _over: list[Slot] = field(default_factory=list)
    """What the current campaign claimed over (for the leadership record when it wins)."""

    # -- queries -------------------------------------------------------------------------------------------

    @property
    def deadline(self) -> float:
        """The end of the serving window: the second newest acknowledged send over the buckets held + the
        window (-inf below a majority)."""
        sends = sorted((self.sent[b] for b in range(QUORUM_BUCKETS) if self.held[b]), reverse=True)
        if len(sends) < QUORUM:
            return -math.inf
        return sends[QUORUM - 1] + self.params.window_s

    def serving(self, now: float) -> bool:
        """True while this instance may answer exclusive calls."""
        return self.role == "active" and now < self.deadline

    def may_reply(self, now: float, epoch: int) -> bool:
        """A call admitted under ``epoch`` may send its outcome now: still serving, under that same ballot."""
        return self.epoch == epoch and self.serving(now)

    def reply_epoch(self, now: float, admitted: int, known: int) -> int | None:
        """The epoch a reply admitted under ``admitted`` is stamped with, or None (withheld): the admission
        epoch while still serving under it, never ``known`` (see :meth:`aegis.sdk.election.Election.reply_epoch`)."""
        return admitted if self.may_reply(now, admitted) else None

    def free(self, now: float, b: int) -> bool:
        """Rule 1: bucket ``b`` is free in this instance's view."""
        claim = self.seen[b].claim
        return claim is None or claim.released or now - self.seen_at[b] >= self.params.lease_s

    def majority_ballot(self) -> tuple[int, str | None]:
        """Rule 8: the highest ballot (and its holder) this instance has seen claimed in a majority of buckets."""
        won = majority_claim([slot.claim for slot in self.seen])
        return (won.ballot, won.holder) if won is not None else (0, None)

    def held_count(self) -> int:
        return sum(1 for b in range(QUORUM_BUCKETS) if self.held[b])

    def holds_majority(self) -> bool:
        """Its own claim is acknowledged in a majority of the buckets (rule 3)."""
        return self.held_count() >= QUORUM

    # -- events --------------------------------------------------------------------------------------------

    def start(self, now: float, slots: Sequence[Slot]) -> list[QEffect]:
        """The process starts: it read the three keys."""
        if len(slots) != QUORUM_BUCKETS:
            raise ValueError(f"need {QUORUM_BUCKETS} bucket slots, got {len(slots)}")
        self.started, self.stopping = True, False
        self.role, self.epoch = "standby", 0
        # (a watch may have delivered something newer than the reads before the start was handled)
        self.seen = [s if s.rev >= known.rev else known for s, known in zip(slots, self.seen, strict=True)]
        self.seen_at = [now] * QUORUM_BUCKETS
        self.held = [0] * QUORUM_BUCKETS
        self.sent = [-math.inf] * QUORUM_BUCKETS
        self.requests = [None] * QUORUM_BUCKETS
        return self._step(now)

    def observe(self, now: float, b: int, slot: Slot) -> list[QEffect]:
        """The watch of bucket ``b`` delivered a revision of the key."""
        self._learn(now, b, slot)
        return self._step(now)

    def write_ok(self, now: float, b: int, rev: int, req: int) -> list[QEffect]:
        """The write in flight to bucket ``b`` was stored at revision ``rev``."""
        request = self._take(b, req)
        if request is None:
            return self._step(now)
        self._learn(now, b, Slot(rev, request.claim))
        out: list[QEffect] = []
        if request.op == "release":
            self.held[b] = 0
        elif request.claim.ballot == self.ballot and self.role in ("candidate", "active", "releasing"):
            self.held[b], self.sent[b] = rev, request.sent_at
            if self.role == "candidate" and self.holds_majority():
                # Rule 3 as the spec's AnswerCore has it: a majority acknowledged wins, even when the answers
                # came so late that the window has already ended; rule 6 then steps it down in this same step
                # (_step) and it hands the buckets back. Waiting instead for a window that can no longer open
                # left a candidate holding two buckets for good, neither winning nor giving up, and nobody
                # else could win (the pinned partition campaign found it: two standbys stuck for a minute).
                out.extend(self._won(now))
        else:  # a claim that landed after its campaign was given up: hand it back
            self.held[b] = rev
            out.extend(self._release(now, b))
        return [*out, *self._step(now)]

    def write_failed(self, now: float, b: int, current: Slot, req: int) -> list[QEffect]:
        """The compare-and-set to bucket ``b`` was refused: the key is at ``current``."""
        request = self._take(b, req)
        if request is None:
            return self._step(now)
        self._learn(now, b, current)
        claim = current.claim
        ours = claim is not None and claim.holder == self.me and claim.ballot == request.claim.ballot
        out: list[QEffect] = []
        if request.op == "release":
            if ours and claim is not None and not claim.released:  # an earlier write of ours landed: again
                self.held[b] = current.rev
                out.extend(self._release(now, b))
            else:
                self.held[b] = 0
        elif ours and claim is not None and not claim.released and request.claim.ballot == self.ballot:
            # A timed-out write of ours landed after all: adopt its revision, keep the last known send time.
            self.held[b] = current.rev
            if request.op == "claim":
                self.sent[b] = -math.inf
                if self.role == "candidate" and self.holds_majority():  # as in write_ok (rule 3)
                    out.extend(self._won(now))
        else:
            self.held[b] = 0
            if self.role == "active" and self.held_count() < QUORUM:
                out.extend(self._lose(now, f"bucket {b} was taken at revision {current.rev}"))
        return [*out, *self._step(now)]

    def write_timeout(self, now: float, b: int, req: int) -> list[QEffect]:
        """No answer from bucket ``b`` (stalled, or the connection is down): the outcome is unknown; the write may
        still land later. An active keeps the bucket and retries on the same revision."""
        request = self._take(b, req)
        if request is not None:
            self._timed_out(b, request)
        return self._step(now)

    def tick(self, now: float) -> list[QEffect]:
        """The timer fired: time out requests older than ``write_timeout_s``, then act on the time."""
        for b, request in enumerate(self.requests):
            if request is not None and now >= request.sent_at + self.params.write_timeout_s:
                self.requests[b] = None
                self._timed_out(b, request)
        return self._step(now)

    def stop(self, now: float) -> list[QEffect]:
        """Graceful stop (rule 7): stop serving at once, release every bucket held, then exit."""
        self.stopping = True
        if self.role in ("active", "candidate"):
            self.role = "releasing"
        return self._step(now)

    def crash(self) -> None:
        """The process died (for simulators): memory is gone except the ids, which stay unique."""
        fresh = QuorumElection(self.me, self.params, self.rng)
        for name in self.__slots__:  # type: ignore[attr-defined]
            if name not in ("requests_sent", "me", "params", "rng"):
                setattr(self, name, getattr(fresh, name))

    # -- internals -----------------------------------------------------------------------------------------

    def _learn(self, now: float, b: int, slot: Slot) -> None:
        """Go by ``slot`` in bucket ``b`` if it is newer than what this instance knows there."""
        if slot.rev > self.seen[b].rev:
            self.seen[b], self.seen_at[b] = slot, now

    def _timed_out(self, b: int, request: _Req) -> None:
        if request.op == "release":
            self.held[b] = 0  # unknown: nobody renews it, so it is free after a lease anyway

    def _take(self, b: int, req: int) -> _Req | None:
        request = self.requests[b]
        if request is None or request.id != req:
            return None
        self.requests[b] = None
        return request

    def _floor(self, b: int) -> int:
        claim = self.seen[b].claim
        return claim.floor if claim is not None else 0

    def _max_floor(self) -> int:
        return max((s.claim.floor for s in self.seen if s.claim is not None), default=0)

    def _send(self, now: float, b: int, op: QOp, expected: int, released: bool = False) -> QWrite:
        floor = max(self.ballot, self.seen[b].claim.floor if self.seen[b].claim is not None else 0)
        claim = Claim(self.me, self.ballot, floor, released)
        self.requests_sent += 1
        self.requests[b] = _Req(op, expected, now, self.requests_sent, claim)
        return QWrite(b, op, expected, claim, self.requests_sent)

    def _release(self, now: float, b: int) -> list[QEffect]:
        if self.requests[b] is not None or not self.held[b]:
            return []
        return [self._send(now, b, "release", self.held[b], released=True)]

    def _campaign(self, now: float) -> list[QEffect]:
        if any(r is not None for r in self.requests):
            # Rule 2 (the spec's CanCampaign: AllIdle): not while a write of ours is in flight, e.g. the renewal
            # of an active that just stepped down (the partition campaign's trace check found the SDK campaigning
            # beside one); it is answered or times out within write_timeout_s.
            return []
        free = [b for b in range(QUORUM_BUCKETS) if self.free(now, b)]
        if len(free) < QUORUM:
            return []
        self.role = "candidate"
        self.ballot = max(self.ballot, self._max_floor()) + 1
        self.held = [0] * QUORUM_BUCKETS
        self.sent = [-math.inf] * QUORUM_BUCKETS
        self._over = [self.seen[b] for b in free]
        return [self._send(now, b, "claim", self.seen[b].rev) for b in free]

    def _claim_more(self, now: float) -> list[QEffect]:
        """Rule 2: a candidate also claims, with its ballot, each bucket that became free after its campaign
        started (lease timers run per bucket: one record ages a moment after another), where the floor is below its
        ballot (at its ballot: another candidate of the same ballot was there, and may have served)."""
        out: list[QEffect] = []
        for b in range(QUORUM_BUCKETS):
            if (
                not self.held[b]
                and self.requests[b] is None
                and self.free(now, b)
                and self._floor(b) < self.ballot
            ):
                self._over.append(self.seen[b])
                out.append(self._send(now, b, "claim", self.seen[b].rev))
        return out

    def _reachable(self) -> int:
        """Buckets a candidate holds or still waits to hear from."""
        return sum(
            1
            for b in range(QUORUM_BUCKETS)
            if self.held[b] or (self.requests[b] is not None and self.requests[b].op == "claim")  # type: ignore[union-attr]
        )

    def _won(self, now: float) -> list[QEffect]:
        self.role, self.epoch = "active", self.ballot
        self.last_round = max(self.sent)
        out: list[QEffect] = []
        taken = [s.claim for s in self._over if s.claim is not None and not s.claim.released]
        previous = max(taken, key=lambda c: c.ballot, default=None)
        if previous is not None and previous.holder != self.me:
            out.append(
                Leadership(
                    "expire",
                    self.ballot,
                    "holder silent for a lease; taken over",
                    previous.holder,
                    previous.ballot,
                )
            )
        freed = [s.claim for s in self._over if s.claim is not None]
        reason = (
            "buckets were free"
            if not freed
            else "buckets released by their holder"
            if not taken
            else "took over claims left unrenewed"
        )
        last = max(freed, key=lambda c: c.ballot, default=None)
        out.append(
            Leadership(
                "acquire",
                self.ballot,
                reason,
                last.holder if last is not None else None,
                last.ballot if last is not None else None,
            )
        )
        return out

    def _lose(self, now: float, why: str) -> list[QEffect]:
        lost = self.epoch
        self.role, self.epoch = "standby", 0
        out: list[QEffect] = [Leadership("lose", lost, why)]
        for b in range(QUORUM_BUCKETS):  # hand back the minority still held, so nobody waits a lease for it
            out.extend(self._release(now, b))
        return out

    def _give_up(self, now: float) -> list[QEffect]:
        self.role = "standby"
        self.backoff_until = now + self.rng() * self.params.renew_s
        out: list[QEffect] = []
        for b in range(QUORUM_BUCKETS):
            out.extend(self._release(now, b))
        return out

    def _step(self, now: float) -> list[QEffect]:
        out: list[QEffect] = []
        p = self.params
        if self.started:
            if self.role == "candidate" and self._reachable() < QUORUM:
                out.extend(self._give_up(now))
            if self.role == "candidate":
                out.extend(self._claim_more(now))
            if self.role == "releasing":
                for b in range(QUORUM_BUCKETS):
                    out.extend(self._release(now, b))
                if not any(self.requests) and not self.held_count():
                    served, self.epoch = self.epoch, 0
                    self.role, self.started = "standby", False
                    out.extend(self._serving_change(now))
                    if served:
                        out.append(Leadership("release", served, "graceful stop: claims released"))
                    out.append(Exit())
                    return out
            elif self.role == "standby" and self.stopping:
                if not any(self.requests):
                    self.started = False
                    out.extend(self._serving_change(now))
                    out.append(Exit())
                    return out
            elif self.role == "active" and not self.serving(now):
                # Rule 6: the window ended without acknowledgements from a majority: it cannot serve, and a bucket
                # it kept renewing would keep the standbys out (one bucket stalled, another one's floor raised
                # above its ballot by their duels: nobody could win until the stalled one came back)
                out.extend(self._lose(now, "serving window ended without acknowledgements from a majority"))
            elif self.role == "active" and now - self.last_round >= p.renew_s:
                self.last_round = now
                for b in range(QUORUM_BUCKETS):
                    if self.requests[b] is not None:
                        continue
                    if self.held[b]:
                        out.append(self._send(now, b, "renew", self.held[b]))
                    elif self.free(now, b) and self._floor(b) <= self.ballot:
                        # (a higher floor: a newer ballot was claimed there; taking the bucket back with our
                        # older ballot could serve it again after the newer one served: TLC found it)
                        out.append(self._send(now, b, "claim", self.seen[b].rev))
            elif self.role == "standby" and now >= self.backoff_until:
                out.extend(self._campaign(now))
        out.extend(self._serving_change(now))
        if self.started:
            out.append(Timer(self._next_wakeup(now)))
        return out

    def _serving_change(self, now: float) -> list[QEffect]:
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
            else "lease window ended before renewals landed in a majority"
        )
        return [StopServing(reason)]

    def _next_wakeup(self, now: float) -> float:
        p = self.params
        times = [r.sent_at + p.write_timeout_s for r in self.requests if r is not None]
        if self.role == "active":
            times.append(self.last_round + p.renew_s)
            if now < self.deadline:
                times.append(self.deadline)
        if self.role in ("standby", "candidate", "active"):
            times.extend(
                self.seen_at[b] + p.lease_s
                for b in range(QUORUM_BUCKETS)
                if self.seen[b].claim is not None and not self.seen[b].claim.released  # type: ignore[union-attr]
            )
        if self.role == "standby":
            times.append(self.backoff_until)
        future = [t for t in times if t > now]
        return min(future) if future else now + p.renew_s


__all__ = [
    "QUORUM",
    "QUORUM_BUCKETS",
    "Claim",
    "Leadership",
    "QEffect",
    "QWrite",
    "QuorumElection",
    "Slot",
    "active_claim",
    "majority_claim",
]
