"""The one data feed of a dashboard process: it polls the management API and every browser session reads it.

Sessions never call the API for what the feed holds, so N open tabs cost the API what one does. When a poll fails
the last good data stays, marked stale with the time it was read and the reason (the page shows a banner).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field, replace

from aegis.management.api_models import ClusterView, GroupView, InstanceView

from .api_client import ApiError, ApiUnreachable, Credentials, ManagementClient

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Snapshot:
    """What the feed knows: the last data read and whether the API is answering now."""

    instances: list[InstanceView] = field(default_factory=list)
    groups: list[GroupView] = field(default_factory=list)
    cluster: ClusterView | None = None
    read_at: float | None = None
    """Wall-clock UNIX time of the last successful read of instances and groups (None: never)."""
    error: str | None = None
    """Set while the API (or NATS behind it) fails: the reason, in words."""
    error_since: float | None = None
    version: int = 0
    """Grows on every successful read, so sessions skip redraws when nothing new arrived."""

    @property
    def stale(self) -> bool:
        return self.error is not None


class Feed:
    """Polls ``/api/instances`` and ``/api/groups`` every ``interval_s``, ``/api/cluster`` every ``cluster_s``.

    Start it once per process on the server's event loop (:meth:`start`); read :attr:`snapshot` anywhere.
    """

    def __init__(
        self, client: ManagementClient, creds: Credentials, interval_s: float = 1.0, cluster_s: float = 3.0
    ) -> None:
        self._client = client
        self._creds = creds
        self.interval_s = interval_s
        self.cluster_s = cluster_s
        self.snapshot = Snapshot()
        self.polls = 0
        self._task: asyncio.Task[None] | None = None
        self._last_cluster = 0.0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="aegis-dashboard-feed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def poll_once(self) -> None:
        """One read of everything due; failures become the snapshot's ``error`` (never an exception)."""
        self.polls += 1
        snap = self.snapshot
        try:
            instances, groups = await asyncio.gather(
                self._client.instances(self._creds), self._client.groups(self._creds)
            )
            cluster = snap.cluster
            if time.monotonic() - self._last_cluster >= self.cluster_s or cluster is None:
                try:
                    cluster = await self._client.cluster(self._creds)
                    self._last_cluster = time.monotonic()
                except ApiError as exc:
                    log.warning("cluster view failed: %s", exc)
        except (ApiUnreachable, ApiError) as exc:
            reason = str(exc) if isinstance(exc, ApiUnreachable) else f"management API error {exc}"
            if isinstance(exc, ApiError) and exc.status in (401, 403):
                reason = f"the dashboard's API key was refused ({exc.status}): {exc.detail}"
            self.snapshot = replace(snap, error=reason, error_since=snap.error_since or time.time())
            return
        self.snapshot = Snapshot(
            instances=instances,
            groups=groups,
            cluster=cluster,
            read_at=time.time(),
            version=snap.version + 1,
        )

    async def _run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.poll_once()
            except Exception:  # a bug in parsing must not end the only feed of the process
                log.exception("dashboard feed poll failed")
            await asyncio.sleep(max(0.05, self.interval_s - (time.monotonic() - started)))
