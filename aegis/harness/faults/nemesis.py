"""The nemesis: faults on real SDK processes, ``nats-server`` nodes and the network, as data.

A :class:`~aegis.harness.faults.fault.Fault` says *what* (``kind``), *to whom* (``target``), for *how long*
(``duration_s``); the :class:`Nemesis` applies it to a :class:`~aegis.harness.cluster.local.LocalCluster` and to SDK instances reached
through the small :class:`InstanceControl` protocol (the campaign runner implements it; this module
does not import the failover rig), heals it, and records every step as a :class:`FaultEvent`
(monotonic and wall time, resolved target, details such as pids, old/new stream leader, nft chain).

Fault kinds
-----------
=========================  ======================================================================
``instance-kill``          SIGKILL an SDK instance; heal: restart it
``instance-pause``         SIGSTOP an instance for ``duration_s``; heal: SIGCONT
``instance-stop``          graceful SIGTERM; heal: restart it
``node-kill``              SIGKILL a ``nats-server`` node; heal (after ``duration_s``): restart it
``node-pause``             SIGSTOP a node; heal: SIGCONT
``node-lame-duck``         lame-duck restart: SIGUSR2, the node hands over and exits; heal: wait for
                           that exit (bounded), start it again
``stream-leader-kill``     ``node-kill`` of the node leading ``stream`` (default target)
``stream-leader-stepdown`` ``$JS.API.STREAM.LEADER.STEPDOWN.<stream>``; waits for a new leader
``partition-node``         the target node's routes to every other node cut for ``duration_s``
``partition-minority``     a minority of nodes (with the target) cut from the majority
``partition-instance``     an instance cut from the server(s) it is connected to now (found from
                           ``/proc/<pid>`` sockets), from ``peer`` (a node name), or from ``"all"``
``partition-one-way``      drop only what ``target`` sends to ``peer`` (nodes: route traffic;
                           instance -> node or node -> instance: client traffic)
``worker-kill``            SIGKILL a command worker process while it runs a command; heal: restart it
``worker-pause``           SIGSTOP a command worker while it runs a command, for ``duration_s``
                           (longer than its ``ack_wait``: the command moves on); heal: SIGCONT
=========================  ======================================================================

Targets: a name (``"n2"``, ``"L1"``), ``"active"`` / ``"standby"`` (of the single-active group,
from :meth:`InstanceControl.active`), ``"random"`` (drawn from the nemesis' seeded RNG), ``"stream-leader:<stream>"``
``"meta-leader"`` and ``"active-node"`` (the node the active instance's first connection is attached to, from
``/connz``) for nodes. Worker faults act on the ``workers`` control (the command workload's
processes); their target ``"busy"`` (or ``"active"``) is a worker that holds a command now. The worker is
stopped first and its held commands read (the control's optional ``holding(name)``); when it turns out to
hold none, it is resumed and another is picked (up to 5 times), so the kill or pause lands mid-command. The
held call ids are in the apply event's details.

Partitions need nftables as root and gids on the processes (``LocalCluster(node_gids=True)``,
:meth:`InstanceControl.gid`); when unavailable, partition faults are recorded as ``skip`` with the
reason and everything else still runs.

Example::

    nem = Nemesis(cluster, rig_control, seed=7)   # "random" targets are drawn from random.Random(7)
    try:
        nem.run(Fault("instance-kill", "active"))
        nem.run(Fault("partition-node", "n2", duration_s=5))
    finally:
        nem.close()                    # heal_all() + drop the nft table
    events = nem.events

The order and timing of faults is the campaign's (:mod:`aegis.harness.campaign.schema`), not the nemesis'.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import signal
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

from aegis.harness.cluster.local import ClusterError, LocalCluster, NodeInfo
from aegis.harness.faults.fault import PARTITION_KINDS, Fault
from aegis.harness.faults.firewall import (
    Cut,
    Endpoint,
    Firewall,
    FirewallError,
    FirewallUnavailable,
    local_ports_to,
)

__all__ = [
    "ActiveFault",
    "AsyncNemesis",
    "FaultEvent",
    "FirewallUnavailable",
    "InstanceControl",
    "Nemesis",
    "NemesisError",
    "stream_step_down",
]

log = logging.getLogger(__name__)

WORKER_TRIES = 5
DEFAULT_STREAM = "KV_aegis_election"

Phase = Literal["apply", "heal", "skip", "error"]
Applied = tuple[str, Callable[[], dict[str, Any]] | None, dict[str, Any]]
"""What a fault handler returns: the resolved target, how to heal it (None: nothing to heal), the details."""


class NemesisError(RuntimeError):
    """A fault could not be resolved or applied (unknown target, no stream leader, ...)."""


@runtime_checkable
class InstanceControl(Protocol):
    """What the nemesis needs from whoever runs the SDK instances (the campaign runner).

    All methods are blocking; an asyncio runner calls the nemesis from a worker thread and bridges
    back to its loop (``asyncio.run_coroutine_threadsafe``) inside :meth:`restart`.
    """

    def names(self) -> Sequence[str]:
        """All instance names, running or not, in a stable order."""
        ...

    def active(self) -> str | None:
        """The single-active group's active instance now, or None when unknown."""
        ...

    def pid(self, name: str) -> int | None:
        """Pid of the instance's process, None when it is not running."""
        ...

    def gid(self, name: str) -> int | None:
        """Group id the instance's process runs with (for partitions), None when it has none."""
        ...

    def kill(self, name: str) -> None:
        """SIGKILL the instance."""
        ...

    def signal(self, name: str, sig: int) -> None:
        """Send ``sig`` to the instance's process."""
        ...

    def restart(self, name: str) -> None:
        """Start the instance again (after a kill or stop); return once it runs."""
        ...


