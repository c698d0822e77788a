"""``aegis bench --groups 10,100,1000``: what the single-active election costs as the number of groups grows (issue 19).

Every group has 3 instances; its active renews by compare-and-set on the R3 bucket ``aegis_election`` every
``renew_s`` (0.25 s), so N groups are about 4N writes/s, each delivered to the 3 instances' watches. For each
group count, on a fresh local 3-node cluster (loopback):

* **the bulk**: the groups' instances live in a few worker processes (:mod:`aegis.harness.bench.election_worker`,
  hundreds of :class:`~aegis.sdk.single_active.SingleActiveService` each, the SDK's own election machine and
  NATS driver), the 3 instances of a group in different workers;
* **the sampled groups** (:data:`SAMPLED_GROUPS`): their instances live on 3 small "machines" (processes), one
  instance of each sampled group per machine, so killing a machine is a crash of real processes that takes down
  only sampled instances.

Then:

1. **steady window** (``steady_s``) once every group has an active: the bucket's stream sequence over the window
   gives the KV writes/s (renewals and anything else written to the bucket); CPU seconds of the three
   nats-servers (``/proc``) give the server CPU (% of one core, summed); CPU of the worker and machine processes
   divided by the groups gives the SDK CPU per group; every process's renewal acknowledgements (from the
   ``request`` to the ``renew`` step of the machine, :mod:`~aegis.harness.bench.election_worker`) give the
   renewal ack p50/p99/max with their sample count, and renewal timeouts;
2. **crash rounds**, while the rest keep renewing: kill -9 the machine holding the most sampled actives; for each
   sampled group that lost its active, the failover time runs from the kill to the moment the new active's
   campaign write is acknowledged (its ``acquire`` step, on the same monotonic clock); the machine is restarted
   (its instances join as standbys) before the next round, until :data:`FAILOVER_SAMPLES` samples or
   :data:`MAX_ROUNDS` rounds.

A row is **within budget** when the sampled crash failover p99 is under 1 s and no uncrashed active lost its lease
(``unprovoked_takeovers`` and ``lost`` both 0: a saturated bucket shows first as renewals that do not land in
time and standbys that take over from a live active). ``groups_max_within_budget`` is the largest group count
of the run within budget. Goals are reported, never asserted.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from hdrh.histogram import HdrHistogram

from aegis.harness.bench.election_worker import group_name
from aegis.harness.bench.report_files import write_json_and_markdown
from aegis.harness.bench.runner import process_cpu_s
from aegis.harness.bench.soak import Child
from aegis.harness.cluster.local import LocalCluster
from aegis.sdk import wire
from aegis.sdk.election import ElectionParams
from aegis.stats import percentile

Progress = Callable[[str], None]

FAILOVER_BUDGET_S = 1.0
STOCK_MAX_CONSUMERS = 1000
"""nats-server 2.15's default limit of consumers per stream (``default_max_consumers``)."""
SAMPLED_GROUPS = 10
FAILOVER_SAMPLES = 20
MAX_ROUNDS = 8
INSTANCES_PER_WORKER = 750
MAX_WORKERS = 4
LETTERS = "abc"
START_TIMEOUT_S = 240.0
FAILOVER_WAIT_S = 20.0
STREAM = f"KV_{wire.ELECTION_BUCKET}"


@dataclass(frozen=True)
class ScalePlan:
    steady_s: float = 20.0
    settle_s: float = 3.0
    sampled_groups: int = SAMPLED_GROUPS
    failover_samples: int = FAILOVER_SAMPLES
    max_rounds: int = MAX_ROUNDS
    rounds_time_s: float = 150.0
    start_budget_s: float = 300.0
    """Bound on starting every instance and seeing an active in every group; past it the row is incomplete."""
    max_consumers: int = 20_000
    """The servers' ``jetstream { limits { default_max_consumers } }``: nats-server 2.15 caps every stream at
    1000 consumers unless told otherwise, and each instance's watch of its key is one consumer on the election
    bucket's stream, so a stock server stops at 333 groups of 3 (the first run here failed at 1000 groups with
    ``maximum consumers limit reached``, err 10026). Raised, so the cost beyond can be measured; see
    :data:`STOCK_MAX_CONSUMERS`."""

    @classmethod
    def quick(cls) -> ScalePlan:
        return cls(
            steady_s=3.0,
            settle_s=1.0,
            sampled_groups=3,
            failover_samples=3,
            max_rounds=2,
            rounds_time_s=40.0,
            start_budget_s=40.0,
        )


