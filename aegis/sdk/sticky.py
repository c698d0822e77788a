"""The sticky client: calls go straight to the active instance of a single-active group.

``StickyClient`` follows each group's election key with a watch (no KV read per call) and sends every call to
the active instance's own subject. On :class:`~aegis.sdk.errors.NotActive`, an attempt timeout or nobody listening,
it forgets the leader, waits for the watch (or backs off) and tries again until the call's deadline; then it
raises :class:`~aegis.sdk.errors.ServiceUnavailable` saying what it tried::

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
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from nats.aio.msg import Msg

from . import wire
from .codec import decode
from .connection import ConnectionPool
from .deadline import effective_timeout
from .errors import LeaseLost, NoResponders, NotActive, RpcTimeout, ServiceUnavailable
from .kv import key_state, kv_watch
from .quorum_buckets import ensure_quorum_buckets
from .quorum_driver import parse_claim
from .quorum_election import Claim, majority_claim
from .rpc import RpcClient
from .single_active import ensure_election_bucket, leader_key, parse_leader
from .sticky_core import Accept, Attempt, CallCore, GiveUp, GroupView, Kind, Outcome, Wait


@dataclass
class _Group:
    """One group's view (the rules' state) and the asyncio side of its watch."""

    view: GroupView = field(default_factory=GroupView)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    watches: list[Any] = field(default_factory=list)


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
        self.retries = 0
        """Attempts that failed and were retried (NotActive, timeouts, nobody listening, stale epochs)."""

    async def close(self) -> None:
        for group in self._groups.values():
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
        group = self._groups[key] = _Group()
        if self.election == "quorum":
            await self._watch_quorum(group, key)
            return group
        await ensure_election_bucket(self.pool)

        async def on_msg(msg: Msg) -> None:
            state = key_state(msg.headers, msg.metadata.sequence.stream, bool(msg.data))
            record = parse_leader(msg.data) if state.kind == "val" else None
            if record is None:
                group.view.observe(None, 0)
            else:
                group.view.observe(record.instance_id, record.epoch or state.rev)
            group.changed.set()

        group.watches.append(await kv_watch(self.pool, wire.ELECTION_BUCKET, key, on_msg))
        return group

    async def _watch_quorum(self, group: _Group, key: str) -> None:
        """A quorum-lease group: follow the key in each of the three buckets; the active is the holder of the
        newest ballot claimed in a majority of them (:func:`~aegis.sdk.quorum_election.majority_claim`)."""
        await ensure_quorum_buckets(self.pool)
        claims: list[Claim | None] = [None] * len(wire.QUORUM_ELECTION_BUCKETS)

        def on_msg_of(b: int) -> Callable[[Msg], Awaitable[None]]:
            async def on_msg(msg: Msg) -> None:
                claims[b] = parse_claim(msg.data)
                won = majority_claim(claims)
                if won is None or won.released:
                    group.view.observe(None, 0)
                else:
                    group.view.observe(won.holder, won.ballot)
                group.changed.set()

            return on_msg

        for b, name in enumerate(wire.QUORUM_ELECTION_BUCKETS):
            group.watches.append(await kv_watch(self.pool, name, key, on_msg_of(b)))

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
        try:
            while True:
                step: Attempt | Wait | GiveUp | Accept | None = call.next(time.monotonic())
                if isinstance(step, GiveUp):
                    raise ServiceUnavailable(step.reason)
                if isinstance(step, Attempt):
                    result, msg = await self._attempt(g, step, service, method, payload, call_id)
                    step = call.outcome(time.monotonic(), step, result)
                    if isinstance(step, Accept):
                        assert msg is not None
                        return decode(msg.data, response_model)
                if isinstance(step, Wait):
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
    ) -> tuple[Outcome, Msg | None]:
        """One request to the attempt's target, and how it ended. Abandoned (``LEADER_CHANGED``) as soon as the
        key names another leader, so a request stuck on a dead active does not hold the call for the whole
        attempt timeout."""
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
            )
        )
        changed: asyncio.Future[Any] | None = None
        try:
            while True:
                g.changed.clear()
                changed = asyncio.ensure_future(g.changed.wait())
                done, _ = await asyncio.wait({request, changed}, return_when=asyncio.FIRST_COMPLETED)
                if request in done:
                    break
                if g.view.leader != target:
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
