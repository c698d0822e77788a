"""The quorum lease's three election buckets, simulated: one compare-and-set register per bucket.

Each bucket is a :class:`aegis.sim.kv.SimKV` (revisions of its own, watches with delays and the history-1 skip,
stream-leader outages), holding the machine's :class:`~aegis.sdk.quorum_election.Claim` records as values, with
what ``docs/quorum-lease.md`` asks of these buckets instead of the election bucket's TTL:

* no per-key TTL, no delete markers: the last record is never erased (a release is the record again, released);
* a **stalled** bucket (its stream leader's node crashed: no leader for 4-9 s) answers no write: the request gets
  no answer and its sender times out; a read or a watch delivers nothing new (a replica still answers a read with
  what it has);
* a write sent to a stalled bucket may still land when the bucket recovers (an append the old leader had started
  to replicate): each with probability ``late_land_p``, in the order sent, as the compare-and-set it was, so at
  most the first of several writes on one revision lands. Their answers are lost: their senders timed out long
  ago.

Placements say which NATS node leads each bucket's stream (:data:`PLACEMENTS`): ``spread`` (bucket ``i`` on node
``i``: the protocol's assumption, rule 9) or ``colocated`` (buckets 0 and 1 on node 0: what the rebalancer must
prevent), to show the difference.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import simpy

from aegis.sdk.kv_types import KeyState
from aegis.sdk.quorum_election import Claim, Slot
from aegis.sim.kv import Entry, KVConfig, SimKV

PLACEMENTS: dict[str, tuple[int, ...]] = {"spread": (0, 1, 2), "colocated": (0, 0, 1)}
"""Which node leads each bucket's stream (3 nodes)."""


@dataclass(frozen=True, slots=True)
class QAnswer:
    """A bucket's answer to a compare-and-set: ``ok`` with the new revision, or the key as it is now (what the
    SDK's driver reads through the stream leader after a refusal)."""

    ok: bool
    rev: int = 0
    current: Slot = Slot(0, None)


class QuorumBucket(SimKV):
    """One of the three election buckets; see the module docstring."""

    def __init__(self, env: simpy.Environment, index: int, land: Callable[[], bool]) -> None:
        super().__init__(env, KVConfig(ttl_s=math.inf))
        self.index = index
        self.land = land
        """Draws whether one write queued during a stall lands at the recovery."""
        self.queued: list[tuple[int, Claim]] = []
        self.late_landed = 0
        """Writes that landed when the bucket recovered from a stall."""

    def slot(self) -> Slot:
        """The key as a read (or a watch's first delivery) sees it."""
        return Slot(self.key.state.rev, self.key.value)  # type: ignore[arg-type]

    def cas(self, expected: int, claim: Claim) -> QAnswer | None:
        """A compare-and-set of ``claim`` on revision ``expected`` reaches the bucket; None: stalled, no answer
        (the write is queued and may land at the recovery)."""
        if not self.up:
            self.queued.append((expected, claim))
            return None
        return self._apply(expected, claim)

    def _apply(self, expected: int, claim: Claim) -> QAnswer:
        self.writes += 1
        if expected != self.key.state.rev:
            return QAnswer(False, current=self.slot())
        self.seq += 1
        self._store(Entry(KeyState(self.seq, "val"), claim.holder, claim.ballot, self.env.now, claim))
        return QAnswer(True, rev=self.seq)

    def _recover(self, end: float) -> None:
        super()._recover(end)
        if not self.up:
            return
        queued, self.queued = self.queued, []
        for expected, claim in queued:
            if self.land() and self._apply(expected, claim).ok:
                self.late_landed += 1

    def _schedule_expiry(self) -> None:
        """No TTL, no markers: nothing ever expires."""
