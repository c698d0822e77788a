"""``aegis campaign FILE``: a Jepsen-style fault campaign on a real local NATS cluster, checked and reported.

The runner is generic; the campaign is data (:mod:`harness.campaign.schema`). It starts a local cluster, the
single-active ledger group (:class:`~harness.campaign.failover.FailoverRig`: real SDK processes writing election
traces, a sticky client calling back to back, a prober calling every instance directly), optionally quotes
service processes, and the RPC / event / command workloads (:mod:`harness.campaign.workload`). Then, for each fault of
the seeded schedule: wait a random settle time, inject the fault (:mod:`harness.faults.nemesis`), wait until the
sticky client is steady again, heal (restart what was killed, resume what was paused, drop the partition)
and wait until every instance is back. The checkers (:mod:`harness.campaign.checkers`) judge the history; the whole
merged election trace is checked against the TLA+ spec with TLC (the report's ``trace`` object says how much of
it, and of the faults, TLC covered within ``trace_budget_s``).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aegis.stats import percentile
from harness.campaign.checkers import (
    Hit,
    duplicate_commands,
    failed_calls,
    failover_time,
    longest_gap,
    lost_events,
    split_brain,
)
from harness.campaign.failover import FailoverRig, RigParams
from harness.campaign.report import budget_breaks, by_class, headline, ks_distance
from harness.campaign.schema import Campaign
from harness.campaign.workload import CommandWorkload, EventWorkload, RpcWorkload
from harness.cluster.local import LocalCluster, install_signal_cleanup
from harness.cluster.processes import spawn
from harness.faults.fault import Fault
from harness.faults.nemesis import ActiveFault, AsyncNemesis, FirewallUnavailable, NemesisError
from sdk.config import load_settings
from sdk.connection import ConnectionPool

ROOT = Path(__file__).resolve().parents[2]
PREDICTION = ROOT / "reports" / "sim-predicted-failover.json"

Progress = Callable[[int, int, str], None]


class RigControl:
    """The :class:`~harness.faults.nemesis.InstanceControl` of a :class:`FailoverRig`, for the nemesis's worker thread:
    blocking calls, bridged to the rig's event loop where the rig is async."""

    def __init__(self, rig: FailoverRig, loop: asyncio.AbstractEventLoop) -> None:
        self.rig = rig
        self.loop = loop

    def names(self) -> list[str]:
        return list(self.rig.instances)

    def active(self) -> str | None:
        last = self.rig.last_ok()
        return last.instance if last is not None and time.monotonic() - last.received < 0.5 else None

    def pid(self, name: str) -> int | None:
        proc = self.rig.procs.get(name)
        return proc.pid if proc is not None and proc.poll() is None else None

    def gid(self, name: str) -> int | None:
        return self.rig.gids.get(name)

    def kill(self, name: str) -> None:
        self.rig.kill(name)

    def signal(self, name: str, sig: int) -> None:
        self.rig.signal(name, sig)

    def restart(self, name: str) -> None:
        """Start it again and wait (bounded) until it answers as a standby."""

        async def again() -> None:
            started = await self.rig.restart(name)
            if not await self.rig.wait_standby(name, started, timeout=20):
                raise RuntimeError(f"{name} did not come back as a standby within 20 s")

        asyncio.run_coroutine_threadsafe(again(), self.loop).result(timeout=60)


@dataclass
class _Quotes:
    """The plain RPC service's processes (``python -m harness.demo serve``)."""

    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    async def start(self, urls: list[str], count: int, log_dir: Path) -> None:
        for n in range(count):
            log = (log_dir / f"quotes-Q{n + 1}.log").open("ab")
            try:
                args = [sys.executable, "-m", "harness.demo", "serve", "--instance", f"Q{n + 1}", *urls]
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


