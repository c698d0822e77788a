"""``aegis bench --soak``: one SDK instance under a long steady load; memory and latency must not drift (issue 19).

One run: a local 3-node cluster (loopback); the service (:mod:`aegis.harness.bench.soak_service`: one RPC method and
one event subscription, registered, heartbeats and metrics history on) and the client
(:mod:`aegis.harness.bench.soak_client`: open loop, RPCs and event publishes at a steady rate) each in a process
of its own. The full plan is the issue's: one million RPCs and 200 000 events (``--quick``: far fewer, for the
test). Every second this process samples the RSS of both (``/proc/<pid>/status`` ``VmRSS``) and shows a progress
bar on stderr.

What it reports, and how each figure is made:

* ``rss_growth_mb`` per process: the mean RSS of the last :data:`RSS_TAIL_SAMPLES` samples under load minus the
  mean of the first :data:`RSS_TAIL_SAMPLES` after the warm-up (means of a few samples, so one sample caught in
  the middle of a garbage collection does not decide it); also the slope of a least-squares line through every
  sample after the warm-up (MB per minute) and the peak above that baseline. Goal: at most 5 MB;
* ``p99_first_min_ms`` / ``p99_last_min_ms``: the RPC latency p99 of the first measuring window after the warm-up
  and of the last complete one (windows of ``window_s`` = 60 s in the full run), from HDR histograms, each with
  its sample count (``p99_first_min_samples``...). Goal: the last within 10 % of the first. The same for
  event publishes (``event_...``);
* the service's metrics footprint (:func:`~aegis.harness.bench.soak_service.metrics_footprint`: methods,
  histogram buckets, feeds, marks) after the warm-up and at the end: per-method metrics must stay bounded
  whatever the call count, so the two must be equal;
* errors, the client's largest backlog (``behind``: 0 means the rate was held) and the load average.

Goals are reported (``goal_met``...), never asserted: a shared 2-core machine moves the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import IO, Any

from hdrh.histogram import HdrHistogram

from aegis.harness.bench.report_files import write_json_and_markdown
from aegis.harness.bench.runner import process_cpu_s
from aegis.harness.cluster.local import LocalCluster
from aegis.harness.cluster.processes import spawn

ROOT = Path(__file__).resolve().parents[3]
RSS_GOAL_MB = 5.0
P99_GOAL_PCT = 10.0
RSS_TAIL_SAMPLES = 10
START_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class SoakPlan:
    """How much load, how fast, and how it is cut into windows."""

    calls: int = 1_000_000
    events: int = 200_000
    rate: float = 2000.0
    """RPCs per second (events at ``rate * events / calls``)."""
    warmup_s: float = 60.0
    window_s: float = 60.0

    @classmethod
    def quick(cls) -> SoakPlan:
        """A few seconds of load: the whole path end to end, for the test."""
        return cls(calls=12_000, events=2_400, rate=1500.0, warmup_s=2.0, window_s=2.0)

    @property
    def duration_s(self) -> float:
        return self.calls / self.rate


# -- processes ---------------------------------------------------------------------------------------------------


class Child:
    """A child process whose stdout lines are read by a thread into a queue."""

    def __init__(self, args: list[str]) -> None:
        self.proc: subprocess.Popen[str] = spawn(
            [sys.executable, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        out: IO[str] = self.proc.stdout  # type: ignore[assignment]
        for line in out:
            self.lines.put(line)
        self.lines.put(None)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_line(self, timeout: float) -> str:
        """The next line, or raise when the child says nothing for ``timeout`` or exits."""
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(f"pid {self.pid} said nothing for {timeout:.0f} s") from None
        if line is None:
            raise RuntimeError(f"pid {self.pid} exited ({self.proc.poll()})")
        return line

    def drain(self) -> list[str]:
        out = []
        while True:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                return out
            if line is None:
                return out
            out.append(line)

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text)
        self.proc.stdin.flush()

    def stop(self, timeout: float = 15) -> None:
        """stdin EOF, then SIGKILL after ``timeout``."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self._reader.join(timeout=5)  # every line it said is in the queue