def parse_groups(text: str) -> list[int]:
    """``"10,100,1000"`` -> ``[10, 100, 1000]`` (each at least 1)."""
    counts = [int(x) for x in text.replace(" ", "").split(",") if x]
    if not counts or min(counts) < 1:
        raise ValueError(f"--groups wants positive counts separated by commas, got {text!r}")
    return counts


def layout(groups: int, sampled: int) -> tuple[list[list[tuple[int, str]]], list[list[tuple[int, str]]]]:
    """(bulk workers, sample machines): which instances each process hosts. Groups ``0..sampled-1`` are sampled
    (machine ``i`` hosts letter ``i`` of each); the others' 3 instances go to different workers (when there are
    several)."""
    sampled = min(sampled, groups)
    bulk = [(g, letter) for g in range(sampled, groups) for letter in LETTERS]
    workers = min(MAX_WORKERS, max(1, math.ceil(len(bulk) / INSTANCES_PER_WORKER))) if bulk else 0
    per_worker: list[list[tuple[int, str]]] = [[] for _ in range(workers)]
    for i, inst in enumerate(bulk):
        per_worker[i % workers].append(inst)
    machines = [[(g, letter) for g in range(sampled)] for letter in LETTERS]
    return per_worker, machines


def _spec(instances: list[tuple[int, str]]) -> str:
    return ",".join(f"{g}{letter}" for g, letter in instances)


class IncompleteStart(RuntimeError):
    """The processes did not start their instances (in time, or at all), or not every group got an active."""


class Proc:
    """One worker or machine process and what it said."""

    def __init__(self, name: str, url: str, instances: list[tuple[int, str]]) -> None:
        self.name, self.url, self.instances = name, url, instances
        self.child = Child(["-m", "aegis.harness.bench.election_worker", url, _spec(instances)])
        self.killed = False

    @property
    def pid(self) -> int:
        return self.child.pid


