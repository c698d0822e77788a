"""The failover rig: a single-active group of real processes under observation, as every campaign (and
``aegis failover``, a built-in campaign) runs it. It only assembles parts that each do one job:

* the processes: :class:`~aegis.harness.campaign.group.InstanceGroup` (start, signal, kill, restart, stop);
* two workloads: :class:`~aegis.harness.campaign.workload.StickyWorkload` (a sticky client calling ``book`` back to
  back) and :class:`~aegis.harness.campaign.prober.Prober` (the split-brain prober, one connection pinned to every node);
* one :class:`~aegis.harness.campaign.history.History` that all of them write into (a campaign's other workloads
  and its runner write into the same one); the checkers (:mod:`aegis.harness.campaign.checkers`) read it afterwards
  (:meth:`FailoverRig.observed`: what the group's workloads saw, judged).

Use as ``async with FailoverRig(urls, service=...) as rig:``; its methods are the parts' (``rig.kill`` is the
group's, ``rig.active`` the sticky workload's, ``rig.wait_standby`` the prober's), for tests and the runner.
:class:`RigControl` is the nemesis' :class:`~aegis.harness.faults.nemesis.InstanceControl` of a rig.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aegis.harness.campaign.group import INSTANCE_MODULE, INSTANCES, InstanceGroup, RigParams
from aegis.harness.campaign.history import Call, History, Hit
from aegis.harness.campaign.prober import ProbeLink, Prober
from aegis.harness.campaign.report import Observed, judge_group
from aegis.harness.campaign.workload import StickyWorkload
from aegis.harness.demo.services import ACTIVE_SERVICE
from aegis.sdk.config import load_settings
from aegis.sdk.connection import ConnectionPool
from aegis.sdk.trace_events import Trace

__all__ = ["FailoverRig", "RigControl"]


class FailoverRig:
    """A single-active group of real processes, its sticky workload and its prober, on one history; see the
    module docstring. Every wait is bounded in time."""

    def __init__(
        self,
        urls: list[str],
        *,
        service: str = ACTIVE_SERVICE,
        instances: Sequence[str] = INSTANCES,
        params: RigParams | None = None,
        log_dir: Path | None = None,
        trace_dir: Path | None = None,
        gids: bool = False,
        instance_module: str = INSTANCE_MODULE,
        history: History | None = None,
    ) -> None:
        self.urls = list(urls)
        self.service = service
        self.params = params or RigParams()
        self.history = history or History()
        self.group = InstanceGroup(
            self.urls,
            history=self.history,
            service=service,
            instances=instances,
            params=self.params,
            log_dir=log_dir,
            trace_dir=trace_dir,
            gids=gids,
            instance_module=instance_module,
        )
        self.prober = Prober(
            self.urls, service=service, instances=instances, history=self.history, params=self.params
        )
        self.sticky: StickyWorkload | None = None
        self._pool: ConnectionPool | None = None

    async def __aenter__(self) -> FailoverRig:
        try:
            await self.start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Start the processes, the prober and the sticky workload; return once the workload has a success."""
        await self.group.start()
        self._pool = await ConnectionPool.connect(
            load_settings(servers=self.urls, name=f"failover-{self.service}")
        )
        await self.prober.start()
        self.sticky = StickyWorkload(
            self._pool, history=self.history, service=self.service, params=self.params
        )
        await self.sticky.start()
        await self.sticky.active(timeout=self.params.start_timeout_s)

    async def stop_workloads(self) -> None:
        """Stop the sticky workload and the prober (the history ends here); the processes keep running."""
        await asyncio.gather(*(w.stop() for w in (self.sticky, self.prober) if w is not None))

    async def close(self) -> None:
        """Stop the workloads, SIGTERM the processes (SIGKILL after 5 s), close the connections."""
        await self.stop_workloads()
        await self.group.close()
        if self.sticky is not None:
            await self.sticky.close()
        await self.prober.close()
        if self._pool is not None:
            with contextlib.suppress(Exception):
                await self._pool.close()

    # -- the parts' views, for tests and the runner ----------------------------------------------------------

    @property
    def pool(self) -> ConnectionPool:
        """The sticky workload's connections (for a test's own calls and registry reads)."""
        assert self._pool is not None, "the rig is not started"
        return self._pool

    @property
    def instances(self) -> list[str]:
        return self.group.instances

    @property
    def calls(self) -> list[Call]:
        """The sticky calls so far (the history's live view)."""
        return self.history.calls("sticky")

    @property
    def hits(self) -> list[Hit]:
        """The prober's successes so far (the history's live view)."""
        return self.history.hits

    @property
    def probes_sent(self) -> Counter[str]:
        return self.prober.probes_sent

    @property
    def not_active_at(self) -> dict[str, float]:
        return self.prober.not_active_at

    @property
    def _links(self) -> list[ProbeLink]:
        """The prober's pinned connections (tests check where they are)."""
        return self.prober.links

    def observed(self) -> Observed:
        """What the workloads saw so far (:func:`aegis.harness.campaign.report.judge_group`)."""
        return judge_group(self.history, sum(self.probes_sent.values()), len(self.urls))

    def summary(self) -> dict[str, Any]:
        """:meth:`observed`, as JSON."""
        return self.observed().model_dump(mode="json")

    def _workload(self) -> StickyWorkload:
        assert self.sticky is not None, "the rig is not started"
        return self.sticky

    # processes
    def signal(self, instance: str, sig: int) -> float:
        """See :meth:`InstanceGroup.signal`."""
        return self.group.signal(instance, sig)

    def kill(self, instance: str) -> float:
        """See :meth:`InstanceGroup.kill`."""
        return self.group.kill(instance)

    async def restart(self, instance: str) -> float:
        """See :meth:`InstanceGroup.restart`."""
        return await self.group.restart(instance)

    async def wait_exit(self, instance: str, timeout: float = 10.0) -> int | None:
        """See :meth:`InstanceGroup.wait_exit`."""
        return await self.group.wait_exit(instance, timeout)

    def trace(self, out: Path) -> Trace:
        """See :meth:`InstanceGroup.trace`."""
        return self.group.trace(out)

    # what the workloads see
    def last_ok(self) -> Call | None:
        return self._workload().last_ok()

    async def active(self, timeout: float = 10.0, fresh_s: float = 0.2) -> tuple[str, int]:
        """See :meth:`StickyWorkload.active`."""
        return await self._workload().active(timeout, fresh_s)

    async def wait_new_epoch(self, since: float, old_epoch: int, timeout: float = 15.0) -> Call | None:
        """See :meth:`StickyWorkload.wait_new_epoch`."""
        return await self._workload().wait_new_epoch(since, old_epoch, timeout)

    async def wait_recovered(self, since: float, *, min_s: float, steady_s: float, timeout: float) -> bool:
        """See :meth:`StickyWorkload.wait_recovered`."""
        return await self._workload().wait_recovered(since, min_s=min_s, steady_s=steady_s, timeout=timeout)

    async def wait_standby(self, instance: str, since: float, timeout: float = 10.0) -> bool:
        """See :meth:`Prober.wait_standby`."""
        return await self.prober.wait_standby(instance, since, timeout)


