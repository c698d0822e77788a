"""``aegis bench --management``: the management API under load, on real processes (issue 15).

One run: a local 3-node cluster; N instances registered by the real SDK heartbeat in a helper process
(:mod:`aegis.harness.bench.instances`, each record rewritten every heartbeat interval); a real ``aegis manage``
child process; once ``/readyz`` says ready and ``GET /api/metrics`` lists all N, C concurrent HTTP clients with
a bearer token from ``POST /api/token`` call ``GET /api/metrics`` (:mod:`aegis.harness.bench.http_load`).

What it reports, and why each figure:

* latency p50 / p99 / max with the sample count, requests/s, errors: the issue's goal is p99 under 50 ms;
* NATS messages the management process sent during the load per HTTP request served: the issue's other goal is
  no NATS request per HTTP request (the API must answer from its watch caches). Read from the servers, not from
  the process under test: each node's ``/connz``, the connections named ``aegis-management#<i>``, ``in_msgs``
  (messages the server received from the client) before and after the load. The same count over an idle window
  just before the load is reported beside it, so a per-request cost can be told from background traffic
  (flow-control replies of the watches, acks). ``out_msgs`` (messages delivered to it: mostly heartbeats of the
  watched records) is reported for context;
* CPU seconds of each process during the load: on a small machine the client, the instances, three nats-servers
  and the service share the cores, and this says where they went;
* the machine, the versions and the settings, so a figure is never read without them.

Nothing is tuned to meet the goal: the figures are what was measured, ``goal_met`` says whether they meet it.
"""

from __future__ import annotations

import os
import platform
import select
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import IO, Any

import httpx

from aegis.harness.bench.http_load import LoadResult, run_load
from aegis.harness.bench.report_files import write_json_and_markdown
from aegis.harness.bench.runner import process_cpu_s
from aegis.harness.cluster.local import LocalCluster
from aegis.harness.cluster.processes import spawn
from aegis.harness.demo.management import ManagementProcess
from aegis.stats import summary

Progress = Callable[[str], None]

GOAL_P99_MS = 50.0
"""Issue 15: GET /api/metrics p99 under 50 ms with 200 instances and 50 concurrent clients."""
GOAL_NATS_MSGS_PER_REQUEST = 0.1
"""Issue 15: no NATS request per HTTP request. Background traffic makes the ratio never exactly 0; a route that
reads NATS once per request shows 1 or more, so the goal is read as below 0.1 (one message per ten requests)."""
MGMT_CONNECTION = "aegis-management"
"""The management process names its NATS connections ``aegis-management#<i>`` (``aegis/management/app.py``)."""
ROUTE = "/api/metrics"
START_TIMEOUT_S = 90.0
"""Bound on each start-up wait: instances registered, ``/readyz``, every record listed."""
IDLE_WINDOW_S = 3.0
"""Idle window before the load whose NATS traffic is the background."""
ROOT = Path(__file__).resolve().parents[3]


@dataclass(frozen=True)
class Plan:
    """What one run does. The full plan is the issue's (200 instances, 50 clients)."""

    instances: int = 200
    clients: int = 50
    requests: int = 10_000
    duration_s: float = 120.0
    warmup_requests: int = 200
    paced_interval_s: float = 0.5
    """The paced run: each client polls once per this (50 clients: 100 requests/s, a dashboard polls once a second)."""
    paced_duration_s: float = 20.0

    @classmethod
    def quick(cls) -> Plan:
        """Under a minute on 2 cores, cluster start-up included."""
        return cls(
            instances=20, clients=5, requests=300, duration_s=20.0, warmup_requests=20, paced_duration_s=2.0
        )


# -- processes ---------------------------------------------------------------------------------------------------


def _readline(proc: subprocess.Popen[str], timeout: float) -> str:
    """One line of ``proc``'s stdout within ``timeout`` ("" when it exits or says nothing)."""
    stdout: IO[str] = proc.stdout  # type: ignore[assignment]
    ready, _, _ = select.select([stdout], [], [], timeout)
    return stdout.readline() if ready else ""


