"""``aegis campaign FILE``: a Jepsen-style fault campaign on a real local NATS cluster, checked and reported; also
the one fault loop of ``aegis failover`` (:mod:`aegis.harness.campaign.failover`, a built-in campaign).

The runner is generic; the campaign is data (:mod:`aegis.harness.campaign.schema`). It starts a local cluster, the
single-active ledger group (:class:`~aegis.harness.campaign.rig.FailoverRig`: real SDK processes writing election
traces, a sticky workload calling back to back, a prober calling every instance directly), optionally quotes
service processes, and the RPC / event / command workloads (:mod:`aegis.harness.campaign.workload`), all writing one
:class:`~aegis.harness.campaign.history.History`. Then, for each fault of the seeded schedule: wait a random settle
time, inject the fault (:mod:`aegis.harness.faults.nemesis`), wait until the sticky client is steady again, heal
(restart what was killed, resume what was paused, drop the partition) and wait until every instance is back;
each step goes into the history (fault start, applied or skipped, recovered, healed). After the run the
checkers (:mod:`aegis.harness.campaign.checkers`, through :func:`aegis.harness.campaign.report.campaign_report`) judge the
history; the whole merged election trace is checked against the TLA+ spec with TLC (the report's ``trace``
object says how much of it, and of the faults, TLC covered within ``trace_budget_s``).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from aegis.harness.campaign.group import RigParams
from aegis.harness.campaign.history import (
    FaultApplied,
    FaultHealed,
    FaultRecovered,
    FaultSkipped,
    FaultStart,
    History,
)
from aegis.harness.campaign.report import (
    OTHER_CLIENTS,
    CampaignReport,
    Observed,
    Prediction,
    budget_breaks,
    campaign_report,
    ks_distance,
)
from aegis.harness.campaign.rig import FailoverRig, RigControl
from aegis.harness.campaign.schema import Campaign
from aegis.harness.campaign.workload import CommandWorkload, EventWorkload, RpcWorkload
from aegis.harness.cluster.local import LocalCluster, install_signal_cleanup, node_tag
from aegis.harness.cluster.processes import spawn
from aegis.harness.faults.fault import PARTITION_KINDS, Fault
from aegis.harness.faults.nemesis import ActiveFault, AsyncNemesis, FirewallUnavailable, NemesisError
from aegis.sdk.config import load_settings
from aegis.sdk.connection import ConnectionPool
from aegis.sdk.quorum_buckets import ensure_quorum_buckets, spread_quorum_leaders
from aegis.stats import percentile

ROOT = Path(__file__).resolve().parents[3]
PREDICTION = ROOT / "reports" / "sim-predicted-failover.json"

Progress = Callable[[int, int, str], None]


@dataclass
class _Quotes:
    """The plain RPC service's processes (``python -m aegis.harness.demo serve``)."""

    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    async def start(self, urls: list[str], count: int, log_dir: Path) -> None:
        for n in range(count):
            log = (log_dir / f"quotes-Q{n + 1}.log").open("ab")
            try:
                args = [sys.executable, "-m", "aegis.harness.demo", "serve", "--instance", f"Q{n + 1}", *urls]
                self.procs.append(spawn(args, stdout=subprocess.PIPE, stderr=log, cwd=ROOT))
            finally:
                log.close()
        for proc in self.procs:
            assert proc.stdout is not None
            line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 30)
            if line.strip() != b"ready":
                raise RuntimeError(f"a quotes instance failed to start (see {log_dir})")

    async def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                await asyncio.to_thread(proc.wait, 5)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait, 5)
            if proc.stdout is not None:
                proc.stdout.close()


@dataclass
class CampaignRun:
    """A finished run: its campaign, its history, and the report judged from it (``report.model_dump(mode="json")``
    is the ``aegis campaign`` JSON). ``observed``: what the single-active group's workloads saw
    (:func:`aegis.harness.campaign.report.judge_group`); ``params``: the rig's timing."""

    campaign: Campaign
    history: History
    observed: Observed
    params: RigParams
    report: CampaignReport