class RigControl:
    """The :class:`~aegis.harness.faults.nemesis.InstanceControl` of a :class:`FailoverRig`, for the nemesis's worker
    thread: blocking calls, bridged to the rig's event loop where the rig is async."""

    def __init__(self, rig: FailoverRig, loop: asyncio.AbstractEventLoop) -> None:
        self.rig = rig
        self.loop = loop

    def names(self) -> list[str]:
        return list(self.rig.instances)

    def active(self) -> str | None:
        last = self.rig.last_ok()
        return last.instance if last is not None and time.monotonic() - last.received < 0.5 else None

    def pid(self, name: str) -> int | None:
        return self.rig.group.pid(name)

    def gid(self, name: str) -> int | None:
        return self.rig.group.gids.get(name)

    def kill(self, name: str) -> None:
        self.rig.kill(name)

    def signal(self, name: str, sig: int) -> None:
        self.rig.signal(name, sig)

    def restart(self, name: str) -> None:
        """Start it again and wait (bounded) until it answers as a standby."""

        async def again() -> None:
            started = await self.rig.restart(name)
            if not await self.rig.wait_standby(name, started, timeout=20):
                raise RuntimeError(f"{name} did not come back as a standby within 20 s")

        asyncio.run_coroutine_threadsafe(again(), self.loop).result(timeout=60)
