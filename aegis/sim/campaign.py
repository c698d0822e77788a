"""Campaigns: many runs x fault mixes x parameters, aggregated into one JSON-ready report.

* **Fault-mix runs**: run ``k`` (0-based) uses seed ``seed + k`` and mix ``mixes[k % len(mixes)]``, default
  parameters. The headline figures (``failover_p50_s``, ``failover_p99_s``) are the client-visible failover times
  of instance crashes in the ``crash`` mix: kill -9 of the serving instance -> first reply a sticky client accepts
  from a newer epoch (what ``aegis failover`` measures on real processes).
* **Parameter sweep**: lease x renew interval; per cell, crash runs (p50/p99 failover) and runs under a harsh
  pause distribution (:data:`SWEEP_PAUSES`) for false failovers per hour and availability.

Every violation is reported with its run's seed, mix and parameters, so ``aegis sim --seed S --mix M --lease L
--renew R`` replays it exactly. ``speedup`` is simulated seconds per wall-clock second over the whole campaign,
measured (the one wall-clock figure in the report).

Percentiles are nearest-rank (:func:`aegis.stats.percentile`, the fault harness's definition too), each with its
sample count (``*_samples``, ``n``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from aegis.sdk.election import ElectionParams
from aegis.sim.controls import control_config
from aegis.sim.faults import MIXES, FaultMix, PauseDist
from aegis.sim.run import RunConfig, RunResult, run
from aegis.stats import percentile

Progress = Callable[[int, int, str], None]
"""``progress(done, total, what)``."""

DEFAULT_MIXES = ("crash", "stop", "pause", "nats", "netdelay", "gc", "mixed")

SWEEP_PAUSES = PauseDist(
    rate_hz=1.0, median_s=0.003, sigma=1.0, stall_p=0.05, stall_median_s=0.25, stall_sigma=1.0
)
"""The pause distribution of the sweep: a pause a second per instance, 5 % of them stalls around 250 ms with a
heavy tail (about 34 pauses an hour longer than 0.6 s per instance): a very noisy host, so that an hour per cell
tells the parameters apart."""

REAL_DRIFT = 1e-4
"""Clock rate spread of real machines (NTP-disciplined quartz: ~100 ppm at most), for the predicted distribution."""


@dataclass(frozen=True)
class SweepConfig:
    """The lease x renew grid and how much to run per cell (combinations ElectionParams rejects are skipped)."""

    leases: tuple[float, ...] = (0.6, 0.9, 1.2, 1.5, 2.0, 3.0)
    renews: tuple[float, ...] = (0.1, 0.15, 0.25, 0.35, 0.5)
    runs: int = 10
    crash_duration_s: float = 60.0
    pause_duration_s: float = 360.0
    pauses: PauseDist = SWEEP_PAUSES


@dataclass(frozen=True)
class CampaignConfig:
    """A whole campaign; ``control`` applies a negative control to every fault-mix run."""

    name: str = "default"
    runs: int = 2000
    seed: int = 1
    mixes: tuple[str, ...] = DEFAULT_MIXES
    duration_s: float = 60.0
    params: ElectionParams = field(default_factory=ElectionParams)
    ttl_s: float = 10.0
    sweep: SweepConfig | None = field(default_factory=SweepConfig)
    control: str | None = None
    predicted_runs: int = 100
    """Extra crash runs with real-machine clocks (rates within 1 +/- REAL_DRIFT) for the predicted failover
    distribution; the fault-mix runs draw rates within the protocol's bound (5 %), which stretches the tail."""


def _r(x: float | None, nd: int = 4) -> float | None:
    return None if x is None else round(x, nd)


def _dist(values: list[float]) -> dict[str, Any]:
    return {
        "n": len(values),
        "p50_s": _r(percentile(values, 50)),
        "p99_s": _r(percentile(values, 99)),
        "max_s": _r(max(values) if values else None),
    }


