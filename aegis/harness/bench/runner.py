"""``aegis bench``: the SDK against raw nats-py, measured in one run on one local cluster (NFR1).

Raw and SDK rounds alternate (A B A B ...) and each side's rounds are merged into one HDR histogram, so
slow drift of a shared machine hits both sides alike. Responders live in a separate process
(:mod:`aegis.harness.bench.server`); the client side is this process. Ratios are SDK divided by raw.

The RPC comparisons have a third side, ``discovery``: the same call made through a
:class:`~aegis.sdk.discovery.DiscoveryClient` (KV-watch-fed instance cache, routing to the instance's own
subject) while the responder is registered (heartbeat with metrics snapshot every second, metrics history
every second). Its ratios are against the same raw rounds as the plain SDK's.
"""

from __future__ import annotations

import asyncio
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import nats
from hdrh.histogram import HdrHistogram
from nats.errors import NoRespondersError
from nats.js.api import StreamConfig
from nats.js.errors import NoStreamResponseError

from aegis.harness.bench.report_files import write_json_and_markdown
from aegis.harness.bench.server import INSTANCE, METHOD, RAW_SUBJECT, SERVICE, Quote
from aegis.harness.cluster.local import LocalCluster
from aegis.harness.cluster.processes import spawn
from aegis.sdk import wire
from aegis.sdk.config import load_settings
from aegis.sdk.connection import ConnectionPool
from aegis.sdk.discovery import DiscoveryClient
from aegis.sdk.events import EventBus
from aegis.sdk.jetstream import default_replicas, ensure_stream, retry_transient
from aegis.sdk.rpc import RpcClient

T = TypeVar("T")
Op = Callable[[], Awaitable[Any]]
Progress = Callable[[str], None]


@dataclass(frozen=True)
class BenchPlan:
    """How much to measure. ``quick`` keeps the whole run under a minute; ``check`` measures only what
    ``make bench-check`` compares, with the full run's calls per round and three times its rounds."""

    rounds: int
    seq_ops: int
    conc_ops: int
    event_ops: int
    rpc_c1_only: bool = False
    """Only RPC at concurrency 1, raw and SDK (no discovery side, no concurrency 64, no events)."""

    @classmethod
    def quick(cls) -> BenchPlan:
        return cls(rounds=8, seq_ops=1000, conc_ops=5000, event_ops=3000)

    @classmethod
    def full(cls) -> BenchPlan:
        return cls(rounds=12, seq_ops=3000, conc_ops=15000, event_ops=8000)

    @classmethod
    def check(cls) -> BenchPlan:
        # The p99 of 3000 calls per round, as in the full run the baseline comes from (the quick plan's 1000
        # calls make a noisier p99), and 24 rounds for a steadier median.
        return cls(rounds=24, seq_ops=3000, conc_ops=0, event_ops=0, rpc_c1_only=True)


