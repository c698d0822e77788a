"""The processes of a single-active group under test, and nothing else (the rig's process control).

:class:`InstanceGroup` runs ``python -m <instance_module> serve-active ...`` processes (by default
:mod:`aegis.harness.demo`'s ledger, one per instance name) on a cluster: it starts them and waits for their ``ready``
line, signals, kills and restarts them, and stops them. Every signal it sends goes into the run's
:class:`~aegis.harness.campaign.history.History` as a :class:`~aegis.harness.campaign.history.ProcessEvent` stamped just
before the signal went out (the fault's own time: ``aegis failover`` measures its gaps from it), and, when the
group writes election traces (``trace_dir``), into the spec's trace as the crash / pause / resume the instances
cannot write themselves.

The instance program is replaceable (``instance_module``): any module that takes :mod:`aegis.harness.demo`'s
``serve-active`` command line. The negative control of the split-brain check runs a test-only module whose
instances never stop serving once active (``tests/unfenced_instance.py``).

:class:`RigParams` is the timing of the group (the SDK's election defaults, key TTL, start timeout) and of the
workloads that watch it (:mod:`aegis.harness.campaign.workload`'s sticky workload, :mod:`aegis.harness.campaign.prober`).
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from aegis.harness.campaign.history import History, ProcessEvent
from aegis.harness.cluster.gids import allocate_gids
from aegis.harness.cluster.processes import spawn, wait_stopped
from aegis.harness.demo.services import ACTIVE_SERVICE
from aegis.sdk.election import ElectionParams
from aegis.sdk.trace_events import Action as TraceAction
from aegis.sdk.trace_events import Trace, TraceParams, TraceWriter, merge_traces

__all__ = ["INSTANCES", "INSTANCE_MODULE", "InstanceGroup", "RigParams"]

ROOT = Path(__file__).resolve().parents[3]
INSTANCES = ("L1", "L2", "L3")
INSTANCE_MODULE = "aegis.harness.demo"
"""The program the rig runs instances with (``python -m INSTANCE_MODULE serve-active ...``)."""


@dataclass(frozen=True)
class RigParams:
    """Timing of the group under test and of the workloads that watch it. Election defaults are the SDK's."""

    election: ElectionParams = field(default_factory=ElectionParams)
    protocol: Literal["lease", "quorum"] = "lease"
    """The election the instances run (``SingleActiveService(election=...)``)."""
    ttl_s: int = 10
    attempt_timeout_s: float = 1.0
    """Sticky client's per-attempt timeout: an attempt sent to an instance killed while it held the request
    waits this long; the SDK default (1 s) would then dominate the gap for a handler that takes a millisecond."""
    call_timeout_s: float = 2.0
    probe_interval_s: float = 0.02
    """Between two probes of one instance through one node (nodes are staggered: see :mod:`aegis.harness.campaign.prober`)."""
    probe_timeout_s: float = 0.2
    start_timeout_s: float = 30.0
    max_run_s: float = 3600.0
    """Backstop: the sticky workload and the prober stop by themselves after this long."""

    def as_dict(self) -> dict[str, float | str]:
        e = self.election
        return {
            "election": self.protocol,
            "lease_s": e.lease_s,
            "renew_s": e.renew_s,
            "drift": e.drift,
            "write_timeout_s": e.write_timeout_s,
            "window_s": round(e.window_s, 4),
            "ttl_s": self.ttl_s,
            "attempt_timeout_s": self.attempt_timeout_s,
            "call_timeout_s": self.call_timeout_s,
            "probe_interval_s": self.probe_interval_s,
            "probe_timeout_s": self.probe_timeout_s,
        }