@dataclass
class _MixAgg:
    runs: int = 0
    sim_s: float = 0.0
    violations: int = 0
    calls: int = 0
    calls_ok: int = 0
    avail_weighted: float = 0.0
    false_failovers: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    gaps: dict[str, list[float]] = field(default_factory=dict)

    def add(self, r: RunResult) -> None:
        self.runs += 1
        self.sim_s += r.sim_s
        self.violations += len(r.violations)
        self.calls += r.calls
        self.calls_ok += r.calls_ok
        self.avail_weighted += r.availability * r.sim_s
        self.false_failovers += len(r.false_failovers)
        for k, v in r.faults.items():
            self.faults[k] = self.faults.get(k, 0) + v
        for fo in r.failovers:
            if fo.disturbed:
                continue
            if fo.client_s is not None:
                self.gaps.setdefault(f"{fo.cause}_client", []).append(fo.client_s)
            if fo.serve_s is not None:
                self.gaps.setdefault(f"{fo.cause}_serve", []).append(fo.serve_s)

    def to_dict(self) -> dict[str, Any]:
        hours = self.sim_s / 3600.0
        return {
            "runs": self.runs,
            "sim_s": round(self.sim_s, 3),
            "violations": self.violations,
            "faults": dict(sorted(self.faults.items())),
            "failovers": {k: _dist(v) for k, v in sorted(self.gaps.items())},
            "false_failovers": self.false_failovers,
            "false_failovers_per_hour": round(self.false_failovers / hours, 3) if hours else None,
            "availability": round(self.avail_weighted / self.sim_s, 6) if self.sim_s else None,
            "calls": self.calls,
            "calls_ok": self.calls_ok,
        }


def _params_dict(p: ElectionParams, ttl_s: float) -> dict[str, float]:
    return {
        "lease_s": p.lease_s,
        "renew_s": p.renew_s,
        "drift": p.drift,
        "write_timeout_s": p.write_timeout_s,
        "window_s": round(p.window_s, 6),
        "ttl_s": ttl_s,
    }


def replay_command(cfg: RunConfig, control: str | None = None) -> str:
    """The ``aegis sim`` command line that replays this run."""
    p = cfg.params
    cmd = f"aegis sim --seed {cfg.seed} --mix {cfg.mix.name} --lease {p.lease_s} --renew {p.renew_s}"
    cmd += f" --duration {cfg.duration_s:g}"
    if control:
        cmd += f" --control {control}"
    return cmd


def sweep_cells(sweep: SweepConfig) -> list[ElectionParams]:
    """The valid (lease, renew) combinations of the grid, in order."""
    cells = []
    for lease in sweep.leases:
        for renew in sweep.renews:
            try:
                cells.append(ElectionParams(lease_s=lease, renew_s=renew))
            except ValueError:
                continue
    return cells


