"""``aegis bench --groups 3 --quick --json`` end to end on a real cluster: real worker processes hosting the SDK's
``SingleActiveService``, a kill -9 of the machine holding sampled actives.

The figures (failover p99, ack p99, CPU) are printed, not asserted: what is checked is that the report has its
contract keys, with sane types, and that its parts agree.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aegis.harness.bench.election_scale import layout, parse_groups

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "PYTHONUNBUFFERED": "1"}
ROW_KEYS = {
    "groups": int,
    "kv_writes_per_s": float,
    "renew_ack_p99_ms": float,
    "renew_ack_samples": int,
    "failover_p99_s": float,
    "failover_samples": int,
    "server_cpu_pct": float,
    "sdk_cpu_pct_per_group": float,
    "within_budget": bool,
}


def test_election_scale_quick_json(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "aegis.cli",
            "bench",
            "--groups",
            "5",
            "--quick",
            "--json",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=ROOT,
        timeout=58,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout)
    assert r["quick"] is True and r["command"].startswith("aegis bench --groups 5 --quick")
    (row,) = r["rows"]
    for key, kind in ROW_KEYS.items():
        assert isinstance(row[key], kind), (key, row[key])
    assert row["groups"] == 5 and row["instances"] == 15 and row["sampled_groups"] == 3
    assert row["renew_ack_samples"] > 0 and row["kv_writes_per_s"] > 0 and row["server_cpu_pct"] > 0
    # every crash round killed a machine holding actives, and each of them was taken over
    assert row["crash_rounds"] and row["failover_samples"] == sum(
        len(x["failovers_s"]) for x in row["crash_rounds"]
    )
    assert all(x["actives_killed"] == len(x["failovers_s"]) for x in row["crash_rounds"]), row["crash_rounds"]
    assert 0 < row["failover_p50_s"] <= row["failover_p99_s"] <= row["failover_max_s"]
    assert r["groups_max_within_budget"] in (None, 5)
    assert row["within_budget"] == (r["groups_max_within_budget"] == 5)
    md = (tmp_path / "election-scale.md").read_text()
    assert md.splitlines()[0].startswith(f"Reproduce: `{r['command']}`")
    assert (tmp_path / "election-scale.json").is_file()
    print("\nbench --groups 5 --quick:", {k: row[k] for k in ROW_KEYS})


def test_layout_spreads_groups_and_samples() -> None:
    workers, machines = layout(1000, 10)
    assert len(workers) == 4 and [len(m) for m in machines] == [10, 10, 10]
    hosted = [inst for w in workers for inst in w] + [inst for m in machines for inst in m]
    assert len(hosted) == len(set(hosted)) == 3000
    for w in workers:  # the 3 instances of a bulk group never share a worker
        groups = [g for g, _ in w]
        assert len(groups) == len(set(groups))
    assert layout(2, 10) == ([], [[(0, "a"), (1, "a")], [(0, "b"), (1, "b")], [(0, "c"), (1, "c")]])
    assert parse_groups("10, 100,1000") == [10, 100, 1000]
    with pytest.raises(ValueError):
        parse_groups("0")
