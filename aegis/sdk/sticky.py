"""The sticky client: calls go straight to the active instance of a single-active group.

``StickyClient`` follows each group's election key with a watch (no KV read per call) and sends every call to
the active instance's own subject. On :class:`~aegis.sdk.errors.NotActive`, an attempt timeout or nobody listening,
it forgets the leader, waits for the watch (or backs off) and tries again until the call's deadline; then it
raises :class:`~aegis.sdk.errors.ServiceUnavailable` saying what it tried. While it waits for a watch that has
not named anyone new, or for an attempt's answer, it also re-reads the key(s) with direct gets (any replica
answers, no JetStream meta leader needed): a watch whose consumer sat on a node cut off by a partition, or that
nats-py is re-creating, can stay silent for seconds after the failover (``harness/experiments/partition_watch.py``).
Each retry goes through the pool's next connection, and calls start on the one that answered last::

    client = StickyClient(pool)
    ack = await client.call_active("orders", "place", order, timeout=2.0, response_model=Ack)

Every reply carries the epoch its call was admitted under; a reply from an epoch older than one this client
already accepted is dropped (and the call retried), so a deposed active that wakes up from a pause cannot
answer after its successor did. An instance that lost its lease while the handler ran answers
:class:`~aegis.sdk.errors.LeaseLost` instead of its outcome; the call is retried on the new active with the same
call id.

Each call carries one idempotency key (``Aegis-Call-Id``) on every attempt. A retry across a failover can run
the handler twice: once on the old active (whose reply was lost) and once on the new one. Exclusive handlers
must therefore be idempotent by that key, or make the effect visible to their successor (e.g. record the key
in the same transaction as the effect) and answer a repeated key with the first outcome.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.errors import KeyDeletedError

from . import wire
from .codec import decode
from .connection import ConnectionPool
from .deadline import effective_timeout
from .errors import LeaseLost, NoResponders, NotActive, RpcTimeout, ServiceUnavailable
from .kv import bucket, key_state, kv_watch
from .quorum_buckets import ensure_quorum_buckets
from .quorum_driver import parse_claim
from .quorum_election import Claim, active_claim
from .rpc import RpcClient
from .single_active import ensure_election_bucket, leader_key, parse_leader
from .sticky_core import Accept, Attempt, CallCore, Connections, GiveUp, GroupView, Kind, Outcome, Wait

REREAD_TIMEOUT_S = 0.5
"""Bound of one re-read of a group's key(s) (direct gets, concurrently)."""
REREAD_EVERY_S = 0.1
"""At most one re-read per group starts in this long."""
REREAD_PENDING_S = 0.25
"""An attempt without an answer after this long re-reads the key(s) too, and again every as long."""


@dataclass
class _Group:
    """One group's view (the rules' state), what it was built from, and the asyncio side of its watch."""

    key: str
    buckets: tuple[str, ...]
    """The buckets holding the group's key: the election bucket, or the three quorum buckets."""
    view: GroupView = field(default_factory=GroupView)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    watches: list[Any] = field(default_factory=list)
    revs: list[int] = field(default_factory=list)
    """Per bucket: the revision of the newest entry seen (by the watch or a re-read); older ones are ignored."""
    claims: list[Claim | None] = field(default_factory=list)
    """Quorum lease: per bucket, the record of that entry."""
    reread: asyncio.Task[None] | None = None
    reread_at: float = -math.inf
    conn: int = 0
    """Index in the pool of the connection of the last attempt that got an answer (calls start there)."""

    def __post_init__(self) -> None:
        self.revs = [0] * len(self.buckets)
        self.claims = [None] * len(self.buckets)


