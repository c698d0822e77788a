"""A campaign's report: the JSON other scripts read, a markdown summary, and an HTML page with Bokeh plots.

The JSON (``reports/<campaign>.json``) has at least ``runs``, ``split_brain``, ``lost_events``,
``failover_p99_s`` and ``trace_validated`` at the top level (the ``aegis campaign --json`` contract), then
``by_class`` (per fault class: runs, gap and new-epoch failover p50/p99/max with their sample counts, the
budget and whether it held, failed calls), ``faults`` (one row per fault) and ``timeline`` (every failed client
operation, for the plot).

The JSON is :class:`CampaignReport` (pydantic models down to every row: :class:`FaultRow`, :class:`ClassRow`,
:class:`TraceChecked` / :class:`TraceUnchecked`, :class:`Prediction`, :class:`Timeline`), built after the run
from its history by :func:`campaign_report` through the checkers; ``model_dump(mode="json")`` is the JSON,
key for key in the recorded order (``tests/test_campaign.py`` validates every recorded ``reports/*.json`` and
checks that it dumps back to the same JSON). The figures (:func:`by_class`, :func:`headline`,
:func:`budget_breaks`) and the renderers (:func:`markdown`, :func:`html`) read the JSON form, so a report
recorded by an older version renders too.

``failover_p99_s`` (and ``failover_p50_s``) is the client-visible gap over *all* faults of the campaign (the
longest stretch without a successful sticky call, from the fault until the client is steady again), whether
or not the active changed; ``new_epoch_failover_p50_s`` / ``_p99_s`` are over the faults that changed it
(fault -> first successful call from a newer epoch). Percentiles are nearest-rank (:mod:`aegis.stats`, the
simulator's definition too); every one is printed with its sample count, and below
:data:`~aegis.stats.MIN_P99_SAMPLES` samples the maximum is printed instead of a p99.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, SerializerFunctionWrapHandler, model_serializer

from aegis.harness.campaign.checkers import (
    duplicate_commands,
    epoch_regressions,
    failed_calls,
    failover_time,
    longest_gap,
    lost_events,
    split_brain,
    split_brain_by_fault,
)
from aegis.harness.campaign.history import Delivery, History, Hit, JournalLine
from aegis.harness.campaign.schema import Budget, Campaign
from aegis.stats import MIN_P99_SAMPLES, percentile, recorded, spread_text

OTHER_CLIENTS = ("rpc", "events", "commands")
"""The campaign's workloads besides the sticky client, in the order the report lists them."""

DEFAULT_BUDGET = {"gap_p99_s": 2.0, "gap_max_s": 2.0, "reason": ""}
"""A fault class's budget when none is given (:data:`aegis.harness.campaign.schema.DEFAULT_BUDGET_S`)."""


# -- the report's JSON, as models --------------------------------------------------------------------------------


class ReportModel(BaseModel):
    """A part of a report: every key declared, nothing else accepted; ``model_dump(mode="json")`` is the JSON."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SplitBrainExample(ReportModel):
    """A success of a deposed epoch (``old``) sent after a newer epoch's success (``new``) had come back."""

    old: Hit
    new: Hit


class Observed(ReportModel):
    """What the single-active group's workloads saw, judged by the checkers (:func:`judge_group`)."""

    split_brain: int
    split_brain_examples: list[SplitBrainExample]
    epoch_regressions: int
    calls: int
    failed_calls: int
    probe_successes: int
    probes_sent: int
    probe_nodes: int
    epochs_seen: list[int]


class FaultRow(ReportModel):
    """One fault the nemesis applied (``faults[]``): times are seconds since the run started (``at_s``, ``until_s``:
    injected, steady again) and wall clock (``wall``, ``wall_recovered``: injected, healed and back)."""

    n: int
    kind: str
    target: str
    active_before: str
    old_epoch: int
    new_epoch: int | None
    new_active: str | None
    failover_s: float | None
    gap_s: float | None
    recovered: bool
    failed_calls: int
    failed_ops: dict[str, int]
    split_brain: int
    at_s: float
    until_s: float
    wall: float
    wall_recovered: float
    details: dict[str, Any]