@contextmanager
def child(args: list[str]) -> Iterator[Child]:
    c = Child(args)
    try:
        yield c
    finally:
        c.stop()


def _cpu_s(pid: int) -> float:
    try:
        return process_cpu_s(pid)
    except OSError:
        return float("nan")


def rss_mb(pid: int) -> float | None:
    """Resident set size of ``pid`` in MB (``VmRSS``), None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


# -- figures -----------------------------------------------------------------------------------------------------


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def _slope_per_min(ts: list[float], ys: list[float]) -> float:
    """Least-squares slope of ``ys`` over ``ts`` (seconds), per minute."""
    n = len(ts)
    if n < 2:
        return 0.0
    mt, my = _mean(ts), _mean(ys)
    var = sum((t - mt) ** 2 for t in ts)
    return 60 * sum((t - mt) * (y - my) for t, y in zip(ts, ys, strict=True)) / var if var else 0.0


def rss_figures(samples: list[dict[str, float]], key: str, after_s: float, end_s: float) -> dict[str, Any]:
    """Growth of ``key`` (an RSS series in MB) between the start of the measuring part (``after_s``, the end of
    the warm-up) and the end of the load (``end_s``); see the module docstring."""
    pts = [(s["t"], s[key]) for s in samples if after_s <= s["t"] <= end_s and s.get(key) is not None]
    if not pts:
        return {"growth_mb": None, "slope_mb_per_min": None, "peak_above_start_mb": None, "samples": 0}
    ts, ys = [p[0] for p in pts], [p[1] for p in pts]
    k = min(RSS_TAIL_SAMPLES, max(1, len(ys) // 3))
    start, end = _mean(ys[:k]), _mean(ys[-k:])
    tail = len(ts) * 2 // 3  # the last third: a leak keeps climbing there, a high-water mark stays flat
    return {
        "growth_mb": round(end - start, 2),
        "start_mb": round(start, 2),
        "end_mb": round(end, 2),
        "slope_mb_per_min": round(_slope_per_min(ts, ys), 3),
        "tail_slope_mb_per_min": round(_slope_per_min(ts[tail:], ys[tail:]), 3),
        "peak_above_start_mb": round(max(ys) - start, 2),
        "samples": len(ys),
        "averaged_samples": k,
    }


def _hist_figures(h: HdrHistogram) -> dict[str, Any]:
    n = h.get_total_count()
    pct = lambda p: round(h.get_value_at_percentile(p) / 1000, 3) if n else None  # noqa: E731
    return {
        "samples": n,
        "p50_ms": pct(50),
        "p99_ms": pct(99),
        "p999_ms": pct(99.9),
        "max_ms": round(h.get_max_value() / 1000, 3) if n else None,
    }


def window_figures(windows: list[dict[str, Any]], window_s: float) -> dict[str, Any]:
    """First and last complete window of one kind, the whole measured part, and every window's p99."""
    complete = [w for w in windows if w["end_s"] - w["start_s"] >= 0.95 * window_s and w["count"]]
    merged = HdrHistogram(1, 60_000_000, 3)
    per_window = []
    for w in windows:
        if w["hdr"]:
            h = HdrHistogram.decode(w["hdr"])
            merged.add(h)
            per_window.append({"start_s": w["start_s"], "end_s": w["end_s"], **_hist_figures(h)})
    out: dict[str, Any] = {
        "windows": per_window,
        "measured": _hist_figures(merged),
        "complete_windows": len(complete),
    }
    if complete:
        first = _hist_figures(HdrHistogram.decode(complete[0]["hdr"]))
        last = _hist_figures(HdrHistogram.decode(complete[-1]["hdr"]))
        out |= {"first": first, "last": last}
        if first["p99_ms"]:
            out["p99_change_pct"] = round(100 * (last["p99_ms"] - first["p99_ms"]) / first["p99_ms"], 1)
    return out