# --------------------------------------------------------------------------------------------------
# Faults and records
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FaultEvent:
    """What the nemesis did, when: ``phase`` apply/heal/skip/error of ``fault`` on ``target``."""

    fault: Fault
    phase: Phase
    target: str
    mono: float
    wall: float
    details: dict[str, Any] = field(default_factory=dict)
    fault_id: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (the fault flattened under ``fault``)."""
        d = asdict(self)
        d["fault"] = self.fault.to_dict()
        return d


@dataclass
class ActiveFault:
    """A fault that has been applied and not healed yet."""

    id: int
    fault: Fault
    target: str
    applied: FaultEvent
    undo: Callable[[], dict[str, Any]] | None
    healed: bool = False

    @property
    def details(self) -> dict[str, Any]:
        """Details of the apply event (pids, cut chain, old/new leader, ...)."""
        return self.applied.details


# --------------------------------------------------------------------------------------------------
# JetStream stream leader step-down
# --------------------------------------------------------------------------------------------------


def stream_step_down(urls: Sequence[str], stream: str, timeout: float = 5.0) -> dict[str, Any]:
    """Ask JetStream to move ``stream``'s leadership (``$JS.API.STREAM.LEADER.STEPDOWN.<stream>``).

    Returns the API's JSON answer (``{"success": true}`` or an ``error``). Runs nats-py on its own
    event loop in a helper thread, so it is safe to call from sync code and from inside a running loop.
    """
    import nats

    async def go() -> dict[str, Any]:
        nc = await nats.connect(servers=list(urls), connect_timeout=2, allow_reconnect=False)
        try:
            msg = await nc.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}", b"", timeout=timeout)
            return json.loads(msg.data)  # type: ignore[no-any-return]
        finally:
            await nc.close()

    box: dict[str, Any] = {}

    def runner() -> None:
        try:
            box["ok"] = asyncio.run(go())
        except BaseException as e:  # noqa: BLE001 - handed back to the caller
            box["err"] = e

    t = threading.Thread(target=runner, name="aegis-stepdown", daemon=True)
    t.start()
    t.join(timeout + 10)
    if "err" in box:
        raise NemesisError(f"step-down of {stream} failed: {box['err']!r}") from box["err"]
    if "ok" not in box:
        raise NemesisError(f"step-down of {stream} did not finish in {timeout + 10:.0f} s")
    return box["ok"]  # type: ignore[no-any-return]


# --------------------------------------------------------------------------------------------------
# The nemesis
# --------------------------------------------------------------------------------------------------


class Nemesis:
    """Applies and heals :class:`Fault` s on a cluster and a set of SDK instances; records everything.

    Thread-safe (one fault operation at a time). ``seed`` seeds the RNG that resolves ``"random"``
    targets at apply time. ``firewall``: ``"auto"`` creates a :class:`~aegis.harness.faults.firewall.Firewall`
    (``nft``: its binary) and, when that is impossible, disables only the partition faults
    (:attr:`partition_unavailable` says why); a given Firewall is used (and closed by :meth:`close`);
    None disables partitions. ``workers``: the command worker processes the ``worker-*`` faults act on.
    """

    def __init__(
        self,
        cluster: LocalCluster,
        instances: InstanceControl | None = None,
        *,
        seed: int = 0,
        stream: str = DEFAULT_STREAM,
        firewall: Firewall | Literal["auto"] | None = "auto",
        nft: str = "nft",
        leader_wait_s: float = 15.0,
        lame_duck_margin_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        workers: InstanceControl | None = None,
    ) -> None:
        self.cluster = cluster
        self.instances = instances
        self.workers = workers
        self.stream = stream
        self.rng = random.Random(seed)
        self.leader_wait_s = leader_wait_s
        self.lame_duck_margin_s = lame_duck_margin_s
        self.clock = clock
        self.events: list[FaultEvent] = []
        self.partition_unavailable: str | None = None
        self.firewall: Firewall | None = None
        if firewall == "auto":
            try:
                self.firewall = Firewall(nft=nft)
            except FirewallUnavailable as e:
                self.partition_unavailable = str(e)
                log.warning("partition faults disabled: %s", e)
        elif firewall is None:
            self.partition_unavailable = "no firewall given"
        else:
            self.firewall = firewall
        self._lock = threading.RLock()
        self._active: dict[int, ActiveFault] = {}
        self._ids = 0
        self._stop = threading.Event()

    # ---------------------------------------------------------------- records

    def _event(self, fault: Fault, phase: Phase, target: str, fid: int, **details: Any) -> FaultEvent:
        ev = FaultEvent(fault, phase, target, self.clock(), time.time(), details, fid)
        self.events.append(ev)
        log.info("nemesis %s %s on %s %s", phase, fault.kind, target, details or "")
        return ev

    @property
    def active_faults(self) -> list[ActiveFault]:
        """Faults applied and not healed yet, oldest first."""
        with self._lock:
            return list(self._active.values())

    # ---------------------------------------------------------------- target resolution

    def _need_instances(self) -> InstanceControl:
        if self.instances is None:
            raise NemesisError("this fault needs an InstanceControl (no instances given)")
        return self.instances

    def _instance(self, target: str, control: InstanceControl | None = None) -> str:
        ic = control or self._need_instances()
        names = list(ic.names())
        if target == "active":
            a = ic.active()
            if a is None:
                raise NemesisError("no active instance known")
            return a
        if target == "standby":
            a = ic.active()
            standbys = [n for n in names if n != a and ic.pid(n) is not None]
            if not standbys:
                raise NemesisError("no running standby")
            return self.rng.choice(standbys)
        if target == "random":
            running = [n for n in names if ic.pid(n) is not None]
            if not running:
                raise NemesisError("no running instance")
            return self.rng.choice(running)
        if target not in names:
            raise NemesisError(f"unknown instance {target!r} (known: {names})")
        return target

    def _node(self, target: str, stream: str | None = None) -> NodeInfo:
        c = self.cluster
        if target == "random":
            running = [n.name for n in c.nodes if n.running and not n.paused]
            if not running:
                raise NemesisError("no running node")
            return c.node(self.rng.choice(running))
        if target.startswith("stream-leader"):
            s = target.partition(":")[2] or stream or self.stream
            leader = c.stream_leader(s)
            if leader is None:
                raise NemesisError(f"no node leads stream {s!r} now")
            return c.node(leader)
        if target == "active-node":
            return self._active_node()
        if target == "meta-leader":
            leader = c.meta_leader()
            if leader is None:
                raise NemesisError("no JetStream meta leader now")
            return c.node(leader)
        try:
            return c.node(target)
        except ClusterError as e:
            raise NemesisError(str(e)) from e

    def _active_node(self) -> NodeInfo:
        """The node the active instance's first connection (``<service>-<instance>#0``, the one its
        subscriptions and renewals use) is attached to, from the nodes' ``/connz``."""
        active = self._need_instances().active()
        if active is None:
            raise NemesisError("no active instance known")
        suffix = f"-{active}#0"
        for node in self.cluster.nodes:
            if not node.running or node.paused:
                continue
            try:
                with urllib.request.urlopen(f"{node.monitor_url}/connz?limit=1024", timeout=2) as r:
                    conns = json.load(r).get("connections") or []
            except (OSError, ValueError):
                continue
            if any(str(conn.get("name", "")).endswith(suffix) for conn in conns):
                return node
        raise NemesisError(f"no node has a connection of the active instance {active}")

    def _is_node(self, name: str) -> bool:
        return (
            name in {n.name for n in self.cluster.nodes}
            or name in {"random", "meta-leader", "active-node"}
            or name.startswith("stream-leader")
        )

    # ---------------------------------------------------------------- endpoints

    @staticmethod
    def _route_endpoint(n: NodeInfo) -> Endpoint:
        if n.gid is None:
            raise FirewallError(
                f"node {n.name} has no gid: start the cluster with LocalCluster(node_gids=True) to cut routes"
            )
        return Endpoint(n.name, gid=n.gid, ports=frozenset({n.cluster_port}))

    @staticmethod
    def _client_endpoint(n: NodeInfo) -> Endpoint:
        return Endpoint(n.name, gid=n.gid, ports=frozenset({n.client_port}))

    def _instance_endpoint(self, name: str, nodes: Sequence[NodeInfo]) -> tuple[Endpoint, dict[int, int]]:
        ic = self._need_instances()
        pid = ic.pid(name)
        conns = local_ports_to(pid, [n.client_port for n in nodes]) if pid is not None else {}
        return Endpoint(name, gid=ic.gid(name), client_ports=frozenset(conns)), conns

    def _fw(self) -> Firewall:
        if self.firewall is None:
            raise FirewallUnavailable(self.partition_unavailable or "no firewall")
        return self.firewall

    # ---------------------------------------------------------------- apply / heal

    def apply(self, fault: Fault, *, note: Mapping[str, Any] | None = None) -> ActiveFault | None:
        """Start ``fault``. Returns the :class:`ActiveFault` to heal (already ``healed`` when there is
        nothing to heal, as for a step-down), or None when it was skipped (partitions without nftables).

        Raises :class:`NemesisError` (also recorded as an ``error`` event) when it cannot be applied.
        ``note`` is added to the apply/skip/error event's details (the schedule puts ``at_s`` and
        ``late_s`` there).
        """
        extra = dict(note or {})
        with self._lock:
            self._ids += 1
            fid = self._ids
            if fault.kind in PARTITION_KINDS and self.firewall is None:
                self._event(fault, "skip", fault.target, fid, reason=self.partition_unavailable, **extra)
                return None
            try:
                target, undo, details = self._do(fault)
            except FirewallUnavailable as e:
                self._event(fault, "skip", fault.target, fid, reason=str(e), **extra)
                return None
            except (NemesisError, ClusterError, FirewallError, OSError, TimeoutError) as e:
                self._event(fault, "error", fault.target, fid, error=f"{type(e).__name__}: {e}", **extra)
                raise NemesisError(f"{fault}: {e}") from e
            ev = self._event(fault, "apply", target, fid, **details, **extra)
            af = ActiveFault(fid, fault, target, ev, undo, healed=undo is None)
            if undo is None:
                return af
            self._active[fid] = af
            return af

    def heal(self, active: ActiveFault) -> FaultEvent | None:
        """End ``active`` (restart, SIGCONT, remove the cut...). Healing twice is a no-op (None)."""
        with self._lock:
            if active.healed or active.undo is None:
                return None
            active.healed = True
            self._active.pop(active.id, None)
            try:
                details = active.undo()
            except Exception as e:
                self._event(
                    active.fault, "error", active.target, active.id, error=f"heal: {type(e).__name__}: {e}"
                )
                raise
            return self._event(active.fault, "heal", active.target, active.id, **details)

    def run(self, fault: Fault, *, note: Mapping[str, Any] | None = None) -> list[FaultEvent]:
        """Apply ``fault``, hold it ``duration_s`` (interruptible by :meth:`stop`), heal it."""
        n0 = len(self.events)
        af = self.apply(fault, note=note)
        if af is not None:
            try:
                self._stop.wait(fault.duration_s)
            finally:
                self.heal(af)
        return self.events[n0:]

    def stop(self) -> None:
        """Make :meth:`run` return early (the fault in progress is healed)."""
        self._stop.set()

    def heal_all(self) -> list[FaultEvent]:
        """Heal every active fault (newest first), then make sure: no node paused or down, every
        cut removed. Safe to call any number of times; errors are logged, the rest still runs."""
        out: list[FaultEvent] = []
        with self._lock:
            for af in reversed(list(self._active.values())):
                try:
                    ev = self.heal(af)
                    if ev is not None:
                        out.append(ev)
                except Exception:  # noqa: BLE001 - keep healing the rest
                    log.exception("healing %s failed", af.fault)
            if self.firewall is not None:
                with contextlib.suppress(FirewallError):
                    self.firewall.heal()
            if not self.cluster._closed:  # noqa: SLF001 - a closed cluster has nothing to restore
                for n in self.cluster.nodes:
                    try:
                        if n.paused:
                            self.cluster.resume(n.name)
                        elif not n.running and n.pid is not None:
                            self.cluster.restart(n.name)
                    except Exception:  # noqa: BLE001
                        log.exception("restoring node %s failed", n.name)
        return out

    def close(self) -> None:
        """:meth:`heal_all`, then delete the nft table. Idempotent."""
        try:
            self.heal_all()
        finally:
            if self.firewall is not None:
                self.firewall.close()

    def __enter__(self) -> Nemesis:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- the faults

    def _do(self, f: Fault) -> Applied:
        """Perform ``f`` with its kind's handler (:attr:`HANDLERS`); return (resolved target, undo or None,
        details)."""
        handler = self.HANDLERS.get(f.kind)
        if handler is None:  # pragma: no cover - every FaultKind has one (tests/test_nemesis.py)
            raise NemesisError(f"fault kind {f.kind!r} not implemented")
        return handler(self, f)

    # -- instances: SIGKILL / SIGTERM (heal: restart it), SIGSTOP (heal: SIGCONT)

    def _running_instance(self, f: Fault) -> tuple[InstanceControl, str, int]:
        ic = self._need_instances()
        name = self._instance(f.target)
        pid = ic.pid(name)
        if pid is None:
            raise NemesisError(f"instance {name} is not running")
        return ic, name, pid

    def _instance_kill(self, f: Fault) -> Applied:
        ic, name, pid = self._running_instance(f)
        ic.kill(name)
        return (
            name,
            lambda: (ic.restart(name), {"pid": ic.pid(name)})[1],
            {"pid": pid, "signal": "SIGKILL"},
        )

    def _instance_stop(self, f: Fault) -> Applied:
        ic, name, pid = self._running_instance(f)
        ic.signal(name, signal.SIGTERM)
        return (
            name,
            lambda: (ic.restart(name), {"pid": ic.pid(name)})[1],
            {"pid": pid, "signal": "SIGTERM"},
        )

    def _instance_pause(self, f: Fault) -> Applied:
        ic, name, pid = self._running_instance(f)
        ic.signal(name, signal.SIGSTOP)

        def cont() -> dict[str, Any]:
            ic.signal(name, signal.SIGCONT)
            return {"pid": pid, "signal": "SIGCONT"}

        return name, cont, {"pid": pid, "signal": "SIGSTOP"}

    # -- nats-server nodes

    def _node_kill(self, f: Fault) -> Applied:
        """``node-kill``, and ``stream-leader-kill`` (whose ``"random"`` target is the stream's leader)."""
        c = self.cluster
        target = f.target
        if f.kind == "stream-leader-kill" and target == "random":
            target = "stream-leader"
        n = self._node(target, f.stream)
        status = c.kill(n.name)

        def restart() -> dict[str, Any]:
            info = c.restart(n.name)
            return {"pid": info.pid}

        details: dict[str, Any] = {"pid": n.pid, "exit": status}
        if f.kind == "stream-leader-kill":
            details["stream"] = f.stream or self.stream
        return n.name, restart, details

    def _node_pause(self, f: Fault) -> Applied:
        c = self.cluster
        n = self._node(f.target, f.stream)
        c.pause(n.name)

        def resume() -> dict[str, Any]:
            c.resume(n.name)
            return {"pid": n.pid}

        return n.name, resume, {"pid": n.pid}

    def _node_lame_duck(self, f: Fault) -> Applied:
        c = self.cluster
        n = self._node(f.target, f.stream)
        c.lame_duck(n.name, wait=False)
        bound = c.lame_duck_duration_s + c.lame_duck_grace_period_s + self.lame_duck_margin_s

        def back() -> dict[str, Any]:
            t = self.clock()
            try:
                status = c.wait_exit(n.name, bound)
            except TimeoutError:
                status = c.kill(n.name)  # recorded: it did not finish lame duck in time
                status = f"killed after {bound:.0f} s ({status})"
            waited = self.clock() - t
            info = c.restart(n.name)
            return {"exit": status, "exit_wait_s": round(waited, 3), "pid": info.pid}

        return n.name, back, {"pid": n.pid, "signal": "SIGUSR2"}

    def _stream_leader_stepdown(self, f: Fault) -> Applied:
        c = self.cluster
        stream = f.stream or (
            f.target.partition(":")[2] if f.target.startswith("stream-leader:") else self.stream
        )
        old = c.stream_leader(stream)
        if old is None:
            raise NemesisError(f"no node leads stream {stream!r} now")
        urls = [n.url for n in c.nodes if n.running and not n.paused]
        answer = stream_step_down(urls, stream)
        if not answer.get("success"):
            raise NemesisError(f"step-down of {stream} refused: {answer}")
        new = None
        deadline = self.clock() + self.leader_wait_s
        while self.clock() < deadline:
            new = c.stream_leader(stream)
            if new is not None and new != old:
                break
            time.sleep(0.05)
        return old, None, {"stream": stream, "old_leader": old, "new_leader": new}

    # -- partitions (nftables cuts; heal: remove the cut)

    def _partition_node(self, f: Fault) -> Applied:
        fw = self._fw()
        nodes = self.cluster.nodes
        n = self._node(f.target, f.stream)
        side_a = [self._route_endpoint(n)]
        side_b = [self._route_endpoint(m) for m in nodes if m.name != n.name]
        cut = fw.cut_sets(side_a, side_b)
        return n.name, self._uncut(cut), {"cut": cut.chain, "isolated": [n.name]}

    def _partition_minority(self, f: Fault) -> Applied:
        fw = self._fw()
        nodes = self.cluster.nodes
        n = self._node(f.target, f.stream)
        size = max(1, (len(nodes) - 1) // 2)
        others = [m.name for m in nodes if m.name != n.name]
        minority = [n.name, *self.rng.sample(others, size - 1)]
        side_a = [self._route_endpoint(m) for m in nodes if m.name in minority]
        side_b = [self._route_endpoint(m) for m in nodes if m.name not in minority]
        cut = fw.cut_sets(side_a, side_b)
        majority = [m.name for m in nodes if m.name not in minority]
        return n.name, self._uncut(cut), {"cut": cut.chain, "minority": minority, "majority": majority}

    def _partition_instance(self, f: Fault) -> Applied:
        fw = self._fw()
        nodes = self.cluster.nodes
        name = self._instance(f.target)
        ep, conns = self._instance_endpoint(name, nodes)
        by_port = {m.client_port: m for m in nodes}
        if f.peer in (None, "connected"):
            servers = sorted({by_port[p].name for p in conns.values()})
            if not servers:
                raise NemesisError(f"instance {name} has no connection to any node now")
        elif f.peer == "all":
            servers = [m.name for m in nodes]
        else:
            servers = [self._node(f.peer).name]
        srv_eps = [self._client_endpoint(m) for m in nodes if m.name in servers]
        cut = fw.cut_sets([ep], srv_eps)
        details: dict[str, Any] = {"cut": cut.chain, "servers": servers, "local_ports": sorted(conns)}
        if ep.gid is None:
            details["warning"] = "instance has no gid: only its current connections are cut"
        return name, self._uncut(cut), details

    def _partition_one_way(self, f: Fault) -> Applied:
        fw = self._fw()
        nodes = self.cluster.nodes
        src_name = f.target
        if src_name == "random" or self._is_node(src_name):
            src_node = self._node(src_name, f.stream)
            peer = f.peer or self.rng.choice([m.name for m in nodes if m.name != src_node.name])
            if self._is_node(peer):
                dst_node = self._node(peer, f.stream)
                cut = fw.cut_one_way(self._route_endpoint(src_node), self._route_endpoint(dst_node))
                return (
                    src_node.name,
                    self._uncut(cut),
                    {"cut": cut.chain, "from": src_node.name, "to": dst_node.name, "traffic": "routes"},
                )
            inst = self._instance(peer)
            ep, conns = self._instance_endpoint(inst, nodes)
            cut = fw.cut_one_way(self._client_endpoint(src_node), ep)
            return (
                src_node.name,
                self._uncut(cut),
                {"cut": cut.chain, "from": src_node.name, "to": inst, "traffic": "client"},
            )
        inst = self._instance(src_name)
        if f.peer is None:
            raise NemesisError("partition-one-way from an instance needs a peer node")
        dst_node = self._node(f.peer, f.stream)
        ep, conns = self._instance_endpoint(inst, nodes)
        cut = fw.cut_one_way(ep, self._client_endpoint(dst_node))
        return (
            inst,
            self._uncut(cut),
            {"cut": cut.chain, "from": inst, "to": dst_node.name, "traffic": "client"},
        )

    # -- command workers

    def _worker_fault(self, f: Fault) -> Applied:
        """``worker-kill`` / ``worker-pause``: stop a worker that holds a command (see the module docstring),
        then kill it or leave it stopped."""
        wc = self.workers
        if wc is None:
            raise NemesisError(f"{f.kind} needs command workers (no workers given)")
        holding: Callable[[str], Sequence[str]] = getattr(wc, "holding", lambda name: [])
        target = "active" if f.target == "busy" else f.target
        pick = target in ("active", "random")
        name, pid, held = "", 0, []
        for attempt in range(WORKER_TRIES if pick else 1):
            name = self._instance(target, wc)
            found = wc.pid(name)
            if found is None:
                raise NemesisError(f"worker {name} is not running")
            pid = found
            wc.signal(name, signal.SIGSTOP)
            held = list(holding(name))
            if held or not pick or attempt == WORKER_TRIES - 1:
                break
            wc.signal(name, signal.SIGCONT)  # finished its command meanwhile: try again
        details: dict[str, Any] = {"pid": pid, "holding": held, "tries": attempt + 1}
        if f.kind == "worker-kill":
            wc.kill(name)
            return (
                name,
                lambda: (wc.restart(name), {"pid": wc.pid(name)})[1],
                {**details, "signal": "SIGKILL"},
            )

        def cont() -> dict[str, Any]:
            wc.signal(name, signal.SIGCONT)
            return {"pid": pid, "signal": "SIGCONT"}

        return name, cont, {**details, "signal": "SIGSTOP"}

    def _uncut(self, cut: Cut) -> Callable[[], dict[str, Any]]:
        fw = self._fw()

        def undo() -> dict[str, Any]:
            dropped = fw.counters().get(cut.chain, 0)
            fw.heal(cut)
            return {"cut": cut.chain, "dropped_packets": dropped}

        return undo

    HANDLERS: ClassVar[Mapping[str, Callable[[Nemesis, Fault], Applied]]] = {
        "instance-kill": _instance_kill,
        "instance-pause": _instance_pause,
        "instance-stop": _instance_stop,
        "node-kill": _node_kill,
        "node-pause": _node_pause,
        "node-lame-duck": _node_lame_duck,
        "stream-leader-kill": _node_kill,
        "stream-leader-stepdown": _stream_leader_stepdown,
        "partition-node": _partition_node,
        "partition-minority": _partition_minority,
        "partition-instance": _partition_instance,
        "partition-one-way": _partition_one_way,
        "worker-kill": _worker_fault,
        "worker-pause": _worker_fault,
    }
    """Fault kind -> its handler: performs the fault, returns (resolved target, undo or None, details)."""


class AsyncNemesis:
    """The same nemesis for asyncio code: every blocking operation runs in a worker thread.

    ``inject`` raises :class:`FirewallUnavailable` when a partition fault is skipped (no nft / no
    root), so a runner can count it as skipped; the skip is still recorded in :attr:`events`.
    The :class:`InstanceControl` given runs in that worker thread: bridge to the loop with
    ``asyncio.run_coroutine_threadsafe(coro, loop).result()`` where it needs async calls.

    Example::

        nem = AsyncNemesis(cluster, control, seed=campaign.seed)
        af = await nem.inject(Fault("node-kill", "stream-leader:KV_aegis_election", 3))
        await nem.heal_after(af, 3)
        await nem.heal_all()           # also in finally; then nem.close()
    """

    def __init__(self, cluster: LocalCluster, instances: InstanceControl | None = None, **kw: Any) -> None:
        self.sync = Nemesis(cluster, instances, **kw)

    @property
    def events(self) -> list[FaultEvent]:
        """Everything done so far (see :attr:`Nemesis.events`)."""
        return self.sync.events

    @property
    def partition_unavailable(self) -> str | None:
        """Why partition faults are skipped, or None."""
        return self.sync.partition_unavailable

    async def inject(self, fault: Fault) -> ActiveFault:
        """Apply ``fault`` (see :meth:`Nemesis.apply`)."""
        af = await asyncio.to_thread(self.sync.apply, fault)
        if af is None:
            raise FirewallUnavailable(self.sync.events[-1].details.get("reason") or "partitions unavailable")
        return af

    async def heal_after(self, active: ActiveFault, duration_s: float) -> FaultEvent | None:
        """Sleep ``duration_s`` then heal ``active`` (no-op when already healed)."""
        await asyncio.sleep(duration_s)
        return await self.restore(active)

    async def restore(self, active: ActiveFault) -> FaultEvent | None:
        """Heal ``active`` now (restart / SIGCONT / uncut); harmless when already healed."""
        return await asyncio.to_thread(self.sync.heal, active)

    async def heal_all(self) -> list[FaultEvent]:
        """See :meth:`Nemesis.heal_all`."""
        return await asyncio.to_thread(self.sync.heal_all)

    async def close(self) -> None:
        """See :meth:`Nemesis.close`."""
        await asyncio.to_thread(self.sync.close)
