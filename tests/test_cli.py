"""The ``aegis`` command as a user runs it: a real subprocess, real cluster, real signals."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
from waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "PYTHONUNBUFFERED": "1"}


def _aegis(*args: str) -> list[str]:
    return [sys.executable, "-m", "aegis.cli", *args]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def _pids(output: str) -> list[int]:
    return [int(p) for p in re.findall(r"pid (\d+)", output)]


def _wait_dead(pids: list[int], timeout: float = 10) -> None:
    wait_until(lambda: not any(_alive(p) for p in pids), timeout, f"processes {pids} to exit", step=0.1)


def test_up_runs_cluster_and_demo_then_stops_everything() -> None:
    proc = subprocess.run(
        _aegis("up", "--duration", "3", "--rate", "100"),
        capture_output=True,
        text=True,
        env=ENV,
        cwd=ROOT,
        timeout=120,
    )
    out = proc.stdout
    assert proc.returncode == 0, proc.stderr + out
    assert len(re.findall(r"nats://127\.0\.0\.1:\d+", out)) >= 3
    pids = _pids(out)
    # 3 servers + the management API + 2 demo instances + 3 single-active ledger instances (+ aegis dashboard)
    assert len(pids) == 10
    assert "management API: http://127.0.0.1:" in out
    assert re.search(r"dashboard: http://127\.0\.0\.1:\d+", out), out
    ok = [int(n) for n in re.findall(r"ok (\d+)", out)]
    assert ok and max(ok) > 50
    assert "failed 0" in out
    # the ledger line: who is active in which epoch, and the sticky client's counts
    sticky = re.findall(r"active (L\d) epoch (\d+)  sticky ok (\d+)  failed (\d+)", out)
    assert sticky and int(sticky[-1][1]) > 0 and int(sticky[-1][2]) > 0 and sticky[-1][3] == "0", out
    _wait_dead(pids)


def test_ctrl_c_stops_everything() -> None:
    proc = subprocess.Popen(
        _aegis("up", "--rate", "50"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=ENV,
        cwd=ROOT,
    )
    seen = ""
    try:
        deadline = time.monotonic() + 60
        while "Ctrl-C stops everything" not in seen and time.monotonic() < deadline:
            line = proc.stdout.readline()  # type: ignore[union-attr]
            if not line:
                break
            seen += line
        pids = _pids(seen)
        assert len(pids) == 10, seen
        time.sleep(1)  # Ctrl-C while the demo's traffic runs, not while it is still starting
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, seen + rest
    assert "stopped demo instances and cluster" in rest
    _wait_dead(pids)


@pytest.mark.slow
def test_bench_quick_json_prints_the_contract_keys(tmp_path: Path) -> None:
    proc = subprocess.run(
        _aegis("bench", "--quick", "--json", "--out", str(tmp_path)),
        capture_output=True,
        text=True,
        env=ENV,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    for key in (
        "rpc_p99_ratio",
        "rpc_throughput_ratio",
        "event_throughput_ratio",
        "discovery_rpc_p99_ratio",
        "discovery_rpc_p50_ratio",
        "discovery_rpc_c64_p99_ratio",
        "discovery_rpc_throughput_ratio",
    ):
        assert math.isfinite(report[key]) and report[key] > 0, key
    # The ratios are computed from the measured figures, not made up: each is the median of the per-round
    # ratios (at least five alternating rounds), with its spread and the merged-histogram ratio beside it.
    r = report["results"]
    rounds = r["rpc_c1"]["rounds"]
    assert len(rounds) >= 5
    per_round = [round(x["sdk"]["p99_ms"] / x["raw"]["p99_ms"], 3) for x in rounds]
    assert report["rpc_p99_ratio"] == round(statistics.median(per_round), 3)
    spread = report["ratio_spread"]["rpc_p99_ratio"]
    assert spread["min"] == min(per_round) <= report["rpc_p99_ratio"] <= max(per_round) == spread["max"]
    assert report["pooled_ratios"]["rpc_p99_ratio"] == round(
        r["rpc_c1"]["sdk"]["p99_ms"] / r["rpc_c1"]["raw"]["p99_ms"], 3
    )
    assert r["rpc_c64"]["sdk"]["ops"] == r["rpc_c64"]["raw"]["ops"] > 0
    # The discovery row: same raw rounds, every call routed to the instance through the watch cache,
    # with the responder's heartbeats and metrics history running meanwhile.
    assert report["discovery_rpc_p99_ratio"] == round(
        statistics.median(round(x["discovery"]["p99_ms"] / x["raw"]["p99_ms"], 3) for x in rounds), 3
    )
    assert r["rpc_c1"]["discovery"]["ops"] == r["rpc_c1"]["raw"]["ops"] > 0
    assert report["discovery_fallbacks"] == 0
    assert r["discovery"]["routable_instances"] == ["bench.bench1"]
    assert r["discovery"]["watch_updates"] > 0 and r["discovery"]["metrics_snapshots"] > 0
    print(
        "\nbench --quick:",
        {k: v for k, v in report.items() if k.endswith("_ratio")},
        f"took {report['took_s']} s",
    )
    md = (tmp_path / "baseline.md").read_text()
    assert (tmp_path / "baseline.json").is_file() and "rpc_p99_ratio" in md
    assert "discovery_rpc_p99_ratio" in md and "RPC via discovery, concurrency 1" in md
