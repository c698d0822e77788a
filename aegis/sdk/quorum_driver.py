"""The asyncio + NATS driver of the quorum lease (``SingleActiveService(..., election="quorum")``).

The rules are :class:`aegis.sdk.quorum_election.QuorumElection`'s (``docs/quorum-lease.md``); this module only
carries out its effects on the three buckets of :data:`aegis.sdk.wire.QUORUM_ELECTION_BUCKETS` and feeds back what
happened, one event at a time, in order. Per bucket: one watch of the group's key and at most one write in flight.

The record in each bucket is the machine's :class:`~aegis.sdk.quorum_election.Claim` as JSON (its one definition;
pydantic reads and writes the dataclass). No TTL, no delete marker: a release is the record again with
``released: true``.

With a trace writer (``SingleActiveService(..., trace=...)``) every step of the machine is written as the spec's trace
lines (:mod:`aegis.sdk.trace_events`, checked against ``QuorumLease.tla`` by ``TraceQuorumLease.tla``), in one place,
:meth:`QuorumDriver._trace_step`: the event the machine took in (a start's three reads, a watch delivery, an answer,
a timeout, a stop), the change of role it made, and the writes it asked for, all stamped with the machine's ``now``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from nats.aio.msg import Msg
from nats.js.errors import KeyDeletedError, NotFoundError
from pydantic import TypeAdapter, ValidationError

from . import wire
from .connection import ConnectionPool
from .election import Exit, StartServing, StopServing, Timer
from .errors import AegisError, Conflict
from .kv import bucket, key_state, kv_subject, kv_watch, kv_write, read_at_one_instant
from .nats_errors import jetstream_error
from .quorum_buckets import ensure_quorum_buckets, stream_name
from .quorum_election import QUORUM_BUCKETS, Claim, Leadership, QEffect, QuorumElection, QWrite, Slot
from .trace_events import Action as TA
from .trace_events import KeyKind
from .trace_events import Op as TraceOp

if TYPE_CHECKING:
    from .single_active import SingleActiveService

log = logging.getLogger(__name__)

CLAIM = TypeAdapter(Claim)
"""The wire form of a bucket's record."""


Note = tuple[Any, ...]
"""What the machine is told, for the trace: ``("start", slots)``, ``("observe", b, slot)``, ``("ack", b, rev, req)``,
``("refuse", b, slot, req)``, ``("timeout", b, req)``, ``("tick",)``, ``("stop",)``."""

_ROLE_STEPS = {
    ("standby", "candidate"): TA.CAMPAIGN,
    ("candidate", "active"): TA.WIN,
    ("candidate", "standby"): TA.GIVEUP,
    ("active", "standby"): TA.STEPDOWN,
}
"""A change of role the machine made, as the trace step that names it (a stop is traced as its input)."""

_OPS = {"claim": TraceOp.CLAIM, "renew": TraceOp.RENEW, "release": TraceOp.RELEASE}


def parse_claim(data: bytes) -> Claim | None:
    """A bucket's record, or None for foreign data."""
    try:
        return CLAIM.validate_json(data) if data else None
    except ValidationError:
        return None


