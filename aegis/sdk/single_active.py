"""Sticky single-active services: exactly one instance of a group serves its exclusive methods.

The election logic is :class:`aegis.sdk.election.Election` (pure, follows ``aegis/spec/tla/Lease.tla``); this module is
the thin asyncio + NATS driver around it::

    svc = SingleActiveService("orders", instance_id="orders-1")

    @svc.exclusive_rpc("place")                # only the active instance runs it
    async def place(req: Order, ctx: CallContext) -> Ack: ...

    @svc.rpc("status")                         # every instance answers
    async def status(req: None) -> str: ...

    await svc.start(pool)                      # STANDBY, then ACTIVE if it wins the election

The election key is ``leader.<service>.<group>`` in the R3 bucket ``aegis_election`` (history 1, per-key TTL as
a backstop). Its value names the holder; the revision of the write that made an instance active is its
**epoch**, sent with every reply (``Aegis-Epoch``). A standby answers exclusive methods with
:class:`~aegis.sdk.errors.NotActive` carrying the epoch it knows. The instance record in the registry shows
ACTIVE/STANDBY, role, epoch and group within milliseconds of a change.

Every change of leadership the driver takes part in is also published, best effort and without ever waiting for
it, to the ``AEGIS_LEADERSHIP`` stream (:mod:`aegis.sdk.leadership`): "acquire" when a campaign wins, "release"
after a graceful stop, "lose" when a renewal is refused, and "expire" from a new active that took over a key its
holder did not release (expired, or silent for a lease). The records are read off the trace steps the machine
returns; neither the machine nor the trace changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from nats.aio.msg import Msg
from nats.js.errors import KeyDeletedError, NotFoundError
from pydantic import BaseModel

from . import wire
from .connection import ConnectionPool
from .election import (
    Effect,
    Election,
    ElectionParams,
    Exit,
    Probe,
    StartServing,
    StopServing,
    Timer,
    TraceStep,
    Write,
    holds_own_record,
)
from .errors import AegisError, Conflict, LeaseLost, NotActive
from .jetstream import default_replicas, ensure_stream, retry_transient
from .kv import bucket, key_state, kv_stream_config, kv_watch, kv_write, read_at_one_instant
from .kv_types import KeyState
from .leadership import LeadershipLog
from .nats_errors import jetstream_error
from .quorum_driver import QuorumDriver
from .quorum_election import QuorumElection
from .rpc import Handler, Service, current_call
from .schema import InstanceStatus, LeadershipChange, LeadershipKind
from .trace_events import Action as TA
from .trace_events import Op as TraceOp
from .trace_events import TraceWriter

log = logging.getLogger(__name__)

# Removal markers of the election bucket age out after this long; must stay <= the key TTL.
ELECTION_MARKER_TTL_S = 1


class LeaderRecord(BaseModel):
    """The election key's value. ``epoch`` is 0 in the acquiring write (its own revision is the epoch)."""

    instance_id: str
    epoch: int = 0


@dataclass(frozen=True, slots=True)
class _Campaign:
    """What a campaign of this instance was over: the key state it expected, and its holder as last learnt."""

    over: KeyState
    holder: str | None
    holder_epoch: int


def leader_key(service: str, group: str) -> str:
    return f"leader.{wire.check_token('service name', service)}.{wire.check_token('group', group)}"


async def ensure_election_bucket(pool: ConnectionPool, replicas: int | None = None) -> None:
    """The ``aegis_election`` bucket: R3, history 1, per-key TTL allowed, markers age out after 1 s."""
    await ensure_stream(
        pool,
        kv_stream_config(wire.ELECTION_BUCKET, default_replicas(pool, replicas), 1, ELECTION_MARKER_TTL_S),
    )