class StickyClient:
    """Calls the active instance of single-active groups; see the module docstring. The rules are
    :mod:`aegis.sdk.sticky_core`'s; this class carries them out with asyncio and NATS."""

    def __init__(
        self,
        pool: ConnectionPool,
        *,
        attempt_timeout_s: float = 1.0,
        election: Literal["lease", "quorum"] = "lease",
    ) -> None:
        if election not in ("lease", "quorum"):
            raise ValueError(f"election must be 'lease' or 'quorum', got {election!r}")
        self.election = election
        """The election the groups this client calls run (``SingleActiveService(election=...)``): which keys
        name their active."""
        self.pool = pool
        self.rpc = RpcClient(pool)
        self.attempt_timeout_s = attempt_timeout_s
        self._groups: dict[str, _Group] = {}
        self.connections = Connections()
        """What went through each of the pool's connections (by index): attempts skip one that failed since it
        last answered."""
        self.retries = 0
        """Attempts that failed and were retried (NotActive, timeouts, nobody listening, stale epochs)."""

    async def close(self) -> None:
        for group in self._groups.values():
            if group.reread is not None:
                group.reread.cancel()
            for watch in group.watches:
                try:
                    await watch.unsubscribe()
                except Exception:  # connection closed already
                    pass
        self._groups.clear()

    async def _group(self, service: str, group_name: str) -> _Group:
        key = leader_key(service, group_name)
        group = self._groups.get(key)
        if group is not None:
            return group
        quorum = self.election == "quorum"
        names = wire.QUORUM_ELECTION_BUCKETS if quorum else (wire.ELECTION_BUCKET,)
        group = self._groups[key] = _Group(key, tuple(names))
        if quorum:
            await ensure_quorum_buckets(self.pool)
        else:
            await ensure_election_bucket(self.pool)

        def on_msg_of(b: int) -> Callable[[Msg], Awaitable[None]]:
            async def on_msg(msg: Msg) -> None:
                state = key_state(msg.headers, msg.metadata.sequence.stream, bool(msg.data))
                self._learn(group, b, state.rev, msg.data if state.kind == "val" else b"", watched=True)

            return on_msg

        for b, name in enumerate(group.buckets):
            group.watches.append(await kv_watch(self.pool, name, key, on_msg_of(b)))
        return group

    def _learn(self, g: _Group, b: int, rev: int, data: bytes, *, watched: bool = False) -> None:
        """Bucket ``b`` holds ``data`` (empty: a marker) at revision ``rev``, from the watch (``watched``) or a
        re-read. A re-read counts only when newer than what the client has from ``b``: a direct get may come from a
        replica that is behind. A watch delivery always counts: it comes in the stream's order, and a bucket that
        an operator re-created starts its revisions again (a watch that lags behind a re-read only repeats what
        the next re-read or delivery corrects).

        Single-bucket lease: the record names the leader (its epoch, else the revision). Quorum lease: the active is
        the holder of the newest ballot claimed in a majority of the buckets
        (:func:`~aegis.sdk.quorum_election.active_claim`)."""
        if not watched and rev <= g.revs[b]:
            return
        g.revs[b] = rev
        if self.election == "quorum":
            g.claims[b] = parse_claim(data)
            won = active_claim(g.claims)
            holder, epoch = (None, 0) if won is None else (won.holder, won.ballot)
        else:
            record = parse_leader(data)
            holder, epoch = (None, 0) if record is None else (record.instance_id, record.epoch or rev)
        g.view.observe(holder, epoch)
        g.changed.set()

    def _start_reread(self, g: _Group) -> None:
        """Re-read the group's key(s) in the background: at most one re-read in flight, one per REREAD_EVERY_S."""
        now = time.monotonic()
        if (g.reread is not None and not g.reread.done()) or now - g.reread_at < REREAD_EVERY_S:
            return
        g.reread_at = now
        g.reread = asyncio.create_task(self._reread(g), name=f"sticky re-read {g.key}")

    async def _reread(self, g: _Group) -> None:
        # Through the pool's connections in turn: one of them may be attached to a server cut off from the rest,
        # which then answers late or from a replica that is behind (what this client knows tells the latter).
        nc = self.pool.next()
        conn = self.pool.clients.index(nc)

        async def one(b: int, name: str) -> None:
            known = g.revs[b]
            try:
                kv = bucket(self.pool, name, direct=True, nc=nc)
                entry = await asyncio.wait_for(kv.get(g.key), REREAD_TIMEOUT_S)
            except KeyDeletedError as exc:
                rev, data = exc.entry.revision or 0, b""
            except TimeoutError:  # the watch may still tell
                self.connections.bad(conn, time.monotonic())
                return
            except Exception:  # nothing there (NotFoundError), no responders: the watch may still tell
                return
            else:
                rev, data = entry.revision or 0, entry.value or b""
            if rev < known:
                self.connections.bad(conn, time.monotonic())
            else:
                self.connections.ok(conn, time.monotonic())
            self._learn(g, b, rev, data)

        await asyncio.gather(*(one(b, name) for b, name in enumerate(g.buckets)))

    async def call_active(
        self,
        service: str,
        method: str,
        payload: Any = None,
        *,
        group: str = "default",
        timeout: float | None = None,
        response_model: Any = None,
        idempotency_key: str | None = None,
    ) -> Any:
        """Call ``method`` on the active instance of ``service``/``group``; retried across failovers until
        ``timeout`` (default: the configured per-method timeout; inside a handler, capped by its budget as
        every client's is, :func:`aegis.sdk.deadline.effective_timeout`)."""
        timeout = effective_timeout(self.pool, service, method, timeout)
        g = await self._group(service, group)
        call = CallCore(
            g.view, time.monotonic(), timeout, self.attempt_timeout_s, what=f"{service}/{group} {method}"
        )
        call_id = idempotency_key or uuid.uuid4().hex
        # A call starts on the connection of the group's last answered attempt; each retry goes through the next
        # connection of the pool (they sit on different servers), not again through a server that may be cut off,
        # and passes over one that failed since it last answered (Connections).
        conns = self.pool.clients
        first, k = g.conn, 0
        try:
            while True:
                step: Attempt | Wait | GiveUp | Accept | None = call.next(time.monotonic())
                if isinstance(step, GiveUp):
                    raise ServiceUnavailable(step.reason)
                if isinstance(step, Attempt):
                    conn = self.connections.pick(first + k, len(conns), time.monotonic())
                    k += 1
                    result, msg = await self._attempt(g, step, service, method, payload, call_id, conns[conn])
                    if result.kind is Kind.NO_ANSWER:
                        self.connections.bad(conn, time.monotonic())
                    elif result.kind is not Kind.UNAVAILABLE and result.kind is not Kind.LEADER_CHANGED:
                        g.conn = conn  # this connection reaches the instances
                        self.connections.ok(conn, time.monotonic())
                    step = call.outcome(time.monotonic(), step, result)
                    if isinstance(step, Accept):
                        assert msg is not None
                        return decode(msg.data, response_model)
                if isinstance(step, Wait):
                    if step.reread:
                        self._start_reread(g)
                    await self._wait(g, step)
        finally:
            self.retries += call.retries

    @staticmethod
    async def _wait(g: _Group, wait: Wait) -> None:
        if not wait.until_change:
            await asyncio.sleep(wait.seconds)
            return
        g.changed.clear()
        try:
            await asyncio.wait_for(g.changed.wait(), wait.seconds)
        except TimeoutError:
            pass

    async def _attempt(
        self,
        g: _Group,
        attempt: Attempt,
        service: str,
        method: str,
        payload: Any,
        call_id: str,
        nc: NatsClient,
    ) -> tuple[Outcome, Msg | None]:
        """One request to the attempt's target, and how it ended. Abandoned (``LEADER_CHANGED``) as soon as the
        key names another leader, so a request stuck on a dead active does not hold the call for the whole
        attempt timeout; while it waits, the key is re-read every :data:`REREAD_PENDING_S`, in case the watch is
        silent."""
        target = attempt.target
        request = asyncio.ensure_future(
            self.rpc.request(
                service,
                method,
                payload,
                timeout=attempt.timeout_s,
                instance=target,
                call_id=call_id,
                retry_no_responders=False,
                nc=nc,
            )
        )
        changed: asyncio.Future[Any] | None = None
        try:
            while True:
                if changed is None or changed.done():
                    g.changed.clear()
                    changed = asyncio.ensure_future(g.changed.wait())
                done, _ = await asyncio.wait(
                    {request, changed}, timeout=REREAD_PENDING_S, return_when=asyncio.FIRST_COMPLETED
                )
                if request in done:
                    break
                if not done:
                    # No answer yet: is the watch silent about a new leader? (rate-limited per group)
                    self._start_reread(g)
                elif g.view.leader != target:
                    return Outcome(Kind.LEADER_CHANGED), None
        finally:
            if changed is not None:
                changed.cancel()
            if not request.done():
                request.cancel()  # abandoned
                request.add_done_callback(_outcome_dropped)
        try:
            msg = request.result()
        except NotActive as exc:
            return Outcome(Kind.NOT_ACTIVE, exc.epoch), None
        except LeaseLost as exc:
            return Outcome(Kind.LEASE_LOST, exc.epoch, exc.known_epoch), None
        except (NoResponders, RpcTimeout) as exc:
            return Outcome(Kind.NO_ANSWER, detail=type(exc).__name__), None
        except ServiceUnavailable as exc:
            return Outcome(Kind.UNAVAILABLE, detail=exc.message), None
        epoch = int((msg.headers or {}).get(wire.EPOCH_HEADER, 0) or 0)
        return Outcome.ok(epoch), msg


def _outcome_dropped(task: asyncio.Future[Any]) -> None:
    """Mark an abandoned request's outcome as seen: it may have failed (e.g. NotActive) just as it was
    abandoned, and nobody waits for it any more."""
    if not task.cancelled():
        task.exception()


__all__ = ["StickyClient"]
