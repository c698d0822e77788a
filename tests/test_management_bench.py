"""``aegis bench --management --quick --json`` as a user runs it: a real cluster, instances, ``aegis manage`` and HTTP.

The figures themselves are the benchmark and are not bounded here (a shared 2-core machine moves them); what is
checked is that the report has its contract keys and that they agree with each other.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

from hdrh.histogram import HdrHistogram

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "PYTHONUNBUFFERED": "1"}
KEYS = (
    "instances",
    "clients",
    "requests",
    "p50_ms",
    "p99_ms",
    "max_ms",
    "requests_per_s",
    "errors",
    "nats_msgs_per_request",
    "goal_p99_ms",
    "goal_met",
)


def test_management_bench_quick_json(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "aegis.cli",
            "bench",
            "--management",
            "--quick",
            "--json",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=ROOT,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout)
    assert set(KEYS) <= set(r), set(KEYS) - set(r)
    assert (r["instances"], r["clients"]) == (20, 5)
    # every request was sent, answered and timed; none failed
    assert r["requests"] == r["plan"]["requests"] == r["latency_samples"], r
    assert r["errors"] == 0, r["error_samples"]
    assert r["records_listed_after"] == r["instances"]
    assert 0 < r["p50_ms"] <= r["p99_ms"] <= r["max_ms"]
    assert math.isclose(r["requests_per_s"], r["requests"] / r["load_s"], rel_tol=0.01)
    # the NATS figure is the servers' count of the service's messages divided by the requests served
    assert r["nats"]["connections"] >= 1
    assert r["nats_msgs_per_request"] == round(r["nats"]["load"]["in_msgs"] / r["requests"], 4)
    # paced: every client polled once per interval for the paced duration; the latency goal is judged on it
    pc = r["paced"]
    assert pc["requests"] == int(r["clients"] * r["plan"]["paced_duration_s"] / pc["interval_s"]), pc
    assert pc["errors"] == 0 and pc["latency_samples"] == pc["requests"]
    assert 0 < pc["p50_ms"] <= pc["p99_ms"] <= pc["max_ms"]
    assert r["goal_p99_basis"] == "paced" and r["goal_p99_met"] == (pc["p99_ms"] < r["goal_p99_ms"])
    assert r["goal_met"] == (
        r["goal_p99_met"] and r["nats_msgs_per_request"] < r["goal_nats_msgs_per_request"]
    )
    # the HDR histogram holds the same samples (to its 3 significant digits)
    h = HdrHistogram.decode(r["latency_hdr"])
    assert h.get_total_count() == r["latency_samples"]
    assert math.isclose(h.get_max_value() / 1000, r["max_ms"], rel_tol=0.01)
    assert {"nats-server", "fastapi", "aegis"} <= set(r["versions"]) and r["machine"]["cpus"] >= 1
    md = (tmp_path / "management-bench.md").read_text()
    assert (tmp_path / "management-bench.json").is_file() and f"({r['latency_samples']} samples)" in md
    print(
        "\nbench --management --quick:",
        {k: r[k] for k in ("p50_ms", "p99_ms", "max_ms", "requests_per_s", "nats_msgs_per_request")},
    )
