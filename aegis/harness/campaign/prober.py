"""The split-brain prober: a workload that calls ``book`` directly on each instance of the single-active group
(no retries, short timeout) and writes every success into the history as a :class:`~aegis.harness.campaign.history.Hit`
with the epoch of the ``Aegis-Epoch`` header (the epoch the call was *admitted* under: a success proves the
instance served under that epoch at some moment between the probe's send and receive).

The prober has **one connection pinned to every node** of the cluster (not one pool that lands wherever
it lands): a deposed active that keeps serving clients on a node cut off from the others is reachable only
through that node. Every ``probe_interval_s`` (``I``, default 20 ms) each instance is probed through each
node; the nodes are staggered, so with ``N`` nodes an instance is probed every ``I / N`` (about 7 ms on 3
nodes). Probes are fire-and-forget tasks (at most ``ceil(probe_timeout_s / I) + 1`` in flight per instance
and node): a paused or unreachable instance's probes, which wait out ``probe_timeout_s``, delay neither the
other instances' probes nor the next probes of that same instance (so the first thing it does after SIGCONT
is answer a fresh probe). A connection that failed over to another node (its node was killed) is pinned
back once that node is up again.

Split brain, as measured here (:func:`aegis.harness.campaign.checkers.split_brain`): a success from epoch ``e1`` whose
*send* time is after the *receive* time of a success from a newer epoch ``e2 > e1``: the deposed active served
after its successor had served. The **overlap** the prober must see is that stretch: how long a deposed active
keeps serving after its successor started serving. Any overlap above ``2 * I / N + 1.5 * RTT`` is seen for
sure (about 15 ms with 3 nodes and a loopback RTT of about 1 ms), or above ``I + I / N + 1.5 * RTT`` (about
30 ms) when only one node still reaches the deposed active: below 50 ms, and small against the lease (0.9 s)
that bounds how long an election can be uncertain.

Failed probes prove nothing and are not recorded; the prober counts what it sent (:attr:`Prober.probes_sent`)
and keeps, as live state for the runner's waits, when each instance last answered ``NotActive`` (it runs, as a
standby: :meth:`Prober.wait_standby`).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from aegis.harness.campaign.group import RigParams
from aegis.harness.campaign.history import History, Hit
from aegis.harness.campaign.workload import end_loop
from aegis.harness.demo.services import BookRequest
from aegis.sdk import wire
from aegis.sdk.codec import decode
from aegis.sdk.config import load_settings
from aegis.sdk.connection import ConnectionPool
from aegis.sdk.errors import AegisError, NotActive
from aegis.sdk.rpc import RpcClient

__all__ = ["REPIN_EVERY_S", "ProbeLink", "Prober"]

REPIN_EVERY_S = 1.0
"""How often the prober checks that each of its connections is still on its own node."""


@dataclass(eq=False)
class ProbeLink:
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


class Prober:
    """Probes every instance of ``service`` through every node of ``urls``; see the module docstring."""

    def __init__(
        self,
        urls: list[str],
        *,
        service: str,
        instances: Sequence[str],
        history: History,
        params: RigParams | None = None,
    ) -> None:
        self.urls = list(urls)
        self.service = service
        self.instances = list(instances)
        self.history = history
        self.params = params or RigParams()
        self.links: list[ProbeLink] = []
        self.not_active_at: dict[str, float] = {}
        """Last time each instance answered a probe with NotActive (it is up and a standby)."""
        self.probes_sent: Counter[str] = Counter()
        """Probes sent to each instance (all nodes together)."""
        self._in_flight: Counter[tuple[int, str]] = Counter()
        self._probes: set[asyncio.Task[None]] = set()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Connect to every node and start probing."""
        for i, url in enumerate(self.urls):
            pool = await self._connect_node(url, i)
            self.links.append(ProbeLink(i, url, pool, RpcClient(pool)))
        self._task = asyncio.create_task(self._run(), name="split-brain prober")

    async def _connect_node(self, url: str, index: int) -> ConnectionPool:
        """One connection to the node at ``url`` only (nats-py may still fail over to a discovered server)."""
        settings = load_settings(servers=[url], name=f"probe-{self.service}-{index}")
        return await ConnectionPool.connect(settings, size=1)

    async def _run(self) -> None:
        """Start a probe of every instance through one node every ``probe_interval_s / nodes``, rotating over
        the nodes; never waits for a probe to come back (see the module docstring)."""
        p = self.params
        links = self.links
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

    async def _probe_once(self, link: ProbeLink, instance: str) -> None:
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
            self.history.add(Hit(sent, received, who, epoch, node=link.url))
        finally:
            self._in_flight[(link.index, instance)] -= 1

    async def _repin(self, link: ProbeLink) -> None:
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

    async def wait_standby(self, instance: str, since: float, timeout: float = 10.0) -> bool:
        """Wait until ``instance`` answers a probe with NotActive after ``since`` (it runs, as a standby)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.not_active_at.get(instance, 0.0) > since:
                return True
            await asyncio.sleep(0.01)
        return False

    async def stop(self) -> None:
        """Stop probing; the probes in flight end by their own timeout (repins are cancelled)."""
        self._stop.set()
        if self._task is not None:
            await end_loop(self._task, self.params.call_timeout_s + 2)
            self._task = None
        pending = [*self._probes, *(lk.repin for lk in self.links if lk.repin is not None)]
        if pending:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.gather(*self._probes, return_exceptions=True), self.params.probe_timeout_s + 1
                )
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def close(self) -> None:
        """:meth:`stop`, then close the connections."""
        await self.stop()
        for lk in self.links:
            with contextlib.suppress(Exception):
                await lk.pool.close()
        self.links = []
