"""The sticky client: calls go straight to the active instance of a single-active group.

``StickyClient`` follows each group's election key with a watch (no KV read per call) and sends every call to
the active instance's own subject. On :class:`~sdk.errors.NotActive`, an attempt timeout or nobody listening,
it forgets the leader, waits for the watch (or backs off) and tries again until the call's deadline; then it
raises :class:`~sdk.errors.ServiceUnavailable` saying what it tried::

    client = StickyClient(pool)
    ack = await client.call_active("orders", "place", order, timeout=2.0, response_model=Ack)

Every reply carries the epoch its call was admitted under; a reply from an epoch older than one this client
already accepted is dropped (and the call retried), so a deposed active that wakes up from a pause cannot
answer after its successor did. An instance that lost its lease while the handler ran answers
:class:`~sdk.errors.LeaseLost` instead of its outcome; the call is retried on the new active with the same
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
from dataclasses import dataclass, field
from typing import Any

from nats.aio.msg import Msg

from . import wire
from .codec import decode
from .connection import ConnectionPool
from .errors import LeaseLost, NoResponders, NotActive, RpcTimeout, ServiceUnavailable
from .kv import key_state, kv_watch
from .rpc import RpcClient
from .single_active import ensure_election_bucket, leader_key, parse_leader

_FIRST_BACKOFF_S = 0.01
_MAX_BACKOFF_S = 0.2


@dataclass
class _Leader:
    """What one client knows about one group."""

    instance_id: str | None = None
    epoch: int = 0
    accepted: int = 0
    """Newest epoch of a reply this client accepted (replies from older epochs are dropped)."""
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    watch: Any = None


class StickyClient:
    """Calls the active instance of single-active groups; see the module docstring."""

    def __init__(self, pool: ConnectionPool, *, attempt_timeout_s: float = 1.0) -> None:
        self.pool = pool
        self.rpc = RpcClient(pool)
        self.attempt_timeout_s = attempt_timeout_s
        self._groups: dict[str, _Leader] = {}
        self.retries = 0
        """Attempts that failed and were retried (NotActive, timeouts, nobody listening, stale epochs)."""

    async def close(self) -> None:
        for leader in self._groups.values():
            if leader.watch is not None:
                try:
                    await leader.watch.unsubscribe()
                except Exception:  # connection closed already
                    pass
        self._groups.clear()

    async def _leader(self, service: str, group: str) -> _Leader:
        key = leader_key(service, group)
        leader = self._groups.get(key)
        if leader is not None:
            return leader
        leader = self._groups[key] = _Leader()
        await ensure_election_bucket(self.pool)

        async def on_msg(msg: Msg) -> None:
            state = key_state(msg.headers, msg.metadata.sequence.stream, bool(msg.data))
            record = parse_leader(msg.data) if state.kind == "val" else None
            if record is None:
                leader.instance_id = None
            else:
                epoch = record.epoch or state.rev
                if epoch >= leader.epoch:
                    leader.instance_id, leader.epoch = record.instance_id, epoch
            leader.changed.set()

        leader.watch = await kv_watch(self.pool, wire.ELECTION_BUCKET, key, on_msg)
        return leader

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
        ``timeout`` (default: the configured per-method timeout)."""
        if timeout is None:
            timeout = self.pool.settings.timeout_for(service, method)
        deadline = time.monotonic() + timeout
        leader = await self._leader(service, group)
        call_id = idempotency_key or uuid.uuid4().hex
        tried: list[str] = []
        backoff = _FIRST_BACKOFF_S
        last_target: str | None = None
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ServiceUnavailable(
                    f"no active instance of {service}/{group} answered {method} within {timeout:.3f}s;"
                    f" tried: {'; '.join(tried[-5:]) or 'no leader known'}"
                )
            target = leader.instance_id
            if target is None:
                leader.changed.clear()
                try:
                    await asyncio.wait_for(leader.changed.wait(), min(left, _MAX_BACKOFF_S))
                except TimeoutError:
                    pass
                if leader.instance_id is None:
                    tried.append("no leader in the election key")
                continue
            if target != last_target:
                backoff, last_target = _FIRST_BACKOFF_S, target
            try:
                msg = await self._attempt(leader, target, service, method, payload, left, call_id)
            except _LeaderChanged:
                tried.append(f"{target}: no answer before the key named a new leader")
                continue
            except NotActive as exc:
                tried.append(f"{target}: not active (it knows epoch {exc.epoch})")
                if exc.epoch < leader.epoch:
                    # It was just elected and has not yet processed its own acquire: ask again in a moment.
                    await asyncio.sleep(min(_FIRST_BACKOFF_S, max(0.0, deadline - time.monotonic())))
                    continue
            except LeaseLost as exc:
                tried.append(
                    f"{target}: lost the lease of epoch {exc.epoch} before the call finished"
                    f" (it knows epoch {exc.known_epoch})"
                )
            except (NoResponders, RpcTimeout) as exc:
                tried.append(f"{target}: {type(exc).__name__}")
            except ServiceUnavailable as exc:
                tried.append(f"{target}: {exc.message}")
            else:
                epoch = int((msg.headers or {}).get(wire.EPOCH_HEADER, 0) or 0)
                if epoch >= leader.accepted:
                    leader.accepted = epoch
                    return decode(msg.data, response_model)
                tried.append(f"{target}: stale reply from epoch {epoch} < {leader.accepted}")
            self.retries += 1
            if leader.instance_id == target:
                # The watch has not caught up: wait for it a little, then try whoever it says.
                leader.changed.clear()
                try:
                    await asyncio.wait_for(
                        leader.changed.wait(), min(backoff, max(0.0, deadline - time.monotonic()))
                    )
                except TimeoutError:
                    pass
                backoff = min(backoff * 2, _MAX_BACKOFF_S)

    async def _attempt(
        self,
        leader: _Leader,
        target: str,
        service: str,
        method: str,
        payload: Any,
        left: float,
        call_id: str,
    ) -> Msg:
        """One request to ``target``; abandoned (``_LeaderChanged``) as soon as the key names another leader,
        so a request stuck on a dead active does not hold the call for the whole attempt timeout."""
        request = asyncio.ensure_future(
            self.rpc.request(
                service,
                method,
                payload,
                timeout=min(left, self.attempt_timeout_s),
                instance=target,
                call_id=call_id,
                retry_no_responders=False,
            )
        )
        changed: asyncio.Future[Any] | None = None
        try:
            while True:
                leader.changed.clear()
                changed = asyncio.ensure_future(leader.changed.wait())
                done, _ = await asyncio.wait({request, changed}, return_when=asyncio.FIRST_COMPLETED)
                if request in done:
                    return request.result()
                if leader.instance_id != target:
                    raise _LeaderChanged
        finally:
            if changed is not None:
                changed.cancel()
            request.cancel()  # abandoned (or already done: then a no-op)
            request.add_done_callback(_outcome_dropped)


def _outcome_dropped(task: asyncio.Future[Any]) -> None:
    """Mark an abandoned request's outcome as seen: it may have failed (e.g. NotActive) just as it was
    abandoned, and nobody waits for it any more."""
    if not task.cancelled():
        task.exception()


class _LeaderChanged(Exception):
    """The election key named a new leader while a request to the old one was in flight."""


__all__ = ["StickyClient"]
