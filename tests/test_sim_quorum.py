"""The quorum lease simulated (aegis/sim/quorum_run.py): node crashes cost a spread placement (almost) nothing and a
colocated one a NATS re-election, broken machines are caught, runs replay exactly, the SDK's own machine is the
one driven, the floor check works, and ``aegis sim --election quorum``."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import typer

from aegis.sdk.kv_types import KeyState
from aegis.sdk.quorum_election import QUORUM_BUCKETS, Claim, QuorumElection
from aegis.sim.checks import ViolationFound
from aegis.sim.kv import Entry
from aegis.sim.quorum_run import (
    GAP_BUDGET_S,
    QUORUM_MIXES,
    QuorumCampaignConfig,
    QuorumChecker,
    QuorumRunConfig,
    QuorumRunResult,
    run_quorum,
    run_quorum_campaign,
)
from aegis.stats import percentile

ROOT = Path(__file__).resolve().parent.parent
AEGIS = [sys.executable, "-m", "aegis.cli"]
NODE = QuorumRunConfig(mix=QUORUM_MIXES["node"], duration_s=60.0)
SEEDS = range(1, 9)


class NewestSendDeadline(QuorumElection):
    """Broken: the serving deadline counts from the newest acknowledged send, not the second newest (one bucket
    renewed keeps it serving while the other two are someone else's)."""

    @property
    def deadline(self) -> float:
        sends = sorted((self.sent[b] for b in range(QUORUM_BUCKETS) if self.held[b]), reverse=True)
        return sends[0] + self.params.window_s if len(sends) >= 2 else -math.inf


class QuorumOfOne(QuorumElection):
    """Broken: one acknowledged bucket is a quorum (a candidate wins on its first acknowledgement)."""

    def holds_majority(self) -> bool:
        return self.held_count() >= 1

    @property
    def deadline(self) -> float:
        sends = [self.sent[b] for b in range(QUORUM_BUCKETS) if self.held[b]]
        return max(sends) + self.params.window_s if sends else -math.inf


def _node_gaps(cfg: QuorumRunConfig) -> tuple[list[float], list[QuorumRunResult]]:
    results = [run_quorum(replace(cfg, seed=s)) for s in SEEDS]
    return [g for r in results for g in r.gap_values(("node",))], results


def test_node_crashes_spread_keep_the_gap_under_budget_colocated_do_not() -> None:
    spread, runs = _node_gaps(NODE)
    assert all(r.violations == [] for r in runs)
    assert sum(r.node_crashes for r in runs) >= 10 and all(
        r.calls > 500 for r in runs
    )  # crashes, calls served
    assert len(spread) >= 10
    assert percentile(spread, 99) < GAP_BUDGET_S  # type: ignore[operator]
    colocated, runs = _node_gaps(replace(NODE, placement="colocated"))
    assert all(r.violations == [] for r in runs)
    assert len(colocated) >= 10
    # the crash of the node leading two buckets stops service for a re-election (4-9 s, less the window)
    assert sum(1 for g in colocated if g > GAP_BUDGET_S) >= 0.8 * len(colocated)
    assert min(colocated) > 2.5 or percentile(colocated, 50) > 3.0  # type: ignore[operator]


def _caught(cfg: QuorumRunConfig, seeds: range) -> str | None:
    for seed in seeds:
        r = run_quorum(replace(cfg, seed=seed))
        if r.violations:
            return r.violations[0].prop
    return None


def test_a_deadline_from_the_newest_send_is_caught_by_the_overlap_check() -> None:
    broken = replace(NODE, placement="colocated", late_land_p=0.0, machine_factory=NewestSendDeadline)
    assert _caught(broken, range(1, 11)) == "NoOverlap"
    assert _caught(replace(broken, machine_factory=QuorumElection), range(1, 4)) is None  # the SDK's is safe


def test_a_quorum_of_one_is_caught_by_the_overlap_check() -> None:
    broken = replace(NODE, mix=QUORUM_MIXES["node-mixed"], machine_factory=QuorumOfOne)
    # A run stops at its first violation: since candidates also claim buckets going free mid-campaign, that is
    # mostly BallotsStrictlyIncrease, in some seeds an overlap (12, 13, 21 of these)
    found = {v.prop for seed in range(1, 25) for v in run_quorum(replace(broken, seed=seed)).violations}
    assert found == {"NoOverlap", "BallotsStrictlyIncrease"}, found


def test_runs_replay_identically_and_say_which_election_ran() -> None:
    cfg = replace(NODE, seed=3, mix=QUORUM_MIXES["node-mixed"], duration_s=40.0)
    a, b = run_quorum(cfg).summary(), run_quorum(cfg).summary()
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    assert a["election"] == "quorum" and a["placement"] == "spread" and a["violations"] == []
    assert a["gaps"] and a["kv_revisions"] > 100


def test_the_simulator_drives_the_sdk_quorum_machine() -> None:
    built: list[QuorumElection] = []

    class Counting(QuorumElection):
        def write_ok(self, now: float, b: int, rev: int, req: int) -> list:  # type: ignore[override]
            built.append(self)
            return super().write_ok(now, b, rev, req)

    r = run_quorum(replace(NODE, seed=1, duration_s=10.0, machine_factory=Counting))
    assert r.violations == [] and len(built) > 50  # every acknowledgement went through the machine given
    default = run_quorum(replace(NODE, seed=1, duration_s=10.0))
    assert default.serving_at_end and default.violations == []


def test_instance_crashes_fail_over_in_about_a_lease() -> None:
    gaps: list[float] = []
    for seed in range(1, 4):
        r = run_quorum(replace(NODE, seed=seed, mix=QUORUM_MIXES["crash"], duration_s=40.0))
        assert r.violations == []
        gaps += r.crash_gaps(client=False)
    assert len(gaps) >= 6
    p = NODE.params
    assert (p.lease_s - p.renew_s) / (1 + p.drift) - 0.01 < min(gaps) and max(gaps) < p.lease_s / (
        1 - p.drift
    ) + 0.2


def test_the_floor_check_flags_a_floor_that_goes_down() -> None:
    checker = QuorumChecker()
    checker.stored(0, Entry(KeyState(1, "val"), "a", 5, 0.0, Claim("a", 5, 5)), 0.0)
    checker.stored(
        1, Entry(KeyState(1, "val"), "a", 3, 0.0, Claim("a", 3, 3)), 0.0
    )  # another bucket: its own
    try:
        checker.stored(0, Entry(KeyState(2, "val"), "b", 4, 0.1, Claim("b", 4, 4)), 0.1)
    except ViolationFound as found:
        assert found.violation.prop == "FloorNeverDecreases"
    else:  # pragma: no cover - the check failed
        raise AssertionError("a floor going down in bucket 0 was not flagged")


def test_small_campaign_reports_gaps_per_fault_with_sample_counts() -> None:
    report = run_quorum_campaign(QuorumCampaignConfig(runs=7, colocated_runs=1, duration_s=20.0))
    assert report["election"] == "quorum" and report["violations"] == 0
    assert report["node_crash_gap_samples"] >= 1 and report["colocated"]["node_crash_gap"]["n"] >= 1
    assert set(report["gaps_by_fault"]) >= {"crash", "node"}
    assert all("n" in g["gap"] and "p99_s" in g["gap"] for g in report["gaps_by_fault"].values())


def test_cli_quorum_replay_and_campaign_json(tmp_path: Path) -> None:
    one = subprocess.run(
        [*AEGIS, "sim", "--election", "quorum", "--seed", "2", "--mix", "node", "--duration", "20", "--json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert one.returncode == 0, one.stderr
    summary = json.loads(one.stdout)
    assert summary["election"] == "quorum" and "--election quorum --seed 2" in summary["replay"]
    camp = subprocess.run(
        [*AEGIS, "sim", "--election", "quorum", "--runs", "3", "--colocated-runs", "1", "--duration", "10"]
        + ["--json", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert camp.returncode == 0, camp.stderr
    report = json.loads(camp.stdout)
    assert report["election"] == "quorum" and report["runs"] == 3
    assert json.loads((tmp_path / "sim-quorum.json").read_text())["runs"] == 3


def test_cli_keeps_node_crash_mixes_to_the_quorum_election(capsys: pytest.CaptureFixture[str]) -> None:
    from aegis.sim_cmd import sim_command

    with pytest.raises(typer.Exit) as stopped:
        sim_command(seed=1, mix="node")
    assert stopped.value.exit_code == 2
    with pytest.raises(typer.Exit) as stopped:
        sim_command(seed=1, election="quorum", control="no-fencing")
    assert stopped.value.exit_code == 2
