"""``aegis failover``: kill -9 / SIGTERM the active of a single-active group of real processes, measure the gaps.

It is a built-in campaign: :func:`failover_campaign` is the campaign spec equivalent to its options (``kills``
``instance-kill`` and ``graceful`` ``instance-stop`` faults of the active, in the seed's order, on a local 3-node
cluster, with the single-active group's sticky workload and prober only), which the campaign runner
(:func:`aegis.harness.campaign.runner.run_campaign`) runs like any other: settle, inject, wait until the sticky
client is steady again, restart the victim and wait until it is back as a standby. :func:`failover_report`
then judges the run's history with the checkers into ``aegis failover``'s own report (its JSON keys
``kills``, ``failover_p50_s``, ``failover_p99_s``, ``graceful_p99_s``, ``split_brain``, ...).

Gap of a fault: the rig's signal to the victim (:class:`~aegis.harness.campaign.history.ProcessEvent`, stamped
just before it went out) -> first successful sticky reply from a newer epoch before the client was steady
again; probe gap: the same signal -> first direct probe answered from a newer epoch (the election's share of
the gap). Split brain and epoch regressions as :mod:`aegis.harness.campaign.checkers` define them, over the whole run.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from aegis.harness.campaign.checkers import failover_time, first_hit_of_newer_epoch, signal_time
from aegis.harness.campaign.group import RigParams
from aegis.harness.campaign.history import ProcessEvent
from aegis.harness.campaign.report import ReportModel, SplitBrainExample
from aegis.harness.campaign.runner import CampaignRun, run_campaign
from aegis.harness.campaign.schema import Campaign, Topology, Workload
from aegis.harness.faults.fault import Fault
from aegis.stats import MIN_P99_SAMPLES, percentile, recorded, spread_text

Progress = Callable[[int, int, str], None]
"""``progress(done, total, what)``: called before and after each fault."""

KINDS: dict[str, Literal["kill", "graceful"]] = {"instance-kill": "kill", "instance-stop": "graceful"}
"""The campaign's fault kinds and what ``aegis failover`` calls them."""


class FailoverFault(ReportModel):
    """One fault (``faults[]``): the victim and its epoch, who answered next in which epoch, the gap the sticky
    client saw and the probe gap (None: no reply from a newer epoch before the client was steady again)."""

    n: int
    kind: Literal["kill", "graceful"]
    instance: str
    old_epoch: int
    new_instance: str | None
    new_epoch: int | None
    gap_s: float | None
    probe_gap_s: float | None


class FailoverReport(ReportModel):
    """The JSON of ``aegis failover`` (``reports/failover.json``): gap figures per kind with their samples, what
    the group's workloads saw (:class:`~aegis.harness.campaign.report.Observed`'s keys), every fault, the rig's timing,
    the seed, and how to reproduce it."""

    kills: int
    failover_p50_s: float | None
    failover_p99_s: float | None
    failover_max_s: float | None
    graceful_stops: int
    graceful_p50_s: float | None
    graceful_p99_s: float | None
    graceful_max_s: float | None
    failover_samples: int
    graceful_samples: int
    missed_failovers: int
    failover_gaps_s: list[float]
    graceful_gaps_s: list[float]
    split_brain: int
    split_brain_examples: list[SplitBrainExample]
    epoch_regressions: int
    calls: int
    failed_calls: int
    probe_successes: int
    probes_sent: int
    probe_nodes: int
    epochs_seen: list[int]
    faults: list[FailoverFault]
    params: dict[str, int | float | str]
    seed: int
    took_s: float
    command: str
    environment: dict[str, Any]


