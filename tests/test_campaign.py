"""Fault campaigns: the YAML schema, the checkers, the report, and the smoke campaign end to end (real cluster,
real SDK processes, real faults: what CI runs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aegis.harness.campaign.checkers import (
    duplicate_commands,
    failed_calls,
    failover_time,
    lost_events,
    split_brain,
    split_brain_by_fault,
)
from aegis.harness.campaign.history import Call, Hit
from aegis.harness.campaign.report import CampaignReport, by_class, html, ks_distance, markdown
from aegis.harness.campaign.schema import CampaignError, load_campaign
from aegis.sdk import wire

ROOT = Path(__file__).resolve().parent.parent
CAMPAIGNS = ROOT / "harness" / "campaigns"


@pytest.mark.parametrize("path", sorted(CAMPAIGNS.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_campaign_loads_and_its_schedule_replays(path: Path) -> None:
    campaign = load_campaign(path)
    assert campaign.name == path.stem
    schedule = campaign.schedule()
    assert len(schedule) == campaign.runs
    assert schedule == load_campaign(path).schedule()  # same seed, same order


def test_the_issue_s_campaigns_are_shipped_with_enough_faults() -> None:
    names = {p.stem for p in CAMPAIGNS.glob("*.yaml")}
    assert {"smoke", "instance-crash", "instance-pause", "nats-node-crash", "partition"} <= names
    assert {"rolling-restart", "mixed"} <= names
    quorum = load_campaign(CAMPAIGNS / "nats-node-crash-quorum.yaml")
    assert quorum.election == "quorum" and quorum.runs >= 30 and quorum.budget("node-kill").gap_p99_s == 2.0
    aims = {f.target for f in quorum.faults}
    assert {f"stream-leader:KV_{b}" for b in wire.QUORUM_ELECTION_BUCKETS} | {"active-node"} <= aims
    lease = load_campaign(CAMPAIGNS / "nats-node-crash-lease-2s.yaml")
    assert lease.election == "lease" and lease.runs == quorum.runs and lease.budgets == quorum.budgets
    assert load_campaign(CAMPAIGNS / "partition-quorum.yaml").election == "quorum"
    for name in ("nats-node-crash-quorum", "partition-quorum"):  # each layout of the buckets, side by side
        r3, pinned = (
            load_campaign(CAMPAIGNS / f"{name}.yaml"),
            load_campaign(CAMPAIGNS / f"{name}-pinned.yaml"),
        )
        assert (r3.topology.quorum_buckets, pinned.topology.quorum_buckets) == ("replicated", "pinned")
        assert (pinned.faults, pinned.seed, pinned.budgets) == (r3.faults, r3.seed, r3.budgets)
        assert pinned.election == r3.election == "quorum" and pinned.trace and r3.trace
    assert load_campaign(CAMPAIGNS / "instance-crash.yaml").runs >= 100
    assert load_campaign(CAMPAIGNS / "rolling-restart.yaml").expect.failed_calls == 0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: x\nfaults: [{kind: instance-kill}\n", "not valid YAML"),
        ("- 1\n", "expected a mapping"),
        ("name: x\nfaults: [{kind: meteor-strike}]\n", "faults.0.kind"),
        ("name: x\nfaults: [{kind: node-kill}]\n", "node-kill needs duration_s > 0"),
        ("name: x\nfaults: []\n", "faults"),
        ("name: x\nfaults: [{kind: instance-kill}]\ntopology: {nodes: 1}\n", "topology.nodes"),
        ("name: x\nfaults: [{kind: instance-kill}]\nsettle_s: [2, 1]\n", "settle_s"),
        ("name: x\nfaults: [{kind: instance-kill}]\ncolour: red\n", "colour"),
        ("name: x\nfaults: [{kind: instance-kill}]\nelection: raft\n", "election"),
    ],
)
def test_a_bad_campaign_file_is_refused_naming_the_field(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(CampaignError) as exc:
        load_campaign(path)
    assert str(path) in str(exc.value) and message in str(exc.value)


def test_a_missing_campaign_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CampaignError, match="cannot read"):
        load_campaign(tmp_path / "nope.yaml")


def test_checkers_find_what_they_should_and_nothing_else() -> None:
    calls = [
        Call(0.0, 0.01, True, "L1", 5),
        Call(1.0, 1.2, False, error="RpcTimeout"),
        Call(1.3, 1.9, True, "L1", 5),  # same epoch after the fault: not a failover
        Call(2.0, 2.05, True, "L2", 9),
        Call(2.1, 2.2, True, "L2", 9),
    ]
    first = failover_time(calls, 1.0, 5)
    assert first is not None and (first.instance, first.received) == ("L2", 2.05)
    assert failover_time(calls, 1.0, 9) is None
    assert failed_calls(calls, 0.5, 1.5) == 1 and failed_calls(calls, 1.5, 3) == 0
    assert lost_events(["a", "b", "c"], ["c", "a", "a"]) == ["b"]
    assert lost_events(["a"], ["a"]) == []
    assert duplicate_commands(["x", "y", "x", "z", "x"]) == {"x": 3}
    assert duplicate_commands(["x", "y"]) == {}


def test_split_brain_is_charged_to_the_fault_during_which_the_deposed_active_answered() -> None:
    """A paused active resumes when its fault heals, after the client recovered: its late answers belong to
    that fault, even when they come after the fault's recovery and just before the next fault."""
    hits = [
        Hit(0.5, 0.51, "L1", 2),
        Hit(11.0, 11.01, "L2", 7),  # fault 1 at t=10 paused L1; L2 took over
        Hit(12.5, 12.51, "L1", 2),  # L1 resumed at 12 (after recovery was declared at 12.1) and answered
        Hit(19.9, 19.91, "L1", 2),  # still answering just before fault 2 (t=20)
        Hit(20.5, 20.51, "L1", 2),  # and during fault 2
        Hit(31.0, 31.01, "L3", 9),
    ]
    assert split_brain_by_fault([10.0, 20.0, 30.0], split_brain(hits)) == [2, 1, 0]