class QuorumDriver:
    """Runs one instance's :class:`QuorumElection` for ``service`` (its ``election``)."""

    def __init__(self, service: SingleActiveService) -> None:
        self.service = service
        self.machine: QuorumElection = service.election  # type: ignore[assignment]
        self.buckets = wire.QUORUM_ELECTION_BUCKETS
        self._events: asyncio.Queue[tuple[Callable[[float], list[QEffect]], Note, float | None]] = (
            asyncio.Queue()
        )
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._watches: list[Any] = []
        self._writes: set[asyncio.Task[None]] = set()
        self._exited = asyncio.Event()
        self._pool: ConnectionPool | None = None

    async def start(self, pool: ConnectionPool) -> None:
        """Read the three keys, watch them, and start the machine."""
        self._pool = pool
        await ensure_quorum_buckets(pool)
        self._exited.clear()
        at, slots = await self._snapshot()
        self._task = asyncio.create_task(self._drive(), name=f"quorum election {self.service.key}")
        # the start goes first; what the watches deliver (from their first value on) comes after it
        self._post(lambda now: self.machine.start(now, slots), ("start", slots), at=at)
        self._watches = [await self._watch(b) for b in range(QUORUM_BUCKETS)]

    async def stop(self) -> None:
        """Graceful stop: release every bucket held (bounded), then stop watching."""
        if self._task is None:
            return
        self._post(self.machine.stop, ("stop",))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._exited.wait(), self.machine.params.write_timeout_s * 4)
        task, self._task = self._task, None
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        if self._timer is not None:
            self._timer.cancel()
        for watch in self._watches:
            with contextlib.suppress(Exception):
                await watch.unsubscribe()
        self._watches = []

    # -- the loop ----------------------------------------------------------------------------------------

    def _post(
        self, event: Callable[[float], list[QEffect]], note: Note = ("tick",), *, at: float | None = None
    ) -> None:
        """Queue an event for the machine; ``at``: the monotonic time it happened, if earlier than its handling
        (only the start's, the first event: the machine's clock never goes back)."""
        self._events.put_nowait((event, note, at))

    async def _drive(self) -> None:
        while True:
            event, note, at = await self._events.get()
            now = time.monotonic() if at is None else at
            m = self.machine
            before = (m.role, [None if r is None else (r.id, r.op) for r in m.requests])
            try:
                effects = event(now)
            except Exception:
                log.exception("%s: quorum election event failed", self.service.key)
                continue
            if self.service.trace is not None:
                try:
                    self._trace_step(now, note, before, effects)
                except Exception:  # the trace must never stop the election
                    log.debug("%s: trace line failed", self.service.key, exc_info=True)
            for effect in effects:
                self._carry_out(effect)
            self._tell_clients()

    def _trace_step(
        self, now: float, note: Note, before: tuple[str, list[tuple[int, str] | None]], effects: list[QEffect]
    ) -> None:
        """Write the trace lines of one step of the machine: what it took in (an answer or a timeout only when it
        was the request in flight: a late answer to a request that already timed out changes nothing), the change
        of role it made, then each write it asked for, a serve line when it starts serving, and its exit, in the
        order the machine asked for them."""
        emit = self.service._emit
        role, requests = before
        kind = note[0]
        if kind == "start":
            for b, slot in enumerate(note[1]):
                emit(TA.START, bucket=b, local=now, **_record(slot))
        elif kind == "observe":
            emit(TA.OBSERVE, bucket=note[1], local=now, **_record(note[2]))
        elif kind in ("ack", "refuse", "timeout"):
            b, req = note[1], note[-1]
            if requests[b] is not None and requests[b][0] == req:  # type: ignore[index]
                if kind == "ack":
                    emit(TA.ACK, bucket=b, rev=note[2], local=now)
                elif kind == "refuse":
                    emit(TA.REFUSE, bucket=b, rev=note[2].rev, local=now)
                else:
                    emit(TA.TIMEOUT, bucket=b, op=_OPS[requests[b][1]], local=now)  # type: ignore[index]
        elif kind == "tick":  # the timer times out requests older than the write timeout
            after = self.machine.requests
            for b, was in enumerate(requests):
                if was is not None and (after[b] is None or after[b].id != was[0]):  # type: ignore[union-attr]
                    emit(TA.TIMEOUT, bucket=b, op=_OPS[was[1]], local=now)
        elif kind == "stop":
            emit(TA.STOP, local=now)
        step = _ROLE_STEPS.get((role, self.machine.role))
        won = next((e for e in effects if isinstance(e, Leadership) and e.kind == "acquire"), None)
        if won is not None and self.machine.role != "active":
            # a majority acknowledged after its window ended: it won and stepped down in one step (rule 6)
            emit(TA.WIN, epoch=won.epoch, local=now)
            step = TA.STEPDOWN
        if step is TA.CAMPAIGN:
            emit(step, ballot=self.machine.ballot, local=now)
        elif step is TA.WIN:
            emit(step, epoch=self.machine.epoch, local=now)
        elif step is not None:
            emit(step, local=now)
        for effect in effects:
            if isinstance(effect, QWrite):
                c = effect.claim
                emit(
                    TA.REQUEST,
                    bucket=effect.bucket,
                    op=_OPS[effect.op],
                    rev=effect.expected,
                    ballot=c.ballot,
                    floor=c.floor,
                    holder=c.holder,
                    released=c.released,
                    local=now,
                )
            elif isinstance(effect, StartServing):  # it serves from now: a serve line (checked: Serving)
                self.service._trace_serve(now)
            elif isinstance(effect, Exit):
                emit(TA.EXIT, local=now)

    def _carry_out(self, effect: QEffect) -> None:
        svc = self.service
        if isinstance(effect, QWrite):
            task = asyncio.create_task(self._write(effect), name=f"{svc.key} q{effect.bucket} {effect.op}")
            self._writes.add(task)
            task.add_done_callback(self._writes.discard)
        elif isinstance(effect, Timer):
            if self._timer is not None:
                self._timer.cancel()
            delay = max(0.0, effect.at - time.monotonic())
            self._timer = asyncio.get_running_loop().call_later(
                delay, self._post, self.machine.tick, ("tick",)
            )
        elif isinstance(effect, StartServing):
            svc._started_serving(effect.epoch)
        elif isinstance(effect, StopServing):
            svc._stopped_serving(effect.reason)
        elif isinstance(effect, Leadership):
            svc._publish(effect.kind, effect.epoch, effect.reason, effect.previous, effect.previous_epoch)
        elif isinstance(effect, Exit):
            self._exited.set()

    def _tell_clients(self) -> None:
        """Rule 8: a standby tells clients the newest ballot seen in a majority of buckets."""
        ballot, holder = self.machine.majority_ballot()
        if holder is not None:
            self.service._know(ballot, holder)

    # -- I/O -----------------------------------------------------------------------------------------------

    async def _write(self, w: QWrite) -> None:
        pool = self._pool
        assert pool is not None
        name = self.buckets[w.bucket]
        msg_id = uuid.uuid4().hex  # this write's own: a refusal can be told from a retry of it that landed
        try:
            rev = await kv_write(
                pool,
                name,
                self.service.key,
                CLAIM.dump_json(w.claim),
                revision=w.expected,
                timeout=self.machine.params.write_timeout_s,
                nc=pool.primary,  # the connection our subscriptions are on: hold the lease only while reachable
                msg_id=msg_id,
            )
        except Conflict:
            found = await self._current_after_conflict(w)
            if found is None:  # unknown outcome: a timeout, to the machine
                self._post(
                    lambda now: self.machine.write_timeout(now, w.bucket, w.req), ("timeout", w.bucket, w.req)
                )
                return
            current, landed_id = found
            if landed_id != msg_id:
                self._post(
                    lambda now: self.machine.write_failed(now, w.bucket, current, w.req),
                    ("refuse", w.bucket, current, w.req),
                )
                return
            # This very write landed, and a retry of it (nats-py resends after a lost answer) was refused on the
            # revision the write itself created: the stream checks the expected revision before it recognises
            # the message id. It was acknowledged, as far as the protocol goes.
            rev = current.rev
        except AegisError as exc:
            log.debug("%s: %s in %s timed out or failed: %s", self.service.key, w.op, name, exc)
            self._post(
                lambda now: self.machine.write_timeout(now, w.bucket, w.req), ("timeout", w.bucket, w.req)
            )
            return
        self._post(
            lambda now: self.machine.write_ok(now, w.bucket, rev, w.req), ("ack", w.bucket, rev, w.req)
        )

    async def _current_after_conflict(self, w: QWrite) -> tuple[Slot, str | None] | None:
        """The key after a refused compare-and-set, read from the stream leader, with the message id it was
        written under; None when no read shows a revision past the one expected within the write timeout (the
        outcome is then unknown)."""
        deadline = time.monotonic() + self.machine.params.write_timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(AegisError, TimeoutError):
                slot, msg_id = await asyncio.wait_for(
                    self._read_leader(w.bucket), max(0.01, deadline - time.monotonic())
                )
                if slot.rev > w.expected:
                    return slot, msg_id
            await asyncio.sleep(0.005)
        return None

    async def _read_leader(self, b: int) -> tuple[Slot, str | None]:
        """The key in bucket ``b`` as its stream leader has it, and the message id of that write."""
        pool = self._pool
        assert pool is not None
        name = self.buckets[b]
        try:
            raw = await pool.js.get_msg(stream_name(name), subject=kv_subject(name, self.service.key))
        except NotFoundError:
            return Slot(0, None), None
        except Exception as exc:
            raise jetstream_error(exc, f"read {self.service.key} in {name}") from exc
        rev = raw.seq or 0
        is_value = key_state(raw.headers, rev, bool(raw.data)).kind == "val"
        claim = parse_claim(raw.data or b"") if is_value else None
        return Slot(rev, claim), (raw.headers or {}).get(wire.MSG_ID_HEADER)

    async def _snapshot(self) -> tuple[float, list[Slot]]:
        """The three keys at one instant (:func:`~aegis.sdk.kv.read_at_one_instant`), and that instant. A
        bucket that does not answer (its stream stalled) counts as unknown: absent, which compare-and-set makes
        safe (a claim on revision 0 fails if the key exists); it is not read again."""

        async def read_round(previous: Sequence[Slot | None] | None) -> list[Slot | None]:
            return list(
                await asyncio.gather(
                    *(
                        self._first_read(b) if previous is None or previous[b] is not None else _unreadable()
                        for b in range(QUORUM_BUCKETS)
                    )
                )
            )

        at, slots = await read_at_one_instant(read_round, lambda s: s.rev)
        return at, [s or Slot(0, None) for s in slots]

    async def _first_read(self, b: int) -> Slot | None:
        """The key at start, or None when its bucket does not answer in time."""
        try:
            return await asyncio.wait_for(self._read(b), self.machine.params.write_timeout_s * 4)
        except (AegisError, TimeoutError) as exc:
            log.warning("%s: %s unreadable at start (%s)", self.service.key, self.buckets[b], exc)
            return None

    async def _read(self, b: int) -> Slot:
        """The key in bucket ``b`` by a direct get (any replica answers: a start's read)."""
        pool = self._pool
        assert pool is not None
        kv = bucket(pool, self.buckets[b])
        try:
            entry = await kv.get(self.service.key)
        except NotFoundError:
            return Slot(0, None)
        except KeyDeletedError as exc:  # never written by the protocol; foreign: counts as absent
            return Slot(exc.entry.revision or 0, None)
        except Exception as exc:
            raise jetstream_error(exc, f"read {self.service.key} in {self.buckets[b]}") from exc
        return Slot(entry.revision or 0, parse_claim(entry.value or b""))

    async def _watch(self, b: int) -> Any:
        async def on_msg(msg: Msg) -> None:
            slot = Slot(msg.metadata.sequence.stream, parse_claim(msg.data))
            self._post(lambda now: self.machine.observe(now, b, slot), ("observe", b, slot))

        assert self._pool is not None
        return await kv_watch(self._pool, self.buckets[b], self.service.key, on_msg)


async def _unreadable() -> None:
    """A bucket the snapshot does not read again (it did not answer)."""


def _record(slot: Slot) -> dict[str, Any]:
    """A bucket's key as the trace writes it (start, observe): its revision and record."""
    c = slot.claim
    if c is None:
        return {"rev": slot.rev, "kind": KeyKind.ABSENT}
    return {
        "rev": slot.rev,
        "kind": KeyKind.VALUE,
        "ballot": c.ballot,
        "floor": c.floor,
        "holder": c.holder,
        "released": c.released,
    }


__all__ = ["CLAIM", "QuorumDriver", "parse_claim"]