class Run:
    """The processes of one group count and the acquisitions they reported."""

    def __init__(self, cluster: LocalCluster, groups: int, plan: ScalePlan) -> None:
        self.cluster, self.groups, self.plan = cluster, groups, plan
        urls = cluster.urls
        bulk, machines = layout(groups, plan.sampled_groups)
        self.sampled = len(machines[0])
        self.workers = [Proc(f"worker{i}", urls[i % len(urls)], insts) for i, insts in enumerate(bulk)]
        self.machines: list[Proc | None] = [None] * len(machines)
        self.machine_instances = machines
        self.active: dict[str, tuple[str, float]] = {}
        """group -> (instance, t) of its latest acquisition."""
        self.acquires: list[dict[str, Any]] = []
        self.loses: list[dict[str, Any]] = []
        self.start_errors: dict[str, dict[str, int]] = {}

    def start_machine(self, i: int) -> Proc:
        urls = self.cluster.urls
        proc = Proc(f"machine-{LETTERS[i]}", urls[i % len(urls)], self.machine_instances[i])
        self.machines[i] = proc
        return proc

    def wait_ready(self, proc: Proc, deadline: float | None = None) -> None:
        """Until ``proc`` says ``ready`` (noting the acquisitions it reports before that)."""
        deadline = deadline or time.monotonic() + START_TIMEOUT_S
        while True:
            if time.monotonic() > deadline:
                raise IncompleteStart(f"{proc.name} did not start its instances in time")
            try:
                line = proc.child.wait_line(max(0.5, min(5.0, deadline - time.monotonic())))
            except RuntimeError:
                if proc.child.proc.poll() is not None:
                    raise
                continue
            msg = json.loads(line)
            if "ready" in msg:
                if msg.get("failed"):
                    raise IncompleteStart(
                        f"{proc.name}: {len(msg['failed'])} instances did not start: {msg.get('errors')}"
                    )
                if msg.get("errors"):
                    self.start_errors[proc.name] = msg["errors"]  # retried, and then started
                return
            if "acquire" in msg:
                self.acquires.append({**msg, "_proc": proc.name})
                self.active[msg["acquire"]] = (msg["instance"], msg["t"])

    def procs(self) -> list[Proc]:
        return [*self.workers, *(m for m in self.machines if m is not None)]

    def pump(self, procs: list[Proc] | None = None) -> list[dict[str, Any]]:
        """Read every line the processes said so far; note acquisitions; return the other lines."""
        other = []
        for p in procs if procs is not None else self.procs():
            for line in p.child.drain():
                msg = json.loads(line)
                msg["_proc"] = p.name
                if "acquire" in msg:
                    self.acquires.append(msg)
                    self.active[msg["acquire"]] = (msg["instance"], msg["t"])
                elif "lose" in msg:
                    self.loses.append(msg)
                else:
                    other.append(msg)
        return other

    def wait_for(self, what: str, ok: Callable[[], bool], timeout: float) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        lines: list[dict[str, Any]] = []
        while True:
            lines += self.pump()
            if ok():
                return lines
            for p in self.procs():
                if p.child.proc.poll() is not None and not p.killed:
                    raise RuntimeError(
                        f"{p.name} exited ({p.child.proc.returncode}) while waiting for {what}"
                    )
            if time.monotonic() > deadline:
                raise IncompleteStart(f"{what}: not within {timeout:.0f} s")
            time.sleep(0.02)

    def ask_all(self, command: str, key: str, timeout: float = 30.0) -> list[dict[str, Any]]:
        procs = self.procs()
        for p in procs:
            p.child.send(command + "\n")
        got: dict[str, dict[str, Any]] = {}

        def all_in() -> bool:
            return len(got) == len(procs)

        deadline = time.monotonic() + timeout
        while not all_in():
            for msg in self.pump(procs):
                if key in msg:
                    got[msg["_proc"]] = msg
            if time.monotonic() > deadline:
                raise RuntimeError(f"{command}: {len(got)} of {len(procs)} processes answered")
            time.sleep(0.02)
        return list(got.values())

    def stop(self) -> None:
        for p in self.procs():
            if p.child.proc.stdin is not None and not p.child.proc.stdin.closed:
                try:
                    p.child.proc.stdin.close()
                except OSError:
                    pass
        for p in self.procs():
            p.child.stop(timeout=30)


def _cpu(pids: dict[str, int]) -> dict[str, float]:
    out = {}
    for k, pid in pids.items():
        try:
            out[k] = process_cpu_s(pid)
        except OSError:
            out[k] = float("nan")
    return out


def _stream_states(cluster: LocalCluster) -> dict[str, dict[str, Any]]:
    """The election bucket's stream state as each answering node's replica reports it."""
    out = {}
    for n in cluster.nodes:
        try:
            info = cluster.stream_info(n.index, STREAM)
        except Exception:
            continue
        if info:
            out[n.name] = info.get("state") or {}
    return out


def _consumers(cluster: LocalCluster) -> dict[str, int]:
    """Consumers on the election bucket's stream as each node's replica counts them (the instances' watches are
    R1 ordered consumers, each on one node; a watch re-created after missed heartbeats leaves its old consumer
    until the server drops it as inactive)."""
    return {name: int(state.get("consumer_count", 0)) for name, state in _stream_states(cluster).items()}


def _last_seq(cluster: LocalCluster) -> int:
    """The election bucket's last stream sequence (every write to the bucket moves it by one)."""
    return max((int(state.get("last_seq", 0)) for state in _stream_states(cluster).values()), default=0)


