"""Fault mixes and the distributions they draw from; every draw comes from the run's seeded ``random.Random``.

A :class:`FaultMix` names which faults a run suffers and how often. :func:`plan_faults` turns a mix into a
:class:`FaultPlan`: a time-ordered list of :class:`Fault` for one run. Targets are resolved when the fault
fires (``"active"``: whichever instance serves then).

Fault classes (``Fault.kind``):

* ``crash``: kill -9 of the active instance; it restarts after ``restart_s`` (a supervisor).
* ``stop``: graceful stop (SIGTERM) of the active: it releases the key; it restarts after ``restart_s``.
* ``pause``: SIGSTOP-like pause of the active for ``length`` seconds (long: 0.3-3 s).
* ``gc``: background pauses of every instance drawn from a :class:`PauseDist` (a Poisson process per instance).
* ``nats``: a NATS node crash: the stream has no leader for 4-9 s.
* ``node``: a NATS node crash in the quorum lease's simulation (:mod:`aegis.sim.quorum_run`): the buckets whose
  stream leader it hosts stall for 4-9 s, the processes and clients connected to it reconnect elsewhere.
* ``netdelay``: a burst of slow network (one-way delays of 50-400 ms) for a few seconds.
* ``latepause``: the active's next renewal is acknowledged late (``extra``: a heavy-tailed delay of the answer, a
  Pareto tail cut below the write timeout: a slow hop, a retransmit, a process slow to read its socket), and the
  process pauses (``length``, like ``pause``) right after it took the answer: the answer landed, the renewals
  that would follow do not. A window counted from the ack instead of the send overlaps the successor then.
* ``pausestop``: the active pauses (``length``, like ``pause``) and is sent SIGTERM at once (a stuck process
  being restarted): it takes the stop when it resumes, possibly after a successor took over, and releases.

Exclusive handlers take time (:class:`HandlerDist`: mostly a millisecond, 3 % a Pareto tail up to 1.5 s), so some
span a pause or a failover of their instance and finish after it lost the lease.

Network delays (:class:`DelayDist`) have a heavy tail too: besides the rare uniform spikes, a Pareto tail
(``tail_p``, ``tail_alpha``, ``tail_scale_s``, cut at ``tail_cap_s``) on every one-way delay, so answers and
watch deliveries are now and then late by tens to hundreds of milliseconds.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

FAULT_KINDS = ("crash", "stop", "pause", "nats", "netdelay", "latepause", "pausestop")


@dataclass(frozen=True, slots=True)
class DelayDist:
    """One-way network delay: lognormal around ``median_s``, with rare spikes (a slow hop, a retransmit)."""

    median_s: float = 0.0005
    sigma: float = 0.5
    spike_p: float = 0.002
    spike_lo_s: float = 0.01
    spike_hi_s: float = 0.1
    tail_p: float = 0.001
    tail_alpha: float = 1.2
    tail_scale_s: float = 0.01
    tail_cap_s: float = 1.0

    def draw(self, rng: random.Random) -> float:
        """One delay in seconds."""
        d = self.median_s * math.exp(self.sigma * rng.gauss(0.0, 1.0))
        if self.spike_p and rng.random() < self.spike_p:
            d += rng.uniform(self.spike_lo_s, self.spike_hi_s)
        if self.tail_p and rng.random() < self.tail_p:
            d += heavy_tail(rng, self.tail_alpha, self.tail_scale_s, self.tail_cap_s)
        return d


@dataclass(frozen=True, slots=True)
class HandlerDist:
    """How long an exclusive handler runs once admitted: lognormal around ``median_s`` (a quick lookup), and a
    fraction ``tail_p`` of slow calls, Pareto-distributed (``tail_alpha``, from ``tail_scale_s``, cut at
    ``tail_cap_s``: a downstream call, a lock, a retry). The tail is what makes some handlers span a pause or a
    failover of their instance, so the rule that fences their outcome (``Election.reply_epoch``) is exercised
    in the default run, not only in a control."""

    median_s: float = 0.001
    sigma: float = 1.0
    tail_p: float = 0.03
    tail_alpha: float = 1.2
    tail_scale_s: float = 0.02
    tail_cap_s: float = 1.5

    def draw(self, rng: random.Random) -> float:
        """One handler duration in seconds."""
        d = self.median_s * math.exp(self.sigma * rng.gauss(0.0, 1.0))
        if self.tail_p and rng.random() < self.tail_p:
            d += heavy_tail(rng, self.tail_alpha, self.tail_scale_s, self.tail_cap_s)
        return d


def heavy_tail(rng: random.Random, alpha: float, scale_s: float, cap_s: float) -> float:
    """A Pareto-distributed delay (``scale_s`` and up, tail index ``alpha``), cut at ``cap_s``."""
    return min(cap_s, scale_s * rng.paretovariate(alpha))


@dataclass(frozen=True, slots=True)
class PauseDist:
    """Process pauses (GC, VM steal, swapping) of a running instance: a Poisson process of ``rate_hz``.

    Lengths: lognormal around ``median_s``; a fraction ``stall_p`` are stalls, lognormal around
    ``stall_median_s`` (the tail that causes false failovers).
    """

    rate_hz: float = 0.5
    median_s: float = 0.003
    sigma: float = 1.0
    stall_p: float = 0.01
    stall_median_s: float = 0.15
    stall_sigma: float = 1.0

    def next_gap(self, rng: random.Random) -> float:
        """Seconds until the next pause."""
        return rng.expovariate(self.rate_hz)

    def length(self, rng: random.Random) -> float:
        """One pause length, seconds."""
        if rng.random() < self.stall_p:
            return self.stall_median_s * math.exp(self.stall_sigma * rng.gauss(0.0, 1.0))
        return self.median_s * math.exp(self.sigma * rng.gauss(0.0, 1.0))

    def to_dict(self) -> dict[str, float]:
        """JSON-ready form."""
        return {
            "rate_hz": self.rate_hz,
            "median_s": self.median_s,
            "sigma": self.sigma,
            "stall_p": self.stall_p,
            "stall_median_s": self.stall_median_s,
            "stall_sigma": self.stall_sigma,
        }


@dataclass(frozen=True, slots=True)
class FaultMix:
    """Which faults a run suffers: ``every_s`` maps a fault kind to its mean spacing (exponential, seconds).

    ``gc``: background pauses of every instance (None: none). The first fault comes after ``warmup_s``.
    """

    name: str
    every_s: dict[str, float] = field(default_factory=dict)
    gc: PauseDist | None = None
    warmup_s: float = 3.0
    restart_s: tuple[float, float] = (1.0, 3.0)
    pause_s: tuple[float, float] = (0.3, 3.0)
    outage_s: tuple[float, float] = (4.0, 9.0)
    netdelay_s: tuple[float, float] = (1.0, 4.0)
    netdelay_extra_s: tuple[float, float] = (0.05, 0.4)
    late_ack: tuple[float, float, float] = (1.0, 0.03, 0.25)
    """latepause: the late ack's Pareto (alpha, scale_s, cap_s); the simulator cuts it below the write timeout."""
    min_gap_s: float = 4.0
    """At least this long between two planned faults, so one failover is over before the next fault."""