class ClassRow(ReportModel):
    """One fault class (``by_class[kind]``): gap and new-epoch failover figures with their sample counts, failed
    operations, split brain, unrecovered faults, the budget and whether it held (None: no gap sample)."""

    runs: int
    gap_p50_s: float | None
    gap_p99_s: float | None
    gap_max_s: float | None
    gap_samples: int
    failovers: int
    failover_p50_s: float | None
    failover_p99_s: float | None
    failover_max_s: float | None
    failover_samples: int
    failed_calls: int
    failed_ops: int
    split_brain: int
    unrecovered: int
    budget: Budget
    budget_held: bool | None


class TraceChecked(ReportModel):
    """``trace`` when TLC ran: its verdict (:meth:`aegis.spec.trace_check.Verdict.summary`) with how much of the trace
    and of the faults it explained."""

    file: str
    events_total: int
    faults_total: int
    tlc_budget_s: int | float  # as the campaign gave it (300, or 900.0)
    result: Literal["validated", "rejected", "incomplete"]
    accepted: bool
    reason: str
    events: int
    explained: int
    events_given_to_tlc: int
    instances: int
    first_bad_line: int | None
    first_bad_event: dict[str, Any] | None
    distinct_states: int | None
    seconds: float | None
    ms_per_event: float | None
    events_checked: int
    faults_covered: int


class TraceUnchecked(ReportModel):
    """``trace`` when TLC could not check it (no Java, a trace it cannot read): why."""

    file: str
    events_total: int
    faults_total: int
    tlc_budget_s: int | float  # as the campaign gave it (300, or 900.0)
    result: Literal["incomplete"]
    reason: str
    events_checked: int
    faults_covered: int


class Prediction(ReportModel):
    """The simulator's predicted crash-failover distribution beside the measured one (instance-kill faults)."""

    source: str
    sim_samples: int
    sim_p50_s: float | None
    sim_p99_s: float | None
    sim_max_s: float | None
    sim_samples_s: list[float]
    real_samples: int
    real_p50_s: float | None
    real_p99_s: float | None
    real_max_s: float | None
    ks_distance: float | None


class Timeline(ReportModel):
    """Every failed operation of each client (send time in seconds since the run started), for the plot."""

    clients: list[str]
    failures: dict[str, list[float]]