class SingleActiveService(Service):
    """A :class:`~aegis.sdk.rpc.Service` whose instances elect one active; see the module docstring.

    ``params`` sets the timing (lease, renewal interval, drift bound, write timeout; validated against each
    other); ``ttl_s`` is the key's TTL backstop in whole seconds (kept above a KV outage, so an outage does not
    expire the incumbent's key). ``trace`` writes the spec's NDJSON trace events; ``serve`` events are sampled,
    at most one per ``trace_serve_every_s`` (0: every exclusive call) plus the first of each epoch.

    ``election`` chooses the protocol: ``"lease"`` (default) holds the lease in the one key of the R3 bucket
    ``aegis_election`` (``Lease.tla``); ``"quorum"`` holds it in a majority of three buckets whose stream leaders sit
    on different nodes (``QuorumLease.tla``, ``docs/quorum-lease.md``), so a crash of the node leading one bucket
    does not fail the group over; it costs three renewal writes per ``renew_s`` instead of one and three watches.
    Every instance of a group must use the same election. Both write the spec's trace (``trace``): the quorum
    lease's lines are written by its driver (:meth:`aegis.sdk.quorum_driver.QuorumDriver._trace_step`) and checked
    against ``QuorumLease.tla``; give its writer ``TraceParams(election="quorum", ...)``.
    """

    election_class: type[Election] = Election
    """The election state machine. Only tests replace it (a subclass that breaks a rule, as a negative
    control that the checkers must catch); it is not a setting."""

    def __init__(
        self,
        name: str,
        *,
        group: str = "default",
        params: ElectionParams | None = None,
        ttl_s: int = 10,
        trace: TraceWriter | None = None,
        trace_serve_every_s: float = 0.01,
        election: Literal["lease", "quorum"] = "lease",
        **kwargs: Any,
    ) -> None:
        super().__init__(name, **kwargs)
        if election not in ("lease", "quorum"):
            raise ValueError(f"election must be 'lease' or 'quorum', got {election!r}")
        self.election_kind = election
        self.group = wire.check_token("group", group)
        self.params = params or ElectionParams()
        if ttl_s < self.params.lease_s:
            raise ValueError(f"ttl_s ({ttl_s}) must be at least the lease ({self.params.lease_s}s)")
        self.ttl_s = int(ttl_s)
        self.key = leader_key(self.name, self.group)
        self.election: Election | QuorumElection = self._new_election()
        self.trace = trace
        self.trace_serve_every_s = trace_serve_every_s
        self._serve_traced = (0, -math.inf)  # (epoch, local time) of the last serve event written
        self.exclusive: set[str] = set()
        self.known_epoch = 0
        """Newest epoch this instance knows (its own while active)."""
        self.leader: str | None = None
        """Instance id holding the key, as last seen."""
        self._events: asyncio.Queue[tuple[Callable[[float], list[Effect]], float | None]] = asyncio.Queue()
        self._driver: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._watch: Any = None
        self._exited = asyncio.Event()
        self._reply_headers = {wire.EPOCH_HEADER: "0", wire.INSTANCE_HEADER: self.instance_id}
        self.leadership: LeadershipLog | None = None
        """Publisher of this instance's leadership changes (set by :meth:`start`)."""
        self._held = 0  # the epoch of the lease this instance holds, for its records (0: none)
        self._campaign: _Campaign | None = None

        self._quorum: QuorumDriver | None = None

    def _new_election(self) -> Election | QuorumElection:
        if self.election_kind == "quorum":
            return QuorumElection(self.instance_id, self.params)
        return self.election_class(self.params)

    # -- API ---------------------------------------------------------------------------------------------

    def exclusive_rpc(self, method: str) -> Callable[[Handler], Handler]:
        """Decorator: ``method`` runs only on the active instance; standbys raise NotActive."""

        def register(func: Handler) -> Handler:
            self.rpc(method)(func)
            endpoint = self.endpoints[method]
            inner = endpoint.func

            async def guarded(*args: Any) -> Any:
                now = time.monotonic()
                if not self.election.serving(now):
                    raise NotActive(
                        f"{self.name}.{self.instance_id} is not the active instance"
                        f" (leader {self.leader or 'unknown'}, epoch {self.known_epoch})",
                        epoch=self.known_epoch,
                    )
                # Admitted under the current epoch: the reply will carry it, and goes out only while the
                # instance still serves under it (Service._serve asks reply_epoch right before sending).
                ctx = current_call()
                if ctx is not None:
                    ctx.epoch, ctx.fence = self.election.epoch, self
                if self.trace is not None:
                    self._trace_serve(now)
                return await inner(*args)

            endpoint.func = guarded
            self.exclusive.add(method)
            return func

        return register

    @property
    def is_active(self) -> bool:
        return self.election.serving(time.monotonic())

    def holds_epoch(self, epoch: int) -> bool:
        """True while this instance serves under ``epoch`` (an exclusive call admitted under it may answer)."""
        return self.election.may_reply(time.monotonic(), epoch)

    def reply_epoch(self, epoch: int) -> int | None:
        """The epoch an outcome of a call admitted under ``epoch`` goes out stamped with now (None: withheld);
        the election's rule, :meth:`aegis.sdk.election.Election.reply_epoch`."""
        return self.election.reply_epoch(time.monotonic(), epoch, self.known_epoch)

    def lease_lost(self, epoch: int) -> LeaseLost:
        """The answer to a call admitted under ``epoch`` that finished after this instance stopped serving
        under it."""
        return LeaseLost(
            f"{self.name}.{self.instance_id} lost the lease of epoch {epoch} before the call finished"
            f" (newest epoch known: {self.known_epoch}, leader {self.leader or 'unknown'}); retry on the active",
            epoch=epoch,
            known_epoch=self.known_epoch,
        )

    async def start(self, pool: ConnectionPool, *, register: bool = True) -> None:
        """Join the group as a standby and start the election (may become active within milliseconds)."""
        if self._driver is not None or self._quorum is not None:
            return
        if self.election_kind == "lease":
            await ensure_election_bucket(pool)  # (the quorum driver makes its own three)
        if self.leadership is None or self.leadership.pool is not pool:
            self.leadership = LeadershipLog(pool)
        await self.leadership.open()
        self._held, self._campaign = 0, None
        await super().start(pool, register=register)
        if self.heartbeat is not None:
            self.heartbeat.update(status=InstanceStatus.STANDBY, role="standby")
        self.election = self._new_election()
        if self.election_kind == "quorum":
            self._quorum = QuorumDriver(self)
            await self._quorum.start(pool)
            return
        self._exited.clear()
        self._events = asyncio.Queue()
        at, (first,) = await read_at_one_instant(lambda _: self._read_key_round(pool), lambda k: k.rev)
        assert first is not None
        self._driver = asyncio.create_task(self._drive(), name=f"election {self.key}")
        # the start goes first, dated when the key held what was read; the watch's deliveries come after it
        self._post(lambda now: self.election.start(now, first), at=at)
        self._watch = await self._watch_key(pool)

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop serving, hand the key over (delete by compare-and-set), then stop like any service."""
        if self._quorum is not None:
            quorum, self._quorum = self._quorum, None
            await quorum.stop()
            if self.leadership is not None:
                await self.leadership.flush()
        if self._driver is not None:
            self._post(self.election.stop)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._exited.wait(), self.params.write_timeout_s * 4)
            driver, self._driver = self._driver, None
            driver.cancel()
            await asyncio.gather(driver, return_exceptions=True)
            if self._timer is not None:
                self._timer.cancel()
            if self._watch is not None:
                with contextlib.suppress(Exception):
                    await self._watch.unsubscribe()
                self._watch = None
            if self.leadership is not None:  # the election is over: give its last record a bounded chance
                await self.leadership.flush()
        await super().stop(grace_s)

    # -- driver ------------------------------------------------------------------------------------------

    def _post(self, event: Callable[[float], list[Effect]], *, at: float | None = None) -> None:
        """Queue an event for the machine; ``at``: the monotonic time it happened, if earlier than its handling
        (only the start's, the first event: the machine's clock never goes back)."""
        self._events.put_nowait((event, at))

    async def _drive(self) -> None:
        while True:
            event, at = await self._events.get()
            now = time.monotonic() if at is None else at
            try:
                actions = event(now)
            except Exception:
                log.exception("%s: election event failed", self.key)
                continue
            for action in actions:
                self._carry_out(action, now)

    def _carry_out(self, action: Effect, now: float) -> None:
        """Do what the machine asked in the step it took at ``now`` (a write is traced at that time: the machine
        counts its renewal schedule and serving window from it)."""
        if isinstance(action, TraceStep):
            self._emit(
                action.step, rev=action.rev, epoch=action.epoch, op=action.op, kind=action.kind, local=now
            )
            try:
                self._note_leadership(action)
            except Exception:  # the log is best effort: it must never stop the driver
                log.debug("%s: leadership record failed", self.key, exc_info=True)
        elif isinstance(action, Write):
            if action.op == "acquire":  # what it campaigns over, for the records if it wins
                self._campaign = _Campaign(self.election.seen, self.leader, self.known_epoch)
            asyncio.create_task(self._write(action), name=f"{self.key} {action.op}")
        elif isinstance(action, Probe):
            asyncio.create_task(self._probe(action.req), name=f"{self.key} probe")
        elif isinstance(action, Timer):
            if self._timer is not None:
                self._timer.cancel()
            loop = asyncio.get_running_loop()
            delay = max(0.0, action.at - time.monotonic())
            self._timer = loop.call_later(delay, self._post, self.election.tick)
        elif isinstance(action, StartServing):
            self._started_serving(action.epoch)
        elif isinstance(action, StopServing):
            self._stopped_serving(action.reason)
        elif isinstance(action, Exit):
            self._exited.set()

    async def _write(self, w: Write) -> None:
        pool = self._pool
        assert pool is not None
        value = (
            b""
            if w.op == "release"
            else LeaderRecord(instance_id=self.instance_id, epoch=w.epoch).model_dump_json().encode()
        )
        try:
            rev = await kv_write(
                pool,
                wire.ELECTION_BUCKET,
                self.key,
                value,
                revision=w.expected,
                ttl_s=None if w.op == "release" else self.ttl_s,
                delete=w.op == "release",
                timeout=self.params.write_timeout_s,
                nc=pool.primary,  # the connection our subscriptions are on: renew only while reachable
            )
        except Conflict as exc:
            settled = await self._after_conflict(pool, w, exc.revision)
            if settled is None:  # the outcome is unknown (see _after_conflict): a timeout
                self._post(lambda now: self.election.write_timeout(now, w.req))
                return
            current, ours = settled
            self._post(lambda now: self.election.write_failed(now, current, w.req, ours=ours))
            return
        except AegisError as exc:
            log.debug("%s: %s timed out or failed: %s", self.key, w.op, exc)
            self._post(lambda now: self.election.write_timeout(now, w.req))
            return
        self._post(lambda now: self.election.write_ok(now, rev, w.req))

    async def _probe(self, req: int) -> None:
        assert self._pool is not None
        pool = self._pool
        try:
            # A write proves the bucket takes writes again (a read can be answered without a quorum); the
            # incumbent then has a whole lease to land its renewal before this standby campaigns.
            await kv_write(
                pool,
                wire.ELECTION_BUCKET,
                f"probe.{self.name}.{self.group}.{self.instance_id}",
                b"",
                revision=None,
                ttl_s=ELECTION_MARKER_TTL_S,
                timeout=self.params.write_timeout_s,
                nc=pool.primary,
            )
            key = await asyncio.wait_for(self._read_key(pool, direct=False), self.params.write_timeout_s)
        except (AegisError, TimeoutError):
            self._post(lambda now: self.election.write_timeout(now, req))
            return
        self._post(lambda now: self.election.read_done(now, key, req))

    async def _read_key_round(self, pool: ConnectionPool) -> list[KeyState | None]:
        return [await self._read_key(pool)]

    async def _read_key(self, pool: ConnectionPool, *, direct: bool = True) -> KeyState:
        return (await self._read_entry(pool, direct=direct))[0]

    async def _read_entry(
        self, pool: ConnectionPool, *, direct: bool = True
    ) -> tuple[KeyState, LeaderRecord | None]:
        """The key's state and, for a value, the record in it."""
        kv = bucket(pool, wire.ELECTION_BUCKET, direct=direct)
        try:
            entry = await (
                retry_transient(lambda: kv.get(self.key), f"read {self.key}") if direct else kv.get(self.key)
            )
        except NotFoundError:
            return KeyState(0, "none"), None
        except KeyDeletedError as exc:
            return KeyState(exc.entry.revision or 0, "del"), None
        except AegisError:
            raise
        except Exception as exc:
            raise jetstream_error(exc, f"read {self.key}") from exc
        rev = entry.revision or 0
        if not entry.value:
            return KeyState(rev, "exp"), None
        self._learn(entry.value, rev)
        return KeyState(rev, "val"), parse_leader(entry.value)

    async def _after_conflict(
        self, pool: ConnectionPool, w: Write, rev: int | None
    ) -> tuple[KeyState, bool] | None:
        """The key's state after a lost compare-and-set at ``rev``, and whether it still holds our own lease
        (an earlier renewal of ours that timed out was stored after all). ``rev`` None: the server did not
        say, because another write of the key was still being replicated; read until it shows. None when the
        outcome is unknown: the racing write did not show within the write timeout, the answer came from a
        replica behind the revision expected, or no read reached a replica at the conflict's revision."""
        if rev is not None and 0 < rev < w.expected:
            # The key's revision never goes down: a "wrong last sequence" below the revision this write expects
            # comes from a replica behind a write already seen, e.g. a stream leader deposed by a partition that
            # has not noticed yet (seen in the partition campaign: its stale read then showed our own older
            # record, and the renewal was "adopted" at a revision the key had left). It says nothing about the
            # key now: the outcome is unknown.
            return None
        if rev is None:
            deadline = time.monotonic() + self.params.write_timeout_s
            while True:
                with contextlib.suppress(AegisError):
                    current, _ = await self._read_entry(pool)
                    if current.rev > w.expected:  # an older one is a replica that has not caught up
                        rev = current.rev
                        break
                if time.monotonic() > deadline:
                    return None
                await asyncio.sleep(0.005)
        if rev == 0:
            return KeyState(0, "none"), False
        try:
            current, record = await self._read_entry(pool)
            if current.rev < rev:  # a replica behind the server that answered: ask the stream leader
                leader = self._read_entry(pool, direct=False)
                current, record = await asyncio.wait_for(leader, self.params.write_timeout_s)
        except (AegisError, TimeoutError):
            return None
        if current.rev < rev:
            # Unknown (was: "someone else's value", which made an active whose own lost renewal had landed
            # step down and hand over for nothing; the partition campaign's trace check rejected it). An
            # unknown outcome is a timeout: the active keeps its window and retries, a standby probes.
            return None
        holder, holder_epoch = (record.instance_id, record.epoch) if record is not None else (None, 0)
        return current, holds_own_record(w, current, holder, holder_epoch, self.instance_id)

    async def _watch_key(self, pool: ConnectionPool) -> Any:
        async def on_msg(msg: Msg) -> None:
            rev = msg.metadata.sequence.stream
            state = key_state(msg.headers, rev, bool(msg.data))
            if state.kind == "val":
                self._learn(msg.data, rev)
            self._post(lambda now: self.election.observe(now, state))

        return await kv_watch(pool, wire.ELECTION_BUCKET, self.key, on_msg)

    def _started_serving(self, epoch: int) -> None:
        """The machine started serving under ``epoch`` (either election)."""
        self.known_epoch = epoch
        self.leader = self.instance_id
        self._reply_headers[wire.EPOCH_HEADER] = str(epoch)
        if self.heartbeat is not None:
            self.heartbeat.update(status=InstanceStatus.ACTIVE, role="active", epoch=epoch)
        log.info("%s: ACTIVE with epoch %d", self.key, epoch)

    def _stopped_serving(self, reason: str) -> None:
        if self.heartbeat is not None:
            self.heartbeat.update(status=InstanceStatus.STANDBY, role="standby", epoch=self.known_epoch)
        log.info("%s: stopped serving (%s)", self.key, reason)

    def _learn(self, data: bytes, rev: int) -> None:
        try:
            record = LeaderRecord.model_validate_json(data)
        except ValueError:
            return
        self._know(record.epoch or rev, record.instance_id)

    def _know(self, epoch: int, holder: str) -> None:
        """``holder`` won ``epoch``: remember the newest such, and tell clients it while not serving."""
        if epoch >= self.known_epoch:
            self.known_epoch = epoch
            self.leader = holder
            if not self.election.serving(time.monotonic()):
                self._reply_headers[wire.EPOCH_HEADER] = str(epoch)
                if self.heartbeat is not None and self.heartbeat.record.epoch != epoch:
                    self.heartbeat.update(epoch=epoch)

    # -- leadership log ---------------------------------------------------------------------------------

    def _note_leadership(self, step: TraceStep) -> None:
        """Publish the leadership change a trace step of the machine stands for, if any. The steps are the
        machine's own record of what happened (each taken once), so the log follows the protocol exactly."""
        if step.step is TA.ACQUIRE:
            self._acquired(step.epoch)
        elif not self._held:
            return
        elif step.step is TA.LOSE:
            self._publish("lose", self._held, f"renewal refused: the key is at revision {step.rev}")
            self._held = 0
        elif step.step is TA.RELEASE:
            if step.rev:
                self._publish("release", self._held, f"graceful stop: key deleted at revision {step.rev}")
            else:
                self._publish("lose", self._held, "graceful stop found the key taken over")
            self._held = 0
        elif step.step is TA.TIMEOUT and step.op is TraceOp.RELEASE:
            self._publish(
                "release", self._held, "graceful stop: delete not acknowledged (else the TTL ends it)"
            )
            self._held = 0

    def _acquired(self, epoch: int) -> None:
        campaign, self._campaign = self._campaign, None
        over = campaign.over if campaign is not None else KeyState(0, "none")
        holder = campaign.holder if campaign is not None and over.kind != "none" else None
        holder_epoch = campaign.holder_epoch if holder is not None and campaign is not None else None
        if over.kind in ("val", "exp"):
            why = "key expired (TTL)" if over.kind == "exp" else "holder silent for a lease; taken over"
            self._publish("expire", epoch, why, holder, holder_epoch)
        reason = {
            "none": "key was free",
            "del": "key released by its holder",
            "exp": "took over an expired key",
            "val": "took over a key left unrenewed",
        }[over.kind]
        self._publish("acquire", epoch, reason, holder, holder_epoch)
        self._held = epoch

    def _publish(
        self,
        kind: LeadershipKind,
        epoch: int,
        reason: str,
        previous: str | None = None,
        previous_epoch: int | None = None,
    ) -> None:
        if self.leadership is None:
            return
        change = LeadershipChange(
            service=self.name,
            group=self.group,
            instance_id=self.instance_id,
            kind=kind,
            epoch=epoch,
            at=time.time(),
            reason=reason,
            previous_instance_id=previous,
            previous_epoch=previous_epoch if previous is not None else None,
        )
        self.leadership.record(change)

    def _trace_serve(self, now: float) -> None:
        epoch, last = self._serve_traced
        if epoch != self.election.epoch or now - last >= self.trace_serve_every_s:
            self._serve_traced = (self.election.epoch, now)
            self._emit(TA.SERVE, epoch=self.election.epoch, local=now)

    def _emit(self, action: TA, **fields: Any) -> None:
        if self.trace is not None:
            self.trace.emit(self.instance_id, action, **fields)


def parse_leader(data: bytes) -> LeaderRecord | None:
    """The election key's value, or None for markers and foreign data."""
    try:
        return LeaderRecord.model_validate_json(data) if data else None
    except ValueError:
        return None


__all__ = [
    "LeaderRecord",
    "SingleActiveService",
    "ensure_election_bucket",
    "leader_key",
    "parse_leader",
]
