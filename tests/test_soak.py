"""``aegis bench --soak --quick --json`` end to end on a real cluster, and the bound on per-method metrics.

The soak's figures (RSS growth, p99 drift) are the benchmark's goals and are printed, not asserted here: a shared
2-core machine moves them. What is checked is that the report has its contract keys, with sane types, and that they
agree with each other.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

from aegis.harness.bench.soak import rss_figures, window_figures
from aegis.harness.bench.soak_service import metrics_footprint
from aegis.sdk.metrics import FEED_HEARTBEAT, FEED_HISTORY, InstanceMetrics

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "PYTHONUNBUFFERED": "1"}


def test_soak_quick_json(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "aegis.cli", "bench", "--soak", "--quick", "--json", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=ROOT,
        timeout=55,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout)
    plan = r["plan"]
    assert r["quick"] is True and r["command"].startswith("aegis bench --soak --quick")
    # every call and event was made, and (no errors) handled by the one service instance
    assert r["calls"] == plan["calls"] and r["events"] == plan["events"], r["errors"]
    assert r["errors"] == {"rpc": 0, "event": 0}, r["error_kinds"]
    assert r["calls_handled_by_service"] == r["calls"] + 1  # + the client's first call before "ready"
    assert r["events_handled_by_service"] <= r["events"]
    assert set(r["rss_growth_mb"]) == {"service", "client"}
    assert all(isinstance(v, float) for v in r["rss_growth_mb"].values()), r["rss_growth_mb"]
    for k in ("p99_first_min_ms", "p99_last_min_ms", "event_p99_first_min_ms", "event_p99_last_min_ms"):
        assert isinstance(r[k], float) and r[k] > 0, (k, r[k])
    for k in ("p99_first_min_samples", "p99_last_min_samples"):
        assert isinstance(r[k], int) and r[k] > 0, (k, r[k])
    windows = r["rpc_windows"]["windows"]
    assert sum(w["samples"] for w in windows) == r["rpc_windows"]["measured"]["samples"] <= r["calls"]
    assert windows[0]["samples"] == r["p99_first_min_samples"]
    assert isinstance(r["metrics_bounded"], bool) and r["metrics_footprint"]["end"]["methods"] == 2
    assert len(r["rss_samples"]) >= 3 and all(s["service_mb"] > 0 for s in r["rss_samples"])
    assert isinstance(r["goal_met"], bool)
    md = (tmp_path / "soak.md").read_text()
    assert md.splitlines()[0].startswith(f"Reproduce: `{r['command']}`")
    assert f"({r['p99_first_min_samples']} samples)" in md
    assert (tmp_path / "soak.json").is_file() and (tmp_path / "soak.html").is_file()
    print(
        "\nbench --soak --quick:", {k: r[k] for k in ("rss_growth_mb", "p99_first_min_ms", "p99_last_min_ms")}
    )


def test_per_method_metrics_stay_bounded_whatever_the_call_count() -> None:
    """Recording more calls (any latency, errors included) and taking feed snapshots adds nothing to what an
    instance's metrics hold: the histograms are fixed at creation, each feed keeps one mark per method."""
    metrics = InstanceMetrics("svc", "i1")
    rng = random.Random(7)
    for name in ("a", "b"):
        metrics.method(name)

    def load(calls: int) -> None:
        for i in range(calls):
            m = metrics.methods["a" if i % 3 else "b"]
            m.record(rng.lognormvariate(-7, 2), error="boom" if i % 97 == 0 else None)
            if i % 5000 == 0:
                metrics.snapshot(FEED_HEARTBEAT)
                metrics.snapshot(FEED_HISTORY)

    load(10_000)
    before = metrics_footprint(metrics)
    load(100_000)
    assert metrics_footprint(metrics) == before
    assert before["methods"] == 2 and before["marks"] == 4


def test_rss_and_window_figures() -> None:
    samples = [{"t": float(t), "service_mb": 50.0 + (t >= 20) * 2.0, "client_mb": 40.0} for t in range(40)]
    f = rss_figures(samples, "service_mb", 5.0, 39.0)
    assert f["growth_mb"] == 2.0 and f["samples"] == 35 and f["slope_mb_per_min"] > 0
    assert rss_figures(samples, "client_mb", 5.0, 39.0)["growth_mb"] == 0.0
    assert window_figures([], 60.0)["complete_windows"] == 0