def _incomplete_row(
    cluster: LocalCluster,
    run: Run,
    groups: int,
    plan: ScalePlan,
    error: str,
    waited_s: float,
    load_start: list[float],
) -> dict[str, Any]:
    """The row of a group count that did not start within the budget: what the bucket and the servers did
    meanwhile, over a short window (no renewal latencies, no failover: the processes are still starting)."""
    params = ElectionParams()
    pids_server = {n.name: n.pid for n in cluster.nodes if n.pid}
    pids_sdk = {p.name: p.pid for p in run.procs() if p.child.proc.poll() is None}
    window_s = min(plan.steady_s, 10.0)
    seq0, cpu_s0, cpu_k0, t0 = _last_seq(cluster), _cpu(pids_server), _cpu(pids_sdk), time.monotonic()
    time.sleep(window_s)
    seq1, cpu_s1, cpu_k1, t1 = _last_seq(cluster), _cpu(pids_server), _cpu(pids_sdk), time.monotonic()
    run.pump()
    window = t1 - t0
    server_cpu = {k: (cpu_s1[k] - cpu_s0[k]) / window * 100 for k in pids_server}
    sdk_cpu = sum(cpu_k1[k] - cpu_k0[k] for k in pids_sdk) / window * 100
    return {
        "groups": groups,
        "instances": groups * 3,
        "workers": len(run.workers),
        "sampled_groups": run.sampled,
        "incomplete": f"start not complete (budget {plan.start_budget_s:g} s): {error}",
        "groups_with_an_active": len(run.active),
        "bucket_consumers_by_node": (by_node := _consumers(cluster)),
        "bucket_consumers": sum(by_node.values()),
        "bucket_consumers_stock_limit": STOCK_MAX_CONSUMERS,
        "start_s": round(waited_s, 1),
        "kv_writes_per_s": round((seq1 - seq0) / window, 1),
        "expected_renewals_per_s": round(groups / params.renew_s, 1),
        "renew_ack_p50_ms": None,
        "renew_ack_p99_ms": None,
        "renew_ack_max_ms": None,
        "renew_ack_samples": 0,
        "renew_timeouts": None,
        "lost": len(run.loses),
        "unprovoked_takeovers": None,
        "failover_p50_s": None,
        "failover_p99_s": None,
        "failover_max_s": None,
        "failover_samples": 0,
        "crash_rounds": [],
        "server_cpu_pct": round(sum(server_cpu.values()), 1),
        "server_cpu_pct_by_node": {k: round(v, 1) for k, v in server_cpu.items()},
        "sdk_cpu_pct": round(sdk_cpu, 1),
        "sdk_cpu_pct_per_group": round(sdk_cpu / max(1, len(run.active)), 4),
        "sdk_cpu_ms_per_group_s": round(sdk_cpu / max(1, len(run.active)) * 10, 3),
        "steady_s": round(window, 2),
        "within_budget": False,
        "load_avg": {
            "start": load_start,
            "steady": [round(x, 2) for x in os.getloadavg()],
            "end": [round(x, 2) for x in os.getloadavg()],
        },
    }