def run_campaign(cfg: CampaignConfig, progress: Progress | None = None) -> dict[str, Any]:
    """Run the campaign and return its report (see the module docstring)."""
    cells = sweep_cells(cfg.sweep) if cfg.sweep else []
    sweep_runs = cfg.sweep.runs if cfg.sweep else 0
    total = cfg.runs + 2 * sweep_runs * len(cells) + cfg.predicted_runs
    done = 0
    started = time.perf_counter()
    sim_total = 0.0
    by_mix: dict[str, _MixAgg] = {}
    first_violation: dict[str, Any] | None = None
    violations = 0
    crash_client: list[float] = []
    crash_serve: list[float] = []

    def note_violation(r: RunResult, rc: RunConfig) -> None:
        nonlocal first_violation
        if first_violation is None and r.violations:
            v = r.violations[0]
            first_violation = {
                "seed": rc.seed,
                "mix": rc.mix.name,
                "params": _params_dict(rc.params, rc.ttl_s),
                "replay": replay_command(rc, cfg.control),
                **v.to_dict(),
            }

    for k in range(cfg.runs):
        mix_name = cfg.mixes[k % len(cfg.mixes)]
        rc = RunConfig(
            seed=cfg.seed + k,
            params=cfg.params,
            ttl_s=cfg.ttl_s,
            mix=MIXES[mix_name],
            duration_s=cfg.duration_s,
        )
        if cfg.control:
            rc = replace(control_config(cfg.control, rc), mix=MIXES[mix_name])
        r = run(rc)
        sim_total += r.sim_s
        violations += len(r.violations)
        note_violation(r, rc)
        by_mix.setdefault(mix_name, _MixAgg()).add(r)
        if mix_name == "crash":
            crash_client.extend(r.crash_gaps(client=True))
            crash_serve.extend(r.crash_gaps(client=False))
        done += 1
        if progress and (done % 10 == 0 or done == total):
            progress(done, total, f"{mix_name} seed {rc.seed}")

    sweep_out: list[dict[str, Any]] = []
    for ci, params in enumerate(cells):
        crash_agg, pause_agg = _MixAgg(), _MixAgg()
        client_gaps: list[float] = []
        for j in range(sweep_runs):
            seed = cfg.seed + 1_000_000 + ci * 1000 + j
            for kind in ("crash", "pauses"):
                if kind == "crash":
                    mix, duration = MIXES["crash"], cfg.sweep.crash_duration_s  # type: ignore[union-attr]
                else:
                    mix = FaultMix("pauses", gc=cfg.sweep.pauses)  # type: ignore[union-attr]
                    duration = cfg.sweep.pause_duration_s  # type: ignore[union-attr]
                rc = RunConfig(
                    seed=seed, params=params, ttl_s=cfg.ttl_s, mix=mix, duration_s=duration, clients=1
                )
                r = run(rc)
                sim_total += r.sim_s
                violations += len(r.violations)
                note_violation(r, rc)
                if kind == "crash":
                    crash_agg.add(r)
                    client_gaps.extend(r.crash_gaps(client=True))
                else:
                    pause_agg.add(r)
                done += 1
                if progress and (done % 5 == 0 or done == total):
                    progress(done, total, f"sweep lease {params.lease_s} renew {params.renew_s}")
        pd = pause_agg.to_dict()
        sweep_out.append(
            {
                "lease_s": params.lease_s,
                "renew_s": params.renew_s,
                "window_s": round(params.window_s, 4),
                "crash_runs": crash_agg.runs,
                "failover_samples": len(client_gaps),
                "failover_p50_s": _r(percentile(client_gaps, 50)),
                "failover_p99_s": _r(percentile(client_gaps, 99)),
                "failover_max_s": _r(max(client_gaps) if client_gaps else None),
                "pause_hours": round(pause_agg.sim_s / 3600.0, 3),
                "false_failovers": pause_agg.false_failovers,
                "false_failovers_per_hour": pd["false_failovers_per_hour"],
                "availability_under_pauses": pd["availability"],
                "violations": crash_agg.violations + pause_agg.violations,
            }
        )

    real_client: list[float] = []
    real_serve: list[float] = []
    for k in range(cfg.predicted_runs):
        rc = RunConfig(
            seed=cfg.seed + 2_000_000 + k,
            params=cfg.params,
            ttl_s=cfg.ttl_s,
            mix=MIXES["crash"],
            duration_s=cfg.duration_s,
            drift_actual=REAL_DRIFT,
        )
        r = run(rc)
        sim_total += r.sim_s
        violations += len(r.violations)
        note_violation(r, rc)
        real_client.extend(r.crash_gaps(client=True))
        real_serve.extend(r.crash_gaps(client=False))
        done += 1
        if progress and (done % 10 == 0 or done == total):
            progress(done, total, f"predicted (real clocks) seed {rc.seed}")

    wall = time.perf_counter() - started
    crash_mix = by_mix.get("crash")
    report: dict[str, Any] = {
        "name": cfg.name,
        "election": "lease",
        "runs": cfg.runs,
        "sweep_runs": 2 * sweep_runs * len(cells),
        "predicted_runs": cfg.predicted_runs,
        "seed": cfg.seed,
        "control": cfg.control,
        "violations": violations,
        "first_violation": first_violation,
        "failover_p50_s": _r(percentile(crash_client, 50)),
        "failover_p99_s": _r(percentile(crash_client, 99)),
        "failover_max_s": _r(max(crash_client) if crash_client else None),
        "failover_samples": len(crash_client),
        "failover_measure": "kill -9 of the serving instance -> first reply a sticky client accepts from a newer epoch",
        "serve_failover_p50_s": _r(percentile(crash_serve, 50)),
        "serve_failover_p99_s": _r(percentile(crash_serve, 99)),
        "serve_failover_max_s": _r(max(crash_serve) if crash_serve else None),
        "serve_failover_samples": len(crash_serve),
        "availability_crash_mix": crash_mix.to_dict()["availability"] if crash_mix else None,
        "params": _params_dict(cfg.params, cfg.ttl_s),
        "duration_s": cfg.duration_s,
        "sim_seconds": round(sim_total, 1),
        "wall_seconds": round(wall, 2),
        "speedup": round(sim_total / wall, 1) if wall > 0 else None,
        "by_mix": {m: a.to_dict() for m, a in sorted(by_mix.items())},
        "sweep": {
            "pauses": cfg.sweep.pauses.to_dict() if cfg.sweep else None,
            "cells": sweep_out,
        },
        "predicted_failover_real_clocks_p50_s": _r(percentile(real_client, 50)),
        "predicted_failover_real_clocks_p99_s": _r(percentile(real_client, 99)),
        "predicted_failover_real_clocks_max_s": _r(max(real_client) if real_client else None),
        "predicted_failover_real_clocks_samples": len(real_client),
        "predicted_failover": {
            "params": _params_dict(cfg.params, cfg.ttl_s),
            "measure": "client",
            "clock_drift": REAL_DRIFT,
            "samples_s": [round(x, 6) for x in real_client],
            "serve_samples_s": [round(x, 6) for x in real_serve],
            "p50_s": _r(percentile(real_client, 50)),
            "p99_s": _r(percentile(real_client, 99)),
            "bound_drift": cfg.params.drift,
            "bound_drift_samples_s": [round(x, 6) for x in crash_client],
        },
    }
    return report
