"""Discovery: a watch-fed cache of instance records, and a client that routes calls to chosen instances.

:class:`InstanceWatch` follows the ``aegis_instances`` bucket with one ordered JetStream consumer (a KV
watch): a new, changed or removed record reaches the cache within milliseconds, and no call ever reads KV.
While the watch or KV is unavailable the cache keeps the last known records.

:class:`DiscoveryClient` picks an instance for each call (round-robin, random, or least in-flight among
this client's own calls) and sends to that instance's own subject. A call that no subscriber received
(the instance died and its record has not expired yet) is retried at once on another instance, and the
dead one is avoided until its record changes. When no instance is known at all, the call goes to the
service's shared queue-group subject, so discovery never makes a call fail that plain RPC would serve::

    client = DiscoveryClient(pool, strategy="least_in_flight")
    await client.start()
    quote = await client.call("quotes", "price", QuoteRequest(symbol="EURUSD"), response_model=Quote)
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time
from collections.abc import Callable
from typing import Any, Literal

from nats.aio.msg import Msg
from pydantic import ValidationError

from . import wire
from .connection import ConnectionPool
from .deadline import effective_timeout
from .errors import AegisError, NoResponders, RpcTimeout
from .jetstream import retry_transient
from .kv import key_state, kv_watch
from .nats_errors import jetstream_error
from .registry import ensure_registry
from .rpc import RpcClient
from .schema import InstanceStatus, ServiceInstance

log = logging.getLogger(__name__)

Strategy = Literal["round_robin", "random", "least_in_flight"]
STRATEGIES: tuple[Strategy, ...] = ("round_robin", "random", "least_in_flight")

# Statuses whose instances take plain RPC calls (a standby serves every non-exclusive method).
ROUTABLE = frozenset({InstanceStatus.ACTIVE, InstanceStatus.STANDBY})
# A record not refreshed for its TTL plus this is stale (its expiry marker may have been lost while the
# stream had no leader); stale records are skipped while the service has fresh ones.
_STALE_GRACE_S = 1.0


class _Known:
    __slots__ = ("record", "revision", "seen")

    def __init__(self, record: ServiceInstance, revision: int, seen: float) -> None:
        self.record = record
        self.revision = revision
        self.seen = seen


class InstanceWatch:
    """Cache of instance records fed by a KV watch. ``service`` limits it to one service's instances."""

    def __init__(self, pool: ConnectionPool, service: str | None = None) -> None:
        self.pool = pool
        self.service = wire.check_token("service name", service) if service else None
        self._by_service: dict[str, dict[str, _Known]] = {}
        # service -> (routable records, monotonic time when the first of them turns stale)
        self._routable: dict[str, tuple[tuple[ServiceInstance, ...], float]] = {}
        self._suspects: dict[str, int] = {}  # key -> revision that was suspected
        self._sub: Any = None
        self._ready = asyncio.Event()
        self._changed = asyncio.Event()
        self._listeners: list[Callable[[str, ServiceInstance | None], None]] = []
        self.updates = 0
        """Watch messages applied so far (records and removals)."""

    async def start(self, timeout: float = 10.0) -> None:
        """Start watching and wait until the current records are loaded."""
        if self._sub is not None:
            return
        await ensure_registry(self.pool)
        self._sub = await kv_watch(
            self.pool, wire.INSTANCES_BUCKET, f"{self.service}.*" if self.service else ">", self._on_msg
        )
        try:
            info = await retry_transient(self._sub.consumer_info, "watch instances")
            if info.num_pending == 0 and self._sub.delivered == 0:
                self._ready.set()
            await asyncio.wait_for(self._ready.wait(), timeout)
        except TimeoutError:
            raise RpcTimeout(f"instance records not loaded within {timeout}s") from None
        except AegisError:
            raise
        except Exception as exc:
            raise jetstream_error(exc, "watch instances") from exc

    async def stop(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            try:
                await sub.unsubscribe()
            except Exception:  # connection already closed
                log.debug("unsubscribe of the instance watch failed", exc_info=True)

    def add_listener(self, listener: Callable[[str, ServiceInstance | None], None]) -> None:
        """Call ``listener(key, record)`` on every change; ``record`` is None when the instance left."""
        self._listeners.append(listener)

    async def _on_msg(self, msg: Msg) -> None:
        key = msg.subject[len(wire.INSTANCES_BUCKET) + 5 :]  # after "$KV.<bucket>."
        meta = msg.metadata
        service = key.partition(".")[0]
        record: ServiceInstance | None = None
        if msg.data and key_state(msg.headers, meta.sequence.stream, True).kind == "val":
            try:
                record = ServiceInstance.model_validate_json(msg.data)
            except ValidationError as exc:
                log.warning("instance record %s is not valid, ignored: %s", key, exc)
        known = self._by_service.setdefault(service, {})
        if record is None:
            known.pop(key, None)
        else:
            known[key] = _Known(record, meta.sequence.stream, time.monotonic())
        self._suspects.pop(key, None)
        self._routable.pop(service, None)
        self.updates += 1
        if meta.num_pending == 0:
            self._ready.set()
        self._changed.set()
        for listener in self._listeners:
            try:
                listener(key, record)
            except Exception:
                log.exception("instance watch listener failed")

    def records(self, service: str | None = None) -> list[ServiceInstance]:
        """Every known record (of ``service``), whatever its status, sorted by key."""
        groups = [self._by_service.get(service, {})] if service else list(self._by_service.values())
        return sorted((k.record for g in groups for k in g.values()), key=lambda r: r.key)

    def routable(self, service: str) -> tuple[ServiceInstance, ...]:
        """Instances a call may go to: status ACTIVE or STANDBY, not suspected dead, fresh if any is."""
        cached = self._routable.get(service)
        now = time.monotonic()
        # Every change to a record or suspicion drops the cached entry, so its freshness deadline holds.
        if cached is not None and now <= cached[1]:
            return cached[0]
        known = self._by_service.get(service, {})
        live = [
            k
            for key, k in sorted(known.items())
            if k.record.status in ROUTABLE and self._suspects.get(key) != k.revision
        ]
        fresh = [k for k in live if now - k.seen <= k.record.ttl_s + _STALE_GRACE_S]
        # All stale means KV or the watch is down, not that every instance died: keep the last known list.
        picked = fresh or live
        chosen = tuple(k.record for k in picked)
        # All stale: a deadline already past, so each call looks again (as it must until one is fresh).
        self._routable[service] = (
            chosen,
            min((k.seen + k.record.ttl_s + _STALE_GRACE_S for k in picked), default=float("inf")),
        )
        return chosen

    def suspect(self, record: ServiceInstance) -> None:
        """Avoid ``record``'s instance (nobody answered on its subject) until its record changes."""
        known = self._by_service.get(record.service, {}).get(record.key)
        if known is not None:
            self._suspects[record.key] = known.revision
            self._routable.pop(record.service, None)

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until ``predicate()`` holds after some update (for tests and tools); RpcTimeout if not."""
        deadline = time.monotonic() + timeout
        while not predicate():
            left = deadline - time.monotonic()
            if left <= 0:
                raise RpcTimeout(f"instance watch: condition not met within {timeout}s")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(left, 0.1))
            except TimeoutError:
                continue


class DiscoveryClient:
    """Routes calls to instances found through an :class:`InstanceWatch`; see the module docstring."""

    def __init__(
        self,
        pool: ConnectionPool,
        *,
        strategy: Strategy = "round_robin",
        watch: InstanceWatch | None = None,
        rpc: RpcClient | None = None,
    ) -> None:
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")
        self.pool = pool
        self.strategy: Strategy = strategy
        self.watch = watch or InstanceWatch(pool)
        self._own_watch = watch is None
        self.rpc = rpc or RpcClient(pool)
        self._counters: dict[str, itertools.count[int]] = {}
        self.in_flight: dict[str, int] = {}
        """This client's calls in flight per instance key."""
        self.fallbacks = 0
        """Calls sent to the shared subject because no instance was known."""

    async def start(self) -> DiscoveryClient:
        await self.watch.start()
        return self

    async def close(self) -> None:
        if self._own_watch:
            await self.watch.stop()

    def pick(self, service: str, strategy: Strategy | None = None) -> ServiceInstance | None:
        """The instance the next call to ``service`` goes to, or None when none is known."""
        candidates = self.watch.routable(service)
        if not candidates:
            return None
        how = strategy or self.strategy
        if len(candidates) == 1:
            return candidates[0]
        if how == "random":
            return random.choice(candidates)
        counter = self._counters.get(service)
        if counter is None:
            counter = self._counters[service] = itertools.count()
        start = next(counter) % len(candidates)
        if how == "round_robin":
            return candidates[start]
        # least in flight; the rotating start spreads ties evenly
        rotated = candidates[start:] + candidates[:start]
        return min(rotated, key=lambda r: self.in_flight.get(r.key, 0))

    async def call(
        self,
        service: str,
        method: str,
        payload: Any = None,
        *,
        timeout: float | None = None,
        response_model: Any = None,
        call_id: str | None = None,
        headers: dict[str, str] | None = None,
        strategy: Strategy | None = None,
    ) -> Any:
        """Call ``service.method`` on a discovered instance; same errors as :meth:`RpcClient.call` and the
        same deadline rule (:func:`~aegis.sdk.deadline.effective_timeout`). Instances that nobody answers on are
        skipped within the same deadline."""
        timeout = effective_timeout(self.pool, service, method, timeout)
        deadline = time.monotonic() + timeout
        while True:
            chosen = self.pick(service, strategy)
            left = deadline - time.monotonic()
            if left <= 0:
                raise RpcTimeout(f"{service}.{method}: no instance answered within {timeout:.3f}s")
            if chosen is None:
                self.fallbacks += 1
                return await self.rpc.call(
                    service,
                    method,
                    payload,
                    timeout=left,
                    response_model=response_model,
                    call_id=call_id,
                    headers=headers,
                )
            key = chosen.key
            self.in_flight[key] = self.in_flight.get(key, 0) + 1
            try:
                return await self.rpc.call(
                    service,
                    method,
                    payload,
                    timeout=left,
                    response_model=response_model,
                    instance=chosen.instance_id,
                    call_id=call_id,
                    headers=headers,
                    retry_no_responders=False,
                )
            except NoResponders:
                log.debug("%s did not answer; trying another instance", key)
                self.watch.suspect(chosen)
            finally:
                self.in_flight[key] -= 1