async def _run(
    campaign: Campaign, cluster: LocalCluster, work: Path, progress: Progress | None, trace_out: Path | None
) -> dict[str, Any]:
    rng = random.Random(campaign.seed)
    schedule = campaign.schedule()
    topo, load = campaign.topology, campaign.workload
    instances = [f"L{n + 1}" for n in range(topo.instances)]
    trace_dir = work / "traces" if campaign.trace else None
    if trace_dir is not None:
        trace_dir.mkdir(parents=True)
    started = time.monotonic()
    faults: list[dict[str, Any]] = []
    fault_starts: list[float] = []
    skipped: list[str] = []
    quotes = _Quotes()
    pool = await ConnectionPool.connect(load_settings(servers=cluster.urls, name=f"campaign-{campaign.name}"))
    rpc = events = commands = None
    rig = FailoverRig(
        cluster.urls,
        instances=instances,
        params=RigParams(),
        log_dir=work,
        trace_dir=trace_dir,
        gids=True,
        instance_module=topo.instance_module,
    )
    if load.command_rate:  # worker processes start with the other workloads; the nemesis controls them
        commands = CommandWorkload(
            pool,
            load.command_rate,
            cluster.urls,
            log_dir=work,
            workers=load.command_workers,
            ack_wait=load.command_ack_wait_s,
            gids=True,
        )
    nemesis = AsyncNemesis(
        cluster, RigControl(rig, asyncio.get_running_loop()), seed=campaign.seed, workers=commands
    )
    try:
        if progress:
            progress(0, len(schedule), f"starting {len(instances)} ledger instances and the workloads")
        await rig.start()
        await quotes.start(cluster.urls, topo.rpc_instances, work)
        if load.rpc_rate and topo.rpc_instances:
            rpc = RpcWorkload(pool, load.rpc_rate)
            await rpc.start()
        if load.event_rate:
            events = EventWorkload(pool, load.event_rate)
            await events.start()
        if commands is not None:
            await commands.start()
        others = {"rpc": rpc, "events": events, "commands": commands}
        for i, step in enumerate(schedule):
            await asyncio.sleep(rng.uniform(*campaign.settle_s))
            victim, old_epoch = await rig.active(timeout=campaign.recover_timeout_s)
            if progress:
                progress(i, len(schedule), f"{step.kind} -> {step.target}")
            t0, w0 = time.monotonic(), time.time()
            try:
                injected = await _inject(nemesis, step)
            except FirewallUnavailable as exc:
                skipped.append(f"{step.kind}: {exc}")
                continue
            except NemesisError as exc:
                skipped.append(f"fault {i + 1} {step.kind} -> {step.target}: {exc}")
                continue
            # A fault with a duration heals on its own clock (SIGCONT, node restart, partition dropped); a
            # killed or stopped instance is restarted once the client is steady again.
            heal = (
                asyncio.create_task(nemesis.heal_after(injected, step.duration_s))
                if step.duration_s
                else None
            )
            recovered = await rig.wait_recovered(
                t0, min_s=max(step.duration_s, 0.5), steady_s=1.0, timeout=campaign.recover_timeout_s
            )
            t1 = time.monotonic()
            if heal is not None:
                await heal
            await nemesis.restore(injected)
            first = failover_time([c for c in rig.calls if c.received <= t1], t0, old_epoch)
            fault_starts.append(t0)
            faults.append(
                {
                    "n": i + 1,
                    "kind": step.kind,
                    "target": injected.target,
                    "active_before": victim,
                    "old_epoch": old_epoch,
                    "new_epoch": first.epoch if first else None,
                    "new_active": first.instance if first else None,
                    "failover_s": round(first.received - t0, 4) if first else None,
                    "gap_s": round(longest_gap(rig.calls, t0, t1), 4),
                    "recovered": recovered,
                    "failed_calls": failed_calls(rig.calls, t0, t1),
                    "failed_ops": {
                        name: failed_calls(w.calls, t0, t1) for name, w in others.items() if w is not None
                    },
                    "split_brain": 0,  # attributed at the end: see _attribute_split_brain
                    "at_s": round(t0 - started, 3),
                    "until_s": round(t1 - started, 3),
                    "wall": w0,
                    "wall_recovered": time.time(),
                    "details": _jsonable(injected.details),
                }
            )
        if progress:
            progress(len(schedule), len(schedule), "checking")
        for w in (rpc, commands, events):
            if w is not None:
                await w.stop()
        if events is not None:
            await events.drain(30)
        await asyncio.sleep(0.3)
        summary = rig.summary()
        _attribute_split_brain(faults, fault_starts, split_brain(rig.hits))
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
    lost = lost_events(events.acked, events.received) if events else []
    # Completed twice (two stored outcomes for one call id) must never happen; started twice is what a worker
    # killed or paused mid-command leads to.
    dups = duplicate_commands(commands.completions) if commands else {}
    restarted = duplicate_commands(commands.starts) if commands else {}
    report: dict[str, Any] = {
        "runs": len(faults),
        "split_brain": summary["split_brain"],
        "split_brain_examples": summary["split_brain_examples"],
        "probes_sent": summary["probes_sent"],
        "probe_successes": summary["probe_successes"],
        "lost_events": len(lost),
        # failover_*: the client-visible gap over every fault; new_epoch_failover_*: faults that changed the
        # active only (see campaign_report.headline)
        **headline(faults),
        "trace_validated": False,
        "duplicate_commands": len(dups),
        "epoch_regressions": summary["epoch_regressions"],
        "calls": summary["calls"],
        "failed_calls": summary["failed_calls"],
        "events_acked": len(events.acked) if events else 0,
        "lost_event_ids": lost[:20],
        "commands_completed": len(commands.completed) if commands else 0,
        "duplicate_command_ids": dict(list(dups.items())[:20]),
        "duplicate_command_history": commands.history(list(dups)[:5]) if commands else {},
        "commands_started_twice": len(restarted),
        "commands_discarded": len(commands.discards) if commands else 0,
        "by_class": by_class(
            faults, {k: campaign.budget(k).model_dump() for k in {f["kind"] for f in faults}}
        ),
        "faults": faults,
        "skipped": skipped,
        "campaign": campaign.model_dump(mode="json"),
        "took_s": round(time.monotonic() - started, 1),
        "timeline": _timeline(rig, {"rpc": rpc, "events": events, "commands": commands}, started),
    }
    if trace_dir is not None:
        report["trace"] = await asyncio.to_thread(
            _check_trace, rig, work, faults, trace_out, campaign.trace_budget_s
        )
        report["trace_validated"] = report["trace"]["result"] == "validated"
    report["prediction"] = _prediction(faults)
    report["expectations_broken"] = _broken(campaign, report)
    return report


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


