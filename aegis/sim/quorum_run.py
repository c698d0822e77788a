"""The quorum lease simulated (issue 18): runs, checks, node crashes, the predicted gap, and campaigns.

One run is :class:`aegis.sim.run.Simulation` (its seeded RNG, its fault plan and its instance faults: crash, stop,
pause, latepause, pausestop, gc, netdelay, clock drift) with the quorum lease's parts: three buckets
(:mod:`aegis.sim.quorum_kv`), processes driving the SDK's ``QuorumElection`` and sticky clients
(:mod:`aegis.sim.quorum_instance`), three NATS nodes, and:

* **node crash** (``node``; the ``nats`` fault of the other mixes is the same here): the node leading the most
  buckets (``node_target="busiest"``, the worst case; ``"random"``: any node) crashes. Each bucket whose stream
  leader it hosts stalls for a NATS re-election time drawn from ``outage_s`` (4-9 s, the measured figure), then
  gets a leader on another node; the processes and clients connected to it are cut off and reconnect elsewhere
  after ``reconnect_s``; the node restarts after ``node_restart_s`` and the rebalancer moves its buckets' leaders
  back (a step-down: a stall of tens of milliseconds). ``placement``: ``spread`` (bucket ``i`` led by node ``i``)
  or ``colocated`` (buckets 0 and 1 on node 0).
* **checks** (:class:`QuorumChecker`, the single-bucket checker's plus): never two instances serving at once (real
  time); served ballots strictly increase (a new serving period has a ballot above every earlier one: fencing);
  per bucket, the record's ``floor`` never decreases; clients never accept an older epoch; every accepted reply
  fenced.
* **the gap** per fault: the time without an instance a client call can reach and that serves (up, not paused,
  connected, serving), from the fault to the next serving (sampled every ``gap_sample_s``): the longest such
  stretch between the fault and the next one, 0 when service never stopped. Beside it, the client-visible gap:
  from the fault (or the last success before it) to the next success a sticky client accepts, the longest over
  that stretch (calls go every 100 ms, so 0.1 s is no gap).

:func:`run_quorum_campaign` runs many seeds over the quorum fault mixes (:data:`QUORUM_MIXES`, the node-crash mix
among them) plus the node-crash mix with the colocated placement, and reports the gaps per fault kind as p50 / p99
/ max with their sample counts; ``node_crash_gap_*`` is the simulator's prediction for the quorum lease.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from aegis.sdk.quorum_election import Claim, QuorumElection
from aegis.sim.campaign import _dist, _r
from aegis.sim.checks import Checker
from aegis.sim.faults import MIXES, Fault, FaultMix
from aegis.sim.kv import Entry
from aegis.sim.quorum_instance import QMachineFactory, QuorumClient, QuorumInstance
from aegis.sim.quorum_kv import PLACEMENTS, QuorumBucket
from aegis.sim.run import RunConfig, RunResult, Simulation
from aegis.stats import percentile

NODE_KINDS = ("node", "nats")
"""Fault kinds that crash a NATS node in the quorum simulation."""

QUORUM_MIXES: dict[str, FaultMix] = {
    **MIXES,
    "node": FaultMix("node", {"node": 20.0}, min_gap_s=10.0),
    "node-mixed": FaultMix(
        "node-mixed",
        {"crash": 30.0, "stop": 30.0, "pause": 30.0, "node": 30.0, "netdelay": 30.0, "latepause": 30.0},
        gc=MIXES["mixed"].gc,
        min_gap_s=4.0,
    ),
}
"""The single-bucket simulator's mixes plus ``node`` (node crashes only, 20 s apart on average, at least 10 s
after the previous stall ended) and ``node-mixed`` (node crashes among instance faults and GC pauses)."""

DEFAULT_QUORUM_MIXES = ("crash", "stop", "pause", "netdelay", "gc", "node", "node-mixed")

GAP_BUDGET_S = 2.0
"""The gap a node crash may cost the quorum lease (issue 18's budget)."""


@dataclass(frozen=True)
class QuorumRunConfig(RunConfig):
    """:class:`aegis.sim.run.RunConfig` for the quorum lease (``ttl_s`` does not apply: no TTL)."""

    machine_factory: Any = QuorumElection
    """Builds each process's machine: ``(id, params, rng) -> QuorumElection`` (or a subclass)."""
    placement: str = "spread"
    nodes: int = 3
    node_target: str = "busiest"
    reconnect_s: tuple[float, float] = (0.05, 0.3)
    node_restart_s: tuple[float, float] = (3.0, 8.0)
    stepdown_s: tuple[float, float] = (0.02, 0.1)
    late_land_p: float = 0.5
    """Chance that a write sent to a stalled bucket lands when it recovers."""
    gap_sample_s: float = 0.01


@dataclass(frozen=True, slots=True)
class FaultGap:
    """One fault and the service gap after it (until the next fault or the end of the run)."""

    kind: str
    at: float
    gap_s: float
    client_gap_s: float | None
    recovered: bool
    """Service came back before the run ended (else ``gap_s`` is a lower bound)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "at": round(self.at, 6),
            "gap_s": round(self.gap_s, 6),
            "client_gap_s": None if self.client_gap_s is None else round(self.client_gap_s, 6),
            "recovered": self.recovered,
        }


class QuorumChecker(Checker):
    """The single-bucket checks (``NoOverlap``, ``ServingHoldsNewestEpoch``, the reply and client properties)
    plus ``BallotsStrictlyIncrease`` (a new serving period never reuses a ballot that served) and
    ``FloorNeverDecreases`` (per bucket)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.period: tuple[str, int] | None = None
        self.floors: dict[int, int] = {}

    def after_event(self, inst: Any, t: float) -> None:
        if inst.serving_at(t):
            epoch = inst.machine.epoch
            period = (inst.name, inst.incarnation)
            if epoch == self.hi_served and self.period is not None and period != self.period:
                self.violate(
                    "BallotsStrictlyIncrease",
                    t,
                    f"{inst.name} serves ballot {epoch}, which {self.period[0]} served before",
                )
            if epoch >= self.hi_served:
                self.period = period
        super().after_event(inst, t)

    def stored(self, bucket: int, entry: Entry, t: float) -> None:
        """Bucket ``bucket`` stored ``entry``: its floor may not go down."""
        claim = entry.value
        if not isinstance(claim, Claim):
            return
        before = self.floors.get(bucket, 0)
        if claim.floor < before:
            self.violate(
                "FloorNeverDecreases",
                t,
                f"bucket {bucket} revision {entry.state.rev}: floor {claim.floor} after floor {before}",
            )
        self.floors[bucket] = max(before, claim.floor)


class QuorumSimulation(Simulation):
    """One run of the quorum lease; see the module docstring."""

    config: QuorumRunConfig

    def __init__(self, config: QuorumRunConfig) -> None:
        if config.placement not in PLACEMENTS:
            raise ValueError(f"unknown placement {config.placement!r}; choose from {', '.join(PLACEMENTS)}")
        super().__init__(config)
        self.checker.instances = self.instances
        self.unavailable: list[tuple[float, float]] = []
        """Stretches (real time) without an instance a call can reach that serves."""
        self._down_since: float | None = 0.0
        self.node_crashes = 0

    # -- the parts -------------------------------------------------------------------------------------

    def _make_store(self) -> None:
        cfg = self.config
        self.buckets = [
            QuorumBucket(self.env, b, land=lambda: self.rng.random() < cfg.late_land_p) for b in range(3)
        ]
        for b, bucket in enumerate(self.buckets):
            bucket.on_entry = lambda e, b=b: self.checker.stored(b, e, self.env.now)  # type: ignore[misc]
        self.placement = PLACEMENTS[cfg.placement]
        self.leader = list(self.placement)
        """The node leading each bucket's stream now."""
        self.node_up = [True] * cfg.nodes

    def _make_checker(self) -> Checker:
        return QuorumChecker(stop_on_violation=self.config.stop_on_violation, tail=lambda: self.log.last(20))

    def _make_instance(self, name: str, rate: float, offset: float) -> QuorumInstance:
        return QuorumInstance(
            self, name, rate=rate, offset=offset, machine_factory=self.config.machine_factory
        )

    def _make_client(self, name: str) -> QuorumClient:
        cfg = self.config
        return QuorumClient(self, name, interval_s=cfg.client_interval_s, epoch_check=cfg.client_epoch_check)

    def revisions(self) -> int:
        return sum(b.seq for b in self.buckets)

    def store_writes(self) -> int:
        return sum(b.writes for b in self.buckets)

    # -- nodes -----------------------------------------------------------------------------------------

    def pick_node(self) -> int | None:
        """A node to connect to (any that is up), or None."""
        up = [n for n, ok in enumerate(self.node_up) if ok]
        return self.rng.choice(up) if up else None

    def reconnect_delay(self) -> float:
        return self.rng.uniform(*self.config.reconnect_s)

    def _crash_node(self, length: float) -> None:
        cfg = self.config
        up = [n for n, ok in enumerate(self.node_up) if ok]
        if not up:
            return
        if cfg.node_target == "busiest":
            most = max(self.leader.count(n) for n in up)
            node = self.rng.choice([n for n in up if self.leader.count(n) == most])
        else:
            node = self.rng.choice(up)
        self.node_crashes += 1
        self.node_up[node] = False
        led = [b for b, n in enumerate(self.leader) if n == node]
        self.log.note(self.env.now, "-", "node-crash", f"node {node} leads buckets {led}")
        for k, b in enumerate(led):
            stall = length if k == 0 else self.rng.uniform(*cfg.mix.outage_s)
            self.buckets[b].outage(stall)
            self.later(stall, lambda b=b: self._new_leader(b))  # type: ignore[misc]
        for proc in [*self.instances, *self.clients]:
            if proc.node == node:
                proc.cut()
        self.later(self.rng.uniform(*cfg.node_restart_s), lambda: self._node_back(node))

    def _new_leader(self, b: int) -> None:
        home = self.placement[b]
        if self.node_up[home]:
            self.leader[b] = home
        else:
            self.leader[b] = self.rng.choice([n for n, ok in enumerate(self.node_up) if ok and n != home])

    def _node_back(self, node: int) -> None:
        self.node_up[node] = True
        for b, home in enumerate(self.placement):
            if home == node and self.leader[b] != node and self.buckets[b].up:
                self.buckets[b].outage(
                    self.rng.uniform(*self.config.stepdown_s)
                )  # the rebalancer's step-down
                self.leader[b] = node

    def _fire(self, fault: Fault) -> None:
        if fault.kind in NODE_KINDS:
            self.log.note(self.env.now, "-", f"fault:{fault.kind}", f"length={fault.length:.3f}")
            self.checker.fault(fault.kind, self.env.now)
            self._crash_node(fault.length)
            return
        super()._fire(fault)

    # -- the gap -------------------------------------------------------------------------------------------

    def _gap_sample(self) -> None:
        t = self.env.now
        up = any(inst.available_at(t) for inst in self.instances)
        if up and self._down_since is not None:
            self.unavailable.append((self._down_since, t))
            self._down_since = None
        elif not up and self._down_since is None:
            self._down_since = t
        self.later(self.config.gap_sample_s, self._gap_sample)

    def run(self) -> QuorumRunResult:  # type: ignore[override]
        self.later(0.0, self._gap_sample)
        return super().run()  # type: ignore[return-value]

    def _result(self, end: float) -> QuorumRunResult:
        return QuorumRunResult.collect(self, end)


def fault_gaps(sim: QuorumSimulation, end: float) -> list[FaultGap]:
    """Per planned fault, the longest stretch without service (and without an accepted reply) between it and
    the next fault (or the end of the run)."""
    stretches = list(sim.unavailable)
    open_end = sim._down_since is not None
    if open_end:
        stretches.append((sim._down_since, end))  # type: ignore[arg-type]
    oks = sorted(r.end for c in sim.clients for r in c.results if r.ok)
    faults = [f for f in sim.plan.faults if f.at <= end]
    out = []
    for i, f in enumerate(faults):
        t0 = f.at
        t1 = faults[i + 1].at if i + 1 < len(faults) else end
        gap, recovered = 0.0, True
        for s, e in stretches:
            if e > t0 and s < t1:
                length = e - max(s, t0)
                if length > gap:
                    gap = length
                    recovered = not (open_end and e == end)
        client: float | None = None
        prev = None
        for ok in oks:
            if ok > t0 and (prev is None or prev < t1):
                span = ok - max(prev if prev is not None else t0, t0)
                client = span if client is None else max(client, span)
            if ok >= t1:
                break
            prev = ok
        out.append(FaultGap(f.kind, t0, gap, client, recovered))
    return out


@dataclass
class QuorumRunResult(RunResult):
    """:class:`aegis.sim.run.RunResult` plus the gaps and the node crashes."""

    placement: str = "spread"
    gaps: list[FaultGap] = field(default_factory=list)
    node_crashes: int = 0
    late_landed: int = 0

    @classmethod
    def collect(cls, sim: Simulation, end: float) -> QuorumRunResult:  # type: ignore[override]
        assert isinstance(sim, QuorumSimulation)
        r = super().collect(sim, end)
        assert isinstance(r, QuorumRunResult)
        r.election = "quorum"
        r.placement = sim.config.placement
        r.gaps = fault_gaps(sim, end)
        r.node_crashes = sim.node_crashes
        r.late_landed = sum(b.late_landed for b in sim.buckets)
        return r

    def gap_values(self, kinds: tuple[str, ...], *, client: bool = False) -> list[float]:
        """The gaps after faults of ``kinds`` (client-visible ones with ``client``)."""
        out = []
        for g in self.gaps:
            if g.kind in kinds:
                v = g.client_gap_s if client else g.gap_s
                if v is not None:
                    out.append(v)
        return out

    def summary(self) -> dict[str, Any]:
        s = super().summary()
        node = self.gap_values(NODE_KINDS)
        s.update(
            {
                "placement": self.placement,
                "node_crashes": self.node_crashes,
                "late_landed_writes": self.late_landed,
                "gaps": [g.to_dict() for g in self.gaps],
                "node_crash_gap_max_s": round(max(node), 6) if node else None,
                "node_crash_gap_samples": len(node),
            }
        )
        return s


def run_quorum(config: QuorumRunConfig) -> QuorumRunResult:
    """Run one simulation of the quorum lease."""
    return QuorumSimulation(config).run()


Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class QuorumCampaignConfig:
    """Runs over the quorum mixes, plus node-crash runs with the colocated placement for comparison."""

    name: str = "quorum"
    runs: int = 700
    seed: int = 1
    mixes: tuple[str, ...] = DEFAULT_QUORUM_MIXES
    duration_s: float = 60.0
    params: Any = None
    colocated_runs: int = 50
    base: QuorumRunConfig = field(default_factory=QuorumRunConfig)


def run_quorum_campaign(cfg: QuorumCampaignConfig, progress: Progress | None = None) -> dict[str, Any]:
    """Run the campaign and return its JSON-ready report."""
    total = cfg.runs + cfg.colocated_runs
    done = 0
    started = time.perf_counter()
    sim_total = 0.0
    violations = 0
    first: dict[str, Any] | None = None
    by_mix: dict[str, dict[str, Any]] = {}
    gaps: dict[str, list[float]] = {}
    client_gaps: dict[str, list[float]] = {}
    unrecovered: dict[str, int] = {}
    crash_client: list[float] = []
    base = cfg.base if cfg.params is None else replace(cfg.base, params=cfg.params)

    def one(rc: QuorumRunConfig) -> QuorumRunResult:
        nonlocal sim_total, violations, first
        r = run_quorum(rc)
        sim_total += r.sim_s
        violations += len(r.violations)
        if first is None and r.violations:
            first = {
                "seed": rc.seed,
                "mix": rc.mix.name,
                "placement": rc.placement,
                "replay": quorum_replay_command(rc),
                **r.violations[0].to_dict(),
            }
        return r

    for k in range(cfg.runs):
        mix_name = cfg.mixes[k % len(cfg.mixes)]
        rc = replace(base, seed=cfg.seed + k, mix=QUORUM_MIXES[mix_name], duration_s=cfg.duration_s)
        r = one(rc)
        agg = by_mix.setdefault(
            mix_name, {"runs": 0, "violations": 0, "calls": 0, "calls_ok": 0, "faults": {}}
        )
        agg["runs"] += 1
        agg["violations"] += len(r.violations)
        agg["calls"] += r.calls
        agg["calls_ok"] += r.calls_ok
        for kind, n in r.faults.items():
            agg["faults"][kind] = agg["faults"].get(kind, 0) + n
        for g in r.gaps:
            kind = "node" if g.kind in NODE_KINDS else g.kind
            gaps.setdefault(kind, []).append(g.gap_s)
            if g.client_gap_s is not None:
                client_gaps.setdefault(kind, []).append(g.client_gap_s)
            if not g.recovered:
                unrecovered[kind] = unrecovered.get(kind, 0) + 1
        if mix_name == "crash":
            crash_client.extend(r.crash_gaps(client=True))
        done += 1
        if progress and (done % 10 == 0 or done == total):
            progress(done, total, f"quorum {mix_name} seed {rc.seed}")

    colocated: list[float] = []
    colocated_client: list[float] = []
    colocated_violations = 0
    for k in range(cfg.colocated_runs):
        rc = replace(
            base,
            seed=cfg.seed + 1_000_000 + k,
            mix=QUORUM_MIXES["node"],
            duration_s=cfg.duration_s,
            placement="colocated",
        )
        r = one(rc)
        colocated_violations += len(r.violations)
        colocated.extend(r.gap_values(NODE_KINDS))
        colocated_client.extend(r.gap_values(NODE_KINDS, client=True))
        done += 1
        if progress and (done % 10 == 0 or done == total):
            progress(done, total, f"quorum node colocated seed {rc.seed}")

    wall = time.perf_counter() - started
    node = gaps.get("node", [])
    node_client = client_gaps.get("node", [])
    p = base.params
    return {
        "name": cfg.name,
        "election": "quorum",
        "placement": base.placement,
        "runs": cfg.runs,
        "colocated_runs": cfg.colocated_runs,
        "seed": cfg.seed,
        "mixes": list(cfg.mixes),
        "violations": violations,
        "first_violation": first,
        "gap_measure": "fault -> next serving: the longest stretch without an instance a call can reach that"
        " serves (up, not paused, connected, serving), until the next fault; 0 when service never stopped",
        "client_gap_measure": "fault (or the last accepted reply before it) -> next reply a sticky client accepts,"
        " the longest such wait until the next fault (calls every 100 ms)",
        "gap_budget_s": GAP_BUDGET_S,
        "node_crash_gap_p50_s": _r(percentile(node, 50)),
        "node_crash_gap_p99_s": _r(percentile(node, 99)),
        "node_crash_gap_max_s": _r(max(node) if node else None),
        "node_crash_gap_samples": len(node),
        "node_crash_client_gap_p50_s": _r(percentile(node_client, 50)),
        "node_crash_client_gap_p99_s": _r(percentile(node_client, 99)),
        "node_crash_client_gap_max_s": _r(max(node_client) if node_client else None),
        "node_crash_client_gap_samples": len(node_client),
        "colocated": {
            "placement": "colocated",
            "violations": colocated_violations,
            "node_crash_gap": _dist(colocated),
            "node_crash_client_gap": _dist(colocated_client),
            "over_budget": sum(1 for g in colocated if g > GAP_BUDGET_S),
        },
        "failover_p50_s": _r(percentile(crash_client, 50)),
        "failover_p99_s": _r(percentile(crash_client, 99)),
        "failover_max_s": _r(max(crash_client) if crash_client else None),
        "failover_samples": len(crash_client),
        "gaps_by_fault": {
            kind: {
                "gap": _dist(gaps[kind]),
                "client_gap": _dist(client_gaps.get(kind, [])),
                "unrecovered": unrecovered.get(kind, 0),
            }
            for kind in sorted(gaps)
        },
        "by_mix": by_mix,
        "params": {
            "lease_s": p.lease_s,
            "renew_s": p.renew_s,
            "drift": p.drift,
            "write_timeout_s": p.write_timeout_s,
            "window_s": round(p.window_s, 4),
        },
        "nodes": {
            "reconnect_s": list(base.reconnect_s),
            "node_restart_s": list(base.node_restart_s),
            "node_target": base.node_target,
            "late_land_p": base.late_land_p,
        },
        "duration_s": cfg.duration_s,
        "sim_seconds": round(sim_total, 1),
        "wall_seconds": round(wall, 2),
        "speedup": round(sim_total / wall, 1) if wall > 0 else None,
    }


def quorum_replay_command(rc: QuorumRunConfig) -> str:
    """The ``aegis sim`` command that replays run ``rc`` exactly."""
    p = rc.params
    return (
        f"aegis sim --election quorum --seed {rc.seed} --mix {rc.mix.name} --placement {rc.placement}"
        f" --lease {p.lease_s} --renew {p.renew_s} --drift {p.drift} --write-timeout {p.write_timeout_s}"
        f" --duration {rc.duration_s}"
    )


__all__ = [
    "DEFAULT_QUORUM_MIXES",
    "GAP_BUDGET_S",
    "QUORUM_MIXES",
    "FaultGap",
    "QMachineFactory",
    "QuorumCampaignConfig",
    "QuorumChecker",
    "QuorumRunConfig",
    "QuorumRunResult",
    "QuorumSimulation",
    "fault_gaps",
    "quorum_replay_command",
    "run_quorum",
    "run_quorum_campaign",
]