def measure_count(cluster: LocalCluster, groups: int, plan: ScalePlan, progress: Progress) -> dict[str, Any]:
    """One row: start the processes, wait for an active in every group, measure, crash, stop."""
    load_start = [round(x, 2) for x in os.getloadavg()]
    params = ElectionParams()
    run = Run(cluster, groups, plan)
    t_start = time.monotonic()
    try:
        progress(f"{groups} groups: starting {len(run.workers)} workers and 3 machines")
        start_deadline = t_start + plan.start_budget_s
        names = {group_name(g) for g in range(groups)}
        try:
            for w in run.workers:
                run.wait_ready(w, start_deadline)
            for i in range(len(run.machine_instances)):
                run.wait_ready(run.start_machine(i), start_deadline)
            run.wait_for(
                f"an active in each of {groups} groups",
                lambda: names <= set(run.active),
                max(1.0, start_deadline - time.monotonic()),
            )
        except IncompleteStart as exc:
            return _incomplete_row(
                cluster, run, groups, plan, str(exc), time.monotonic() - t_start, load_start
            )
        start_s = time.monotonic() - t_start
        progress(f"{groups} groups: all active after {start_s:.0f} s; settling")
        time.sleep(plan.settle_s)
        run.pump()
        settled_at = time.monotonic()
        acquires_before = len(run.acquires)

        # 1. steady window
        progress(f"{groups} groups: steady window ({plan.steady_s:g} s)")
        pids_server = {n.name: n.pid for n in cluster.nodes if n.pid}
        pids_sdk = {p.name: p.pid for p in run.procs()}
        run.ask_all("mark", "marked")
        seq0, cpu_s0, cpu_k0, t0 = _last_seq(cluster), _cpu(pids_server), _cpu(pids_sdk), time.monotonic()
        load_steady = [round(x, 2) for x in os.getloadavg()]
        end = t0 + plan.steady_s
        while time.monotonic() < end:
            run.pump()
            time.sleep(0.05)
        seq1, cpu_s1, cpu_k1, t1 = _last_seq(cluster), _cpu(pids_server), _cpu(pids_sdk), time.monotonic()
        reports = run.ask_all("report", "report")
        consumers = _consumers(cluster)
        window = t1 - t0
        hist = HdrHistogram(1, 60_000_000, 3)
        for r in reports:
            if r["report"]["renew_hdr"]:
                hist.add(HdrHistogram.decode(r["report"]["renew_hdr"]))
        n_renew = hist.get_total_count()
        server_cpu = {k: (cpu_s1[k] - cpu_s0[k]) / window * 100 for k in pids_server}
        sdk_cpu = sum(cpu_k1[k] - cpu_k0[k] for k in pids_sdk) / window * 100
        steady_unprovoked = len(run.acquires) - acquires_before
        sums = {
            k: sum(r["report"][k] for r in reports)
            for k in ("renew_timeouts", "lost", "campaigns", "serving")
        }

        # 2. crash rounds
        samples: list[float] = []
        rounds: list[dict[str, Any]] = []
        sampled_names = {group_name(g) for g in range(run.sampled)}
        rounds_end = time.monotonic() + plan.rounds_time_s
        while (
            run.sampled
            and len(samples) < plan.failover_samples
            and len(rounds) < plan.max_rounds
            and time.monotonic() < rounds_end
        ):
            run.pump()
            holders: dict[int, list[str]] = {}
            for g in sampled_names:
                inst = run.active.get(g, ("", 0.0))[0]
                if inst and inst[-1] in LETTERS:
                    holders.setdefault(LETTERS.index(inst[-1]), []).append(g)
            if not holders:
                break
            victim = max(holders, key=lambda i: len(holders[i]))
            proc = run.machines[victim]
            assert proc is not None
            affected = holders[victim]
            progress(
                f"{groups} groups: crash round {len(rounds) + 1}: kill -9 {proc.name} ({len(affected)} actives)"
            )
            proc.killed = True
            crash = time.monotonic()
            proc.child.proc.kill()
            proc.child.proc.wait(timeout=10)

            def taken_over(affected: list[str] = affected, crash: float = crash) -> bool:
                return all(run.active.get(g, ("", 0.0))[1] > crash for g in affected)

            try:
                run.wait_for("failover of the crashed actives", taken_over, FAILOVER_WAIT_S)
            except RuntimeError:
                pass
            got = {g: run.active[g][1] - crash for g in affected if run.active.get(g, ("", 0.0))[1] > crash}
            samples += list(got.values())
            rounds.append(
                {
                    "killed": proc.name,
                    "actives_killed": len(affected),
                    "failovers_s": sorted(round(v, 3) for v in got.values()),
                    "not_taken_over": sorted(set(affected) - set(got)),
                }
            )
            run.wait_ready(run.start_machine(victim))
            time.sleep(1.0)
        run.pump()
        bulk_acquires_after = [a for a in run.acquires[acquires_before:] if a["acquire"] not in sampled_names]
        # sampled groups: acquisitions beyond one per crash of their active are unprovoked too
        sampled_acquires = [a for a in run.acquires[acquires_before:] if a["acquire"] in sampled_names]
        unprovoked = len(bulk_acquires_after) + max(0, len(sampled_acquires) - len(samples))
        loses_after = [x for x in run.loses if x["t"] > settled_at]
    finally:
        progress(f"{groups} groups: stopping")
        run.stop()
    fo = sorted(samples)
    p99 = percentile(fo, 99)
    ack = lambda p: round(hist.get_value_at_percentile(p) / 1000, 3) if n_renew else None  # noqa: E731
    within = p99 is not None and p99 < FAILOVER_BUDGET_S and unprovoked == 0 and not loses_after
    return {
        "groups": groups,
        "instances": groups * 3,
        "workers": len(run.workers),
        "sampled_groups": run.sampled,
        "kv_writes_per_s": round((seq1 - seq0) / window, 1),
        "expected_renewals_per_s": round(groups / params.renew_s, 1),
        "renew_ack_p50_ms": ack(50),
        "renew_ack_p99_ms": ack(99),
        "renew_ack_max_ms": round(hist.get_max_value() / 1000, 3) if n_renew else None,
        "renew_ack_samples": n_renew,
        "renew_timeouts": sums["renew_timeouts"],
        "lost": len(loses_after),
        "unprovoked_takeovers": unprovoked,
        "steady_unprovoked_takeovers": steady_unprovoked,
        "serving_at_report": sums["serving"],
        "failover_p50_s": None if not fo else round(percentile(fo, 50) or 0, 3),
        "failover_p99_s": None if p99 is None else round(p99, 3),
        "failover_max_s": None if not fo else round(fo[-1], 3),
        "failover_samples": len(fo),
        "crash_rounds": rounds,
        "server_cpu_pct": round(sum(server_cpu.values()), 1),
        "server_cpu_pct_by_node": {k: round(v, 1) for k, v in server_cpu.items()},
        "sdk_cpu_pct": round(sdk_cpu, 1),
        "sdk_cpu_pct_per_group": round(sdk_cpu / groups, 4),
        "sdk_cpu_ms_per_group_s": round(sdk_cpu / groups * 10, 3),
        "steady_s": round(window, 2),
        "start_s": round(start_s, 1),
        "start_errors_retried": run.start_errors,
        "bucket_consumers_by_node": consumers,
        "bucket_consumers": sum(consumers.values()),
        "bucket_consumers_stock_limit": STOCK_MAX_CONSUMERS,
        "within_budget": within,
        "load_avg": {
            "start": load_start,
            "steady": load_steady,
            "end": [round(x, 2) for x in os.getloadavg()],
        },
    }