class InstanceGroup:
    """The processes of a single-active group (see the module docstring). Every wait is bounded in time."""

    def __init__(
        self,
        urls: list[str],
        *,
        history: History,
        service: str = ACTIVE_SERVICE,
        instances: Sequence[str] = INSTANCES,
        params: RigParams | None = None,
        log_dir: Path | None = None,
        trace_dir: Path | None = None,
        gids: bool = False,
        instance_module: str = INSTANCE_MODULE,
    ) -> None:
        self.urls = list(urls)
        self.history = history
        self.service = service
        self.instance_module = instance_module
        """Module the instances run as (``python -m <it> serve-active ...``; aegis.harness.demo's command line)."""
        self.instances = list(instances)
        self.params = params or RigParams()
        self.log_dir = log_dir
        self.trace_dir = trace_dir
        """When set, every instance writes its election trace here (``<instance>.ndjson``) and the group adds
        its crash/pause/resume events (``faults.ndjson``); :meth:`trace` merges them."""
        self._faults: TraceWriter | None = None
        self.gids: dict[str, int] = (
            dict(zip(self.instances, allocate_gids(len(self.instances)), strict=True)) if gids else {}
        )
        """Group id of each instance's processes (when ``gids``): the nemesis cuts their traffic by it."""
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def _args(self, instance: str) -> list[str]:
        e = self.params.election
        return [
            sys.executable,
            "-m",
            self.instance_module,
            "serve-active",
            "--instance",
            instance,
            "--service",
            self.service,
            "--lease",
            str(e.lease_s),
            "--renew",
            str(e.renew_s),
            "--drift",
            str(e.drift),
            "--write-timeout",
            str(e.write_timeout_s),
            "--ttl",
            str(self.params.ttl_s),
            *(["--election", self.params.protocol] if self.params.protocol != "lease" else []),
            *(["--trace", str(self.trace_dir / f"{instance}.ndjson")] if self.trace_dir else []),
            *self.urls,
        ]

    def spawn_instance(self, instance: str) -> subprocess.Popen[bytes]:
        """Start one instance process (not waiting for it); its stderr goes to ``log_dir`` if given."""
        stderr: Any = subprocess.DEVNULL
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            stderr = (self.log_dir / f"{self.service}-{instance}.log").open("ab")
        try:
            extra = {"group": self.gids[instance]} if instance in self.gids else {}
            self.history.add(ProcessEvent(instance, "start", time.monotonic()))
            proc = spawn(self._args(instance), stdout=subprocess.PIPE, stderr=stderr, cwd=ROOT, **extra)
        finally:
            if stderr is not subprocess.DEVNULL:
                stderr.close()
        self.procs[instance] = proc
        return proc

    async def wait_ready(self, instance: str) -> None:
        """Wait for the instance's ``ready`` line (bounded by ``start_timeout_s``)."""
        proc = self.procs[instance]
        assert proc.stdout is not None
        try:
            line = await asyncio.wait_for(
                asyncio.to_thread(proc.stdout.readline), self.params.start_timeout_s
            )
        except TimeoutError:
            proc.kill()
            raise RuntimeError(
                f"{self.service} instance {instance} did not say ready in time{self._log_tail(instance)}"
            ) from None
        if line.strip() != b"ready":
            await asyncio.to_thread(proc.wait, 5)
            raise RuntimeError(
                f"{self.service} instance {instance} failed to start (exit {proc.poll()}){self._log_tail(instance)}"
            )
        self.history.add(ProcessEvent(instance, "ready", time.monotonic()))

    def _log_tail(self, instance: str, lines: int = 15) -> str:
        if self.log_dir is None:
            return ""
        path = self.log_dir / f"{self.service}-{instance}.log"
        try:
            tail = path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return "; its log ends:\n" + "\n".join(tail)

    async def start(self, names: Sequence[str] | None = None) -> None:
        """Start instances (default: all) in parallel and wait until each is ready."""
        names = list(names or self.instances)
        for name in names:
            self.spawn_instance(name)
        await asyncio.gather(*(self.wait_ready(n) for n in names))

    def pid(self, instance: str) -> int | None:
        """Pid of the instance's process, None when it is not running."""
        proc = self.procs.get(instance)
        return proc.pid if proc is not None and proc.poll() is None else None

    def signal(self, instance: str, sig: int) -> float:
        """Send ``sig`` to the instance's process; returns the monotonic time just before sending (recorded in
        the history). SIGSTOP and SIGCONT go into the trace as the spec's pause and resume."""
        proc = self.procs[instance]
        at = time.monotonic()
        if proc.poll() is None:
            self.history.add(ProcessEvent(instance, signal.Signals(sig).name, at))
            if sig == signal.SIGCONT:
                # stamped before the signal: the process's first step after it may come within microseconds
                self._trace_fault(instance, TraceAction.RESUME)
            proc.send_signal(sig)
            if sig == signal.SIGSTOP:
                wait_stopped(proc.pid)  # its last trace line comes before the pause line
                self._trace_fault(instance, TraceAction.PAUSE)
        return at

    def kill(self, instance: str) -> float:
        """kill -9; returns the fault time."""
        at = self.signal(instance, signal.SIGKILL)
        self.procs[instance].wait(timeout=10)
        self._trace_fault(instance, TraceAction.CRASH)  # stamped after death: after its last line
        return at

    def _trace_fault(self, instance: str, action: TraceAction) -> None:
        if self.trace_dir is None:
            return
        if self._faults is None:
            e = self.params.election
            self._faults = TraceWriter(
                self.trace_dir / "faults.ndjson",
                params=TraceParams(
                    lease=e.lease_s,
                    drift=e.drift,
                    ttl=self.params.ttl_s,
                    renew=e.renew_s,
                    election=self.params.protocol,
                ),
            )
        self._faults.emit(instance, action)

    def trace(self, out: Path) -> Trace:
        """Merge the instances' traces and the group's fault events into ``out`` (call after :meth:`close`)."""
        assert self.trace_dir is not None, "the group was started without a trace_dir"
        return merge_traces(sorted(p for p in self.trace_dir.glob("*.ndjson") if p != out), out)

    async def wait_exit(self, instance: str, timeout: float = 10.0) -> int | None:
        """Wait for the process to exit (SIGKILL after ``timeout``); its exit status."""
        proc = self.procs[instance]
        try:
            return await asyncio.wait_for(asyncio.to_thread(proc.wait), timeout)
        except TimeoutError:
            proc.kill()
            return await asyncio.to_thread(proc.wait, 10)

    async def restart(self, instance: str) -> float:
        """Start a stopped/killed instance again under the same id; returns when it said ready."""
        await self.wait_exit(instance)
        started = time.monotonic()
        self.spawn_instance(instance)
        await self.wait_ready(instance)
        return started

    async def close(self) -> None:
        """SIGTERM the processes (SIGKILL after 5 s), close the trace writer."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)  # a paused process cannot handle SIGTERM
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        for proc in self.procs.values():
            try:
                await asyncio.to_thread(proc.wait, max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait, 10)
            if proc.stdout is not None:
                proc.stdout.close()
        if self._faults is not None:
            self._faults.close()
            self._faults = None