def _attribute_split_brain(
    faults: list[dict[str, Any]], starts: list[float], pairs: list[tuple[Hit, Hit]]
) -> None:
    """Count each split-brain pair against the fault during which the deposed instance answered: its probe was
    sent after that fault was injected and before the next one. Counted over the whole history at the end, not
    when the fault's recovery is declared: a paused active resumes when its fault heals, typically after the
    sticky client has recovered, and would be missed (or charged to a later fault)."""
    for old, _ in pairs:
        i = bisect.bisect_right(starts, old.sent) - 1
        if i >= 0:
            faults[i]["split_brain"] += 1


def _jsonable(details: dict[str, Any]) -> dict[str, Any]:
    import json

    return json.loads(json.dumps(details, default=str))


def _timeline(rig: FailoverRig, others: dict[str, Any], started: float) -> dict[str, Any]:
    clients = {"sticky": rig.calls, **{k: w.calls for k, w in others.items() if w is not None}}
    return {
        "clients": list(clients),
        "failures": {
            k: [round(c.sent - started, 3) for c in calls if not c.ok][:5000] for k, calls in clients.items()
        },
    }


def _check_trace(
    rig: FailoverRig, work: Path, faults: list[dict[str, Any]], keep: Path | None, budget_s: float
) -> dict[str, Any]:
    """Merge the instances' traces and check the whole of it with TLC (:mod:`spec.trace_check`) within
    ``budget_s`` seconds. The ``trace`` object of the report: ``result`` (``validated``: every event explained;
    ``rejected``: the first line no behaviour explains, or an empty / one-sided trace; ``incomplete``: TLC ran
    out of its budget), ``events_total``, ``events_checked`` (explained in order), ``faults_total`` and
    ``faults_covered`` (faults whose whole stretch, injection to recovery, lies in the explained prefix). The
    trace is written to ``keep`` (else into ``work``) for ``aegis trace-check``."""
    from spec.tlc import TlcUnavailable
    from spec.trace_check import TraceCheckError, check

    path = keep or work / "trace.ndjson"
    path.parent.mkdir(parents=True, exist_ok=True)
    merged = rig.trace(path)
    base: dict[str, Any] = {
        "file": str(path),
        "events_total": len(merged.events),
        "faults_total": len(faults),
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
    covered = sum(1 for f in faults if f["wall_recovered"] <= until)
    return {
        **base,
        **verdict.summary(),
        "events_checked": verdict.explained,
        "faults_covered": covered,
    }


def _prediction(faults: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The simulator's predicted crash-failover distribution beside the measured one, when both exist."""
    import json

    real = [f["failover_s"] for f in faults if f["kind"] == "instance-kill" and f["failover_s"] is not None]
    if not real or not PREDICTION.exists():
        return None
    data = json.loads(PREDICTION.read_text())
    sim = [float(x) for x in data.get("samples_s", [])]
    if not sim:
        return None
    return {
        "source": str(PREDICTION.relative_to(ROOT)),
        "sim_samples": len(sim),
        "sim_p50_s": percentile(sim, 50),
        "sim_p99_s": percentile(sim, 99),
        "sim_max_s": max(sim),
        "sim_samples_s": sim[:2000],
        "real_samples": len(real),
        "real_p50_s": percentile(real, 50),
        "real_p99_s": percentile(real, 99),
        "real_max_s": max(real),
        "ks_distance": ks_distance(sim, real),
    }


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
    campaign: Campaign, *, progress: Progress | None = None, trace_out: Path | None = None
) -> dict[str, Any]:
    """Start a local cluster of ``campaign.topology.nodes`` nodes, run the campaign on it, stop everything.
    ``trace_out``: where to keep the election trace that was checked with TLC."""
    install_signal_cleanup()
    topo = campaign.topology
    with (
        tempfile.TemporaryDirectory(prefix=f"aegis-campaign-{campaign.name}-") as tmp,
        LocalCluster(
            topo.nodes, sync_interval=topo.sync_interval, node_gids=True, extra_config='ping_interval: "1s"'
        ) as cluster,
    ):
        cluster.start()
        return asyncio.run(_run(campaign, cluster, Path(tmp), progress, trace_out))


__all__ = ["RigControl", "run_campaign"]
