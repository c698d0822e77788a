"""The sticky client's rules as a pure, sans-IO core: what a client knows of a group's leader, and what one call
does next. No asyncio, no NATS: :class:`aegis.sdk.sticky.StickyClient` drives it with asyncio and the simulator
(``aegis/sim/client.py``) with SimPy, so the simulator checks the client's own decisions.

One :class:`GroupView` per group, fed by the election key's watch::

    view.observe(holder="api-2", epoch=7)        # a value: the leader record; observe(None, 0) for a marker

One :class:`CallCore` per call; ask it what to do, do it, tell it what happened::

    call = CallCore(view, now, timeout_s=2.0, attempt_timeout_s=1.0)
    step = call.next(now)          # Attempt(target, timeout_s) | Wait(seconds) | GiveUp(reason)
    step = call.outcome(now, attempt, Outcome.ok(epoch=7))   # Accept(epoch) | Wait(seconds) | None: ask next()

The rules:

* The watch never moves the leader back to an older epoch; a marker (or a value without a record) means no
  leader is known.
* A reply carries the epoch its call was admitted under; one older than an epoch this client already accepted is
  dropped and the call retried (``ClientNeverGoesBack`` in the spec). ``epoch_check=False`` switches both epoch
  rules off (a negative control).
* ``NotActive`` from an instance that knows an older epoch than the key: it was just elected and has not processed
  its own acquire yet, so ask it again after :data:`FIRST_BACKOFF_S`. Any other failure (``NotActive``,
  ``LeaseLost``, no answer, nobody listening, a stale reply) waits until the watch names someone else, at most a
  backoff that doubles from :data:`FIRST_BACKOFF_S` to :data:`MAX_BACKOFF_S` per target; if the watch already
  names someone else, the call goes there at once.
* Without a known leader the call waits for the watch, at most :data:`MAX_BACKOFF_S` at a time.
* Every wait for the watch (after a failure on the leader it names, or without a leader) asks the driver to
  re-read the key too (``Wait.reread``): a watch can stay silent for seconds after a partition. The simulator's
  watches never stall, so its driver has nothing to re-read and ignores the flag.
* At the deadline the call gives up, saying the last few things it tried.
* Which of a pool's connections an attempt goes through (:class:`Connections`): the next in turn that has not
  failed since it last answered.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum

FIRST_BACKOFF_S = 0.01
MAX_BACKOFF_S = 0.2
_TRIED_SHOWN = 5


@dataclass(slots=True)
class GroupView:
    """What one client knows about one single-active group."""

    leader: str | None = None
    """Instance the election key names (None: a marker, or nothing seen yet)."""
    epoch: int = 0
    """Epoch of that leader record."""
    accepted: int = 0
    """Newest epoch of a reply this client accepted."""
    epoch_check: bool = True

    def observe(self, holder: str | None, epoch: int) -> None:
        """The watch delivered the key: a leader record (``holder``, its epoch) or a marker (``holder`` None)."""
        if holder is None:
            self.leader = None
        elif epoch >= self.epoch or not self.epoch_check:
            self.leader, self.epoch = holder, epoch

    def accept(self, epoch: int) -> bool:
        """A reply admitted under ``epoch`` arrived: True if the call may take it (never an older epoch than one
        accepted before)."""
        if epoch < self.accepted and self.epoch_check:
            return False
        self.accepted = max(self.accepted, epoch)
        return True


class Kind(Enum):
    """How an attempt ended."""

    OK = "ok"
    NOT_ACTIVE = "not-active"
    LEASE_LOST = "lease-lost"
    NO_ANSWER = "no-answer"  # attempt timeout or nobody listening
    UNAVAILABLE = "unavailable"  # the connection could not carry the request
    LEADER_CHANGED = "leader-changed"  # abandoned: the watch named another leader while it was in flight


@dataclass(frozen=True, slots=True)
class Outcome:
    """The end of one attempt, as the driver saw it."""

    kind: Kind
    epoch: int = 0
    """OK: the reply's admission epoch; NOT_ACTIVE: the epoch the instance knows; LEASE_LOST: the epoch lost."""
    known_epoch: int = 0
    """LEASE_LOST: the newest epoch the instance knew."""
    detail: str = ""

    @classmethod
    def ok(cls, epoch: int) -> Outcome:
        return cls(Kind.OK, epoch)


@dataclass(frozen=True, slots=True)
class Attempt:
    """Send the call to ``target``; give the attempt at most ``timeout_s``."""

    target: str
    timeout_s: float


@dataclass(frozen=True, slots=True)
class Wait:
    """Wait ``seconds``, or less if the watch delivers meanwhile (``until_change``); then ask :meth:`CallCore.next`.
    ``reread``: the view may be stale, re-read the key meanwhile (the result counts like a watch delivery)."""

    seconds: float
    until_change: bool = True
    reread: bool = False


@dataclass(frozen=True, slots=True)
class Accept:
    """The call is done: the reply of ``epoch`` is its answer."""

    epoch: int


