"""The simulated election KV: one key of a JetStream KV bucket with history 1 and a per-key TTL.

What the SDK relies on, and nothing more (``aegis/spec/tla/Lease.tla`` models the same store):

* every write gets the stream's next sequence number, its **revision**; a write is a create (expected 0), a
  compare-and-set on the key's last revision, or a delete marker (also by compare-and-set);
* a value carries its writer's instance id and epoch (``LeaderRecord``): a failed compare-and-set answers with
  them, and the writer decides by the SDK's own rule (``aegis.sdk.election.holds_own_record``) whether the key still
  holds *its own* lost renewal;
* the server checks TTLs every ``expiry_scan_s`` (250 ms in NATS) and replaces an expired value by an expiry
  marker; markers age out after ``marker_ttl_s`` (the key is then absent, silently);
* watches deliver every entry still in the stream, in order, each subscriber with its own delay; an entry
  superseded twice before its delivery is gone from a history-1 stream and skipped;
* the stream can lose its leader (a NATS node crash: 4-9 s): requests reaching it then get no answer and the
  expiry scan stops until a new leader is elected.

The KV is passive: :class:`aegis.sim.instance.SimInstance` and :class:`aegis.sim.client.StickyClient` call it at the
simulated moment their request *arrives*; the network delays are theirs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import simpy

from aegis.sdk.kv_types import KeyState

ABSENT = KeyState(0, "none")


@dataclass(frozen=True, slots=True)
class Entry:
    """One revision of the election key as the stream stores it."""

    state: KeyState
    owner: str | None = None
    """Instance id in the value (None for markers and the absent key)."""
    epoch: int = 0
    """Epoch in the value: the acquiring write's own revision, or the renewing holder's epoch."""
    written_at: float = 0.0
    """Real (simulated) time the server stored it."""
    value: object = None
    """The stored record itself where the owner and epoch do not say it all (the quorum lease's ``Claim``)."""


NO_ENTRY = Entry(ABSENT)


@dataclass(frozen=True, slots=True)
class WriteAnswer:
    """The server's answer to a compare-and-set: ``ok`` with the new revision, or the key's current state."""

    ok: bool
    rev: int = 0
    current: KeyState = ABSENT
    holder: str | None = None
    """For a failed compare-and-set: the instance whose record the key holds (None for a marker or nothing),
    and its epoch; the writer reads it (one more round trip) to see whether its own lost renewal landed."""
    holder_epoch: int = 0


class Watch:
    """One subscriber's watch on the key: in-order delivery, each entry after ``delay()`` seconds."""

    __slots__ = ("kv", "deliver", "delay", "last_at", "active")

    def __init__(self, kv: SimKV, deliver: Callable[[Entry], None], delay: Callable[[], float]) -> None:
        self.kv = kv
        self.deliver = deliver
        self.delay = delay
        self.last_at = 0.0
        self.active = True

    def cancel(self) -> None:
        """Stop delivering (the subscriber crashed or unsubscribed)."""
        self.active = False

    def _push(self, entry: Entry) -> None:
        env = self.kv.env
        at = max(self.last_at, env.now + self.delay())
        self.last_at = at
        ev = env.timeout(at - env.now)
        ev.callbacks.append(lambda _e: self._arrive(entry))

    def _arrive(self, entry: Entry) -> None:
        if not self.active:
            return
        if entry.state.rev < self.kv.prev.state.rev:
            return  # superseded twice: history 1 no longer holds it
        self.deliver(entry)


@dataclass(slots=True)
class KVConfig:
    """Server-side settings of the election bucket (the SDK's: TTL 10 s, markers age out after 1 s)."""

    ttl_s: float = 10.0
    marker_ttl_s: float = 1.0
    expiry_scan_s: float = 0.25


class SimKV:
    """The election key of one single-active group; see the module docstring."""

    def __init__(
        self, env: simpy.Environment, config: KVConfig | None = None, scan_phase: float = 0.0
    ) -> None:
        self.env = env
        self.config = config or KVConfig()
        self.seq = 0
        self.key: Entry = NO_ENTRY
        self.prev: Entry = NO_ENTRY
        self.up = True
        self.outages = 0
        """Outages begun so far (an answer in flight when one begins may be lost)."""
        self.down_until = 0.0
        self.watches: list[Watch] = []
        self.writes = 0
        self._scan_phase = scan_phase % self.config.expiry_scan_s
        self._expiry_pending: float | None = None
        self.on_entry: Callable[[Entry], None] | None = None
        """Called for every new stored entry (the checker's view of the stream)."""

    # -- requests (called when a request reaches the server) ----------------------------------------------

    def state(self) -> KeyState:
        """The key as a read through the stream leader sees it."""
        return self.key.state

    def write(self, op: str, expected: int, owner: str, epoch: int) -> WriteAnswer | None:
        """Apply a compare-and-set (``op`` acquire/renew/release); None when the stream has no leader."""
        if not self.up:
            return None
        self.writes += 1
        key = self.key
        if expected != key.state.rev:
            return WriteAnswer(False, current=key.state, holder=key.owner, holder_epoch=key.epoch)
        self.seq += 1
        rev = self.seq
        if op == "release":
            entry = Entry(KeyState(rev, "del"), None, 0, self.env.now)
        else:
            entry = Entry(KeyState(rev, "val"), owner, rev if op == "acquire" else epoch, self.env.now)
        self._store(entry)
        return WriteAnswer(True, rev=rev)

    def scratch_write(self) -> bool:
        """The probe's write to a scratch key: it succeeds exactly when the stream has a leader."""
        if self.up:
            self.writes += 1
        return self.up

    def subscribe(self, deliver: Callable[[Entry], None], delay: Callable[[], float]) -> Watch:
        """Start a watch: entries stored from now on, in order, each after ``delay()``."""
        watch = Watch(self, deliver, delay)
        self.watches.append(watch)
        return watch

    # -- faults --------------------------------------------------------------------------------------------

    def outage(self, seconds: float) -> None:
        """The stream loses its leader for ``seconds`` (a NATS node crash: a new leader in 4-9 s)."""
        end = self.env.now + seconds
        if self.up:
            self.outages += 1
        self.up = False
        if end > self.down_until:
            self.down_until = end
            ev = self.env.timeout(seconds)
            ev.callbacks.append(lambda _e: self._recover(end))

    def _recover(self, end: float) -> None:
        if end < self.down_until or self.up:
            return
        self.up = True
        self._schedule_expiry()

    # -- internals -----------------------------------------------------------------------------------------

    def _store(self, entry: Entry) -> None:
        self.prev, self.key = self.key, entry
        self.watches = [w for w in self.watches if w.active]
        for w in self.watches:
            w._push(entry)
        if self.on_entry is not None:
            self.on_entry(entry)
        self._schedule_expiry()

    def _next_scan(self, t: float) -> float:
        """The first expiry scan at or after ``t``."""
        step = self.config.expiry_scan_s
        return self._scan_phase + math.ceil((t - self._scan_phase) / step - 1e-12) * step

    def _schedule_expiry(self) -> None:
        """Make sure a scan is scheduled for when the current entry expires (values) or ages out (markers)."""
        kind = self.key.state.kind
        if kind == "none":
            return
        life = self.config.ttl_s if kind == "val" else self.config.marker_ttl_s
        due = self._next_scan(max(self.env.now, self.key.written_at + life))
        if self._expiry_pending is not None and self._expiry_pending <= due:
            return  # an earlier scan will look again
        self._expiry_pending = due
        ev = self.env.timeout(due - self.env.now)
        ev.callbacks.append(lambda _e: self._scan(due))

    def _scan(self, due: float) -> None:
        if self._expiry_pending != due:
            return
        self._expiry_pending = None
        if not self.up:
            return  # no leader, no expiry: rescheduled on recovery
        key = self.key
        kind = key.state.kind
        now = self.env.now
        if kind == "val" and now - key.written_at >= self.config.ttl_s - 1e-9:
            self.seq += 1
            self._store(Entry(KeyState(self.seq, "exp"), None, 0, now))
            return
        if kind in ("del", "exp") and now - key.written_at >= self.config.marker_ttl_s - 1e-9:
            self.prev, self.key = self.key, Entry(ABSENT, None, 0, now)  # silent: no watch delivery
            return
        self._schedule_expiry()