async def _run(
    campaign: Campaign,
    cluster: LocalCluster,
    work: Path,
    progress: Progress | None,
    trace_out: Path | None,
    params: RigParams,
) -> CampaignRun:
    history = History()
    rng = random.Random(campaign.seed)
    schedule = campaign.schedule()
    topo, load = campaign.topology, campaign.workload
    instances = [f"L{n + 1}" for n in range(topo.instances)]
    trace_dir = work / "traces" if campaign.trace else None
    if trace_dir is not None:
        trace_dir.mkdir(parents=True)
    quotes = _Quotes()
    pool = await ConnectionPool.connect(load_settings(servers=cluster.urls, name=f"campaign-{campaign.name}"))
    rpc = events = commands = None
    rig = FailoverRig(
        cluster.urls,
        instances=instances,
        params=params,
        log_dir=work,
        trace_dir=trace_dir,
        gids=_partitions(campaign),
        instance_module=topo.instance_module,
        history=history,
    )
    if load.command_rate:  # worker processes start with the other workloads; the nemesis controls them
        commands = CommandWorkload(
            pool,
            load.command_rate,
            cluster.urls,
            log_dir=work,
            workers=load.command_workers,
            ack_wait=load.command_ack_wait_s,
            history=history,
            gids=_partitions(campaign),
        )
    partitions = _partitions(campaign)
    nemesis = AsyncNemesis(
        cluster,
        RigControl(rig, asyncio.get_running_loop()),
        seed=campaign.seed,
        workers=commands,
        firewall="auto" if partitions else None,  # no nft table for a campaign that cuts nothing
    )
    try:
        if progress:
            progress(0, len(schedule), f"starting {len(instances)} ledger instances and the workloads")
        if campaign.election == "quorum" and topo.quorum_buckets == "pinned":
            # before any instance: they keep the layout they find (ensure_quorum_buckets)
            await ensure_quorum_buckets(pool, tags=[node_tag(n.name) for n in cluster.nodes[:3]])
        await rig.start()
        await quotes.start(cluster.urls, topo.rpc_instances, work)
        if load.rpc_rate and topo.rpc_instances:
            rpc = RpcWorkload(pool, load.rpc_rate, history=history)
            await rpc.start()
        if load.event_rate:
            events = EventWorkload(pool, load.event_rate, history=history)
            await events.start()
        if commands is not None:
            await commands.start()
        for i, fault in enumerate(schedule):
            await asyncio.sleep(rng.uniform(*campaign.settle_s))
            placed = await _place_quorum_leaders(pool) if campaign.election == "quorum" else {}
            victim, old_epoch = await rig.active(timeout=campaign.recover_timeout_s)
            if progress:
                progress(i, len(schedule), f"{fault.kind} -> {fault.target}")
            n = i + 1
            t0 = time.monotonic()
            history.add(FaultStart(n, fault, t0, time.time(), victim, old_epoch))
            try:
                injected = await _inject(nemesis, fault)
            except FirewallUnavailable as exc:
                history.add(FaultSkipped(n, time.monotonic(), f"{fault.kind}: {exc}"))
                continue
            except NemesisError as exc:
                history.add(
                    FaultSkipped(n, time.monotonic(), f"fault {n} {fault.kind} -> {fault.target}: {exc}")
                )
                continue
            history.add(
                FaultApplied(
                    n,
                    injected.target,
                    injected.applied.mono,
                    {**injected.details, "aimed_at": fault.target, **placed},
                )
            )
            # A fault with a duration heals on its own clock (SIGCONT, node restart, partition dropped); a
            # killed or stopped instance is restarted once the client is steady again.
            heal = (
                asyncio.create_task(nemesis.heal_after(injected, fault.duration_s))
                if fault.duration_s
                else None
            )
            recovered = await rig.wait_recovered(
                t0, min_s=max(fault.duration_s, 0.5), steady_s=1.0, timeout=campaign.recover_timeout_s
            )
            history.add(FaultRecovered(n, time.monotonic(), recovered))
            if heal is not None:
                await heal
            await nemesis.restore(injected)
            history.add(FaultHealed(n, time.monotonic(), time.time()))
        if progress:
            progress(len(schedule), len(schedule), "checking")
        for w in (rpc, commands, events):
            if w is not None:
                await w.stop()
        if events is not None:
            await events.drain(30)
        await asyncio.sleep(0.3)
        await rig.stop_workloads()  # the history of the group ends here; the checkers judge it below
    finally:
        for w in (rpc, events, commands):
            if w is not None:
                with contextlib.suppress(Exception):
                    await w.close()
        await nemesis.heal_all()
        await nemesis.close()
        await rig.close()
        await quotes.stop()
        await pool.close()
    others = [name for name, w in zip(OTHER_CLIENTS, (rpc, events, commands), strict=True) if w is not None]
    observed = rig.observed()
    report = campaign_report(
        campaign,
        history,
        others=others,
        observed=observed,
        took_s=round(time.monotonic() - history.started, 1),
    )
    if trace_dir is not None:
        trace = await asyncio.to_thread(
            _check_trace,
            rig,
            work,
            [f.wall_recovered for f in report.faults],
            trace_out,
            campaign.trace_budget_s,
        )
        report.trace = trace  # validated into TraceChecked / TraceUnchecked
        report.trace_validated = trace["result"] == "validated"
    report.prediction = _prediction([f.failover_s for f in report.faults if f.kind == "instance-kill"])
    report.expectations_broken = _broken(campaign, report.model_dump(mode="json"))
    return CampaignRun(campaign, history, observed, params, report)