@contextmanager
def registered_instances(count: int, urls: list[str]) -> Iterator[subprocess.Popen[str]]:
    """:mod:`aegis.harness.bench.instances` with ``count`` instances until the block ends (stdin EOF stops it)."""
    proc = spawn(
        [sys.executable, "-m", "aegis.harness.bench.instances", str(count), *urls],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        line = _readline(proc, START_TIMEOUT_S)
        if line.split() != ["ready", str(count)]:
            raise RuntimeError(f"the instances process did not register {count} instances (said {line!r})")
        yield proc
    finally:
        _stop(proc, close_stdin=True)


def _stop(proc: subprocess.Popen[Any], close_stdin: bool = False) -> None:
    """End a child we started: stdin EOF or SIGTERM, then SIGKILL after 15 s."""
    if close_stdin and proc.stdin is not None:
        proc.stdin.close()
    elif proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def _wait(what: str, ok: Callable[[], bool], mgmt: ManagementProcess) -> None:
    """Poll ``ok`` every 0.2 s for at most :data:`START_TIMEOUT_S`; fail with the service's log tail."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if mgmt.proc.poll() is not None:
            break
        try:
            if ok():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(
        f"aegis manage: {what} not seen within {START_TIMEOUT_S:.0f} s (exit {mgmt.proc.poll()}):\n{mgmt.log()[-3000:]}"
    )


def wait_listed(mgmt: ManagementProcess, headers: dict[str, str], count: int) -> None:
    """Until ``GET /api/metrics`` lists ``count`` records."""

    def listed() -> bool:
        r = httpx.get(f"{mgmt.url}{ROUTE}", headers=headers, timeout=10, trust_env=False)
        return r.status_code == 200 and len(r.json()) == count

    _wait(f"{count} records in {ROUTE}", listed, mgmt)


# -- NATS traffic of the management process ---------------------------------------------------------------------


def nats_counters(cluster: LocalCluster, prefix: str = MGMT_CONNECTION) -> dict[str, int]:
    """``in_msgs``/``out_msgs``/``in_bytes``/``out_bytes`` summed over every node's connections named ``prefix#i``,
    and how many connections that is."""
    totals = dict.fromkeys(("connections", "in_msgs", "out_msgs", "in_bytes", "out_bytes"), 0)
    for node in cluster.nodes:
        for c in cluster.monitor(node.index, "connz", limit=100_000).get("connections") or []:
            if str(c.get("name", "")).startswith(f"{prefix}#"):
                totals["connections"] += 1
                for k in ("in_msgs", "out_msgs", "in_bytes", "out_bytes"):
                    totals[k] += int(c.get(k, 0))
    return totals


def _delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in after if k != "connections"}


# -- the run -----------------------------------------------------------------------------------------------------


def _versions(cluster: LocalCluster) -> dict[str, str]:
    out = {"nats-server": str(cluster.varz(0).get("version", "?")), "python": platform.python_version()}
    for dist in ("aegis", "nats-py", "fastapi", "uvicorn", "pydantic", "httpx"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "?"
    return out


def _cpu(pids: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds used so far by each named group of processes (this process: ``time.process_time``)."""
    return {name: sum(process_cpu_s(p) for p in ps) for name, ps in pids.items()} | {
        "bench_client": time.process_time()
    }


def _load(
    mgmt: ManagementProcess,
    headers: dict[str, str],
    plan: Plan,
    requests: int,
    progress: Progress,
    *,
    paced: bool = False,
) -> LoadResult:
    import uvloop

    return uvloop.run(
        run_load(
            mgmt.url,
            ROUTE,
            headers,
            clients=plan.clients,
            requests=requests,
            duration_s=plan.paced_duration_s if paced else plan.duration_s,
            interval_s=plan.paced_interval_s if paced else None,
            progress=progress,
        )
    )


def _latency(result: LoadResult) -> dict[str, Any]:
    lat = summary(result.latencies_s)
    return {
        "latency_samples": lat["samples"],
        **{f"{k}_ms": None if lat[k] is None else round(lat[k] * 1000, 3) for k in ("p50", "p99", "max")},
    }


def measure(cluster: LocalCluster, plan: Plan, progress: Progress) -> dict[str, Any]:
    """Everything after the cluster is up: instances, the service, the load; the report's figures."""
    progress(f"registering {plan.instances} instances")
    with registered_instances(plan.instances, cluster.urls) as instances:
        progress("starting aegis manage")
        mgmt = ManagementProcess.start(
            {"AEGIS_SERVERS": ",".join(cluster.urls)}, cluster.base_dir, ready_timeout=START_TIMEOUT_S
        )
        try:
            headers = {"Authorization": f"Bearer {mgmt.token()}"}
            wait_listed(mgmt, headers, plan.instances)
            progress("warm-up")
            warm = _load(mgmt, headers, plan, plan.warmup_requests, progress)
            progress("idle window (background NATS traffic)")
            idle_before, t0 = nats_counters(cluster), time.perf_counter()
            time.sleep(IDLE_WINDOW_S)
            idle_after, idle_s = nats_counters(cluster), time.perf_counter() - t0
            pids = {
                "management": [mgmt.proc.pid],
                "instances": [instances.pid],
                "nats_servers": [p for p in cluster.pids if p],
            }
            cpu_before, before = _cpu(pids), nats_counters(cluster)
            result = _load(mgmt, headers, plan, plan.requests, lambda s: progress(f"load: {s}"))
            after, cpu_after = nats_counters(cluster), _cpu(pids)
            listed = len(httpx.get(f"{mgmt.url}{ROUTE}", headers=headers, timeout=10, trust_env=False).json())
            paced_requests = int(plan.clients * plan.paced_duration_s / plan.paced_interval_s)
            paced = _load(mgmt, headers, plan, paced_requests, lambda s: progress(f"paced: {s}"), paced=True)

        finally:
            mgmt.stop()
    idle, load = _delta(idle_after, idle_before), _delta(after, before)
    served = result.requests - result.errors
    lat = summary(result.latencies_s)
    p50_ms, p99_ms, max_ms = (
        None if v is None else round(v * 1000, 3) for v in (lat["p50"], lat["p99"], lat["max"])
    )
    per_request = round(load["in_msgs"] / served, 4) if served else None
    return {
        "instances": plan.instances,
        "clients": plan.clients,
        "requests": result.requests,
        "latency_samples": lat["samples"],
        "p50_ms": p50_ms,
        "p99_ms": p99_ms,
        "max_ms": max_ms,
        "requests_per_s": round(result.per_s, 1),
        "errors": result.errors,
        "error_samples": result.error_samples,
        "load_s": round(result.seconds, 3),
        "response_kb": round(result.response_bytes / served / 1024, 1) if served else None,
        "records_listed_after": listed,
        "warmup_requests": warm.requests,
        "warmup_errors": warm.errors,
        "nats_msgs_per_request": per_request,
        "nats": {
            "connections": after["connections"],
            "load": load,
            "idle": idle,
            "idle_s": round(idle_s, 3),
            "idle_in_msgs_per_s": round(idle["in_msgs"] / idle_s, 2),
            "load_in_msgs_per_s": round(load["in_msgs"] / result.seconds, 2) if result.seconds else None,
            "load_out_msgs_per_s": round(load["out_msgs"] / result.seconds, 2) if result.seconds else None,
        },
        "cpu_s": {k: round(cpu_after[k] - cpu_before[k], 2) for k in cpu_after},
        "management_cpu_ms_per_request": (
            round((cpu_after["management"] - cpu_before["management"]) / served * 1000, 3) if served else None
        ),
        "latency_hdr": result.histogram.encode().decode(),
        "paced": {
            "clients": plan.clients,
            "interval_s": plan.paced_interval_s,
            "offered_per_s": round(plan.clients / plan.paced_interval_s, 1),
            "requests": paced.requests,
            "errors": paced.errors,
            "requests_per_s": round(paced.per_s, 1),
            **_latency(paced),
        },
    }


def run_management_bench(
    instances: int = 200,
    clients: int = 50,
    requests: int = Plan.requests,
    duration_s: float = Plan.duration_s,
    *,
    quick: bool = False,
    progress: Progress = lambda _: None,
) -> dict[str, Any]:
    """Start a 3-node cluster, N instances and ``aegis manage``; load ``GET /api/metrics``; return the report."""
    plan = (
        Plan.quick()
        if quick
        else Plan(instances=instances, clients=clients, requests=requests, duration_s=duration_s)
    )
    started = time.time()
    load_at_start = [round(x, 2) for x in os.getloadavg()]  # the machine may be shared: say how busy it was
    progress("starting a 3-node cluster")
    with LocalCluster(size=3) as cluster:
        versions = _versions(cluster)
        figures = measure(cluster, plan, progress)
    # The latency goal is judged on the paced run: back to back, 50 clients queue behind each other and the
    # latency is 50 / throughput by construction (the saturation run gives the throughput).
    p99, per_request = figures["paced"]["p99_ms"], figures["nats_msgs_per_request"]
    return {
        **figures,
        "goal_p99_ms": GOAL_P99_MS,
        "goal_nats_msgs_per_request": GOAL_NATS_MSGS_PER_REQUEST,
        "goal_p99_met": p99 is not None and p99 < GOAL_P99_MS,
        "goal_nats_met": per_request is not None and per_request < GOAL_NATS_MSGS_PER_REQUEST,
        "goal_met": (
            p99 is not None
            and p99 < GOAL_P99_MS
            and per_request is not None
            and per_request < GOAL_NATS_MSGS_PER_REQUEST
            and figures["errors"] == 0
            and figures["paced"]["errors"] == 0
        ),
        "goal_p99_basis": "paced",
        "command": "aegis bench --management --quick" if quick else "aegis bench --management",
        "quick": quick,
        "plan": asdict(plan),
        "route": ROUTE,
        "settings": {
            "cluster_nodes": 3,
            "instances_process": "one process, one shared connection pool (aegis.harness.bench.instances)",
            "heartbeat_interval_s": 1.0,
            "services": 10,
            "http_clients": "one httpx.AsyncClient per worker, one keep-alive connection each, uvloop",
            "management": "aegis manage (uvicorn with httptools, access log off), one process",
        },
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_avg_at_start": load_at_start,
            "load_avg_at_end": [round(x, 2) for x in os.getloadavg()],
        },
        "versions": versions,
        "took_s": round(time.time() - started, 1),
        "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


# -- the report --------------------------------------------------------------------------------------------------


def markdown(report: dict[str, Any]) -> str:
    """The report as markdown: the figures against the goals, then where the CPU went."""
    from aegis.stats import recorded, spread_text

    r = report
    ms = lambda v: f"{v:.1f} ms"  # noqa: E731
    lat = spread_text(recorded(r["latency_samples"], r["p50_ms"], r["p99_ms"], r["max_ms"]), ms)
    n = r["nats"]
    pc = r["paced"]
    paced_lat = spread_text(recorded(pc["latency_samples"], pc["p50_ms"], pc["p99_ms"], pc["max_ms"]), ms)
    yes = lambda ok: "yes" if ok else "**no**"  # noqa: E731
    rows = [
        f"Recorded {r['recorded_at']} by `{r['command']}` on a {r['machine']['cpus']}-CPU machine"
        f" (nats-server {r['versions']['nats-server']}, Python {r['versions']['python']}): 3-node cluster,"
        f" {r['instances']} instances heartbeating every second, one `aegis manage`, {r['clients']} concurrent"
        f" HTTP clients on `GET {r['route']}`, all on one host.",
        "",
        "| figure | measured | goal | met |",
        "|---|---|---|---|",
        f"| latency, paced: each client once per {pc['interval_s']:g} s ({pc['offered_per_s']:g} requests/s)"
        f" | {paced_lat} | p99 < {r['goal_p99_ms']:g} ms | {yes(r['goal_p99_met'])} |",
        f"| latency, back to back (saturation: queueing, about clients / throughput) | {lat} | | |",
        f"| NATS messages sent by the service per HTTP request | {r['nats_msgs_per_request']}"
        f" ({n['load']['in_msgs']} messages / {r['requests'] - r['errors']} requests)"
        f" | < {r['goal_nats_msgs_per_request']:g} | {yes(r['goal_nats_met'])} |",
        f"| requests/s | {r['requests_per_s']:.0f} ({r['requests']} requests in {r['load_s']:.1f} s) | | |",
        f"| errors | {r['errors']} | 0 | {yes(r['errors'] == 0)} |",
        "",
        f"Background: idle, the service sent {n['idle_in_msgs_per_s']} NATS messages/s ({n['idle']['in_msgs']} in"
        f" {n['idle_s']:.1f} s); under load {n['load_in_msgs_per_s']}/s. It received {n['load_out_msgs_per_s']}"
        f" messages/s under load (the watched records). Responses averaged {r['response_kb']} KB.",
        "",
        "CPU seconds during the load, by process: "
        + ", ".join(f"{k.replace('_', ' ')} {v:.1f}" for k, v in r["cpu_s"].items())
        + f" (of {r['load_s'] * r['machine']['cpus']:.0f} available; load average"
        f" {r['machine']['load_avg_at_start'][0]:g} before the run, {r['machine']['load_avg_at_end'][0]:g} after):"
        f" {r['management_cpu_ms_per_request']} ms of the service's CPU per request.",
    ]
    return "\n".join(rows) + "\n"


def write_report(
    report: dict[str, Any], directory: Path, name: str = "management-bench"
) -> tuple[Path, Path]:
    """Write ``<name>.json`` and ``<name>.md`` under ``directory``."""
    return write_json_and_markdown(report, directory, name, markdown)
