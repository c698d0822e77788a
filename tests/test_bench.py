"""``aegis bench``'s arithmetic without a cluster: ratios are medians of per-round ratios, with their spread."""

from __future__ import annotations

import math

import pytest

from aegis.harness.bench.runner import RATIO_SOURCES, pooled_ratios, ratio_rows, ratio_spreads, ratios, spread


def _side(p50: float, p99: float, per_s: float) -> dict[str, float]:
    return {"p50_ms": p50, "p99_ms": p99, "per_s": per_s}


def _results(raw_p99: list[float], sdk_p99: list[float]) -> dict:
    """Results with the given per-round c1 p99s; every other figure equal on both sides."""
    rounds = [
        {"raw": _side(0.2, r, 1000), "sdk": _side(0.2, s, 1000), "discovery": _side(0.2, s, 1000)}
        for r, s in zip(raw_p99, sdk_p99, strict=True)
    ]
    flat = [{"raw": _side(0.2, 1, 1000), "sdk": _side(0.2, 1, 1000), "discovery": _side(0.2, 1, 1000)}] * len(
        rounds
    )
    merged = {"raw": _side(0.2, max(raw_p99), 1000), "sdk": _side(0.2, max(sdk_p99), 1000)}
    merged["discovery"] = merged["sdk"]
    same = {"raw": _side(0.2, 1, 1000), "sdk": _side(0.2, 1, 1000), "discovery": _side(0.2, 1, 1000)}
    return {
        "rpc_c1": {**merged, "rounds": rounds},
        "rpc_c64": {**same, "rounds": flat},
        "event_c1": {**same, "rounds": flat},
        "event_c64": {**same, "rounds": flat},
    }


def test_one_noisy_round_moves_the_pooled_ratio_not_the_median() -> None:
    # Five rounds at 1.05; one round where the SDK side caught a 5 ms stall.
    res = _results([0.5] * 6, [0.525] * 5 + [5.0])
    assert ratios(res)["rpc_p99_ratio"] == 1.05
    assert pooled_ratios(res)["rpc_p99_ratio"] == 10.0  # the merged histograms' p99 (max here) would fail it
    s = ratio_spreads(res)["rpc_p99_ratio"]
    assert s["rounds"] == 6 and s["min"] == 1.05 and s["max"] == 10.0 and s["median"] == 1.05


def test_median_of_an_even_number_of_rounds_and_the_quartiles() -> None:
    s = spread([1.0, 2.0, 3.0, 4.0])
    assert s == {"rounds": 4, "min": 1.0, "q1": 1.75, "median": 2.5, "q3": 3.25, "max": 4.0}
    res = _results([1.0] * 4, [1.0, 2.0, 3.0, 4.0])
    assert ratios(res)["rpc_p99_ratio"] == 2.5


def test_every_ratio_has_a_source_and_a_spread() -> None:
    res = _results([0.5] * 5, [0.55] * 5)
    r = ratios(res)
    assert set(r) == set(RATIO_SOURCES)
    assert all(math.isfinite(v) for v in r.values())
    assert set(ratio_spreads(res)) == set(RATIO_SOURCES)


def test_a_report_without_rounds_keeps_the_merged_ratio() -> None:
    res = _results([0.5] * 5, [0.6] * 5)
    for v in res.values():
        v.pop("rounds")
    assert ratios(res)["rpc_p99_ratio"] == 1.2 and ratio_spreads(res) == {}


def test_ratio_table_shows_the_spread() -> None:
    res = _results([0.5] * 5, [0.55] * 4 + [0.7])
    report = {**ratios(res), "ratio_spread": ratio_spreads(res)}
    row = next(r for r in ratio_rows(report) if r.startswith("| rpc_p99_ratio "))
    assert row == "| rpc_p99_ratio | 1.100 | 1.100 - 1.400 | 1.100 - 1.100 | <= 1.10 | yes |"