async def _place_quorum_leaders(pool: ConnectionPool, timeout: float = 30.0) -> dict[str, Any]:
    """Before a fault of a quorum-lease campaign: move the three buckets' stream leaders onto three nodes (a
    crash or cut before it leaves two on one node; right after a heal JetStream refuses step-downs for a while),
    trying again for up to ``timeout``; the fault's details say where they were and, if not apart, why."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            placed = await spread_quorum_leaders(
                pool, timeout=max(1.0, min(10.0, deadline - time.monotonic()))
            )
        except Exception as exc:  # the fault still runs; the details say placement was not known
            if time.monotonic() < deadline:
                await asyncio.sleep(1.0)
                continue
            return {
                "quorum_leaders": None,
                "quorum_leaders_distinct": False,
                "quorum_placement_error": repr(exc),
            }
        if placed.distinct or time.monotonic() >= deadline:
            break
        await asyncio.sleep(1.0)
    out: dict[str, Any] = {
        "quorum_leaders": placed.leaders_after,
        "quorum_leaders_distinct": placed.distinct,
    }
    if placed.reason:
        out["quorum_placement_error"] = placed.reason
    return out


def _partitions(campaign: Campaign) -> bool:
    """The campaign cuts the network: its processes need group ids and the nemesis a firewall."""
    return any(f.kind in PARTITION_KINDS for f in campaign.faults)


async def _inject(nemesis: AsyncNemesis, fault: Fault, tries: int = 10) -> ActiveFault:
    """Inject ``fault``; a target that cannot be resolved yet (no stream leader right after an earlier fault)
    is retried every second, ``tries`` times."""
    for attempt in range(tries):
        try:
            return await nemesis.inject(fault)
        except FirewallUnavailable:
            raise
        except NemesisError:
            if attempt == tries - 1:
                raise
            await asyncio.sleep(1.0)
    raise AssertionError("unreachable")


def _check_trace(
    rig: FailoverRig, work: Path, recovered_at: list[float], keep: Path | None, budget_s: float
) -> dict[str, Any]:
    """Merge the instances' traces and check the whole of it with TLC (:mod:`aegis.spec.trace_check`) within
    ``budget_s`` seconds. The ``trace`` object of the report: ``result`` (``validated``: every event explained;
    ``rejected``: the first line no behaviour explains, or an empty / one-sided trace; ``incomplete``: TLC ran
    out of its budget), ``events_total``, ``events_checked`` (explained in order), ``faults_total`` and
    ``faults_covered`` (faults whose whole stretch, injection to recovery, lies in the explained prefix). The
    trace is written to ``keep`` (else into ``work``) for ``aegis trace-check``."""
    from aegis.spec.tlc import TlcUnavailable
    from aegis.spec.trace_check import TraceCheckError, check

    path = keep or work / "trace.ndjson"
    path.parent.mkdir(parents=True, exist_ok=True)
    merged = rig.trace(path)
    base: dict[str, Any] = {
        "file": str(path),
        "events_total": len(merged.events),
        "faults_total": len(recovered_at),
        "tlc_budget_s": budget_s,
    }
    try:
        verdict = check(merged, timeout=budget_s, workers=2)  # the merge returned it parsed
    except (TraceCheckError, TlcUnavailable) as exc:
        return {
            **base,
            "result": "incomplete",
            "reason": f"TLC could not check it: {str(exc)[:400]}",
            "events_checked": 0,
            "faults_covered": 0,
        }
    explained = merged.events[: verdict.explained]
    until = explained[-1].wall if explained and verdict.result != "validated" else float("inf")
    covered = sum(1 for at in recovered_at if at <= until)
    return {
        **base,
        **verdict.summary(),
        "events_checked": verdict.explained,
        "faults_covered": covered,
    }


def _prediction(crash_failovers: list[float | None]) -> Prediction | None:
    """The simulator's predicted crash-failover distribution beside the measured one (the new-epoch failovers of
    the instance-kill faults), when both exist."""
    import json

    real = [x for x in crash_failovers if x is not None]
    if not real or not PREDICTION.exists():
        return None
    data = json.loads(PREDICTION.read_text())
    sim = [float(x) for x in data.get("samples_s", [])]
    if not sim:
        return None
    return Prediction(
        source=str(PREDICTION.relative_to(ROOT)),
        sim_samples=len(sim),
        sim_p50_s=percentile(sim, 50),
        sim_p99_s=percentile(sim, 99),
        sim_max_s=max(sim),
        sim_samples_s=sim[:2000],
        real_samples=len(real),
        real_p50_s=percentile(real, 50),
        real_p99_s=percentile(real, 99),
        real_max_s=max(real),
        ks_distance=ks_distance(sim, real),
    )


def _broken(campaign: Campaign, report: dict[str, Any]) -> list[str]:
    """The promises the run broke, broken budgets first (the gap a client saw is the promise users feel)."""
    e = campaign.expect
    out = [
        b
        for kind, row in report["by_class"].items()
        for b in budget_breaks(kind, row, campaign.budget(kind).model_dump())
    ]
    if report["split_brain"] > e.split_brain:
        out.append(f"split brain {report['split_brain']} > {e.split_brain}")
    if report["lost_events"] > e.lost_events:
        out.append(f"lost events {report['lost_events']} > {e.lost_events}")
    if report["duplicate_commands"] > e.duplicate_commands:
        out.append(f"commands completed twice {report['duplicate_commands']} > {e.duplicate_commands}")
    if e.failed_calls is not None and report["failed_calls"] > e.failed_calls:
        out.append(f"failed sticky calls {report['failed_calls']} > {e.failed_calls}")
    if report["epoch_regressions"]:
        out.append(f"epoch regressions {report['epoch_regressions']} > 0")
    trace = report.get("trace")
    # A rejected trace breaks the promise; TLC running out of time does not (the report says how far it got).
    if trace is not None and trace.get("result") == "rejected":
        where = (
            f"at line {trace['first_bad_line']}"
            if trace.get("first_bad_line")
            else f"({trace.get('reason')})"
        )
        out.append(f"election trace rejected {where} of {trace.get('file')}")
    unrecovered = [f["n"] for f in report["faults"] if not f["recovered"]]
    if unrecovered:
        out.append(f"not recovered within {campaign.recover_timeout_s:.0f} s after faults {unrecovered}")
    return out


def run_campaign(
    campaign: Campaign,
    *,
    progress: Progress | None = None,
    trace_out: Path | None = None,
    params: RigParams | None = None,
) -> CampaignRun:
    """Start a local cluster of ``campaign.topology.nodes`` nodes, run the campaign on it, stop everything.
    ``trace_out``: where to keep the election trace that was checked with TLC; ``params``: the rig's timing
    (default :class:`~aegis.harness.campaign.group.RigParams`). Processes get group ids (for nftables, which needs
    root) only when the campaign has partition faults."""
    install_signal_cleanup()
    topo = campaign.topology
    with (
        tempfile.TemporaryDirectory(prefix=f"aegis-campaign-{campaign.name}-") as tmp,
        LocalCluster(
            topo.nodes,
            sync_interval=topo.sync_interval,
            node_gids=_partitions(campaign),
            node_tags=topo.quorum_buckets == "pinned",
            extra_config='ping_interval: "1s"',
        ) as cluster,
    ):
        cluster.start()
        params = replace(params or RigParams(), protocol=campaign.election)
        return asyncio.run(_run(campaign, cluster, Path(tmp), progress, trace_out, params))


__all__ = ["CampaignRun", "run_campaign"]
