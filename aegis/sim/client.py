"""A simulated sticky client: the SDK's own sticky-client rules (:mod:`aegis.sdk.sticky_core`), on simulated time.

This is the simulator's counterpart of :class:`aegis.sdk.sticky.StickyClient`'s asyncio driver: it follows the election
key with its own watch (delayed like every watch) into a :class:`~aegis.sdk.sticky_core.GroupView`, asks a
:class:`~aegis.sdk.sticky_core.CallCore` what each call does next, carries it out on simulated time (an attempt on an
instance, a wait for the watch, giving up) and tells it how each attempt ended. The rules themselves (epochs never
go back, which failures wait how long, when an attempt in flight is abandoned) are not here. ``epoch_check=False``
is the negative control that switches the epoch rules off.

Calls are issued every ``interval_s`` (back to back when a call takes longer). Each outcome is recorded; the
checker hears of every accepted reply with its ghost ``fenced`` flag (``ClientNeverGoesBack``,
``AcceptedRepliesFenced``, client-visible failover times); the checker keeps its own record of what each client
accepted, so a broken core cannot hide its own mistake.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from aegis.sdk.sticky_core import Accept, Attempt, CallCore, GiveUp, GroupView, Kind, Outcome, Wait
from aegis.sim.kv import Entry

if TYPE_CHECKING:
    from aegis.sim.run import Simulation

_OUTCOMES = {"not-active": Kind.NOT_ACTIVE, "lease-lost": Kind.LEASE_LOST, "no-responders": Kind.NO_ANSWER}
"""What a simulated instance answers (``SimInstance.call``) as the outcome kinds the SDK driver reports."""


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
        self.view = GroupView(epoch_check=epoch_check)
        self.results: list[CallResult] = []
        self.retries = 0
        self.stale_dropped = 0
        self._call: CallCore | None = None
        self._token = 0
        """Moves with every step of the call: a reply, timeout or wake-up of an earlier step is stale."""
        self._attempt: Attempt | None = None
        self._waiting_for_watch = False

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
        holder = entry.owner if entry.state.kind == "val" else None
        self._follow(holder, entry.epoch)

    def _follow(self, holder: str | None, epoch: int) -> None:
        """The watch names ``holder`` (None: nobody) under ``epoch``: update the view, move the call on."""
        self.view.observe(holder, epoch)
        if self._call is None:
            return
        if self._waiting_for_watch:
            self._step()
        elif self._attempt is not None and self.view.leader != self._attempt.target:
            self._ended(Outcome(Kind.LEADER_CHANGED))

    # -- calls ---------------------------------------------------------------------------------------------

    def _new_call(self) -> None:
        if self._call is not None:
            return
        self._call = CallCore(
            self.view, self.env.now, self.call_timeout_s, self.attempt_timeout_s, what=self.name
        )
        self._step()

    def _finish(self, ok: bool, epoch: int) -> None:
        call = self._call
        assert call is not None
        now = self.env.now
        self.results.append(CallResult(call.start, now, ok, epoch))
        self.retries += call.retries
        self._call = None
        self._token += 1  # whatever is still in flight is stale now
        self._attempt = None
        self._waiting_for_watch = False
        self.sim.later(max(0.0, call.start + self.interval_s - now), self._new_call)

    def _step(self) -> None:
        """Ask the core what to do now and start doing it (anything in flight is abandoned)."""
        call = self._call
        assert call is not None
        self._token += 1
        token = self._token
        self._attempt = None
        self._waiting_for_watch = False
        step = call.next(self.env.now)
        if isinstance(step, GiveUp):
            self._finish(False, 0)
        elif isinstance(step, Wait):
            self._wait(step, token)
        else:
            self._attempt = step
            self._send(step.target, token)
            self.sim.later(step.timeout_s, lambda: self._attempt_timeout(token))

    def _send(self, target: str, token: int) -> None:
        """Send the attempt to instance ``target``: it arrives after one network delay."""
        inst = self.sim.by_name[target]
        self.sim.later(
            self.sim.delay(),
            lambda: inst.call(lambda what, epoch, fenced: self._reply(token, what, epoch, fenced)),
        )

    def _wait(self, wait: Wait, token: int) -> None:
        self._waiting_for_watch = wait.until_change
        self.sim.later(wait.seconds, lambda: self._wake(token))

    def _wake(self, token: int) -> None:
        if token == self._token and self._call is not None:
            self._step()

    def _attempt_timeout(self, token: int) -> None:
        if token == self._token and self._attempt is not None:
            self._ended(Outcome(Kind.NO_ANSWER, detail="RpcTimeout"))

    def _reply(self, token: int, what: str, epoch: int, fenced: bool) -> None:
        if token != self._token or self._attempt is None:
            return  # abandoned attempt: its reply is dropped
        self._ended(Outcome.ok(epoch) if what == "ok" else Outcome(_OUTCOMES[what], epoch), fenced)

    def _ended(self, outcome: Outcome, fenced: bool = False) -> None:
        """The attempt in flight ended with ``outcome``: the core says what comes next. ``fenced``: the
        checker's ghost for a success (was it produced inside its epoch's tenure), not something the client
        knows or uses."""
        call, attempt = self._call, self._attempt
        assert call is not None and attempt is not None
        self._token += 1
        self._attempt = None
        step = call.outcome(self.env.now, attempt, outcome)
        now = self.env.now
        if isinstance(step, Accept):
            self.sim.log.note(now, self.name, "client-ok", f"epoch={step.epoch}")
            self.sim.checker.client_accepted(self.name, step.epoch, fenced, now)
            self._finish(True, step.epoch)
            return
        if outcome.kind is Kind.OK:
            self.stale_dropped += 1
            self.sim.log.note(now, self.name, "client-stale", f"epoch={outcome.epoch} < {self.view.accepted}")
        if step is None:
            self._step()
        else:
            self._wait(step, self._token)
