"""A simulated sticky client: the logic of :class:`sdk.sticky.StickyClient`, on simulated time.

It follows the election key with its own watch (delayed like every watch), calls the instance the key names,
and retries across failovers until the call's deadline: on ``not-active`` it waits for the watch (or 10 ms when
the instance knows an older epoch than the key: a new active that has not processed its own acquire yet), on
``no-responders`` or an attempt timeout it backs off (10 ms doubling to 200 ms), and as soon as the watch names
another leader it abandons the attempt in flight. Every reply carries the epoch it was served with; a reply from
an epoch older than one this client accepted is dropped and the call retried, and the watch never moves the
leader back to an older epoch (``epoch_check``; the negative control switches both off).

Calls are issued every ``interval_s`` (back to back when a call takes longer). Each outcome is recorded; the
checker hears of every accepted reply (``ClientNeverGoesBack``, client-visible failover times).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sim.kv import Entry

if TYPE_CHECKING:
    from sim.run import Simulation

FIRST_BACKOFF_S = 0.01
MAX_BACKOFF_S = 0.2


@dataclass(frozen=True, slots=True)
class CallResult:
    """One finished call: when it started and ended (real time), whether it succeeded, and the reply's epoch."""

    start: float
    end: float
    ok: bool
    epoch: int


class StickyClient:
    """One sticky client of the group; see the module docstring."""

    def __init__(
        self,
        sim: Simulation,
        name: str,
        *,
        interval_s: float = 0.1,
        call_timeout_s: float = 2.0,
        attempt_timeout_s: float = 1.0,
        epoch_check: bool = True,
    ) -> None:
        self.sim = sim
        self.env = sim.env
        self.name = name
        self.interval_s = interval_s
        self.call_timeout_s = call_timeout_s
        self.attempt_timeout_s = attempt_timeout_s
        self.epoch_check = epoch_check
        self.leader: str | None = None
        self.epoch = 0
        self.accepted = 0
        self.results: list[CallResult] = []
        self.retries = 0
        self.stale_dropped = 0
        self._call_start: float | None = None
        self._deadline = 0.0
        self._attempt = 0
        self._target: str | None = None
        self._waiting = False
        self._backoff = FIRST_BACKOFF_S
        self._last_target: str | None = None

    def start(self) -> None:
        """Subscribe to the key (the current entry arrives first, as a NATS KV watch does) and start calling."""
        kv = self.sim.kv
        kv.subscribe(self._on_entry, self.sim.watch_delay)
        current = kv.key
        if current.state.kind != "none":
            self.sim.later(self.sim.watch_delay(), lambda: self._on_entry(current))
        self.sim.later(self.interval_s, self._new_call)

    # -- the watch -----------------------------------------------------------------------------------------

    def _on_entry(self, entry: Entry) -> None:
        if entry.state.kind == "val" and entry.owner is not None:
            if entry.epoch >= self.epoch or not self.epoch_check:
                self.leader, self.epoch = entry.owner, entry.epoch
        else:
            self.leader = None
        if self._call_start is None:
            return
        if self._waiting or (self._target is not None and self.leader != self._target):
            self._try()  # the key names someone (else): try at once

    # -- calls ---------------------------------------------------------------------------------------------

    def _new_call(self) -> None:
        if self._call_start is not None:
            return
        now = self.env.now
        self._call_start = now
        self._deadline = now + self.call_timeout_s
        self._backoff = FIRST_BACKOFF_S
        self._last_target = None
        self._try()

    def _finish(self, ok: bool, epoch: int) -> None:
        start = self._call_start
        assert start is not None
        now = self.env.now
        self.results.append(CallResult(start, now, ok, epoch))
        self._call_start = None
        self._target = None
        self._waiting = False
        self._attempt += 1  # whatever is still in flight is stale now
        self.sim.later(max(0.0, start + self.interval_s - now), self._new_call)

    def _try(self) -> None:
        """Start a new attempt (any attempt in flight is abandoned)."""
        self._attempt += 1
        attempt = self._attempt
        now = self.env.now
        left = self._deadline - now
        if left <= 0:
            self._finish(False, 0)
            return
        target = self.leader
        if target is None:
            self._waiting = True
            self._target = None
            self.sim.later(min(left, MAX_BACKOFF_S), lambda: self._wake(attempt))
            return
        if target != self._last_target:
            self._backoff, self._last_target = FIRST_BACKOFF_S, target
        self._waiting = False
        self._target = target
        inst = self.sim.by_name[target]
        self.sim.later(
            self.sim.delay(), lambda: inst.call(lambda what, epoch: self._reply(attempt, what, epoch))
        )
        self.sim.later(min(left, self.attempt_timeout_s), lambda: self._attempt_timeout(attempt))

    def _wake(self, attempt: int) -> None:
        if attempt == self._attempt and self._call_start is not None:
            self._try()

    def _attempt_timeout(self, attempt: int) -> None:
        if attempt == self._attempt and self._call_start is not None:
            self.retries += 1
            self._retry_later(attempt)

    def _retry_later(self, attempt: int) -> None:
        """Wait for the watch to name someone else (or the backoff to pass), then try again."""
        self._waiting = True
        left = max(0.0, self._deadline - self.env.now)
        self.sim.later(min(self._backoff, left), lambda: self._wake(attempt))
        self._backoff = min(self._backoff * 2, MAX_BACKOFF_S)

    def _reply(self, attempt: int, what: str, epoch: int) -> None:
        if attempt != self._attempt or self._call_start is None:
            return  # abandoned attempt: its reply is dropped
        if what == "ok":
            if epoch >= self.accepted or not self.epoch_check:
                before = self.accepted
                self.accepted = max(self.accepted, epoch)
                self.sim.log.note(self.env.now, self.name, "client-ok", f"epoch={epoch}")
                self.sim.checker.client_accepted(self.name, epoch, before, self.env.now)
                self._finish(True, epoch)
                return
            self.stale_dropped += 1
            self.sim.log.note(self.env.now, self.name, "client-stale", f"epoch={epoch} < {self.accepted}")
        self.retries += 1
        if what == "not-active" and epoch < self.epoch:
            # just elected, not yet processed its own acquire: ask again in a moment
            self._waiting = True
            self.sim.later(
                min(FIRST_BACKOFF_S, max(0.0, self._deadline - self.env.now)), lambda: self._wake(attempt)
            )
            return
        self._retry_later(attempt)