RECORDED = sorted(p for p in (ROOT / "reports").glob("*.json") if "by_class" in json.loads(p.read_text()))


@pytest.mark.parametrize("path", RECORDED, ids=lambda p: p.stem)
def test_a_recorded_campaign_report_is_a_campaign_report_and_dumps_back_to_its_json(path: Path) -> None:
    """The report model is the JSON contract: every recorded campaign report validates (no key missing, none
    unknown) and dumps back to the very same JSON, key order included."""
    recorded = json.loads(path.read_text())
    report = CampaignReport.model_validate(recorded)
    assert json.dumps(report.model_dump(mode="json")) == json.dumps(recorded)


def test_the_recorded_campaign_reports_are_there() -> None:
    assert {p.stem for p in RECORDED} >= {"instance-crash", "mixed", "partition"}


def test_ks_distance_is_the_largest_cdf_gap() -> None:
    assert ks_distance([1, 2, 3], [1, 2, 3]) == 0.0
    assert ks_distance([1, 2], [3, 4]) == 1.0
    assert ks_distance([1, 2, 3, 4], [3, 4, 5, 6]) == 0.5
    assert ks_distance([], [1]) is None


def _fault(n: int, kind: str, gap: float, failover: float | None) -> dict:
    return {
        "n": n,
        "kind": kind,
        "target": "L1",
        "gap_s": gap,
        "failover_s": failover,
        "failed_calls": 1,
        "failed_ops": {"rpc": 2},
        "split_brain": 0,
        "recovered": True,
        "at_s": n * 3.0,
        "until_s": n * 3.0 + 1.5,
    }


def test_the_report_summarises_per_fault_class_and_renders() -> None:
    faults = [
        _fault(1, "instance-kill", 0.8, 0.8),
        _fault(2, "node-kill", 0.1, None),
        _fault(3, "instance-kill", 0.7, 0.7),
    ]
    classes = by_class(faults)
    assert classes["instance-kill"]["runs"] == 2 and classes["instance-kill"]["failover_max_s"] == 0.8
    assert classes["node-kill"]["failovers"] == 0 and classes["node-kill"]["failed_ops"] == 2
    report = {
        "runs": 3,
        "split_brain": 0,
        "lost_events": 0,
        "failover_p99_s": 0.8,
        "trace_validated": True,
        "trace": {"note": "(10 of 20 events)"},
        "duplicate_commands": 0,
        "epoch_regressions": 0,
        "calls": 100,
        "failed_calls": 3,
        "events_acked": 50,
        "commands_completed": 5,
        "by_class": classes,
        "faults": faults,
        "skipped": ["partition-node: nft is missing"],
        "expectations_broken": [],
        "campaign": {
            "name": "t",
            "description": "d",
            "seed": 1,
            "topology": {"nodes": 3, "instances": 3, "rpc_instances": 1},
        },
        "took_s": 12.0,
        "timeline": {"clients": ["sticky", "rpc"], "failures": {"sticky": [3.1], "rpc": [3.2, 6.1]}},
        "prediction": {
            "source": "reports/sim-predicted-failover.json",
            "sim_samples": 3,
            "sim_p50_s": 0.75,
            "sim_p99_s": 0.9,
            "sim_samples_s": [0.7, 0.75, 0.9],
            "real_samples": 2,
            "real_p50_s": 0.7,
            "real_p99_s": 0.8,
            "ks_distance": 0.33,
        },
    }
    md = markdown(report)
    assert (
        "| instance-kill | 2 |" in md
        and "800 ms" in md
        and "nft is missing" in md
        and "KS distance 0.33" in md
    )
    page = html(report)
    assert page.startswith("<!DOCTYPE html>") and "instance-kill" in page and "Bokeh" in page


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_smoke_campaign_json_keeps_its_promises(tmp_path: Path) -> None:
    """What CI runs: `aegis campaign harness/campaigns/smoke.yaml --json` on a fresh local cluster."""
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "aegis.cli",
            "campaign",
            str(CAMPAIGNS / "smoke.yaml"),
            "--json",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=400,
    )
    report = json.loads(proc.stdout) if proc.stdout.strip() else {}
    print(
        f"\nsmoke campaign: { {k: report.get(k) for k in ('runs', 'split_brain', 'lost_events', 'failover_p99_s', 'trace_validated', 'took_s')} }"
    )
    print(proc.stderr[-2000:])
    assert proc.returncode == 0, (report.get("expectations_broken"), proc.stderr[-3000:])
    for key in ("runs", "split_brain", "lost_events", "failover_p99_s", "trace_validated"):
        assert key in report, key
    assert report["runs"] + len(report["skipped"]) == load_campaign(CAMPAIGNS / "smoke.yaml").runs
    assert report["split_brain"] == 0 and report["lost_events"] == 0 and report["duplicate_commands"] == 0
    # TLC must not reject the trace; on a busy machine it may run out of its budget (the report says how far)
    trace = report["trace"]
    assert trace["result"] in ("validated", "incomplete"), trace
    assert report["trace_validated"] == (trace["result"] == "validated")
    assert (
        trace["events_total"] > trace["events_given_to_tlc"] > 0 and trace["faults_total"] == report["runs"]
    )
    assert 0 < trace["events_checked"] <= trace["events_total"]
    assert 0 <= trace["faults_covered"] <= trace["faults_total"]
    if trace["result"] == "incomplete":
        assert "s budget" in trace["reason"] and trace["events_checked"] < trace["events_total"]
    assert report["by_class"]["instance-kill"]["failovers"] == 2  # each kill of the active elected a new one
    # the active cut from its server cannot renew over the connection its subscriptions are on: replaced
    assert report["by_class"]["partition-instance"]["failovers"] == 1
    assert report["events_acked"] > 0 and report["commands_completed"] > 0
    assert (tmp_path / "smoke.html").read_text().startswith("<!DOCTYPE html>")