def _versions(cluster: LocalCluster) -> dict[str, str]:
    out = {"nats-server": str(cluster.varz(0).get("version", "?")), "python": platform.python_version()}
    for dist in ("aegis", "nats-py", "pydantic", "hdrhistogram"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "?"
    return out


# -- the run -----------------------------------------------------------------------------------------------------


def measure(cluster: LocalCluster, plan: SoakPlan, show_progress: bool = True) -> dict[str, Any]:
    """Run the load against ``cluster``; sample RSS every second; return the raw figures."""
    urls = cluster.urls
    client_plan = {
        "calls": plan.calls,
        "events": plan.events,
        "rate": plan.rate,
        "warmup_s": plan.warmup_s,
        "window_s": plan.window_s,
    }
    with child(["-m", "aegis.harness.bench.soak_service", urls[0]]) as service:
        if service.wait_line(START_TIMEOUT_S).strip() != "ready":
            raise RuntimeError("the soak service did not start")
        with child(["-m", "aegis.harness.bench.soak_client", json.dumps(client_plan), urls[0]]) as client:
            return _drive(cluster, plan, service, client, show_progress)


def _drive(
    cluster: LocalCluster, plan: SoakPlan, service: Child, client: Child, show_progress: bool
) -> dict[str, Any]:
    """The load, started and watched: RSS samples every second, the client's lines, the progress bar."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    if not json.loads(client.wait_line(START_TIMEOUT_S)).get("ready"):
        raise RuntimeError("the soak client did not start")
    pids = {
        "service": service.pid,
        "client": client.pid,
        **{f"nats_{n.name}": n.pid for n in cluster.nodes},
    }
    cpu_before = {k: _cpu_s(p) for k, p in pids.items() if p}
    load_before = [round(x, 2) for x in os.getloadavg()]
    samples: list[dict[str, float]] = []
    windows: list[dict[str, Any]] = []
    service_status: list[dict[str, Any]] = []
    done: dict[str, Any] | None = None
    last_progress: dict[str, Any] = {}
    limit_s = plan.duration_s * 3 + plan.warmup_s + 120  # bound: the run may fall behind, never hang
    console = Console(stderr=True)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
    )
    with Progress(*columns, console=console, disable=not show_progress, transient=False) as bar:
        calls_task = bar.add_task("RPCs", total=plan.calls, info="")
        events_task = bar.add_task("events", total=plan.events, info="")
        t0 = time.monotonic()
        client.send("go\n")
        next_sample = t0
        while done is None:
            now = time.monotonic()
            if now - t0 > limit_s:
                raise RuntimeError(f"the soak did not finish within {limit_s:.0f} s")
            if now >= next_sample:
                next_sample += 1.0
                samples.append(
                    {
                        "t": round(now - t0, 2),
                        "service_mb": rss_mb(service.pid),
                        "client_mb": rss_mb(client.pid),
                    }
                )
            for line in service.drain():
                service_status.append(json.loads(line))
            for line in client.drain():
                msg = json.loads(line)
                if "window" in msg:
                    windows.append(msg)
                elif "progress" in msg:
                    last_progress = msg
                elif msg.get("done"):
                    done = msg
            if client.proc.poll() is not None and done is None:
                for line in client.drain():
                    msg = json.loads(line)
                    done = msg if msg.get("done") else done
                if done is None:
                    raise RuntimeError(
                        f"the soak client exited ({client.proc.returncode}) before it was done"
                    )
            s = samples[-1] if samples else {}
            info = f"RSS service {s.get('service_mb') or 0:.1f} MB, client {s.get('client_mb') or 0:.1f} MB"
            bar.update(calls_task, completed=last_progress.get("rpc_done", 0), info=info)
            bar.update(events_task, completed=last_progress.get("event_done", 0), info="")
            time.sleep(0.2)
        bar.update(calls_task, completed=done["rpc"]["done"])
        bar.update(events_task, completed=done["event"]["done"])
    end_s = samples[-1]["t"] if samples else 0.0
    cpu = {
        k: round(_cpu_s(p) - cpu_before[k], 2) for k, p in pids.items() if k in cpu_before and k != "client"
    }
    cpu["client"] = round(done["cpu_s"] - cpu_before["client"], 2)  # it has exited: its own count
    load_after = [round(x, 2) for x in os.getloadavg()]
    service.stop()
    for line in service.drain():
        service_status.append(json.loads(line))
    return {
        "samples": samples,
        "windows": windows,
        "done": done,
        "service_status": service_status,
        "end_s": end_s,
        "cpu_s": cpu,
        "load_avg_before": load_before,
        "load_avg_after": load_after,
    }


def build_report(
    raw: dict[str, Any], plan: SoakPlan, quick: bool, versions: dict[str, str]
) -> dict[str, Any]:
    done = raw["done"]
    samples = raw["samples"]
    rss = {k: rss_figures(samples, f"{k}_mb", plan.warmup_s, raw["end_s"]) for k in ("service", "client")}
    rpc = window_figures([w for w in raw["windows"] if w["kind"] == "rpc"], plan.window_s)
    ev = window_figures([w for w in raw["windows"] if w["kind"] == "event"], plan.window_s)
    status = raw["service_status"]
    # The service's metrics footprint right after the warm-up, and at the end (its last status line).
    warm = next((s for s in status if s["calls"] >= plan.rate * plan.warmup_s), status[0] if status else None)
    footprint = {
        "after_warmup": warm["metrics"] if warm else None,
        "end": status[-1]["metrics"] if status else None,
        "calls_after_warmup": warm["calls"] if warm else None,
        "calls_end": status[-1]["calls"] if status else None,
    }
    growth = {k: rss[k]["growth_mb"] for k in rss}
    first, last = rpc.get("first") or {}, rpc.get("last") or {}
    efirst, elast = ev.get("first") or {}, ev.get("last") or {}
    change = rpc.get("p99_change_pct")
    rss_ok = all(g is not None and g <= RSS_GOAL_MB for g in growth.values())
    p99_ok = change is not None and abs(change) <= P99_GOAL_PCT
    bounded = footprint["after_warmup"] is not None and footprint["after_warmup"] == footprint["end"]
    return {
        "calls": done["rpc"]["done"],
        "events": done["event"]["done"],
        "calls_ok": done["rpc"]["done"] - done["rpc"]["errors"],
        "events_ok": done["event"]["done"] - done["event"]["errors"],
        "errors": {"rpc": done["rpc"]["errors"], "event": done["event"]["errors"]},
        "error_kinds": {"rpc": done["rpc"]["error_kinds"], "event": done["event"]["error_kinds"]},
        "events_handled_by_service": status[-1]["events"] if status else None,
        "calls_handled_by_service": status[-1]["calls"] if status else None,
        "rss_growth_mb": growth,
        "rss": rss,
        "p99_first_min_ms": first.get("p99_ms"),
        "p99_last_min_ms": last.get("p99_ms"),
        "p99_first_min_samples": first.get("samples"),
        "p99_last_min_samples": last.get("samples"),
        "p99_change_pct": change,
        "event_p99_first_min_ms": efirst.get("p99_ms"),
        "event_p99_last_min_ms": elast.get("p99_ms"),
        "event_p99_first_min_samples": efirst.get("samples"),
        "event_p99_last_min_samples": elast.get("samples"),
        "event_p99_change_pct": ev.get("p99_change_pct"),
        "rpc_windows": rpc,
        "event_windows": ev,
        "metrics_footprint": footprint,
        "metrics_bounded": bounded,
        "goal_rss_growth_mb": RSS_GOAL_MB,
        "goal_p99_change_pct": P99_GOAL_PCT,
        "goal_rss_met": rss_ok,
        "goal_p99_met": p99_ok,
        "goal_met": rss_ok and p99_ok and bounded,
        "behind": {"rpc": done["rpc"]["behind"], "event": done["event"]["behind"]},
        "elapsed_s": done["elapsed_s"],
        "achieved_rate": {
            "rpc_per_s": round(done["rpc"]["done"] / done["elapsed_s"], 1) if done["elapsed_s"] else None,
            "events_per_s": round(done["event"]["done"] / done["elapsed_s"], 1)
            if done["elapsed_s"]
            else None,
        },
        "cpu_s": raw["cpu_s"],
        "rss_samples": samples,
        "command": "aegis bench --soak --quick" if quick else "aegis bench --soak",
        "quick": quick,
        "plan": asdict(plan),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_avg_before": raw["load_avg_before"],
            "load_avg_after": raw["load_avg_after"],
        },
        "versions": versions,
        "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def run_soak(
    quick: bool = False,
    plan: SoakPlan | None = None,
    *,
    show_progress: bool = True,
    command: str | None = None,
) -> dict[str, Any]:
    """Start a 3-node cluster, the service and the client; soak; return the report."""
    plan = plan or (SoakPlan.quick() if quick else SoakPlan())
    started = time.time()
    with LocalCluster(size=3) as cluster:
        versions = _versions(cluster)
        raw = measure(cluster, plan, show_progress)
    report = build_report(raw, plan, quick, versions)
    if command:
        report["command"] = command
    report["took_s"] = round(time.time() - started, 1)
    return report


# -- the report --------------------------------------------------------------------------------------------------


def _footprint(f: dict[str, int] | None) -> str:
    if not f:
        return "n/a"
    return (
        f"{f['methods']} methods, {f['hist_buckets']} histogram buckets, {f['feeds']} feeds, {f['marks']} marks"
        f" ({f['mark_bytes']} bytes)"
    )


def _ms(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f} ms"


def markdown(report: dict[str, Any]) -> str:
    """The report as markdown; its first line is the command that reproduces it."""
    r = report
    yes = lambda ok: "yes" if ok else "**no**"  # noqa: E731
    p = r["plan"]
    rss = r["rss"]
    fp = r["metrics_footprint"]
    lines = [
        f"Reproduce: `{r['command']}` (writes `soak.json` and `soak.md`).",
        "",
        f"Recorded {r['recorded_at']} on a {r['machine']['cpus']}-CPU machine (nats-server"
        f" {r['versions']['nats-server']}, Python {r['versions']['python']}; load average"
        f" {r['machine']['load_avg_before'][0]:g} before, {r['machine']['load_avg_after'][0]:g} after): 3-node"
        f" cluster on loopback, one service instance and one client process. {r['calls']} RPCs and {r['events']}"
        f" events at {p['rate']:g} RPCs/s ({r['achieved_rate']['rpc_per_s']} achieved) in {r['elapsed_s']:.0f} s;"
        f" warm-up {p['warmup_s']:g} s, windows of {p['window_s']:g} s"
        + (" (**quick run**: far fewer calls than the goal's million)." if r["quick"] else "."),
        "",
        "| figure | measured | goal | met |",
        "|---|---|---|---|",
    ]
    for k in ("service", "client"):
        f = rss[k]
        lines.append(
            f"| RSS growth after warm-up, {k} | {f['growth_mb']} MB ({f['start_mb']} -> {f['end_mb']} MB; slope"
            f" {f['slope_mb_per_min']} MB/min, over the last third {f.get('tail_slope_mb_per_min')} MB/min; peak"
            f" +{f['peak_above_start_mb']} MB; {f['samples']} samples)"
            f" | <= {r['goal_rss_growth_mb']:g} MB | {yes(f['growth_mb'] is not None and f['growth_mb'] <= r['goal_rss_growth_mb'])} |"
        )
    lines += [
        f"| RPC p99, first window after warm-up | {_ms(r['p99_first_min_ms'])} ({r['p99_first_min_samples']}"
        " samples) | | |",
        f"| RPC p99, last window | {_ms(r['p99_last_min_ms'])} ({r['p99_last_min_samples']} samples) | within"
        f" {r['goal_p99_change_pct']:g} % of the first | {yes(r['goal_p99_met'])} ({r['p99_change_pct']} %) |",
        f"| event publish p99, first / last window | {_ms(r['event_p99_first_min_ms'])}"
        f" ({r['event_p99_first_min_samples']} samples) / {_ms(r['event_p99_last_min_ms'])}"
        f" ({r['event_p99_last_min_samples']} samples) | | ({r['event_p99_change_pct']} %) |",
        f"| per-method metrics footprint, after warm-up / end | {_footprint(fp['after_warmup'])} /"
        f" {_footprint(fp['end'])}"
        f" ({fp['calls_after_warmup']} / {fp['calls_end']} calls) | unchanged | {yes(r['metrics_bounded'])} |",
        f"| errors | RPC {r['errors']['rpc']}, events {r['errors']['event']} | 0 |"
        f" {yes(r['errors']['rpc'] == 0 and r['errors']['event'] == 0)} |",
        "",
        f"Largest backlog of the client (calls due but not started: the rate not held): RPC {r['behind']['rpc']},"
        f" events {r['behind']['event']}. The service handled {r['calls_handled_by_service']} calls and"
        f" {r['events_handled_by_service']} events.",
        "",
        "RPC p99 per window: "
        + ", ".join(f"{w['p99_ms']:.3f}" for w in r["rpc_windows"]["windows"] if w["p99_ms"] is not None)
        + " ms.",
        "",
        *([r["note"], ""] if r.get("note") else []),
        "CPU seconds during the load: "
        + ", ".join(f"{k.replace('_', ' ')} {v:.1f}" for k, v in r["cpu_s"].items())
        + ".",
    ]
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> Path:
    """RSS of both processes over time (Bokeh, BokehJS inlined so the page opens offline)."""
    from bokeh.embed import file_html
    from bokeh.models import ColumnDataSource, Span
    from bokeh.plotting import figure
    from bokeh.resources import INLINE

    s = report["rss_samples"]
    src = ColumnDataSource(
        {
            "t": [x["t"] for x in s],
            "service": [x["service_mb"] for x in s],
            "client": [x["client_mb"] for x in s],
        }
    )
    fig = figure(
        title=f"RSS over time ({report['calls']} RPCs, {report['events']} events)",
        x_axis_label="seconds since the load started",
        y_axis_label="RSS (MB)",
        width=900,
        height=400,
    )
    fig.line("t", "service", source=src, legend_label="service", line_width=2)
    fig.line("t", "client", source=src, legend_label="client", line_width=2, color="darkorange")
    fig.add_layout(Span(location=report["plan"]["warmup_s"], dimension="height", line_dash="dashed"))
    fig.legend.location = "top_left"
    path.write_text(file_html(fig, INLINE, "aegis soak: RSS"))
    return path


def write_report(report: dict[str, Any], directory: Path, name: str = "soak") -> tuple[Path, Path]:
    """Write ``<name>.json``, ``<name>.md`` and ``<name>.html`` (the RSS plot) under ``directory``."""
    return write_json_and_markdown(report, directory, name, markdown, plot)


def main(argv: list[str] | None = None) -> None:
    """``python -m aegis.harness.bench.soak [--quick] [--calls N --events N --rate R] [--out DIR] [--json]``."""
    ap = argparse.ArgumentParser(
        prog="python -m aegis.harness.bench.soak", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--calls", type=int)
    ap.add_argument("--events", type=int)
    ap.add_argument("--rate", type=float)
    ap.add_argument("--warmup", type=float)
    ap.add_argument("--window", type=float)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    base = SoakPlan.quick() if a.quick else SoakPlan()
    overrides = {
        k: v
        for k, v in {
            "calls": a.calls,
            "events": a.events,
            "rate": a.rate,
            "warmup_s": a.warmup,
            "window_s": a.window,
        }.items()
        if v is not None
    }
    plan = SoakPlan(**{**asdict(base), **overrides})
    command = None
    if overrides or a.out is not None:
        flags = "".join(f" --{k.removesuffix('_s')} {v:g}" for k, v in overrides.items())
        out = f" --out {a.out}" if a.out is not None else ""
        command = f"python -m aegis.harness.bench.soak{' --quick' if a.quick else ''}{flags}{out}"
    report = run_soak(a.quick, plan, command=command)
    if a.out is not None:
        jpath, mpath = write_report(report, a.out)
        print(f"wrote {jpath} and {mpath}", file=sys.stderr)
    if a.json:
        print(json.dumps(report))
    else:
        print(markdown(report))


if __name__ == "__main__":
    main()