@dataclass(frozen=True, slots=True)
class GiveUp:
    """The deadline passed; ``reason`` says what was tried."""

    reason: str


@dataclass(slots=True)
class CallCore:
    """The decisions of one sticky call; see the module docstring. Times are the driver's monotonic seconds."""

    view: GroupView
    start: float
    timeout_s: float
    attempt_timeout_s: float = 1.0
    what: str = "the call"
    """Names the call in the give-up reason (e.g. "orders/default place")."""
    tried: list[str] = field(default_factory=list)
    retries: int = 0
    """Attempts that failed and were retried."""
    _backoff: float = FIRST_BACKOFF_S
    _last_target: str | None = None

    @property
    def deadline(self) -> float:
        return self.start + self.timeout_s

    def next(self, now: float) -> Attempt | Wait | GiveUp:
        """What to do now: an attempt on the leader the view names, a wait for the watch, or give up."""
        left = self.deadline - now
        if left <= 0:
            return GiveUp(
                f"no active instance of {self.what} answered within {self.timeout_s:.3f}s;"
                f" tried: {'; '.join(self.tried[-_TRIED_SHOWN:]) or 'no leader known'}"
            )
        target = self.view.leader
        if target is None:
            if not self.tried or self.tried[-1] != "no leader in the election key":
                self.tried.append("no leader in the election key")
            return Wait(min(left, MAX_BACKOFF_S), reread=True)
        if target != self._last_target:
            self._backoff, self._last_target = FIRST_BACKOFF_S, target
        return Attempt(target, min(left, self.attempt_timeout_s))

    def outcome(self, now: float, attempt: Attempt, result: Outcome) -> Accept | Wait | None:
        """The attempt ended: :class:`Accept` (done), a :class:`Wait` before the next one, or None (ask
        :meth:`next` at once)."""
        target = attempt.target
        if result.kind is Kind.OK:
            if self.view.accept(result.epoch):
                return Accept(result.epoch)
            self.tried.append(f"{target}: stale reply from epoch {result.epoch} < {self.view.accepted}")
        elif result.kind is Kind.LEADER_CHANGED:
            self.tried.append(f"{target}: no answer before the key named a new leader")
            return None
        elif result.kind is Kind.NOT_ACTIVE:
            self.tried.append(f"{target}: not active (it knows epoch {result.epoch})")
            if result.epoch < self.view.epoch:
                # It was just elected and has not yet processed its own acquire: ask again in a moment.
                return Wait(min(FIRST_BACKOFF_S, max(0.0, self.deadline - now)), until_change=False)
        elif result.kind is Kind.LEASE_LOST:
            self.tried.append(
                f"{target}: lost the lease of epoch {result.epoch} before the call finished"
                f" (it knows epoch {result.known_epoch})"
            )
        else:
            self.tried.append(f"{target}: {result.detail or result.kind.value}")
        self.retries += 1
        if self.view.leader != target:
            return None  # the watch names someone else already: go there now
        # The watch has not caught up: wait for it a little (and re-read the key), then try whoever it says.
        wait = Wait(min(self._backoff, max(0.0, self.deadline - now)), reread=True)
        self._backoff = min(self._backoff * 2, MAX_BACKOFF_S)
        return wait


SUSPECT_S = 5.0
"""A connection that failed (no answer, or a re-read that timed out or came back older than what another
connection told) is passed over for this long, unless it answers again meanwhile."""


@dataclass(slots=True)
class Connections:
    """Which of a pool's connections reach the group's instances, from what went through them: a connection on a
    server cut off from the rest still answers pings, so only the answers tell. An attempt goes through the first
    connection, from its turn on, that has not failed since it last answered (a cut server's connection is
    skipped instead of costing an attempt timeout); when all have, strictly in turn."""

    answered: dict[int, float] = field(default_factory=dict)
    failed: dict[int, float] = field(default_factory=dict)

    def ok(self, conn: int, now: float) -> None:
        """Something sent through ``conn`` was answered (an attempt's reply or refusal, a current re-read)."""
        self.answered[conn] = now

    def bad(self, conn: int, now: float) -> None:
        """Something sent through ``conn`` got no answer, or a stale one."""
        self.failed[conn] = now

    def suspect(self, conn: int, now: float) -> bool:
        failed = self.failed.get(conn, -math.inf)
        return failed > self.answered.get(conn, -math.inf) and now - failed < SUSPECT_S

    def pick(self, turn: int, count: int, now: float) -> int:
        """The connection (index of ``count``) for the attempt whose turn is ``turn``."""
        for j in range(count):
            conn = (turn + j) % count
            if not self.suspect(conn, now):
                return conn
        return turn % count


__all__ = [
    "FIRST_BACKOFF_S",
    "MAX_BACKOFF_S",
    "SUSPECT_S",
    "Accept",
    "Attempt",
    "CallCore",
    "Connections",
    "GiveUp",
    "GroupView",
    "Kind",
    "Outcome",
    "Wait",
]