def _run_loop(coro: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop, like the responders (both sides of every comparison share the loop)."""
    import uvloop

    return uvloop.run(coro)


def _hist() -> HdrHistogram:
    return HdrHistogram(1, 60_000_000, 3)


def _summary(h: HdrHistogram, ops: int, seconds: float) -> dict[str, float]:
    return {
        "ops": ops,
        "p50_ms": h.get_value_at_percentile(50) / 1000,
        "p99_ms": h.get_value_at_percentile(99) / 1000,
        "p999_ms": h.get_value_at_percentile(99.9) / 1000,
        "max_ms": h.get_max_value() / 1000,
        "per_s": ops / seconds if seconds > 0 else 0.0,
    }


async def _run(op: Op, ops: int, concurrency: int, h: HdrHistogram) -> float:
    """Issue ``ops`` operations with ``concurrency`` workers; record each latency; return wall seconds."""
    per_worker = [ops // concurrency + (1 if i < ops % concurrency else 0) for i in range(concurrency)]
    clock = time.perf_counter

    async def worker(n: int) -> None:
        for _ in range(n):
            t = clock()
            await op()
            h.record_value(max(1, int((clock() - t) * 1e6)))

    start = clock()
    await asyncio.gather(*(worker(n) for n in per_worker))
    return clock() - start


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds used so far by process ``pid`` (from /proc; 10 ms resolution)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _compare(
    ops: dict[str, Op], n: int, concurrency: int, rounds: int, warmup: int, others: dict[str, int]
) -> dict[str, Any]:
    """Alternate rounds of each op; return a summary per side and the figures of every round.

    Each side's rounds are merged into one histogram for its summary; ``rounds`` keeps each round's p50, p99
    and rate per side, from which :func:`ratios` takes the median of the per-round ratios. The order of the
    sides flips every round (A B C, C B A, ...), so no side always runs right after another. Besides latency
    and rate, each side gets the CPU microseconds per operation spent by this process (``client_cpu_us``) and
    by each process in ``others`` (name -> pid), which shows where time goes.
    """
    hists = {name: _hist() for name in ops}
    seconds = dict.fromkeys(ops, 0.0)
    cpu = {name: dict.fromkeys(["client", *others], 0.0) for name in ops}
    per_round: list[dict[str, dict[str, float]]] = []
    for op in ops.values():
        await _run(op, warmup, min(concurrency, warmup), _hist())
    order = list(ops)
    for i in range(rounds):
        this_round: dict[str, dict[str, float]] = {}
        for name in order if i % 2 == 0 else order[::-1]:
            op = ops[name]
            h = _hist()
            before = {"client": time.process_time(), **{k: process_cpu_s(p) for k, p in others.items()}}
            took = await _run(op, n, concurrency, h)
            cpu[name]["client"] += time.process_time() - before["client"]
            for k, pid in others.items():
                cpu[name][k] += process_cpu_s(pid) - before[k]
            seconds[name] += took
            hists[name].add(h)
            this_round[name] = {
                "p50_ms": h.get_value_at_percentile(50) / 1000,
                "p99_ms": h.get_value_at_percentile(99) / 1000,
                "per_s": round(n / took, 1) if took > 0 else 0.0,
            }
        per_round.append({name: this_round[name] for name in ops})
    out: dict[str, Any] = {}
    for name in ops:
        total = n * rounds
        out[name] = _summary(hists[name], total, seconds[name])
        out[name].update({f"{k}_cpu_us": round(v / total * 1e6, 2) for k, v in cpu[name].items()})
    out["rounds"] = per_round
    return out


async def _metrics_snapshots(js: Any) -> int:
    """How many metrics snapshots of the bench instance the ``AEGIS_METRICS`` stream holds."""
    subject = wire.metrics_subject(SERVICE, INSTANCE)
    info = await js.stream_info(wire.METRICS_STREAM, subjects_filter=subject)
    return int((info.state.subjects or {}).get(subject, 0))


def load_avg() -> list[float]:
    """The machine's 1, 5 and 15 minute load averages now (other work on a shared machine shows here)."""
    return [round(x, 2) for x in os.getloadavg()]


def wait_for_quiet(below: float | None = None, max_s: float = 60.0) -> float:
    """Wait until the 1-minute load average is under ``below`` (default: 3/4 of the CPUs), at most ``max_s``
    seconds; return the seconds waited. A gate measured right after other work (CI runs it after the tests)
    would otherwise count what is still winding down."""
    limit = below if below is not None else 0.75 * (os.cpu_count() or 1)
    start = time.monotonic()
    while os.getloadavg()[0] >= limit and time.monotonic() - start < max_s:
        time.sleep(1.0)
    return round(time.monotonic() - start, 1)


def _ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else float("nan")


async def measure(
    urls: list[str],
    plan: BenchPlan,
    progress: Progress = lambda _: None,
    others: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Run every comparison against a cluster whose client URLs are ``urls``.

    The responders (:mod:`aegis.harness.bench.server`) must already listen on ``urls[0]``. ``others`` names
    processes (responder, nats-server) whose CPU use per operation is reported too.
    """
    others = others or {}
    url = urls[0]  # client and responder on the same node for both sides: same topology
    raw = pool = discovery = None
    try:
        raw = await nats.connect(url)
        pool = await ConnectionPool.connect(load_settings(servers=[url], pool_size=1))
        client = RpcClient(pool)
        discovery = await DiscoveryClient(pool).start()
        # Measure the routed path, not the fallback to the shared subject: wait until the watch knows bench1.
        await discovery.watch.wait_for(
            lambda: any(r.instance_id == INSTANCE for r in discovery.watch.routable(SERVICE)), timeout=10
        )
        quote = Quote(symbol="EURUSD", price=1.08532, qty=1_000_000, side="buy")
        body = quote.model_dump_json().encode()

        async def raw_rpc() -> Any:
            msg = await raw.request(RAW_SUBJECT, body, timeout=5)
            return Quote.model_validate_json(msg.data)  # the raw caller decodes too

        async def sdk_rpc() -> Any:
            return await client.call(SERVICE, METHOD, quote, timeout=5, response_model=Quote)

        async def discovery_rpc() -> Any:
            return await discovery.call(SERVICE, METHOD, quote, timeout=5, response_model=Quote)

        rpc = {"raw": raw_rpc, "sdk": sdk_rpc, "discovery": discovery_rpc}
        out: dict[str, Any] = {}
        if plan.rpc_c1_only:
            progress("rpc, concurrency 1")
            del rpc["discovery"]
            out["rpc_c1"] = await _compare(rpc, plan.seq_ops, 1, plan.rounds, warmup=300, others=others)
            return out
        js = raw.jetstream()
        snapshots_before = await _metrics_snapshots(js)
        updates_before = discovery.watch.updates
        progress("rpc, concurrency 1")
        out["rpc_c1"] = await _compare(rpc, plan.seq_ops, 1, plan.rounds, warmup=300, others=others)
        progress("rpc, concurrency 64")
        out["rpc_c64"] = await _compare(rpc, plan.conc_ops, 64, plan.rounds, warmup=1000, others=others)
        out["discovery"] = {
            "strategy": discovery.strategy,
            "fallbacks": discovery.fallbacks,
            "routable_instances": [r.key for r in discovery.watch.routable(SERVICE)],
            # heartbeats (and any other record change) the client's watch applied while measuring
            "watch_updates": discovery.watch.updates - updates_before,
            # metrics snapshots the responder appended to AEGIS_METRICS while measuring
            "metrics_snapshots": await _metrics_snapshots(js) - snapshots_before,
        }

        bus = EventBus(pool)
        await bus.ensure_streams()
        raw_stream = f"BENCH_RAW_{uuid.uuid4().hex[:6]}"
        # Same replication as the SDK's stream, and wait for its leader like the SDK does.
        await ensure_stream(
            pool,
            StreamConfig(
                name=raw_stream, subjects=[f"benchraw.{raw_stream}.>"], num_replicas=default_replicas(pool)
            ),
        )
        try:
            raw_subject = f"benchraw.{raw_stream}.tick"
            topic = f"bench.{uuid.uuid4().hex[:6]}.tick"

            async def raw_pub() -> Any:
                return await js.publish(raw_subject, body, headers={"Nats-Msg-Id": uuid.uuid4().hex})

            async def first_raw_pub() -> Any:
                try:
                    return await raw_pub()
                except NoStreamResponseError as exc:
                    raise NoRespondersError from exc

            # A new replicated stream answers publishes once its leader's interest has reached our server, a
            # moment after the leader is known (seen in CI as "no response from stream"). The SDK's publish
            # retries that window, a raw publish does not: one bounded retry here, before anything is measured.
            await retry_transient(first_raw_pub, f"first publish to {raw_stream}")

            async def sdk_pub() -> Any:
                return await bus.publish(topic, quote)

            events = {"raw": raw_pub, "sdk": sdk_pub}
            progress("event publish, concurrency 1")
            out["event_c1"] = await _compare(
                events, plan.event_ops // 4, 1, plan.rounds, warmup=200, others=others
            )
            progress("event publish, concurrency 64")
            out["event_c64"] = await _compare(
                events, plan.event_ops, 64, plan.rounds, warmup=500, others=others
            )
        finally:
            await js.delete_stream(raw_stream)
            await bus.close()
        return out
    finally:
        if discovery is not None:
            await discovery.close()
        if pool is not None:
            await pool.close()
        if raw is not None:
            await raw.close()


@contextmanager
def responders(url: str) -> Iterator[subprocess.Popen[str]]:
    """Run :mod:`aegis.harness.bench.server` against ``url`` until the block ends."""
    proc = spawn(
        [sys.executable, "-m", "aegis.harness.bench.server", url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[3],
    )
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        if line.strip() != "ready":
            raise RuntimeError(f"bench responder failed to start (said {line!r})")
        yield proc
    finally:
        proc.stdin.close()  # type: ignore[union-attr]  # EOF tells it to stop
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


RATIO_SOURCES: dict[str, tuple[str, str, str]] = {
    "rpc_p99_ratio": ("rpc_c1", "sdk", "p99_ms"),
    "rpc_p50_ratio": ("rpc_c1", "sdk", "p50_ms"),
    "rpc_c64_p99_ratio": ("rpc_c64", "sdk", "p99_ms"),
    "rpc_throughput_ratio": ("rpc_c64", "sdk", "per_s"),
    "event_p99_ratio": ("event_c1", "sdk", "p99_ms"),
    "event_throughput_ratio": ("event_c64", "sdk", "per_s"),
    "discovery_rpc_p99_ratio": ("rpc_c1", "discovery", "p99_ms"),
    "discovery_rpc_p50_ratio": ("rpc_c1", "discovery", "p50_ms"),
    "discovery_rpc_c64_p99_ratio": ("rpc_c64", "discovery", "p99_ms"),
    "discovery_rpc_throughput_ratio": ("rpc_c64", "discovery", "per_s"),
}
"""Each ratio of ``aegis bench --json``: (result key, SDK side, figure), divided by the raw side's figure."""

RATIO_METHOD = "median of per-round ratios"


def measured_ratios(results: dict[str, Any]) -> list[str]:
    """The keys of :data:`RATIO_SOURCES` that ``results`` measured (a check run measures one)."""
    return [k for k, (res, side, _) in RATIO_SOURCES.items() if side in results.get(res, {})]


def round_ratios(results: dict[str, Any], key: str) -> list[float]:
    """The ratio ``key`` (see :data:`RATIO_SOURCES`) of every round, in round order (SDK and raw of one round)."""
    res, side, figure = RATIO_SOURCES[key]
    return [_ratio(r[side][figure], r["raw"][figure]) for r in results[res].get("rounds", [])]


def spread(values: list[float]) -> dict[str, float]:
    """Median, quartiles and extremes of per-round ratios (inclusive quartiles)."""
    q1, med, q3 = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else values * 3
    return {
        "rounds": len(values),
        "min": min(values),
        "q1": round(q1, 3),
        "median": round(med, 3),
        "q3": round(q3, 3),
        "max": max(values),
    }


def ratios(results: dict[str, Any]) -> dict[str, float]:
    """The contract keys of ``aegis bench --json``: SDK / raw, each the median of the per-round ratios (rounds
    alternate on one cluster, so a round's SDK and raw figures saw the same machine); a report without rounds
    falls back to the ratio of the merged figures."""
    out = {}
    for key in measured_ratios(results):
        res, side, figure = RATIO_SOURCES[key]
        per_round = round_ratios(results, key)
        pooled = _ratio(results[res][side][figure], results[res]["raw"][figure])
        out[key] = round(statistics.median(per_round), 3) if per_round else pooled
    return out


def pooled_ratios(results: dict[str, Any]) -> dict[str, float]:
    """The ratios of each side's merged figures (all rounds in one histogram): the pre-median definition."""
    return {
        key: _ratio(results[res][side][figure], results[res]["raw"][figure])
        for key in measured_ratios(results)
        for res, side, figure in [RATIO_SOURCES[key]]
    }


def ratio_spreads(results: dict[str, Any]) -> dict[str, dict[str, float]]:
    """:func:`spread` of every ratio's per-round values."""
    return {key: spread(v) for key in measured_ratios(results) if (v := round_ratios(results, key))}


def run_bench(
    quick: bool,
    progress: Progress = lambda _: None,
    urls: list[str] | None = None,
    plan: BenchPlan | None = None,
    command: str | None = None,
) -> dict[str, Any]:
    """Start a local 3-node cluster (unless ``urls`` is given), measure, and return the report; ``plan``
    (default: quick or full by ``quick``) and ``command`` (what the report says made it) for other plans."""
    plan = plan or (BenchPlan.quick() if quick else BenchPlan.full())
    started = time.time()
    load_before = load_avg()

    def go(u: list[str], server_pid: int | None) -> dict[str, Any]:
        with responders(u[0]) as proc:
            others = {"responder": proc.pid} | ({"nats_server_n1": server_pid} if server_pid else {})
            return _run_loop(measure(u, plan, progress, others))

    if urls is None:
        progress("starting a 3-node cluster")
        with LocalCluster(size=3) as cluster:
            results = go(cluster.urls, cluster.nodes[0].pid)
    else:
        results = go(urls, None)
    return {
        **ratios(results),
        "ratio_method": RATIO_METHOD,
        "ratio_spread": ratio_spreads(results),
        "pooled_ratios": pooled_ratios(results),
        "load_avg": {"before": load_before, "after": load_avg()},
        "discovery_fallbacks": results.get("discovery", {}).get("fallbacks", 0),
        "command": command or ("aegis bench --quick" if quick else "make bench  (= aegis bench)"),
        "quick": quick,
        "plan": plan.__dict__,
        "results": results,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "took_s": round(time.time() - started, 1),
        "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def markdown(report: dict[str, Any]) -> str:
    """The report as a markdown table."""
    cmd = report.get("command", "aegis bench")
    rows = [
        f"Recorded {report['recorded_at']} by `{cmd}` ({report['machine']['cpus']} CPUs, "
        f"Python {report['machine']['python']}); SDK and raw rounds alternate in one run on one cluster.",
        "",
        "| measure | raw p50 ms | SDK p50 ms | raw p99 ms | SDK p99 ms | raw p99.9 ms | SDK p99.9 ms | raw /s | SDK /s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    # (result key, SDK side, label); the discovery rows compare with the same raw rounds as the RPC rows.
    measures = [
        ("rpc_c1", "sdk", "RPC, concurrency 1"),
        ("rpc_c1", "discovery", "RPC via discovery, concurrency 1"),
        ("rpc_c64", "sdk", "RPC, concurrency 64"),
        ("rpc_c64", "discovery", "RPC via discovery, concurrency 64"),
        ("event_c1", "sdk", "event publish, concurrency 1"),
        ("event_c64", "sdk", "event publish, concurrency 64"),
    ]
    measures = [m for m in measures if m[1] in report["results"][m[0]]]
    for key, side, label in measures:
        r, s = report["results"][key]["raw"], report["results"][key][side]
        rows.append(
            f"| {label} | {r['p50_ms']:.3f} | {s['p50_ms']:.3f} | {r['p99_ms']:.3f} | {s['p99_ms']:.3f} "
            f"| {r['p999_ms']:.3f} | {s['p999_ms']:.3f} | {r['per_s']:.0f} | {s['per_s']:.0f} |"
        )
    d = report["results"].get("discovery")
    if d:
        rows += [
            "",
            f"RPC via discovery: `DiscoveryClient` ({d['strategy']}, watch cache) to the instance's own subject, "
            f"responder registered (heartbeat with metrics every second, metrics history every second). "
            f"While measuring: {d['fallbacks']} calls fell back to the shared subject, the client's watch "
            f"applied {d['watch_updates']} record updates, the responder stored {d['metrics_snapshots']} "
            f"metrics snapshots; routable instances: {', '.join(d['routable_instances']) or 'none'}.",
        ]
    rows += ["", "CPU microseconds per operation, by process (where the time goes):", ""]
    procs = [k.removesuffix("_cpu_us") for k in report["results"]["rpc_c1"]["raw"] if k.endswith("_cpu_us")]
    rows.append("| measure | " + " | ".join(f"raw {p} | SDK {p}" for p in procs) + " |")
    rows.append("|---|" + "---|---|" * len(procs))
    for key, side, label in measures:
        r, s = report["results"][key]["raw"], report["results"][key][side]
        cells = " | ".join(f"{r[p + '_cpu_us']:.1f} | {s[p + '_cpu_us']:.1f}" for p in procs)
        rows.append(f"| {label} | {cells} |")
    rows.append("")
    rows += ratio_rows(report)
    return "\n".join(rows) + "\n"


GOALS: dict[str, tuple[str, Callable[[float], bool]]] = {
    "rpc_p99_ratio": ("<= 1.10", lambda v: v <= 1.10),
    "rpc_throughput_ratio": (">= 0.90", lambda v: v >= 0.90),
    "event_throughput_ratio": (">= 0.90", lambda v: v >= 0.90),
    "discovery_rpc_p99_ratio": ("<= 1.10", lambda v: v <= 1.10),
}
"""NFR1: the SDK/raw ratios with a goal, as text and as a test."""

RATIO_KEYS = (
    "rpc_p50_ratio",
    "rpc_p99_ratio",
    "rpc_c64_p99_ratio",
    "rpc_throughput_ratio",
    "event_p99_ratio",
    "event_throughput_ratio",
    "discovery_rpc_p50_ratio",
    "discovery_rpc_p99_ratio",
    "discovery_rpc_c64_p99_ratio",
    "discovery_rpc_throughput_ratio",
)


def ratio_rows(report: dict[str, Any]) -> list[str]:
    """The markdown table of the report's SDK/raw ratios against :data:`GOALS` (``reports/baseline.md`` and
    the README's bench block); with per-round figures, each ratio's spread over the rounds too."""
    spreads = report.get("ratio_spread", {})
    if spreads:
        rows = [
            f"| ratio (SDK / raw) | value ({report.get('ratio_method', RATIO_METHOD)}) | per-round min - max"
            " | IQR | goal | met |",
            "|---|---|---|---|---|---|",
        ]
    else:
        rows = ["| ratio (SDK / raw) | value | goal | met |", "|---|---|---|---|"]
    for key in RATIO_KEYS:
        if key not in report:
            continue
        goal, met = GOALS.get(key, ("", None))
        verdict = "" if met is None else ("yes" if met(report[key]) else "**no**")
        s = spreads.get(key)
        if spreads:
            span = f"{s['min']:.3f} - {s['max']:.3f} | {s['q1']:.3f} - {s['q3']:.3f}" if s else " | "
            rows.append(f"| {key} | {report[key]:.3f} | {span} | {goal} | {verdict} |")
        else:
            rows.append(f"| {key} | {report[key]:.3f} | {goal} | {verdict} |")
    return rows


CHECK_KEY = "rpc_p99_ratio"
CHECK_TOLERANCE = 0.10


def regression_check(
    report: dict[str, Any], baseline: dict[str, Any], key: str = CHECK_KEY, tolerance: float = CHECK_TOLERANCE
) -> dict[str, Any]:
    """NFR2 (``make bench-check``): is ``report``'s ratio ``key`` within ``tolerance`` (a fraction) above the
    recorded ``baseline``'s? Both are SDK/raw ratios, each measured against raw nats-py in its own run, so the
    machine's speed cancels out; what is left is the SDK getting slower relative to raw."""
    measured, recorded = report[key], baseline[key]
    limit = round(recorded * (1 + tolerance), 3)
    spread = report.get("ratio_spread", {}).get(key, {})
    return {
        "key": key,
        "measured": measured,
        "measured_min": spread.get("min"),
        "measured_max": spread.get("max"),
        "baseline": recorded,
        "baseline_recorded_at": baseline.get("recorded_at"),
        "tolerance": tolerance,
        "limit": limit,
        "ok": measured <= limit,
    }


def write_report(report: dict[str, Any], directory: Path, name: str = "baseline") -> tuple[Path, Path]:
    """Write ``<name>.json`` and ``<name>.md`` under ``directory``."""
    return write_json_and_markdown(report, directory, name, markdown)