def failover_campaign(
    kills: int = 10, graceful: int = 5, seed: int = 1, params: RigParams | None = None
) -> Campaign:
    """The campaign ``aegis failover --kills K --graceful G --seed S`` runs: K kill -9 and G SIGTERM of the active
    in a seeded order, a random settle of 0.3 s plus up to two renewal periods before each (a random phase of the
    renewal cycle, so the gaps sample it), 15 s to recover, no other workload, no trace check."""
    faults = [
        Fault("instance-kill", "active", count=kills) if kills else None,
        Fault("instance-stop", "active", count=graceful) if graceful else None,
    ]
    if not any(faults):
        raise ValueError("aegis failover needs at least one kill or graceful stop")
    renew = (params or RigParams()).election.renew_s
    return Campaign(
        name="failover",
        description="aegis failover: kill -9 / SIGTERM of the single-active group's active",
        seed=seed,
        topology=Topology(nodes=3, instances=3),
        workload=Workload(),
        faults=[f for f in faults if f is not None],
        settle_s=(0.3, 0.3 + 2 * renew),
        recover_timeout_s=15,
        trace=False,
    )


def failover_report(run: CampaignRun, *, kills: int, graceful: int, seed: int) -> FailoverReport:
    """``aegis failover``'s report of a run of :func:`failover_campaign`, judged from its history."""
    history = run.history
    calls, hits, events = history.calls("sticky"), history.hits, history.of(ProcessEvent)
    faults: list[FailoverFault] = []
    for fr in history.fault_runs():
        s = fr.start
        victim = fr.applied.target if fr.applied is not None else s.active
        until = fr.recovered.at if fr.recovered is not None else s.at
        at = signal_time(events, victim, s.at, until) if fr.applied is not None else None
        at = s.at if at is None else at
        first = failover_time(calls, at, s.epoch, until=until) if fr.applied is not None else None
        probe = first_hit_of_newer_epoch(hits, at, s.epoch) if fr.applied is not None else None
        faults.append(
            FailoverFault(
                n=s.n,
                kind=KINDS[s.fault.kind],
                instance=victim,
                old_epoch=s.epoch,
                new_instance=first.instance if first else None,
                new_epoch=first.epoch if first else None,
                gap_s=round(first.received - at, 4) if first else None,
                probe_gap_s=round(probe.received - at, 4) if probe else None,
            )
        )
    kill_gaps = [f.gap_s for f in faults if f.kind == "kill" and f.gap_s is not None]
    stop_gaps = [f.gap_s for f in faults if f.kind == "graceful" and f.gap_s is not None]
    return FailoverReport(
        kills=kills,
        failover_p50_s=percentile(kill_gaps, 50),
        failover_p99_s=percentile(kill_gaps, 99),
        failover_max_s=max(kill_gaps) if kill_gaps else None,
        graceful_stops=graceful,
        graceful_p50_s=percentile(stop_gaps, 50),
        graceful_p99_s=percentile(stop_gaps, 99),
        graceful_max_s=max(stop_gaps) if stop_gaps else None,
        failover_samples=len(kill_gaps),
        graceful_samples=len(stop_gaps),
        missed_failovers=sum(1 for f in faults if f.gap_s is None),
        failover_gaps_s=kill_gaps,
        graceful_gaps_s=stop_gaps,
        **dict(run.observed),
        faults=faults,
        params=run.params.as_dict(),
        seed=seed,
        took_s=run.report.took_s,
        command=f"aegis failover --kills {kills} --graceful {graceful} --seed {seed}",
        environment={
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
        },
    )


def run_failover(
    *,
    kills: int = 10,
    graceful: int = 5,
    seed: int = 1,
    params: RigParams | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """``aegis failover``: run :func:`failover_campaign` on a fresh local 3-node cluster; its report, as JSON."""
    params = params or RigParams()
    run = run_campaign(failover_campaign(kills, graceful, seed, params), progress=progress, params=params)
    return failover_report(run, kills=kills, graceful=graceful, seed=seed).model_dump(mode="json")


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
    "FailoverFault",
    "FailoverReport",
    "failover_campaign",
    "failover_report",
    "markdown",
    "run_failover",
    "write_report",
]