PAUSE_CONTROL = """\
name: pause-control
description: the split-brain checker's negative control (tests/test_campaign.py)
seed: 2
topology: {{nodes: 3, instances: 3, instance_module: {module}}}
workload: {{}}
settle_s: [0.3, 0.6]
recover_timeout_s: 20
trace: false
faults:
  - {{kind: instance-pause, target: active, duration_s: 2.0, count: 2}}
"""


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("module", "fenced"),
    [("aegis.harness.demo", True), ("tests.unfenced_instance", False)],
    ids=["fenced", "unfenced"],
)
def test_pause_campaign_reports_split_brain_only_without_fencing(
    tmp_path: Path, module: str, fenced: bool
) -> None:
    """The same campaign (SIGSTOP of the active past its lease, SIGCONT, twice) with the shipped instances and
    with a test-only election that never stops serving once active: the first run must keep its promise
    (split brain 0), the second must break it (split brain > 0, exit code 1). Without the second, a prober
    that sees nothing would pass the first."""
    path = tmp_path / "pause-control.yaml"
    path.write_text(PAUSE_CONTROL.format(module=module))
    assert load_campaign(path).topology.instance_module == module
    proc = subprocess.run(
        [sys.executable, "-m", "aegis.cli", "campaign", str(path), "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
        cwd=ROOT,
        timeout=240,
    )
    report = json.loads(proc.stdout) if proc.stdout.strip() else {}
    assert report, proc.stderr[-3000:]
    print(
        f"\npause campaign ({module}): split brain {report['split_brain']}, per fault"
        f" {[f['split_brain'] for f in report['faults']]}, failovers"
        f" {[f['failover_s'] for f in report['faults']]}, probes {report['probes_sent']} sent /"
        f" {report['probe_successes']} ok, took {report['took_s']} s"
    )
    assert report["runs"] == 2 and report["skipped"] == []
    # both runs really failed over (the old active was deposed) and the prober saw both epochs answer
    assert all(f["new_epoch"] is not None and f["new_epoch"] > f["old_epoch"] for f in report["faults"])
    assert report["probe_successes"] > 100
    if fenced:
        assert proc.returncode == 0, (report.get("expectations_broken"), proc.stderr[-3000:])
        assert report["split_brain"] == 0 and report["split_brain_examples"] == []
    else:
        assert proc.returncode == 1, proc.stderr[-3000:]
        # each paused active woke up and answered under its old epoch: charged to its own fault
        assert report["split_brain"] > 0 and all(f["split_brain"] > 0 for f in report["faults"])
        assert any(b.startswith("split brain") for b in report["expectations_broken"])
        # the offender is a deposed active answering under its old epoch after a newer epoch had answered
        victims = {(f["target"], f["old_epoch"]) for f in report["faults"]}
        for ex in report["split_brain_examples"]:
            old, new = ex["old"], ex["new"]
            assert (old["instance"], old["epoch"]) in victims
            assert new["epoch"] > old["epoch"] and old["sent"] > new["received"]
