"""One percentile definition (nearest rank, :mod:`aegis.stats`) for the simulator and the harness, and the rule
that every printed percentile carries its sample count, with the max instead of a p99 below 20 samples."""

from __future__ import annotations

import pytest

import aegis.harness.campaign.checkers
import aegis.harness.campaign.failover
import aegis.harness.campaign.report
import aegis.harness.campaign.runner
import aegis.sim.campaign
import aegis.sim.run
from aegis.sim.faults import MIXES
from aegis.sim.run import RunConfig, run
from aegis.stats import MIN_P99_SAMPLES, p99_text, percentile, recorded, spread_text, summary


def test_percentile_is_nearest_rank_not_interpolated() -> None:
    assert percentile([4, 1, 3, 2], 50) == 2  # interpolation would give 2.5
    assert percentile(range(1, 101), 99) == 99  # interpolation would give 99.01
    assert percentile(range(1, 101), 50) == 50
    assert percentile([0.1 * i for i in range(1, 11)], 90) == pytest.approx(0.9)
    assert percentile([5, 1, 9], 0) == 1 and percentile([5, 1, 9], 100) == 9
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) is None
    with pytest.raises(ValueError):
        percentile([1, 2], 101)


def test_below_20_samples_there_is_no_p99_only_the_max() -> None:
    assert MIN_P99_SAMPLES == 20
    few = summary([0.5] * 18 + [8.4])  # 19 samples
    assert few == {"samples": 19, "p50": 0.5, "p99": None, "max": 8.4}
    enough = summary([float(i) for i in range(1, 101)])
    assert enough == {"samples": 100, "p50": 50.0, "p99": 99.0, "max": 100.0}
    assert summary([]) == {"samples": 0, "p50": None, "p99": None, "max": None}
    assert summary([1.0] * 20)["p99"] == 1.0
    # figures recorded elsewhere (a report's keys) get the same rule
    assert recorded(10, 0.4, 0.9, 0.9)["p99"] is None and recorded(20, 0.4, 0.9, 0.95)["p99"] == 0.9


def test_printed_percentiles_carry_their_sample_count() -> None:
    assert p99_text([0.5] * 9 + [8.4166]) == "max 8.42 s (10 samples)"
    assert p99_text([0.3]) == "max 300 ms (1 sample)"
    assert p99_text([i / 1000 for i in range(1, 101)]) == "p99 99 ms (100 samples)"
    assert p99_text([]) == "-"
    assert spread_text([0.5] * 9 + [8.4166]) == "p50 500 ms, max 8.42 s (10 samples)"
    assert spread_text([i / 1000 for i in range(1, 101)]) == "p50 50 ms, p99 99 ms, max 100 ms (100 samples)"
    assert spread_text([]) == "-"


def test_the_simulator_and_the_harness_share_the_one_definition() -> None:
    from aegis import stats

    assert aegis.sim.campaign.percentile is stats.percentile
    assert aegis.harness.campaign.runner.percentile is stats.percentile
    assert aegis.harness.campaign.report.percentile is stats.percentile
    assert aegis.harness.campaign.failover.percentile is stats.percentile
    assert not hasattr(aegis.harness.campaign.checkers, "percentile")  # no second definition left behind
    assert aegis.sim.run.percentile is stats.percentile


def test_a_simulated_run_s_median_is_the_nearest_rank_one() -> None:
    result = run(RunConfig(seed=3, mix=MIXES["crash"], duration_s=60.0))
    gaps = result.crash_gaps()
    out = result.summary()
    assert out["crash_failover_samples"] == len(gaps) > 1
    assert out["crash_failover_median_s"] == round(percentile(gaps, 50), 6)  # type: ignore[arg-type]
    assert out["crash_failover_median_s"] in [round(g, 6) for g in gaps]  # a measured value


def test_sim_report_prints_sample_counts_and_no_p99_of_a_handful() -> None:
    from aegis.sim.report import _dist_text, _spread

    few = {"failover_p50_s": 0.78, "failover_p99_s": 0.9, "failover_max_s": 0.95, "failover_samples": 10}
    assert _spread(few, "failover") == "p50 780 ms, max 950 ms (10 samples)"
    many = {**few, "failover_samples": 466}
    assert _spread(many, "failover") == "p50 780 ms, p99 900 ms, max 950 ms (466 samples)"
    # a report recorded before *_samples: counted from the samples it came from
    old = {"predicted_failover_real_clocks_p50_s": 0.5, "predicted_failover_real_clocks_p99_s": 0.7}
    assert (
        _spread(old, "predicted_failover_real_clocks", [0.4, 0.5, 0.7])
        == "p50 500 ms, max 700 ms (3 samples)"
    )
    assert "not recorded" in _spread({"x_p50_s": 0.5, "x_p99_s": 0.7}, "x")
    assert (
        _dist_text({"n": 3, "p50_s": 0.5, "p99_s": 0.7, "max_s": 0.7}) == "p50 500 ms, max 700 ms (3 samples)"
    )


def test_failover_report_prints_sample_counts() -> None:
    kills = [0.7 + i / 100 for i in range(10)]
    report = {
        "kills": 10,
        "failover_p50_s": percentile(kills, 50),
        "failover_p99_s": percentile(kills, 99),
        "failover_max_s": max(kills),
        "failover_samples": 10,
        "failover_gaps_s": kills,
        "graceful_stops": 0,
        "graceful_p50_s": None,
        "graceful_p99_s": None,
        "graceful_max_s": None,
        "graceful_gaps_s": [],
        "split_brain": 0,
        "epoch_regressions": 0,
        "calls": 100,
        "failed_calls": 0,
        "probe_successes": 50,
        "missed_failovers": 0,
        "faults": [],
        "params": {
            "lease_s": 0.9,
            "renew_s": 0.25,
            "drift": 0.05,
            "write_timeout_s": 0.25,
            "window_s": 0.81,
            "ttl_s": 10,
            "attempt_timeout_s": 1.0,
            "call_timeout_s": 2.0,
            "probe_interval_s": 0.02,
            "probe_timeout_s": 0.2,
        },
        "seed": 1,
        "took_s": 1.0,
    }
    md = aegis.harness.campaign.failover.markdown(report)
    assert "| failover (kill -9) | p50 740 ms, max 790 ms (10 samples) |" in md
    assert "| failover (graceful) | - |" in md
    del report["failover_samples"]  # a report recorded before the key: counted from failover_gaps_s
    assert "max 790 ms (10 samples)" in aegis.harness.campaign.failover.markdown(report)
