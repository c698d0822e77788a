"""One simulated run: a SimPy environment, the KV, the instances, the clients and a fault plan.

Deterministic per seed: every random draw comes from one ``random.Random(seed)`` (no global ``random``), SimPy
orders simultaneous events by scheduling order, and no result depends on wall time. So::

    result = run(RunConfig(seed=7, mix=MIXES["crash"]))
    assert run(RunConfig(seed=7, mix=MIXES["crash"])).summary() == result.summary()

``RunConfig.machine_factory`` picks the election state machine (the SDK's ``Election`` by default);
``rates`` / ``drift_actual`` set the instances' clock rates (the drift negative control goes beyond the bound).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import simpy

from aegis.sdk.election import Election, ElectionParams
from aegis.sdk.trace_events import TraceParams
from aegis.sim.checks import Checker, Failover, FalseFailover, Violation, ViolationFound
from aegis.sim.client import StickyClient
from aegis.sim.faults import MIXES, DelayDist, Fault, FaultMix, FaultPlan, HandlerDist, plan_faults
from aegis.sim.instance import MachineFactory, SimInstance
from aegis.sim.kv import KVConfig, SimKV
from aegis.sim.tracelog import EventLog
from aegis.stats import percentile


@dataclass(frozen=True)
class RunConfig:
    """Everything one run depends on. ``seed`` alone makes it reproducible."""

    seed: int = 1
    params: ElectionParams = field(default_factory=ElectionParams)
    ttl_s: float = 10.0
    """The key's TTL (the SDK's default ``ttl_s``)."""
    mix: FaultMix = field(default_factory=lambda: MIXES["crash"])
    duration_s: float = 60.0
    instances: int = 3
    clients: int = 1
    client_interval_s: float = 0.1
    client_epoch_check: bool = True
    handler: HandlerDist = field(default_factory=HandlerDist)
    """How long an exclusive handler runs once admitted (heavy-tailed: some span a failover). A call that
    finishes after its instance stopped serving under the call's admission epoch is answered "lease-lost"
    (:meth:`aegis.sdk.election.Election.reply_epoch`, the SDK's rule)."""
    handler_s: float | None = None
    """A fixed handler duration instead of ``handler`` (the ``no-reply-check`` control: 0.5 s)."""
    net: DelayDist = field(default_factory=DelayDist)
    watch_extra_s: float = 0.0005
    """Watch deliveries take a network delay plus this much (the consumer's push)."""
    drift_actual: float | None = None
    """Clock rates are drawn from ``1 +/- drift_actual`` (default: the protocol's bound ``params.drift``)."""
    rates: tuple[float, ...] | None = None
    """Explicit clock rates per instance (overrides ``drift_actual``)."""
    sample_every_s: float = 0.1
    """Availability is sampled this often (real time)."""
    outage_drop_p: float = 0.5
    """Chance that an answer in flight when a KV outage begins is lost."""
    machine_factory: MachineFactory = Election
    trace: bool = False
    """Keep every event (for ``--trace``); the last 40 are always kept for violation reports."""
    stop_on_violation: bool = True
    faults: tuple[Fault, ...] | None = None
    """An explicit fault schedule (property tests); default: drawn from ``mix``."""


class Simulation:
    """The world of one run; components reach each other (and the seeded RNG) through it."""

    def __init__(self, config: RunConfig) -> None:
        self.config = config
        self.params = config.params
        self.rng = random.Random(config.seed)
        self.env = simpy.Environment()
        self.log = EventLog(full=config.trace)
        self._make_store()
        self.checker = self._make_checker()
        self.extra_delay = 0.0
        self._extra_until = 0.0
        drift = config.params.drift if config.drift_actual is None else config.drift_actual
        self.instances: list[Any] = []
        """The processes of the group (:class:`SimInstance` here; a subclass of the simulation may run others)."""
        for i in range(config.instances):
            rate = (
                config.rates[i % len(config.rates)]
                if config.rates
                else self.rng.uniform(1 - drift, 1 + drift)
            )
            offset = self.rng.uniform(100.0, 10000.0)
            self.instances.append(self._make_instance(f"i{i + 1}", rate, offset))
        self.by_name = {inst.name: inst for inst in self.instances}
        self.checker.instances = self.instances
        self.clients = [self._make_client(f"c{j + 1}") for j in range(config.clients)]
        self.plan = (
            FaultPlan(config.faults)
            if config.faults is not None
            else plan_faults(config.mix, config.duration_s, self.rng)
        )
        self.samples = 0
        self.samples_serving = 0
        self.skipped_faults = 0

    # -- the parts (a simulation of another election overrides these) ----------------------------------

    def _make_store(self) -> None:
        """The election's storage: here the one key of the election bucket (``self.kv``)."""
        self.kv = SimKV(
            self.env,
            KVConfig(ttl_s=self.config.ttl_s),
            scan_phase=self.rng.uniform(0, 0.25),
        )

    def _make_checker(self) -> Checker:
        return Checker(stop_on_violation=self.config.stop_on_violation, tail=lambda: self.log.last(20))

    def _make_instance(self, name: str, rate: float, offset: float) -> Any:
        return SimInstance(self, name, rate=rate, offset=offset, machine_factory=self.config.machine_factory)

    def _make_client(self, name: str) -> StickyClient:
        cfg = self.config
        return StickyClient(self, name, interval_s=cfg.client_interval_s, epoch_check=cfg.client_epoch_check)

    def revisions(self) -> int:
        """Revisions the election's storage handed out."""
        return self.kv.seq

    def store_writes(self) -> int:
        """Writes the election's storage answered."""
        return self.kv.writes

    # -- plumbing ------------------------------------------------------------------------------------------

    def later(self, delay: float, fn: Callable[[], None]) -> None:
        """Call ``fn`` after ``delay`` simulated seconds."""
        ev = self.env.timeout(delay)
        ev.callbacks.append(lambda _e: fn())

    def delay(self) -> float:
        """One one-way network delay (plus a slow-network burst's extra while one lasts)."""
        d = self.config.net.draw(self.rng)
        if self.extra_delay and self.env.now < self._extra_until:
            d += self.extra_delay * self.rng.uniform(0.5, 1.0)
        return d

    def handler_time(self) -> float:
        """How long one admitted call's handler runs."""
        cfg = self.config
        return cfg.handler_s if cfg.handler_s is not None else cfg.handler.draw(self.rng)

    def watch_delay(self) -> float:
        """The delay of one watch delivery."""
        return self.delay() + self.config.watch_extra_s

    def _sample(self) -> None:
        """Availability sample: does some instance answer now (up, not paused, serving)? Every
        ``sample_every_s`` from a random phase."""
        self.samples += 1
        t = self.env.now
        for inst in self.instances:
            if not inst.paused and inst.serving_at(t):
                self.samples_serving += 1
                break
        self.later(self.config.sample_every_s, self._sample)

    # -- faults --------------------------------------------------------------------------------------------

    def _holder(self) -> SimInstance | None:
        t = self.env.now
        for inst in self.instances:
            if inst.serving_at(t):
                return inst
        for inst in self.instances:
            if inst.up and inst.machine.role == "active":
                return inst
        return None

    def _fire(self, fault: Fault) -> None:
        kind = fault.kind
        t = self.env.now
        self.log.note(t, "-", f"fault:{kind}", f"length={fault.length:.3f}")
        if kind in ("crash", "stop", "pause", "latepause", "pausestop"):
            target = self._holder()
            if target is None:
                self.skipped_faults += 1
                self.checker.fault(kind, t)
                return
            if kind == "crash":
                if target.serving_at(t):
                    self.checker.holder_gone(target, "crash", t)
                else:
                    self.checker.fault(kind, t)
                target.crash()
                target.restart_in(fault.length)
            elif kind == "stop":
                if target.serving_at(t):
                    self.checker.holder_gone(target, "stop", t)
                else:
                    self.checker.fault(kind, t)
                target.stop()
                target.restart_in(fault.length)
            elif kind == "pause":
                self.checker.fault(kind, t)
                target.pause(fault.length)
            elif kind == "pausestop":  # SIGTERM to a paused process: it takes the stop when it resumes
                self.checker.fault(kind, t)
                target.pause(fault.length)
                target.stop()
                target.restart_in(fault.length)
            else:  # its next renewal's answer comes late (below the write timeout), then it pauses
                self.checker.fault(kind, t)
                target.late_ack = (min(fault.extra, 0.8 * self.params.write_timeout_s), fault.length)
        elif kind == "nats":
            self.checker.fault(kind, t)
            self.kv.outage(fault.length)
        elif kind == "netdelay":
            self.checker.fault(kind, t)
            self.extra_delay = fault.extra
            self._extra_until = t + fault.length
        else:  # pragma: no cover - plan_faults only makes the kinds above
            raise ValueError(kind)

    def _gc(self, inst: SimInstance) -> None:
        dist = self.config.mix.gc
        assert dist is not None
        if inst.up:
            length = dist.length(self.rng)
            if inst is self.checker.hi_holder and length > 0.05:
                self.checker.last_fault = (self.env.now, "gc")
            inst.pause(length)
        self.later(dist.next_gap(self.rng), lambda: self._gc(inst))

    # -- the run -------------------------------------------------------------------------------------------

    def run(self) -> RunResult:
        """Run to ``duration_s`` (or the first violation) and collect the result."""
        cfg = self.config
        for i, inst in enumerate(self.instances):
            self.later(0.01 * i + self.rng.uniform(0, 0.005), inst.start)
        for client in self.clients:
            client.start()
        self.later(self.rng.uniform(0, cfg.sample_every_s), self._sample)
        for fault in self.plan.faults:
            self.later(fault.at, lambda f=fault: self._fire(f))
        if cfg.mix.gc is not None:
            for inst in self.instances:
                self.later(cfg.mix.gc.next_gap(self.rng), lambda inst=inst: self._gc(inst))
        end = cfg.duration_s
        try:
            self.env.run(until=cfg.duration_s)
        except ViolationFound:
            end = self.env.now
        return self._result(end)

    def _result(self, end: float) -> RunResult:
        return RunResult.collect(self, end)


@dataclass
class RunResult:
    """The outcome of one run; :meth:`summary` is its deterministic JSON form."""

    seed: int
    mix: str
    sim_s: float
    violations: list[Violation]
    failovers: list[Failover]
    false_failovers: list[FalseFailover]
    calls: int
    calls_ok: int
    stale_dropped: int
    availability: float
    epochs: int
    faults: dict[str, int]
    kv_writes: int
    log: EventLog
    params: TraceParams
    serving_at_end: list[str] = field(default_factory=list)
    """Instances serving (up, unpaused) when the run ended."""
    withheld: int = 0
    """Outcomes withheld ("lease-lost"): a handler outlived its instance's lease."""
    election: str = "lease"
    """Which election ran (``lease``: the single-bucket lease; :mod:`aegis.sim.quorum_run` runs ``quorum``)."""

    @classmethod
    def collect(cls, sim: Simulation, end: float) -> RunResult:
        """Gather the result of a finished simulation."""
        cfg = sim.config
        calls = [r for c in sim.clients for r in c.results]
        kinds: dict[str, int] = {}
        for f in sim.plan.faults:
            if f.at <= end:
                kinds[f.kind] = kinds.get(f.kind, 0) + 1
        return cls(
            seed=cfg.seed,
            mix=cfg.mix.name,
            sim_s=end,
            violations=list(sim.checker.violations),
            failovers=list(sim.checker.failovers),
            false_failovers=list(sim.checker.false_failovers),
            calls=len(calls),
            calls_ok=sum(1 for r in calls if r.ok),
            stale_dropped=sum(c.stale_dropped for c in sim.clients),
            availability=sim.samples_serving / sim.samples if sim.samples else 0.0,
            epochs=sim.revisions(),
            faults=kinds,
            kv_writes=sim.store_writes(),
            log=sim.log,
            params=TraceParams(
                lease=cfg.params.lease_s,
                drift=cfg.params.drift,
                ttl=max(1, int(cfg.ttl_s)),
                renew=cfg.params.renew_s,
            ),
            serving_at_end=[i.name for i in sim.instances if not i.paused and i.serving_at(end)],
            withheld=sum(i.withheld for i in sim.instances),
        )

    def crash_gaps(self, *, client: bool = True, clean: bool = True) -> list[float]:
        """Failover times of crashes (client-visible by default), clean samples only by default."""
        out = []
        for fo in self.failovers:
            if fo.cause != "crash" or (clean and fo.disturbed):
                continue
            v = fo.client_s if client else fo.serve_s
            if v is not None:
                out.append(v)
        return out

    def summary(self) -> dict[str, Any]:
        """JSON-ready, deterministic per seed."""
        gaps = self.crash_gaps()
        median = percentile(gaps, 50)  # nearest rank: aegis.stats, the one definition
        return {
            "seed": self.seed,
            "election": self.election,
            "mix": self.mix,
            "sim_s": round(self.sim_s, 6),
            "violations": [v.to_dict() for v in self.violations],
            "failovers": [f.to_dict() for f in self.failovers],
            "false_failovers": len(self.false_failovers),
            "false_failover_causes": sorted(f.cause for f in self.false_failovers),
            "calls": self.calls,
            "calls_ok": self.calls_ok,
            "stale_dropped": self.stale_dropped,
            "withheld": self.withheld,
            "availability": round(self.availability, 6),
            "kv_revisions": self.epochs,
            "kv_writes": self.kv_writes,
            "faults": dict(sorted(self.faults.items())),
            "crash_failover_median_s": None if median is None else round(median, 6),
            "crash_failover_samples": len(gaps),
            "serving_at_end": self.serving_at_end,
        }

    def write_trace(self, path: Path) -> int:
        """Write the run's spec events as an NDJSON trace (needs ``RunConfig.trace``); returns the count."""
        if not self.log.full:
            raise ValueError("the run did not keep its events: run it with RunConfig(trace=True)")
        return self.log.write_ndjson(path, self.params)


def run(config: RunConfig) -> RunResult:
    """Run one simulation."""
    return Simulation(config).run()