def test_regression_check_fails_above_ten_percent_over_the_baseline() -> None:
    from aegis.harness.bench.runner import regression_check

    baseline = {"rpc_p99_ratio": 1.0, "recorded_at": "2026-12-07T10:00:00Z"}
    ok = regression_check({"rpc_p99_ratio": 1.1}, baseline)
    assert ok["ok"] and ok["limit"] == 1.1
    bad = regression_check(
        {"rpc_p99_ratio": 1.101, "ratio_spread": {"rpc_p99_ratio": {"min": 1.0, "max": 1.3}}}, baseline
    )
    assert not bad["ok"] and (bad["measured_min"], bad["measured_max"]) == (1.0, 1.3)
    assert regression_check({"rpc_p99_ratio": 0.7}, baseline)["ok"]  # faster is never a regression
    assert not regression_check({"rpc_p99_ratio": 1.04}, baseline, tolerance=0.03)["ok"]


def test_a_check_run_measures_and_reports_only_the_c1_rpc_ratios() -> None:
    """BenchPlan.check measures raw and SDK at concurrency 1 only: its report has those ratios and no other."""
    from aegis.harness.bench.runner import BenchPlan, regression_check

    plan = BenchPlan.check()
    assert (
        plan.rpc_c1_only
        and plan.seq_ops == BenchPlan.full().seq_ops
        and plan.rounds > BenchPlan.full().rounds
    )
    full = _results([0.5] * 5, [0.55] * 5)
    res = {"rpc_c1": {k: v for k, v in full["rpc_c1"].items() if k != "discovery"}}
    res["rpc_c1"]["rounds"] = [
        {k: v for k, v in r.items() if k != "discovery"} for r in res["rpc_c1"]["rounds"]
    ]
    r = ratios(res)
    assert set(r) == {"rpc_p99_ratio", "rpc_p50_ratio"} and r["rpc_p99_ratio"] == 1.1
    assert set(ratio_spreads(res)) == set(r) == set(pooled_ratios(res))
    assert regression_check(r, {"rpc_p99_ratio": 1.0})["ok"]


def _check_report(ratio: float) -> dict:
    return {
        "rpc_p99_ratio": ratio,
        "ratio_spread": {"rpc_p99_ratio": spread([ratio, ratio])},
        "load_avg": {"before": [0.5, 0.5, 0.5], "after": [0.5, 0.5, 0.5]},
        "took_s": 1.0,
        "recorded_at": "2026-12-07T23:00:00Z",
        "plan": {"rounds": 24, "seq_ops": 3000},
    }


@pytest.mark.parametrize(
    ("measured", "confirm", "exit_code", "runs"),
    [
        ([1.0], True, 0, 1),  # under the limit: one measurement
        ([1.2, 1.0], True, 0, 2),  # over, then under: a false alarm, not a regression
        ([1.2, 1.2], True, 1, 2),  # over twice: a regression
        ([1.2], False, 1, 1),  # --no-confirm: the first measurement decides
    ],
)
def test_bench_check_confirms_a_run_over_the_limit_before_failing(
    measured: list[float], confirm: bool, exit_code: int, runs: int, tmp_path, monkeypatch
) -> None:
    """The gate's decision (run_bench scripted: a noisy round cannot be caused on demand)."""
    import json

    import typer

    import aegis.harness.bench.runner as runner
    from aegis.bench_cmd import check_command

    baseline = tmp_path / "baseline.json"
    baseline.write_text(json.dumps({"rpc_p99_ratio": 1.0, "recorded_at": "2026-12-07T22:00:00Z"}))
    script = iter(measured)
    calls: list[object] = []

    def fake_run_bench(quick: bool, progress=None, urls=None, plan=None, command=None) -> dict:
        calls.append(plan)
        return _check_report(next(script))

    monkeypatch.setattr(runner, "run_bench", fake_run_bench)
    monkeypatch.setattr(runner, "wait_for_quiet", lambda: 0.0)
    code = 0
    try:
        check_command(baseline, 0.10, False, out=tmp_path, confirm=confirm)
    except typer.Exit as exc:
        code = exc.exit_code
    assert code == exit_code and len(calls) == runs
    assert all(p == runner.BenchPlan.check() for p in calls)
    written = json.loads((tmp_path / "bench-check.json").read_text())
    assert written["runs"][0]["ok"] is (exit_code == 0)
    assert (written["runs"][0]["confirmation"] is not None) is (runs == 2)
