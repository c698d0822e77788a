"""Negative controls: deliberately broken variants of the SDK's election machine, and the run settings that
must make the simulator report violations (or its checks prove nothing).

* :class:`NoFencingElection`: self-fencing disabled, ``serving`` ignores the window's deadline (the spec's
  ``Neg_NoFencing``): a paused or cut-off active keeps answering after its successor took over.
* :class:`NoStepDownElection`: ``write_failed`` never steps down; it takes every lost compare-and-set for its own
  lost renewal and adopts the key (a broken ``ours`` test): a deposed active renews over its successor.
* drift beyond the bound: clock rates of 0.7 and 1.3 against a protocol that assumes 5 %.
* no client epoch check (with the broken step-down, so a deposed active answers again): the client follows
  the key back to an older epoch and accepts its replies.
* :class:`NoReplyCheckElection`: ``may_reply`` always says yes, so a handler that outlives its instance's lease
  (handlers take 0.5 s here) still sends its outcome (the spec's ``Neg_ReplyCurrentEpoch``; the SDK's defect of
  issue 12).

Each is a subclass of :class:`aegis.sdk.election.Election`, so a run with it proves the simulator drives whatever
machine it is given, i.e. the SDK's own class in a normal run.
"""

from __future__ import annotations

from dataclasses import replace

from aegis.sdk.election import Effect, Election
from aegis.sdk.kv_types import KeyState
from aegis.sim.faults import MIXES
from aegis.sim.run import RunConfig

LATE_HANDLER_S = 0.5
"""Handler duration of the ``no-reply-check`` control: long against the lease, so pauses land mid-call."""


class NoFencingElection(Election):
    """Self-fencing disabled: an active serves until it hears that it lost, whatever its window says."""

    def serving(self, now: float) -> bool:
        return self.role == "active"


class NoStepDownElection(Election):
    """``write_failed`` never steps down: every lost compare-and-set is taken for our own lost renewal."""

    def write_failed(self, now: float, current: KeyState, req: int, *, ours: bool = False) -> list[Effect]:
        return super().write_failed(now, current, req, ours=True)


class NoReplyCheckElection(Election):
    """The outcome of an admitted call goes out whenever the handler finishes, lease or no lease."""

    def may_reply(self, now: float, epoch: int) -> bool:
        return True


CONTROLS = ("no-fencing", "no-stepdown", "drift", "no-epoch-check", "no-reply-check")
"""Names of the negative controls (``aegis sim --control``)."""


def control_config(name: str, base: RunConfig) -> RunConfig:
    """``base`` with the negative control ``name`` applied (a pause-heavy fault mix, where the breakage shows)."""
    pause = MIXES["pause"]
    if name == "no-fencing":
        return replace(base, machine_factory=NoFencingElection, mix=pause)
    if name == "no-stepdown":
        return replace(base, machine_factory=NoStepDownElection, mix=pause)
    if name == "no-reply-check":
        return replace(base, machine_factory=NoReplyCheckElection, handler_s=LATE_HANDLER_S, mix=pause)
    if name == "drift":
        return replace(base, rates=(0.7, 1.3), mix=pause)
    if name == "no-epoch-check":
        # overlap happens first; keep running to see the client take a stale reply
        return replace(
            base,
            machine_factory=NoStepDownElection,
            client_epoch_check=False,
            mix=pause,
            stop_on_violation=False,
        )
    raise ValueError(f"unknown control {name!r}; choose from {', '.join(CONTROLS)}")