class CampaignReport(ReportModel):
    """The JSON of ``aegis campaign`` (``reports/<campaign>.json``; ``--json`` prints it without ``timeline``).
    Key order and meaning are the contract: see the module docstring. ``trace`` is absent when the campaign checks
    no trace."""

    runs: int
    split_brain: int
    split_brain_examples: list[SplitBrainExample]
    probes_sent: int
    probe_successes: int
    lost_events: int
    failover_p50_s: float | None
    failover_p99_s: float | None
    failover_max_s: float | None
    failover_samples: int
    failover_measure: str
    gap_p50_s: float | None
    gap_p99_s: float | None
    gap_max_s: float | None
    gap_samples: int
    new_epoch_failover_p50_s: float | None
    new_epoch_failover_p99_s: float | None
    new_epoch_failover_max_s: float | None
    new_epoch_failover_samples: int
    trace_validated: bool
    duplicate_commands: int
    epoch_regressions: int
    calls: int
    failed_calls: int
    events_acked: int
    lost_event_ids: list[str]
    commands_completed: int
    duplicate_command_ids: dict[str, int]
    duplicate_command_history: dict[str, list[JournalLine]]
    commands_started_twice: int
    commands_discarded: int
    by_class: dict[str, ClassRow]
    faults: list[FaultRow]
    skipped: list[str]
    campaign: Campaign
    took_s: float
    timeline: Timeline
    trace: TraceChecked | TraceUnchecked | None = None
    prediction: Prediction | None = None
    expectations_broken: list[str] = []

    @model_serializer(mode="wrap")
    def _no_trace_key_without_a_trace(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        out: dict[str, Any] = handler(self)
        if out.get("trace") is None:
            out.pop("trace", None)
        return out


def ks_distance(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the two empirical CDFs.

    Written out (ten lines) rather than pulling in SciPy for one statistic.
    """
    if not a or not b:
        return None
    xs, ys = sorted(a), sorted(b)
    i = j = 0
    worst = 0.0
    while i < len(xs) and j < len(ys):
        x = min(xs[i], ys[j])
        while i < len(xs) and xs[i] <= x:
            i += 1
        while j < len(ys) and ys[j] <= x:
            j += 1
        worst = max(worst, abs(i / len(xs) - j / len(ys)))
    return round(worst, 4)


def _figures(prefix: str, values: Sequence[float]) -> dict[str, Any]:
    """``<prefix>_p50_s``, ``_p99_s`` (nearest rank), ``_max_s`` and ``_samples`` of ``values``."""
    return {
        f"{prefix}_p50_s": percentile(values, 50),
        f"{prefix}_p99_s": percentile(values, 99),
        f"{prefix}_max_s": max(values) if values else None,
        f"{prefix}_samples": len(values),
    }


def by_class(
    faults: Sequence[dict[str, Any]], budgets: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, dict[str, Any]]:
    """Per fault class: runs, client-visible gap p50/p99/max, new-epoch failovers, failed calls, split brain,
    sample counts, and the class's budget (``budgets[kind]``, else :data:`DEFAULT_BUDGET`) with whether it
    held (None when the class has no gap sample)."""
    out: dict[str, dict[str, Any]] = {}
    for kind in dict.fromkeys(f["kind"] for f in faults):
        rows = [f for f in faults if f["kind"] == kind]
        gaps = [f["gap_s"] for f in rows if f["gap_s"] is not None]
        failovers = [f["failover_s"] for f in rows if f["failover_s"] is not None]
        budget = {**DEFAULT_BUDGET, **dict((budgets or {}).get(kind) or {})}
        row: dict[str, Any] = {
            "runs": len(rows),
            **_figures("gap", gaps),
            "failovers": len(failovers),
            **_figures("failover", failovers),
            "failed_calls": sum(f["failed_calls"] for f in rows),
            "failed_ops": sum(sum(f["failed_ops"].values()) for f in rows),
            "split_brain": sum(f["split_brain"] for f in rows),
            "unrecovered": sum(1 for f in rows if not f["recovered"]),
            "budget": budget,
        }
        row["budget_held"] = None if not gaps else not budget_breaks(kind, row, budget)
        out[kind] = row
    return out


def budget_breaks(kind: str, row: Mapping[str, Any], budget: Mapping[str, Any]) -> list[str]:
    """How fault class ``kind`` (its :func:`by_class` row) broke ``budget``: the max always, the p99 only with
    at least :data:`~aegis.stats.MIN_P99_SAMPLES` samples (below that it is the max, and not a p99)."""
    n = row.get("gap_samples", row.get("runs", 0))
    samples = f"{n} sample" if n == 1 else f"{n} samples"
    out = []
    p99, top = row.get("gap_p99_s"), row.get("gap_max_s")
    if n >= MIN_P99_SAMPLES and p99 is not None and p99 > budget["gap_p99_s"]:
        out.append(f"budget: {kind} gap p99 {p99:.2f} s > {budget['gap_p99_s']:g} s ({samples})")
    if top is not None and top > budget["gap_max_s"]:
        out.append(f"budget: {kind} gap max {top:.2f} s > {budget['gap_max_s']:g} s ({samples})")
    return out


def headline(faults: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The campaign's top-level latency figures. ``failover_*``: the client-visible gap over every fault
    (the contract's ``failover_p99_s``; ``gap_*`` are the same figures under their own name);
    ``new_epoch_failover_*``: fault -> first successful call from a newer epoch, over the faults that
    changed the active."""
    gaps = [f["gap_s"] for f in faults if f["gap_s"] is not None]
    epochs = [f["failover_s"] for f in faults if f["failover_s"] is not None]
    return {
        **_figures("failover", gaps),
        "failover_measure": "client-visible gap over every fault: the longest stretch without a successful"
        " sticky call, from the fault until the client is steady again",
        **_figures("gap", gaps),
        **_figures("new_epoch_failover", epochs),
    }


def judge_group(history: History, probes_sent: int, probe_nodes: int) -> Observed:
    """What the single-active group's workloads saw, judged from the history: split brain (with up to 5
    examples), epoch regressions, sticky calls and failures, probe successes, probes sent, epochs seen."""
    calls, hits = history.calls("sticky"), history.hits
    pairs = split_brain(hits)
    return Observed(
        split_brain=len(pairs),
        split_brain_examples=[SplitBrainExample(old=old, new=new) for old, new in pairs[:5]],
        epoch_regressions=epoch_regressions(calls),
        calls=len(calls),
        failed_calls=sum(1 for c in calls if not c.ok),
        probe_successes=len(hits),
        probes_sent=probes_sent,
        probe_nodes=probe_nodes,
        epochs_seen=sorted({h.epoch for h in hits}),
    )


def fault_rows(history: History, others: Sequence[str] = ()) -> list[FaultRow]:
    """One row per fault the nemesis applied (skipped ones have none), judged from the history: the active and
    epoch before, the new ones (first successful sticky call from a newer epoch until the client was steady
    again), the client-visible gap, whether it recovered, the sticky calls and the ``others`` workloads'
    operations that failed in its window, the split brain charged to it, its times and the nemesis' details."""
    calls = history.calls("sticky")
    runs = [r for r in history.fault_runs() if r.applied is not None]
    starts = [r.start.at for r in runs]
    split = split_brain_by_fault(starts, split_brain(history.hits))
    rows = []
    for run, brain in zip(runs, split, strict=True):
        s, applied, rec, healed = run.start, run.applied, run.recovered, run.healed
        assert applied is not None and rec is not None and healed is not None, f"fault {s.n} did not finish"
        t0, t1 = s.at, rec.at
        first = failover_time(calls, t0, s.epoch, until=t1)
        rows.append(
            FaultRow(
                n=s.n,
                kind=s.fault.kind,
                target=applied.target,
                active_before=s.active,
                old_epoch=s.epoch,
                new_epoch=first.epoch if first else None,
                new_active=first.instance if first else None,
                failover_s=round(first.received - t0, 4) if first else None,
                gap_s=round(longest_gap(calls, t0, t1), 4),
                recovered=rec.recovered,
                failed_calls=failed_calls(calls, t0, t1),
                failed_ops={name: failed_calls(history.calls(name), t0, t1) for name in others},
                split_brain=brain,
                at_s=round(t0 - history.started, 3),
                until_s=round(t1 - history.started, 3),
                wall=s.wall,
                wall_recovered=healed.wall,
                details=json.loads(json.dumps(applied.details, default=str)),
            )
        )
    return rows


def timeline(history: History, clients: Sequence[str]) -> Timeline:
    """Every failed operation of each client (send time since the start, at most 5000 each), for the plot."""
    return Timeline(
        clients=list(clients),
        failures={
            k: [round(c.sent - history.started, 3) for c in history.calls(k) if not c.ok][:5000]
            for k in clients
        },
    )


def journal_evidence(lines: Sequence[JournalLine], call_ids: Sequence[str]) -> dict[str, list[JournalLine]]:
    """Every journal line of each call id (time order): the evidence a report shows for a command completed
    twice (which worker, which process, which claim token, when)."""
    out: dict[str, list[JournalLine]] = {c: [] for c in call_ids}
    for x in sorted(lines, key=lambda x: x.mono):
        if x.call_id in out:
            out[x.call_id].append(x)
    return out


def campaign_report(
    campaign: Campaign,
    history: History,
    *,
    others: Sequence[str],
    observed: Observed,
    took_s: float,
) -> CampaignReport:
    """The report of a finished run, judged from its history (the runner adds ``trace``, ``prediction`` and
    ``expectations_broken``). ``others``: the workloads that ran besides the sticky client; ``observed``: what
    the single-active group's workloads saw (:func:`judge_group`). The per-class and headline figures are computed
    on the rows' JSON (:func:`by_class`, :func:`headline`), as for a recorded report."""
    faults = fault_rows(history, others)
    rows = [f.model_dump() for f in faults]
    journal = history.of(JournalLine)
    completions = [x.call_id for x in journal if x.ev == "complete"]
    # Completed twice (two stored outcomes for one call id) must never happen; started twice is what a worker
    # killed or paused mid-command leads to.
    dups = duplicate_commands(completions)
    restarted = duplicate_commands(x.call_id for x in journal if x.ev == "start")
    acked = [c.key for c in history.calls("events") if c.ok]
    lost = lost_events(acked, (d.key for d in history.of(Delivery)))
    budgets = {k: campaign.budget(k).model_dump() for k in {f.kind for f in faults}}
    return CampaignReport.model_validate(
        {
            "runs": len(faults),
            "split_brain": observed.split_brain,
            "split_brain_examples": observed.split_brain_examples,
            "probes_sent": observed.probes_sent,
            "probe_successes": observed.probe_successes,
            "lost_events": len(lost),
            # failover_*: the client-visible gap over every fault; new_epoch_failover_*: faults that changed the
            # active only (see headline)
            **headline(rows),
            "trace_validated": False,
            "duplicate_commands": len(dups),
            "epoch_regressions": observed.epoch_regressions,
            "calls": observed.calls,
            "failed_calls": observed.failed_calls,
            "events_acked": len(acked),
            "lost_event_ids": lost[:20],
            "commands_completed": sum(1 for c in history.calls("commands") if c.ok),
            "duplicate_command_ids": dict(list(dups.items())[:20]),
            "duplicate_command_history": journal_evidence(journal, list(dups)[:5]),
            "commands_started_twice": len(restarted),
            "commands_discarded": sum(1 for x in journal if x.ev == "discard"),
            "by_class": by_class(rows, budgets),
            "faults": faults,
            "skipped": [r.skipped.reason for r in history.fault_runs() if r.skipped is not None],
            "campaign": campaign,
            "took_s": took_s,
            "timeline": timeline(history, ["sticky", *others]),
        }
    )


def _budget(report: dict[str, Any], kind: str, row: Mapping[str, Any]) -> dict[str, Any]:
    """The budget of a class: the row's (reports since budgets), else the campaign's, else the default."""
    given = row.get("budget") or (report["campaign"].get("budgets") or {}).get(kind) or {}
    return {**DEFAULT_BUDGET, **given}


def broken_promises(report: dict[str, Any]) -> list[str]:
    """``expectations_broken``, broken budgets first: a report recorded before budgets existed gets its
    classes' breaks of the default budget (or the campaign's) computed from ``by_class``."""
    recorded_broken = list(report.get("expectations_broken") or [])
    budgets = [
        b
        for kind, row in report["by_class"].items()
        for b in budget_breaks(kind, row, _budget(report, kind, row))
    ]
    rest = [b for b in recorded_broken if b not in budgets]
    return budgets + rest


def _spread(samples: int, p50: float | None, p99: float | None, top: float | None) -> str:
    return spread_text(recorded(samples, p50, p99, top))


def trace_summary(trace: dict[str, Any] | None) -> str:
    """One line on what TLC checked of the campaign's election trace (``result``, events and faults covered);
    reports recorded before the ``trace`` object had a ``note`` instead."""
    if not trace:
        return "not recorded"
    if "result" not in trace:
        return f"{'accepted' if trace.get('accepted') else 'not accepted'} {trace.get('note', '')}".strip()
    head = {"validated": "**validated**", "rejected": "**rejected**", "incomplete": "incomplete"}[
        trace["result"]
    ]
    line = (
        f"{head}: {trace.get('events_checked', 0)} of {trace.get('events_total', 0)} events,"
        f" {trace.get('faults_covered', 0)} of {trace.get('faults_total', 0)} faults"
    )
    if trace.get("seconds") is not None and trace["result"] != "incomplete":
        line += f" ({trace['seconds']:.0f} s of TLC)"
    if trace.get("reason"):
        line += f"; {trace['reason']}"
    return line + f"; `aegis trace-check {trace.get('file', '')}`"


def markdown(report: dict[str, Any]) -> str:
    """The human summary: the promises kept or broken (broken budgets first), what ran, the per-class table."""
    c = report["campaign"]
    broken = broken_promises(report)
    head = headline(report["faults"])
    lines = [
        f"# Campaign `{c['name']}`",
        "",
        f"{c['description']}",
        "",
        f"Reproduce: `aegis campaign harness/campaigns/{c['name']}.yaml --out reports` (seed {c['seed']}).",
        f"{report['runs']} faults in {report['took_s']:.0f} s on a local {c['topology']['nodes']}-node cluster;"
        f" {c['topology']['instances']} single-active instances, {c['topology']['rpc_instances']} RPC instances.",
        "",
        "## Promises",
        "",
    ]
    lines += [f"- **broken:** {b}" for b in broken] or ["- all kept"]
    lines += [
        "",
        "## Figures",
        "",
        f"Failover (client-visible gap over every fault): {_spread(head['gap_samples'], head['gap_p50_s'], head['gap_p99_s'], head['gap_max_s'])}."
        f" New-epoch failover (only faults that changed the active): {_spread(head['new_epoch_failover_samples'], head['new_epoch_failover_p50_s'], head['new_epoch_failover_p99_s'], head['new_epoch_failover_max_s'])}.",
        "",
        "Gap = the longest stretch without a successful sticky call, from the fault until the client is steady"
        " again. New-epoch failover = fault -> first successful sticky call from a newer epoch (only faults that"
        " changed the active). Failed calls = sticky calls sent during the fault's window that failed. Budget ="
        " the gap p99 / max the campaign promises for the class. Percentiles are nearest-rank, each with its"
        f" sample count; below {MIN_P99_SAMPLES} samples the max is given instead of a p99.",
        "",
        "| fault class | runs | gap | budget p99 / max | budget held | new-epoch failovers | failed calls"
        " | other failed ops | split brain |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    reasons = []
    for kind, r in report["by_class"].items():
        budget = _budget(report, kind, r)
        gap_n = r.get("gap_samples", r["runs"])
        held = "-" if not gap_n else "**no**" if budget_breaks(kind, r, budget) else "yes"
        fo_n = r.get("failover_samples", r["failovers"])
        gap = _spread(gap_n, r["gap_p50_s"], r["gap_p99_s"], r["gap_max_s"])
        fo = _spread(fo_n, r["failover_p50_s"], r["failover_p99_s"], r["failover_max_s"])
        lines.append(
            f"| {kind} | {r['runs']} | {gap} | {budget['gap_p99_s']:g} s / {budget['gap_max_s']:g} s | {held}"
            f" | {fo} | {r['failed_calls']} | {r['failed_ops']} | {r['split_brain']} |"
        )
        if budget.get("reason"):
            reasons.append(f"- {kind}: {budget['reason']}")
    if reasons:
        lines += ["", "Budgets above the default, and why:", "", *reasons]
    lines += [
        "",
        "| check | value |",
        "|---|---|",
        f"| split brain (whole campaign) | {report['split_brain']} |",
        f"| epoch regressions (sticky client) | {report['epoch_regressions']} |",
        f"| events acknowledged / lost | {report['events_acked']} / {report['lost_events']} |",
        f"| commands completed / processed twice | {report['commands_completed']} / {report['duplicate_commands']} |",
        f"| sticky calls / failed | {report['calls']} / {report['failed_calls']} |",
        f"| election trace checked with TLC | {trace_summary(report.get('trace'))} |",
    ]
    pred = report.get("prediction")
    if pred:
        sim_max = pred.get("sim_max_s")
        if sim_max is None and len(pred.get("sim_samples_s") or []) == pred["sim_samples"]:
            sim_max = max(pred["sim_samples_s"])
        real = [
            f["failover_s"]
            for f in report["faults"]
            if f["kind"] == "instance-kill" and f["failover_s"] is not None
        ]
        real_max = pred.get("real_max_s", max(real) if real else None)
        sim = _spread(pred["sim_samples"], pred["sim_p50_s"], pred["sim_p99_s"], sim_max)
        measured = _spread(pred["real_samples"], pred["real_p50_s"], pred["real_p99_s"], real_max)
        lines += [
            "",
            "## Simulator prediction vs measurement (instance crash)",
            "",
            f"Simulated crashes, with the same election state machine (`{pred['source']}`): {sim}. Measured"
            f" here (kill -9 of the active -> first call from a newer epoch): {measured}."
            f" Two-sample KS distance {pred['ks_distance']}.",
        ]
    if report.get("duplicate_command_history"):
        lines += ["", "## Commands completed twice: the workers' journals", ""]
        for call_id, rows in report["duplicate_command_history"].items():
            lines.append(
                f"- `{call_id}`: "
                + "; ".join(
                    f"{r['ev']} by {r['worker']} (pid {r['pid']}, token {r['token']}) at {r['wall']:.3f}"
                    for r in rows
                )
            )
    if report.get("skipped"):
        lines += ["", "## Skipped", ""] + [f"- {s}" for s in report["skipped"]]
    return "\n".join(lines) + "\n"


def html(report: dict[str, Any]) -> str:
    """An HTML page: the gap distribution per fault class (ECDF, with the simulator's prediction for
    instance crashes), and a timeline of faults against each client's failed operations.

    BokehJS is embedded (``bokeh.resources.INLINE``, about 1 MB): trading hosts are offline, so a page that
    loads it from a CDN would show no plots there."""
    from bokeh.embed import file_html
    from bokeh.layouts import column
    from bokeh.models import BoxAnnotation, Div, Label
    from bokeh.palettes import Category10
    from bokeh.plotting import figure
    from bokeh.resources import INLINE

    palette = Category10[10]
    ecdf = figure(
        title="Client-visible gap per fault class (ECDF)",
        x_axis_label="gap (s)",
        y_axis_label="fraction of faults",
        width=900,
        height=380,
    )
    kinds = list(report["by_class"])
    for n, kind in enumerate(kinds):
        gaps = sorted(f["gap_s"] for f in report["faults"] if f["kind"] == kind and f["gap_s"] is not None)
        if gaps:
            ys = [(i + 1) / len(gaps) for i in range(len(gaps))]
            ecdf.step(gaps, ys, mode="after", color=palette[n % 10], line_width=2, legend_label=kind)
    pred = report.get("prediction")
    if pred and pred.get("sim_samples_s"):
        sim = sorted(pred["sim_samples_s"])
        ecdf.step(
            sim,
            [(i + 1) / len(sim) for i in range(len(sim))],
            mode="after",
            color="black",
            line_dash="dashed",
            legend_label="instance-kill, simulator prediction",
        )
    ecdf.legend.location = "bottom_right"

    timeline = figure(
        title="Faults (shaded) and failed client operations (dots)",
        x_axis_label="seconds since the campaign started",
        y_range=list(report["timeline"]["clients"]) or ["sticky"],
        width=900,
        height=320,
    )
    for n, f in enumerate(report["faults"]):
        color = palette[kinds.index(f["kind"]) % 10]
        timeline.add_layout(
            BoxAnnotation(left=f["at_s"], right=f["until_s"], fill_alpha=0.15, fill_color=color)
        )
        timeline.add_layout(Label(x=f["at_s"], y=0, y_units="screen", text=str(n + 1), text_font_size="8pt"))
    for client, times in report["timeline"]["failures"].items():
        if times:
            timeline.scatter(times, [client] * len(times), size=5, color="red", alpha=0.6)
    header = Div(
        text=f"<h2>Campaign {report['campaign']['name']}</h2><pre>{markdown(report)}</pre>", width=900
    )
    title = f"Aegis campaign {report['campaign']['name']}"
    return file_html(column(header, ecdf, timeline), INLINE, title)


def write_report(report: CampaignReport | dict[str, Any], out: Path) -> list[Path]:
    """``<name>.json``, ``<name>.md`` and ``<name>.html`` in ``out`` (from a report, or from its JSON as
    recorded: ``aegis render``)."""
    if isinstance(report, CampaignReport):
        report = report.model_dump(mode="json")
    out.mkdir(parents=True, exist_ok=True)
    name = report["campaign"]["name"]
    paths = [out / f"{name}.json", out / f"{name}.md", out / f"{name}.html"]
    paths[0].write_text(json.dumps(report, indent=2) + "\n")
    paths[1].write_text(markdown(report))
    paths[2].write_text(html(report))
    return paths