MIXES: dict[str, FaultMix] = {
    "calm": FaultMix("calm"),
    "crash": FaultMix("crash", {"crash": 8.0}),
    "stop": FaultMix("stop", {"stop": 8.0, "pausestop": 16.0}),
    "pause": FaultMix("pause", {"pause": 8.0, "latepause": 8.0}),
    "nats": FaultMix("nats", {"nats": 20.0}, min_gap_s=10.0),
    "netdelay": FaultMix("netdelay", {"netdelay": 10.0}),
    "gc": FaultMix("gc", gc=PauseDist()),
    "mixed": FaultMix(
        "mixed",
        {
            "crash": 30.0,
            "stop": 30.0,
            "pause": 30.0,
            "nats": 60.0,
            "netdelay": 30.0,
            "latepause": 30.0,
            "pausestop": 60.0,
        },
        gc=PauseDist(),
        min_gap_s=2.0,
    ),
}
"""The named fault mixes (``aegis sim --mix``)."""


@dataclass(frozen=True, slots=True)
class Fault:
    """One planned fault: ``kind`` at real time ``at``; ``length`` is the pause/outage/burst length or the
    restart delay."""

    at: float
    kind: str
    length: float
    extra: float = 0.0
    """netdelay: the added one-way delay; latepause: how late the renewal's answer is."""


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """The faults of one run, in time order."""

    faults: tuple[Fault, ...]

    def count(self, kind: str) -> int:
        """How many faults of ``kind``."""
        return sum(1 for f in self.faults if f.kind == kind)


def plan_faults(mix: FaultMix, duration_s: float, rng: random.Random) -> FaultPlan:
    """Draw the faults of one run: each kind a Poisson process of mean spacing ``every_s[kind]``, merged,
    thinned so that consecutive faults are ``min_gap_s`` (plus the previous one's length) apart."""
    raw: list[tuple[float, str]] = []
    for kind in sorted(mix.every_s):
        mean = mix.every_s[kind]
        t = mix.warmup_s + rng.expovariate(1.0 / mean)
        while t < duration_s:
            raw.append((t, kind))
            t += rng.expovariate(1.0 / mean)
    raw.sort()
    out: list[Fault] = []
    free_at = 0.0
    for t, kind in raw:
        if t < free_at:
            continue
        if kind in ("crash", "stop"):
            length = rng.uniform(*mix.restart_s)
            busy = 0.0
        elif kind in ("pause", "latepause", "pausestop"):
            length = rng.uniform(*mix.pause_s)
            busy = length
        elif kind in ("nats", "node"):
            length = rng.uniform(*mix.outage_s)
            busy = length
        elif kind == "netdelay":
            length = rng.uniform(*mix.netdelay_s)
            busy = length
        else:
            raise ValueError(f"unknown fault kind {kind!r}")
        extra = (
            rng.uniform(*mix.netdelay_extra_s)
            if kind == "netdelay"
            else heavy_tail(rng, *mix.late_ack)
            if kind == "latepause"
            else 0.0
        )
        out.append(Fault(t, kind, length, extra))
        free_at = t + busy + mix.min_gap_s
    return FaultPlan(tuple(out))
