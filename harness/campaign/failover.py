"""Failover of a single-active group with real processes: kill -9 / SIGTERM / SIGSTOP the active, measure.

:class:`FailoverRig` runs a single-active group (3 processes of ``python -m <instance_module> serve-active``,
by default :mod:`harness.demo`'s ledger) on a cluster, and two observers in this process:

* a **workload**: a :class:`~sdk.sticky.StickyClient` calling ``book`` back to back, recording every outcome
  (monotonic send/receive time, ok or failed, instance and epoch of the reply);
* a **split-brain prober**: calls ``book`` directly on each instance (no retries, short timeout) and records
  the successes with the epoch of the ``Aegis-Epoch`` header (the epoch the call was *admitted* under: a
  success proves the instance served under that epoch at some moment between the probe's send and receive).

The prober has **one connection pinned to every node** of the cluster (not one pool that lands wherever
it lands): a deposed active that keeps serving clients on a node cut off from the others is reachable only
through that node. Every ``probe_interval_s`` (``I``, default 20 ms) each instance is probed through each
node; the nodes are staggered, so with ``N`` nodes an instance is probed every ``I / N`` (about 7 ms on 3
nodes). Probes are fire-and-forget tasks (at most ``ceil(probe_timeout_s / I) + 1`` in flight per instance
and node): a paused or unreachable instance's probes, which wait out ``probe_timeout_s``, delay neither the
other instances' probes nor the next probes of that same instance (so the first thing it does after SIGCONT
is answer a fresh probe). A connection that failed over to another node (its node was killed) is pinned
back once that node is up again.

Split brain, as measured here (:func:`harness.campaign.checkers.split_brain`): a success from epoch ``e1`` whose *send*
time is after the *receive* time of a success from a newer epoch ``e2 > e1``: the deposed active served after
its successor had served. The **overlap** the prober must see is that stretch: how long a deposed active
keeps serving after its successor started serving. Any overlap above ``2 * I / N + 1.5 * RTT`` is seen for
sure (about 15 ms with 3 nodes and a loopback RTT of about 1 ms), or above ``I + I / N + 1.5 * RTT`` (about
30 ms) when only one node still reaches the deposed active: below 50 ms, and small against the lease (0.9 s)
that bounds how long an election can be uncertain. Epoch regressions: replies the sticky client accepted
whose epoch is below one it accepted before (must be 0). The client-visible gap of a fault: fault time ->
first successful sticky reply from a newer epoch.

The instance program is replaceable (``instance_module``): any module that takes :mod:`harness.demo`'s
``serve-active`` command line. The negative control of the split-brain check runs a test-only module whose
instances never stop serving once active (``tests/unfenced_instance.py``).

:func:`run_failover` is ``aegis failover``: a local 3-node cluster, ``kills`` kill -9 and ``graceful`` SIGTERM
of the active in seeded order, each killed process restarted and back as a standby before the next fault.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aegis.stats import MIN_P99_SAMPLES, percentile, recorded, spread_text
from harness.campaign.checkers import Call, Hit, epoch_regressions, longest_gap, split_brain
from harness.cluster.gids import allocate_gids
from harness.cluster.local import LocalCluster, install_signal_cleanup
from harness.cluster.processes import spawn, wait_stopped
from harness.demo.services import ACTIVE_SERVICE, BookRequest
from sdk import wire
from sdk.codec import decode
from sdk.config import load_settings
from sdk.connection import ConnectionPool
from sdk.election import ElectionParams
from sdk.errors import AegisError, NotActive
from sdk.rpc import RpcClient
from sdk.sticky import StickyClient
from sdk.trace_events import Action as TraceAction
from sdk.trace_events import Trace, TraceParams, TraceWriter, merge_traces

ROOT = Path(__file__).resolve().parents[2]
INSTANCES = ("L1", "L2", "L3")
INSTANCE_MODULE = "harness.demo"
"""The program the rig runs instances with (``python -m INSTANCE_MODULE serve-active ...``)."""
REPIN_EVERY_S = 1.0
"""How often the prober checks that each of its connections is still on its own node."""

Progress = Callable[[int, int, str], None]
"""``progress(done, total, what)``: called before and after each fault."""


@dataclass(frozen=True)
class RigParams:
    """Timing of the group under test and of the observers. Election defaults are the SDK's."""

    election: ElectionParams = field(default_factory=ElectionParams)
    ttl_s: int = 10
    attempt_timeout_s: float = 1.0
    """Sticky client's per-attempt timeout: an attempt sent to an instance killed while it held the request
    waits this long; the SDK default (1 s) would then dominate the gap for a handler that takes a millisecond."""
    call_timeout_s: float = 2.0
    probe_interval_s: float = 0.02
    """Between two probes of one instance through one node (nodes are staggered: see the module docstring)."""
    probe_timeout_s: float = 0.2
    start_timeout_s: float = 30.0
    max_run_s: float = 3600.0
    """Backstop: the workload and the prober stop by themselves after this long."""

    def as_dict(self) -> dict[str, float]:
        e = self.election
        return {
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


@dataclass(eq=False)
class _ProbeLink:
    """The prober's connection to one node (``url``), pinned there."""

    index: int
    url: str
    pool: ConnectionPool
    rpc: RpcClient
    repin: asyncio.Task[None] | None = None

    def off_node(self) -> bool:
        """Connected, but to another node than its own (nats-py failed over to a discovered server)."""
        now = self.pool.connected_urls[0]
        return now != "" and _hostport(now) != _hostport(self.url)


def _hostport(url: str) -> str:
    return url.rpartition("//")[2].rstrip("/")


class FailoverRig:
    """A single-active group of real processes plus the workload and the prober; see the module docstring.

    Use as ``async with FailoverRig(urls, service=...) as rig:``. Every wait is bounded in time.
    """

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
    ) -> None:
        self.urls = list(urls)
        self.service = service
        self.instance_module = instance_module
        """Module the instances run as (``python -m <it> serve-active ...``; harness.demo's command line)."""
        self.instances = list(instances)
        self.params = params or RigParams()
        self.log_dir = log_dir
        self.trace_dir = trace_dir
        """When set, every instance writes its election trace here (``<instance>.ndjson``) and the rig adds
        its crash/pause/resume events (``faults.ndjson``); :meth:`trace` merges them."""
        self._faults: TraceWriter | None = None
        self.gids: dict[str, int] = (
            dict(zip(self.instances, allocate_gids(len(self.instances)), strict=True)) if gids else {}
        )
        """Group id of each instance's processes (when ``gids``): the nemesis cuts their traffic by it."""
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.calls: list[Call] = []
        self.hits: list[Hit] = []
        self.not_active_at: dict[str, float] = {}
        """Last time each instance answered a probe with NotActive (it is up and a standby)."""
        self.probes_sent: Counter[str] = Counter()
        """Probes sent to each instance (all nodes together)."""
        self._pools: list[ConnectionPool] = []
        self._links: list[_ProbeLink] = []
        self._in_flight: Counter[tuple[int, str]] = Counter()
        self._probes: set[asyncio.Task[None]] = set()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.sticky: StickyClient | None = None

    async def __aenter__(self) -> FailoverRig:
        try:
            await self.start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- processes ---------------------------------------------------------------------------------------

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

    def _log_tail(self, instance: str, lines: int = 15) -> str:
        if self.log_dir is None:
            return ""
        path = self.log_dir / f"{self.service}-{instance}.log"
        try:
            tail = path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return "; its log ends:\n" + "\n".join(tail)

    async def start_instances(self, names: Sequence[str] | None = None) -> None:
        """Start instances (default: all) in parallel and wait until each is ready."""
        names = list(names or self.instances)
        for name in names:
            self.spawn_instance(name)
        await asyncio.gather(*(self.wait_ready(n) for n in names))

    def signal(self, instance: str, sig: int) -> float:
        """Send ``sig`` to the instance's process; returns the monotonic time just before sending.
        SIGSTOP and SIGCONT go into the trace as the spec's pause and resume."""
        proc = self.procs[instance]
        at = time.monotonic()
        if proc.poll() is None:
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
                params=TraceParams(lease=e.lease_s, drift=e.drift, ttl=self.params.ttl_s, renew=e.renew_s),
            )
        self._faults.emit(instance, action)

    def trace(self, out: Path) -> Trace:
        """Merge the instances' traces and the rig's fault events into ``out`` (call after :meth:`close`)."""
        assert self.trace_dir is not None, "the rig was started without a trace_dir"
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

    # -- observers ---------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the processes, the prober and the workload; return once the workload has a success."""
        await self.start_instances()
        settings = load_settings(servers=self.urls, name=f"failover-{self.service}")
        self._pools = [await ConnectionPool.connect(settings)]
        for i, url in enumerate(self.urls):
            pool = await self._connect_node(url, i)
            self._links.append(_ProbeLink(i, url, pool, RpcClient(pool)))
        self.sticky = StickyClient(self._pools[0], attempt_timeout_s=self.params.attempt_timeout_s)
        self._tasks = [asyncio.create_task(self._workload(), name="failover workload")]
        self._tasks.append(asyncio.create_task(self._prober(), name="split-brain prober"))
        await self.active(timeout=self.params.start_timeout_s)

    async def _connect_node(self, url: str, index: int) -> ConnectionPool:
        """One connection to the node at ``url`` only (nats-py may still fail over to a discovered server)."""
        settings = load_settings(servers=[url], name=f"probe-{self.service}-{index}")
        return await ConnectionPool.connect(settings, size=1)

    async def _workload(self) -> None:
        assert self.sticky is not None
        n = 0
        end = time.monotonic() + self.params.max_run_s
        # Bounded by the stop event, and by time and count as backstops.
        while not self._stop.is_set() and n < 10_000_000 and time.monotonic() < end:
            n += 1
            sent = time.monotonic()
            try:
                reply = await self.sticky.call_active(
                    self.service,
                    "book",
                    BookRequest(ref=f"w{n}", amount=n),
                    timeout=self.params.call_timeout_s,
                )
            except AegisError as exc:
                self.calls.append(Call(sent, time.monotonic(), False, error=f"{type(exc).__name__}: {exc}"))
                await asyncio.sleep(0.01)  # an error that comes back at once must not spin
                continue
            self.calls.append(Call(sent, time.monotonic(), True, reply["instance"], int(reply["epoch"])))

    async def _prober(self) -> None:
        """Start a probe of every instance through one node every ``probe_interval_s / nodes``, rotating over
        the nodes; never waits for a probe to come back (see the module docstring)."""
        p = self.params
        links = self._links
        step = p.probe_interval_s / len(links)
        cap = math.ceil(p.probe_timeout_s / p.probe_interval_s) + 1
        start = time.monotonic()
        end = start + p.max_run_s
        next_repin = start + REPIN_EVERY_S
        k = 0
        # Bounded by the stop event, and by time and tick count as backstops.
        while not self._stop.is_set() and k < 1_000_000_000 and time.monotonic() < end:
            link = links[k % len(links)]
            for name in self.instances:
                if self._in_flight[(link.index, name)] < cap:
                    self._in_flight[(link.index, name)] += 1
                    self.probes_sent[name] += 1
                    task = asyncio.create_task(self._probe_once(link, name), name=f"probe {name}")
                    self._probes.add(task)
                    task.add_done_callback(self._probes.discard)
            now = time.monotonic()
            if now >= next_repin:
                next_repin = now + REPIN_EVERY_S
                for lk in links:
                    if lk.repin is None and lk.off_node():
                        lk.repin = asyncio.create_task(self._repin(lk), name=f"repin {lk.url}")
            k += 1
            if now > start + (k + 1) * step:  # fell behind (a busy loop): skip the missed ticks, no burst
                k = int((now - start) / step) + 1
            await asyncio.sleep(max(0.0, start + k * step - time.monotonic()))

    async def _probe_once(self, link: _ProbeLink, instance: str) -> None:
        p = self.params
        try:
            sent = time.monotonic()
            msg = await link.rpc.request(
                self.service,
                "book",
                BookRequest(ref="probe"),
                instance=instance,
                timeout=p.probe_timeout_s,
                retry_no_responders=False,
            )
            received = time.monotonic()
        except NotActive:
            self.not_active_at[instance] = time.monotonic()
        except AegisError:
            pass  # dead, paused, unreachable, or a withheld outcome (LeaseLost): only successes matter here
        else:
            epoch = int((msg.headers or {}).get(wire.EPOCH_HEADER, 0) or 0)
            try:
                who = str(decode(msg.data)["instance"])
            except (ValueError, TypeError, KeyError):
                who = instance
            self.hits.append(Hit(sent, received, who, epoch, node=link.url))
        finally:
            self._in_flight[(link.index, instance)] -= 1

    async def _repin(self, link: _ProbeLink) -> None:
        """Replace a connection that failed over to another node with a new one to its own node, once that
        node accepts connections again (a failed attempt is retried at the next check)."""
        try:
            try:
                pool = await self._connect_node(link.url, link.index)
            except AegisError:
                return
            old, link.pool, link.rpc = link.pool, pool, RpcClient(pool)
            try:
                await asyncio.sleep(self.params.probe_timeout_s)  # the probes in flight on the old one end
            finally:
                with contextlib.suppress(Exception):
                    await old.close()
        finally:
            link.repin = None

    async def close(self) -> None:
        """Stop the observers, SIGTERM the processes (SIGKILL after 5 s), close the connections."""
        self._stop.set()
        if self._tasks:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.gather(*self._tasks, return_exceptions=True), self.params.call_timeout_s + 2
                )
            for t in self._tasks:
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._tasks = []
        # probes end by their own timeout; repins are cancelled
        pending = [*self._probes, *(lk.repin for lk in self._links if lk.repin is not None)]
        if pending:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.gather(*self._probes, return_exceptions=True), self.params.probe_timeout_s + 1
                )
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
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
        if self.sticky is not None:
            with contextlib.suppress(Exception):
                await self.sticky.close()
        for pool in [*self._pools, *(lk.pool for lk in self._links)]:
            with contextlib.suppress(Exception):
                await pool.close()
        self._pools = []
        self._links = []

    # -- queries -----------------------------------------------------------------------------------------

    @property
    def pool(self) -> ConnectionPool:
        """The connections of the workload (for a test's own calls and registry reads)."""
        return self._pools[0]

    def last_ok(self) -> Call | None:
        for c in reversed(self.calls[-1000:]):
            if c.ok:
                return c
        return None

    async def active(self, timeout: float = 10.0, fresh_s: float = 0.2) -> tuple[str, int]:
        """(instance, epoch) of the active as the sticky client sees it: its last success, if recent."""
        deadline = time.monotonic() + timeout
        while True:
            c = self.last_ok()
            if c is not None and time.monotonic() - c.received <= fresh_s:
                return c.instance, c.epoch
            if time.monotonic() > deadline:
                last = self.calls[-1].error if self.calls else "no calls yet"
                raise TimeoutError(f"no recent successful call to {self.service}.book ({last})")
            await asyncio.sleep(0.01)

    async def wait_new_epoch(self, since: float, old_epoch: int, timeout: float = 15.0) -> Call | None:
        """The first successful sticky reply received after ``since`` from an epoch newer than ``old_epoch``."""
        deadline = time.monotonic() + timeout
        start = 0
        # calls complete in order, so the scan can start near the fault
        for i in range(len(self.calls) - 1, -1, -1):
            if self.calls[i].received < since:
                start = i
                break
        while time.monotonic() < deadline:
            calls = self.calls
            for i in range(start, len(calls)):
                c = calls[i]
                if c.ok and c.received > since and c.epoch > old_epoch:
                    return c
            start = max(start, len(calls) - 1)
            await asyncio.sleep(0.005)
        return None

    async def wait_standby(self, instance: str, since: float, timeout: float = 10.0) -> bool:
        """Wait until ``instance`` answers a probe with NotActive after ``since`` (it runs, as a standby)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.not_active_at.get(instance, 0.0) > since:
                return True
            await asyncio.sleep(0.01)
        return False

    async def wait_recovered(self, since: float, *, min_s: float, steady_s: float, timeout: float) -> bool:
        """Wait at least ``min_s`` after ``since``, then until the last ``steady_s`` had no 0.3 s without a
        success. False on timeout."""
        deadline = since + timeout
        while time.monotonic() < deadline:
            now = time.monotonic()
            if now - since >= min_s and longest_gap(self.calls[-20000:], now - steady_s, now) < 0.3:
                return True
            await asyncio.sleep(0.05)
        return False

    def summary(self) -> dict[str, Any]:
        """Counts over everything recorded so far."""
        pairs = split_brain(self.hits)
        return {
            "split_brain": len(pairs),
            "split_brain_examples": [{"old": asdict(old), "new": asdict(new)} for old, new in pairs[:5]],
            "epoch_regressions": epoch_regressions(self.calls),
            "calls": len(self.calls),
            "failed_calls": sum(1 for c in self.calls if not c.ok),
            "probe_successes": len(self.hits),
            "probes_sent": sum(self.probes_sent.values()),
            "probe_nodes": len(self.urls),
            "epochs_seen": sorted({h.epoch for h in self.hits}),
        }


# --- the measurement -----------------------------------------------------------------------------------


async def measure(
    urls: list[str],
    *,
    kills: int = 10,
    graceful: int = 5,
    seed: int = 1,
    params: RigParams | None = None,
    service: str = ACTIVE_SERVICE,
    progress: Progress | None = None,
    log_dir: Path | None = None,
) -> dict[str, Any]:
    """Kill -9 the active ``kills`` times and SIGTERM it ``graceful`` times (seeded order) on the cluster at
    ``urls``; restart each victim and wait until it is a standby before the next fault. The report dict."""
    rng = random.Random(seed)
    order = ["kill"] * kills + ["graceful"] * graceful
    rng.shuffle(order)
    params = params or RigParams()
    faults: list[dict[str, Any]] = []
    fault_times: list[float] = []
    started = time.monotonic()
    async with FailoverRig(urls, service=service, params=params, log_dir=log_dir) as rig:
        for i, kind in enumerate(order):
            # a random phase of the renewal cycle, so the gaps sample it rather than one point
            await asyncio.sleep(0.3 + rng.random() * params.election.renew_s * 2)
            victim, old_epoch = await rig.active()
            if progress:
                progress(i, len(order), f"{kind} of {victim} (epoch {old_epoch})")
            if kind == "kill":
                at = rig.kill(victim)
            else:
                at = rig.signal(victim, signal.SIGTERM)
            first = await rig.wait_new_epoch(at, old_epoch)
            fault_times.append(at)
            faults.append(
                {
                    "n": i + 1,
                    "kind": kind,
                    "instance": victim,
                    "old_epoch": old_epoch,
                    "new_instance": first.instance if first else None,
                    "new_epoch": first.epoch if first else None,
                    "gap_s": round(first.received - at, 4) if first else None,
                }
            )
            restarted = await rig.restart(victim)
            if not await rig.wait_standby(victim, restarted):
                raise RuntimeError(f"{victim} did not come back as a standby within 10 s")
        if progress:
            progress(len(order), len(order), "done")
        await asyncio.sleep(0.5)
        summary = rig.summary()
        # When a prober first saw the new epoch serve: the election's share of the gap (the rest is the
        # client's: learning the new leader from the watch, backoff, retries).
        for f, at in zip(faults, fault_times, strict=True):
            served = [h.received for h in rig.hits if h.received > at and h.epoch > f["old_epoch"]]
            f["probe_gap_s"] = round(min(served) - at, 4) if served else None
    kill_gaps = [f["gap_s"] for f in faults if f["kind"] == "kill" and f["gap_s"] is not None]
    stop_gaps = [f["gap_s"] for f in faults if f["kind"] == "graceful" and f["gap_s"] is not None]
    return {
        "kills": kills,
        "failover_p50_s": percentile(kill_gaps, 50),
        "failover_p99_s": percentile(kill_gaps, 99),
        "failover_max_s": max(kill_gaps) if kill_gaps else None,
        "graceful_stops": graceful,
        "graceful_p50_s": percentile(stop_gaps, 50),
        "graceful_p99_s": percentile(stop_gaps, 99),
        "graceful_max_s": max(stop_gaps) if stop_gaps else None,
        "failover_samples": len(kill_gaps),
        "graceful_samples": len(stop_gaps),
        "missed_failovers": sum(1 for f in faults if f["gap_s"] is None),
        "failover_gaps_s": kill_gaps,
        "graceful_gaps_s": stop_gaps,
        **summary,
        "faults": faults,
        "params": params.as_dict(),
        "seed": seed,
        "took_s": round(time.monotonic() - started, 1),
    }


def run_failover(
    *,
    kills: int = 10,
    graceful: int = 5,
    seed: int = 1,
    params: RigParams | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """``aegis failover``: start a local 3-node cluster, :func:`measure` on it, stop everything."""
    install_signal_cleanup()
    with tempfile.TemporaryDirectory(prefix="aegis-failover-") as tmp, LocalCluster(3) as cluster:
        if progress:
            progress(0, kills + graceful, "starting a 3-node cluster and 3 ledger instances")
        cluster.start()
        report = asyncio.run(
            measure(
                cluster.urls,
                kills=kills,
                graceful=graceful,
                seed=seed,
                params=params,
                progress=progress,
                log_dir=Path(tmp),
            )
        )
    report["command"] = f"aegis failover --kills {kills} --graceful {graceful} --seed {seed}"
    report["environment"] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }
    return report


# --- report --------------------------------------------------------------------------------------------


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1000:.0f} ms"


def _spread(report: dict[str, Any], key: str, samples_key: str) -> str:
    """``<key>_p50_s`` / ``_p99_s`` / ``_max_s`` with the sample count (a report recorded before
    ``<key>_samples`` counts its ``samples_key`` list); no p99 below the minimum sample count."""
    n = report.get(f"{key}_samples", len(report.get(samples_key) or []))
    figures = recorded(n, report[f"{key}_p50_s"], report[f"{key}_p99_s"], report[f"{key}_max_s"])
    return spread_text(figures, _ms)


def markdown(report: dict[str, Any]) -> str:
    """The report as markdown: the figures, every fault's gap, the parameters and how to reproduce it."""
    p = report["params"]
    lines = [
        "# Failover of a single-active group (real processes, local 3-node cluster)",
        "",
        f"Reproduce: `{report.get('command', 'aegis failover')} --json --out reports`",
        "",
        "Gap = fault (kill -9 or SIGTERM of the active) -> first successful sticky `book` reply from a newer"
        " epoch, as the calling client sees it. Each victim is restarted and back as a standby before the"
        " next fault. Split brain = a direct probe answered from an epoch after an answer from a newer epoch"
        " had come back.",
        "",
        "| figure | value |",
        "| --- | --- |",
        f"| kill -9 of the active | {report['kills']} |",
        f"| failover (kill -9) | {_spread(report, 'failover', 'failover_gaps_s')} |",
        f"| graceful stops (SIGTERM) | {report['graceful_stops']} |",
        f"| failover (graceful) | {_spread(report, 'graceful', 'graceful_gaps_s')} |",
        f"| split brain | {report['split_brain']} |",
        f"| epoch regressions (client) | {report['epoch_regressions']} |",
        f"| sticky calls / failed | {report['calls']} / {report['failed_calls']} |",
        f"| direct probe successes | {report['probe_successes']} |",
        f"| failovers without a new epoch in 15 s | {report['missed_failovers']} |",
        "",
        "Percentiles are nearest-rank over the faults of each kind (`aegis.stats`, the simulator's definition"
        f" too), each with its sample count; below {MIN_P99_SAMPLES} samples the maximum is given instead of"
        " a p99.",
        "",
        f"Reading the figures: after a kill -9 a standby campaigns one lease ({p['lease_s']} s) after the last"
        f" renewal it saw, and renewals come every {p['renew_s']} s, so the election alone takes"
        f" {p['lease_s'] - p['renew_s']:.2f}-{p['lease_s']:.2f} s plus a KV write and a watch delivery. A graceful"
        " stop deletes the key by compare-and-set and the standbys campaign on the delete marker at once.",
        "",
        "## Gaps",
        "",
        "`gap` is what the sticky client saw; `probe gap` is when a direct probe (every"
        f" {p['probe_interval_s'] * 1000:.0f} ms per instance and node) first got an answer from the new"
        " epoch, i.e. the election's share; the difference is the client's (watch, backoff, retries).",
        "",
        "| # | fault | victim | old epoch | new active | new epoch | gap | probe gap |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for f in report["faults"]:
        lines.append(
            f"| {f['n']} | {f['kind']} | {f['instance']} | {f['old_epoch']} | {f['new_instance'] or '-'}"
            f" | {f['new_epoch'] or '-'} | {_ms(f['gap_s'])} | {_ms(f.get('probe_gap_s'))} |"
        )
    lagged = [
        f"#{f['n']} (+{(f['gap_s'] - f['probe_gap_s']) * 1000:.0f} ms)"
        for f in report["faults"]
        if f["gap_s"] is not None
        and f.get("probe_gap_s") is not None
        and f["gap_s"] - f["probe_gap_s"] > 0.05
    ]
    if lagged:
        lines += [
            "",
            f"The sticky client lagged the first probe answer of the new epoch by more than 50 ms in {', '.join(lagged)}."
            " The cause seen when tracing the client's attempts in such a case: the watch names the new leader"
            " before that instance has processed its own acquire, it answers NotActive, and the client then"
            " waits out its grown retry backoff (up to 200 ms) as the key does not change until the next renewal.",
        ]
    lines += [
        "",
        "## Parameters",
        "",
        f"Election: lease {p['lease_s']} s, renew every {p['renew_s']} s, drift bound {p['drift']},"
        f" write timeout {p['write_timeout_s']} s (serving window {p['window_s']} s), key TTL backstop"
        f" {p['ttl_s']} s. Sticky client: attempt timeout {p['attempt_timeout_s']} s (an attempt stuck on a dead"
        " active is abandoned as soon as the election key names a new leader), call"
        f" timeout {p['call_timeout_s']} s. Prober: one connection per node, every {p['probe_interval_s']} s"
        f" per instance and node (nodes staggered), timeout {p['probe_timeout_s']} s.",
        "",
        f"Seed {report['seed']}; took {report['took_s']} s; {json.dumps(report.get('environment', {}))}."
        " Timings on a shared 2-core machine are noisy; compare runs made on the same machine.",
        "",
    ]
    return "\n".join(lines)


def write_report(report: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """Write ``out/failover.json`` and ``out/failover.md``; their paths."""
    out.mkdir(parents=True, exist_ok=True)
    jpath, mpath = out / "failover.json", out / "failover.md"
    jpath.write_text(json.dumps(report, indent=2) + "\n")
    mpath.write_text(markdown(report))
    return jpath, mpath


__all__ = [
    "Call",
    "FailoverRig",
    "Hit",
    "RigParams",
    "epoch_regressions",
    "longest_gap",
    "markdown",
    "measure",
    "run_failover",
    "split_brain",
    "write_report",
]
