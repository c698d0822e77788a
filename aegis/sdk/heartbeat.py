"""An instance's presence in the registry: its record, refreshed by compare-and-set heartbeats with a TTL.

On start the instance writes ``<service>.<instance_id>`` in ``aegis_instances`` with a per-key TTL, then
rewrites it every ``heartbeat_interval_s`` with its current status and metrics snapshot. Each write is a
compare-and-set on the revision of the previous one and carries the TTL again, so the server removes the
record ``instance_ttl_s`` after the last heartbeat of an instance that died (kill -9, power loss) and
watchers see an expiry marker. A graceful stop removes the record at once.

The heartbeat never gives up: while writes fail (KV without a stream leader, connection down) it keeps
retrying with a growing back-off (capped at the heartbeat interval), reports itself UNHEALTHY locally
(:attr:`Heartbeat.healthy`, :attr:`Heartbeat.status`), and goes back to its real status on the first write
that succeeds. If its record expired meanwhile, the compare-and-set fails with the marker's revision and the
next write recreates the record over it.

Every ``metrics_history_interval_s`` the metrics snapshot is also appended to the ``AEGIS_METRICS``
stream (subject ``aegis.metrics.<service>.<instance_id>``, bounded by age, count and bytes) for charts.
That history is best effort: a snapshot that cannot be stored is skipped, not queued.

Each of the two carries windowed figures over its own period (:mod:`aegis.sdk.metrics`, feeds
``heartbeat`` and ``history``): the record's cover the last heartbeat interval, the history's the last history
interval, and neither resets the other's. A heartbeat write that fails still consumed its window.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid

from . import wire
from .connection import ConnectionPool
from .errors import AegisError, Conflict
from .jetstream import js_publish
from .kv import kv_write
from .metrics import FEED_HEARTBEAT, FEED_HISTORY, InstanceMetrics
from .registry import MARKER_TTL_S, ensure_registry, instance_key
from .schema import InstanceStatus, ServiceInstance

log = logging.getLogger(__name__)

_FIRST_BACKOFF_S = 0.05


class Heartbeat:
    """Keeps one instance's registry record alive; see the module docstring.

    ::

        hb = Heartbeat(pool, metrics, version="1.2.0", config_hash=cfg.config_hash)
        await hb.start()                                   # record written, status ACTIVE
        hb.update(status=InstanceStatus.STANDBY, role="standby", epoch=7)   # written within ms
        await hb.stop()                                    # record removed
    """

    def __init__(
        self,
        pool: ConnectionPool,
        metrics: InstanceMetrics,
        *,
        version: str = "0.0.0",
        config_hash: str = "",
        status: InstanceStatus = InstanceStatus.ACTIVE,
        group: str | None = None,
    ) -> None:
        settings = pool.settings
        self.pool = pool
        self.metrics = metrics
        self.key = instance_key(metrics.service, metrics.instance_id)
        self.interval = settings.heartbeat_interval_s
        self.ttl_s = settings.instance_ttl_s
        self._base = ServiceInstance(
            service=metrics.service,
            instance_id=metrics.instance_id,
            version=version,
            host=socket.gethostname(),
            pid=os.getpid(),
            status=status,
            started_at=time.time(),
            heartbeat_interval_s=self.interval,
            ttl_s=self.ttl_s,
            config_hash=config_hash,
            group=group,
        )
        self.revision = 0
        """KV revision of the last successful write (0 before the first)."""
        self.healthy = False
        self.last_error = ""
        self.writes = 0
        self.failures = 0
        self._poke = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    @property
    def status(self) -> InstanceStatus:
        """The status this instance reports: UNHEALTHY while it cannot write its record."""
        return self._base.status if self.healthy else InstanceStatus.UNHEALTHY

    @property
    def record(self) -> ServiceInstance:
        """The record as the next heartbeat will write it (without the fresh metrics)."""
        return self._base

    def update(
        self,
        *,
        status: InstanceStatus | None = None,
        role: str | None = None,
        epoch: int | None = None,
    ) -> None:
        """Change status / role / epoch; the record is rewritten at once, not at the next heartbeat."""
        changes = {k: v for k, v in (("status", status), ("role", role), ("epoch", epoch)) if v is not None}
        self._base = self._base.model_copy(update=changes)
        self._poke.set()

    async def start(self) -> None:
        """Write the record (or start retrying if KV is unavailable) and start the heartbeat loops."""
        if self._tasks:
            return
        self._stopping = False
        await ensure_registry(self.pool)
        await self._write()
        self._tasks = [asyncio.create_task(self._beat(), name=f"heartbeat {self.key}")]
        if self.pool.settings.metrics_history_interval_s > 0:
            self._tasks.append(asyncio.create_task(self._history(), name=f"metrics history {self.key}"))

    async def stop(self, timeout: float = 2.0) -> None:
        """Stop heartbeating and remove the record (a purge marker that ages out)."""
        tasks, self._tasks = self._tasks, []
        if not tasks:
            return
        self._stopping = True
        for task in tasks:
            task.cancel()
        # A cancel can be lost inside nats-py's request (asyncio.wait_for in 3.11 swallows it when the
        # reply lands at the same moment); the loops also check _stopping, so they end within one write.
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        try:
            # Not a compare-and-set: the key is this instance's own, whatever its last revision.
            await kv_write(
                self.pool,
                wire.INSTANCES_BUCKET,
                self.key,
                b"",
                revision=None,
                ttl_s=MARKER_TTL_S,
                purge=True,
                timeout=timeout,
            )
        except AegisError as exc:
            log.warning("%s: could not remove the registry record (%s); it expires by TTL", self.key, exc)

    async def _beat(self) -> None:
        delay = self.interval
        streak = 0  # failed writes in a row
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poke.wait(), delay)
            self._poke.clear()
            streak = 0 if await self._write() else streak + 1
            delay = min(self.interval, _FIRST_BACKOFF_S * 2**streak) if streak else self.interval

    async def _write(self) -> bool:
        """One heartbeat; True if it was stored. Never raises for KV trouble."""
        record = self._base.model_copy(
            update={"last_heartbeat": time.time(), "metrics": self.metrics.snapshot(FEED_HEARTBEAT)}
        )
        data = record.model_dump_json().encode()
        timeout = max(0.2, min(self.interval, 2.0))
        for _ in range(2):  # a lost compare-and-set is retried once on the revision it reported
            try:
                self.revision = await kv_write(
                    self.pool,
                    wire.INSTANCES_BUCKET,
                    self.key,
                    data,
                    revision=self.revision,
                    ttl_s=self.ttl_s,
                    timeout=timeout,
                )
            except Conflict as exc:
                # The record expired (marker), or an earlier write was stored though its ack was lost,
                # or this id restarted within the TTL: the key is ours, continue from its revision.
                self.revision = exc.revision
                continue
            except AegisError as exc:
                return self._failed(str(exc))
            self.writes += 1
            if not self.healthy:
                if self.failures:
                    log.info("%s: registry heartbeat written again", self.key)
                self.healthy = True
            return True
        return self._failed("compare-and-set lost twice")

    def _failed(self, error: str) -> bool:
        self.failures += 1
        self.last_error = error
        if self.healthy:
            log.warning("%s: registry heartbeat failed (%s); UNHEALTHY until it works again", self.key, error)
        self.healthy = False
        return False

    async def _history(self) -> None:
        subject = wire.metrics_subject(self.metrics.service, self.metrics.instance_id)
        period = self.pool.settings.metrics_history_interval_s
        while not self._stopping:
            await asyncio.sleep(period)
            data = self.metrics.snapshot(FEED_HISTORY).model_dump_json().encode()
            headers = {wire.MSG_ID_HEADER: uuid.uuid4().hex}
            try:
                await js_publish(self.pool, subject, data, headers, min(period, 2.0), "metrics history")
            except AegisError as exc:
                log.debug("%s: metrics snapshot not stored: %s", self.key, exc)