def _versions(cluster: LocalCluster) -> dict[str, str]:
    out = {"nats-server": str(cluster.varz(0).get("version", "?")), "python": platform.python_version()}
    for dist in ("aegis", "nats-py"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "?"
    return out


def run_scale(
    counts: list[int],
    *,
    quick: bool = False,
    plan: ScalePlan | None = None,
    progress: Progress = lambda _: None,
    command: str | None = None,
) -> dict[str, Any]:
    """One row per group count, each on a fresh 3-node cluster; the report."""
    plan = plan or (ScalePlan.quick() if quick else ScalePlan())
    started = time.time()
    rows = []
    versions: dict[str, str] = {}
    for groups in counts:
        progress(f"{groups} groups: starting a 3-node cluster")
        extra = f"limits {{ default_max_consumers: {plan.max_consumers} }}" if plan.max_consumers else ""
        with LocalCluster(size=3, jetstream_extra=extra) as cluster:
            versions = versions or _versions(cluster)
            rows.append(measure_count(cluster, groups, plan, progress))
    within = [r["groups"] for r in rows if r["within_budget"]]
    p = ElectionParams()
    report = {
        "rows": rows,
        "groups_max_within_budget": max(within) if within else None,
        "failover_budget_s": FAILOVER_BUDGET_S,
        "election": {"lease_s": p.lease_s, "renew_s": p.renew_s, "write_timeout_s": p.write_timeout_s},
        "command": command
        or f"aegis bench --groups {','.join(map(str, counts))}{' --quick' if quick else ''}",
        "quick": quick,
        "plan": asdict(plan),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "versions": versions,
        "took_s": round(time.time() - started, 1),
        "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    report["analysis"] = analysis(report)
    return report


# -- the report --------------------------------------------------------------------------------------------------


def analysis(report: dict[str, Any]) -> str:
    """What limits the election in this run, read off the rows, and the remedy (markdown)."""
    rows = report["rows"]
    cpus = report["machine"]["cpus"] or 1
    e = report["election"]
    out = []
    over = [r for r in rows if not r["within_budget"]]
    if not over:
        top = rows[-1] if rows else None
        if top is None:
            return ""
        out.append(
            f"Every group count measured is within budget, up to {top['groups']} groups: {top['kv_writes_per_s']:g}"
            f" KV writes/s on one R3 bucket, renewal ack p99 {_f(top['renew_ack_p99_ms'])} ms (write timeout"
            f" {e['write_timeout_s'] * 1000:g} ms), the three nats-servers at {top['server_cpu_pct']:g} % and the"
            f" SDK processes at {top['sdk_cpu_pct']:g} % of one core, on {cpus} cores shared by all of them."
        )
    for r in over:
        why = []
        if r["kv_writes_per_s"] < 0.9 * r["expected_renewals_per_s"]:
            why.append(
                f"the bucket took {r['kv_writes_per_s']:g} writes/s of the {r['expected_renewals_per_s']:g}"
                " renewals/s the actives owe it"
            )
        if r["renew_ack_p99_ms"] is not None and r["renew_ack_p99_ms"] > e["write_timeout_s"] * 1000 / 2:
            why.append(
                f"renewal ack p99 {r['renew_ack_p99_ms']:g} ms against a {e['write_timeout_s'] * 1000:g} ms write"
                f" timeout ({r['renew_timeouts']} renewals timed out)"
            )
        busy = r["server_cpu_pct"] + r["sdk_cpu_pct"]
        if busy > 80 * cpus:
            why.append(
                f"the machine is saturated: nats-servers {r['server_cpu_pct']:g} % + SDK processes"
                f" {r['sdk_cpu_pct']:g} % of one core, on {cpus} cores"
            )
        if r.get("incomplete"):
            why.append(
                f"the {r['instances']} instances did not all start ({r['incomplete']}; {_consumers_text(r)},"
                f" {r['groups_with_an_active']} groups with an active)"
            )
        if r["unprovoked_takeovers"] or r["lost"]:
            why.append(
                f"{r['unprovoked_takeovers']} takeovers from live actives ({r['lost']} renewals refused)"
            )
        if r["failover_p99_s"] is not None and r["failover_p99_s"] >= report["failover_budget_s"]:
            why.append(f"sampled crash failover p99 {r['failover_p99_s']:g} s")
        out.append(
            f"At {r['groups']} groups the budget is missed: " + "; ".join(why or ["see the row"]) + "."
        )
    return " ".join(out)


def _consumers_text(row: dict[str, Any]) -> str:
    """The watch consumers of a row: their sum over the nodes, or (older rows) the busiest node's count."""
    if row.get("bucket_consumers_by_node"):
        return f"{row['bucket_consumers']} watch consumers on the bucket"
    return f"{row.get('bucket_consumers_max_node', row.get('bucket_consumers'))} watch consumers on the bucket's busiest node"


def _f(v: Any, unit: str = "") -> str:
    return "n/a" if v is None else f"{v:g}{unit}"


def markdown(report: dict[str, Any]) -> str:
    """The report as markdown; its first line is the command that reproduces it."""
    from aegis.stats import MIN_P99_SAMPLES

    r = report
    e = r["election"]
    lines = [
        f"Reproduce: `{r['command']}` (writes `election-scale.json`, `.md` and `.html`).",
        "",
        f"Recorded {r['recorded_at']} on a {r['machine']['cpus']}-CPU machine (nats-server"
        f" {r['versions'].get('nats-server', '?')}, Python {r['versions'].get('python', '?')}): each row on a fresh"
        f" 3-node cluster on loopback, groups of 3 instances of the SDK's `SingleActiveService` (lease"
        f" {e['lease_s']:g} s, renewal every {e['renew_s']:g} s), many per process; steady window"
        f" {r['plan']['steady_s']:g} s, then kill -9 of the machine holding sampled actives"
        + (" (**quick run**)." if r["quick"] else "."),
        "",
        "| groups | KV writes/s (expected renewals) | nats-server CPU % (3 nodes) | SDK CPU % total / per group |"
        " renewal ack p50 / p99 / max ms (samples) | renewal timeouts | unprovoked takeovers | crash failover"
        " p50 / p99 / max s (samples) | within budget | load average (start, steady) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in r["rows"]:
        p99 = row["failover_p99_s"] if row["failover_samples"] >= MIN_P99_SAMPLES else None
        fo = (
            f"{_f(row['failover_p50_s'])} / {_f(p99) if p99 is not None else 'max only'} /"
            f" {_f(row['failover_max_s'])} ({row['failover_samples']})"
        )
        lines.append(
            f"| {row['groups']} | {row['kv_writes_per_s']:g} ({row['expected_renewals_per_s']:g}) |"
            f" {row['server_cpu_pct']:g} | {row['sdk_cpu_pct']:g} / {row['sdk_cpu_pct_per_group']:g} |"
            f" {_f(row['renew_ack_p50_ms'])} / {_f(row['renew_ack_p99_ms'])} / {_f(row['renew_ack_max_ms'])}"
            f" ({row['renew_ack_samples']}) | {_f(row['renew_timeouts'])} | {_f(row['unprovoked_takeovers'])}"
            f" (lost {row['lost']}) | {fo} | {'yes' if row['within_budget'] else '**no**'} |"
            f" {row['load_avg']['start'][0]:g}, {row['load_avg']['steady'][0]:g} |"
        )
    for row in r["rows"]:
        if row.get("incomplete"):
            lines += [
                "",
                f"{row['groups']} groups: {row['incomplete']}. Meanwhile: {row['groups_with_an_active']} groups had an"
                f" active, {_consumers_text(row)}, {row['kv_writes_per_s']:g} KV"
                f" writes/s, nats-servers at {row['server_cpu_pct']:g} %, SDK processes at {row['sdk_cpu_pct']:g} %"
                " of one core.",
            ]
    lines += [
        "",
        f"Budget: sampled crash failover p99 under {r['failover_budget_s']:g} s and no live active deposed"
        " (unprovoked takeovers and lost both 0). Below"
        f" {MIN_P99_SAMPLES} samples the failover p99 is not given (the maximum is). Largest group count within"
        f" budget: **{_f(r['groups_max_within_budget'])}**.",
        "",
        "SDK CPU: all worker and machine processes (the election drivers, their watches and NATS connections),"
        " % of one core; nats-server CPU: the three servers summed, % of one core, all on the same machine.",
    ]
    if r.get("analysis"):
        lines += ["", r["analysis"]]
    if r.get("note"):
        lines += ["", r["note"]]
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> Path:
    """Failover p99 and renewal ack p99 against the group count (Bokeh, BokehJS inlined)."""
    from bokeh.embed import file_html
    from bokeh.layouts import row as bokeh_row
    from bokeh.plotting import figure
    from bokeh.resources import INLINE

    rows = report["rows"]
    xs = [r["groups"] for r in rows]
    fo = figure(
        title="sampled crash failover p99 (s)",
        x_axis_type="log",
        x_axis_label="groups",
        width=450,
        height=350,
    )
    fo.line(xs, [r["failover_p99_s"] for r in rows], line_width=2)
    fo.scatter(xs, [r["failover_p99_s"] for r in rows], size=8)
    fo.line(
        xs, [report["failover_budget_s"]] * len(xs), line_dash="dashed", color="red", legend_label="budget"
    )
    ack = figure(
        title="renewal ack p99 (ms)", x_axis_type="log", x_axis_label="groups", width=450, height=350
    )
    ack.line(xs, [r["renew_ack_p99_ms"] for r in rows], line_width=2, color="darkorange")
    ack.scatter(xs, [r["renew_ack_p99_ms"] for r in rows], size=8, color="darkorange")
    path.write_text(file_html(bokeh_row(fo, ack), INLINE, "aegis election at scale"))
    return path


def write_report(report: dict[str, Any], directory: Path, name: str = "election-scale") -> tuple[Path, Path]:
    """Write ``<name>.json``, ``<name>.md`` and ``<name>.html`` under ``directory``."""
    return write_json_and_markdown(report, directory, name, markdown, plot)
