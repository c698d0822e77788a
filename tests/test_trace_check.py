"""Trace validation: NDJSON election traces checked against the TLA+ spec with TLC."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aegis.cli import app
from aegis.sdk.trace_events import (
    Action,
    KeyKind,
    Op,
    TraceError,
    TraceParams,
    TraceWriter,
    clock_pair,
    parse_trace,
    read_trace,
)
from aegis.spec.trace_check import check, check_trace, compact, cut_windows, outage_windows, up_lines

TRACES = Path(__file__).resolve().parent.parent / "aegis" / "spec" / "traces"
VALID = TRACES / "valid_failover.ndjson"
TAMPERED = TRACES / "tampered_overlap.ndjson"


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _shift(row: dict, seconds: float) -> dict:
    return {**row, "local": row["local"] + seconds, "wall": row["wall"] + seconds}


def test_valid_failover_trace_is_accepted() -> None:
    verdict = check_trace(VALID)
    assert verdict.accepted
    assert verdict.first_bad_line is None
    assert verdict.explained == verdict.events == 22


def test_tampered_trace_with_overlapping_serves_is_rejected_at_the_overlap() -> None:
    verdict = check_trace(TAMPERED)
    assert not verdict.accepted
    assert verdict.first_bad_line == 18  # the old active's serve after the new active served
    assert verdict.first_bad_event is not None
    assert (verdict.first_bad_event.instance, verdict.first_bad_event.action) == ("a", Action.SERVE)
    assert verdict.explained == 16


def test_takeover_before_the_lease_ran_out_is_rejected(tmp_path: Path) -> None:
    rows = _lines(VALID)
    # line 16: b's campaign, and line 17: its success, 0.11 s earlier: b saw rev 3 at 1.003 s, so its
    # own clock says only 1.397 s of silence, less than the 1.5 s lease.
    rows[15], rows[16] = _shift(rows[15], -0.11), _shift(rows[16], -0.11)
    verdict = check_trace(_write(tmp_path / "early.ndjson", rows))
    assert not verdict.accepted
    assert verdict.first_bad_line == 16


def test_renewal_with_a_revision_the_kv_never_wrote_is_rejected(tmp_path: Path) -> None:
    rows = _lines(VALID)
    assert rows[20]["action"] == "renew"
    # rev 4 is the revision the renewal was based on: the KV never writes a revision twice. (A larger
    # one than the next could be, with writes to other keys of the bucket in between.)
    rows[20] = {**rows[20], "rev": 4}
    verdict = check_trace(_write(tmp_path / "bad_rev.ndjson", rows))
    assert not verdict.accepted
    assert verdict.first_bad_line == 21


def test_renewal_lost_in_an_outage_and_adopted_is_accepted(tmp_path: Path) -> None:
    # a's renewal lands (rev 2) but its answer is lost while the stream has no leader; the retry on
    # rev 1 fails on a value carrying a's own epoch, so a adopts rev 2 and renews on it.
    def ev(t: float, action: str, **kw: object) -> dict:
        return {"instance": "a", "action": action, **kw, "local": 50.0 + t, "wall": 1.7e9 + t}

    rows = [
        ev(0.000, "start", rev=0, kind="absent"),
        ev(0.001, "request", op="acquire", rev=0),
        ev(0.002, "acquire", rev=1, epoch=1),
        {"instance": "b", "action": "start", "rev": 1, "kind": "value", "local": 9.0, "wall": 1.7e9 + 0.003},
        ev(0.500, "request", op="renew", rev=1, epoch=1),
        ev(1.000, "timeout", op="renew", rev=1, epoch=1),
        ev(1.100, "request", op="renew", rev=1, epoch=1),
        ev(1.102, "adopt", rev=2, epoch=1),
        ev(1.200, "request", op="renew", rev=2, epoch=1),
        ev(1.202, "renew", rev=3, epoch=1),
        ev(1.300, "serve", epoch=1),
    ]
    assert check_trace(_write(tmp_path / "adopt.ndjson", rows)).accepted
    # Had a lost instead (no value of its own in the key), the same failure could not be explained.
    rows[7] = ev(1.102, "lose", rev=2, epoch=1)
    verdict = check_trace(_write(tmp_path / "lose.ndjson", rows))
    assert not verdict.accepted and verdict.first_bad_line == 8


def test_a_real_campaign_start_is_validated_with_its_serve_runs_checked_by_their_ends() -> None:
    """The start of a real smoke campaign (3 SDK processes; mostly `serve` lines): validated, with most serve lines
    implied by the ends of their runs rather than given to TLC."""
    verdict = check_trace(TRACES / "smoke_start.ndjson", timeout=120)
    assert verdict.result == "validated", verdict.summary()
    assert verdict.explained == verdict.events == 233 and verdict.instances == 3
    assert verdict.checked < verdict.events // 2


def test_an_empty_or_one_sided_trace_is_rejected_not_accepted(tmp_path: Path) -> None:
    empty = check(parse_trace(['{"params": {"lease": 0.9}}']))
    assert empty.result == "rejected" and not empty.accepted and "empty" in empty.reason
    # only the first active's lines: nothing to check the exclusion against
    mine = [r for r in _lines(VALID) if r.get("instance") == _lines(VALID)[1]["instance"] or "params" in r]
    alone = check_trace(_write(tmp_path / "alone.ndjson", mine))
    assert alone.result == "rejected" and "one-sided" in alone.reason and alone.checked == 0


def test_a_check_that_runs_out_of_time_is_incomplete_never_validated() -> None:
    verdict = check_trace(VALID, timeout=0.5)  # the JVM alone needs longer
    assert verdict.result == "incomplete" and not verdict.accepted
    assert (
        verdict.first_bad_line is None and verdict.explained < verdict.events and "budget" in verdict.reason
    )


def test_compaction_keeps_the_ends_of_each_serve_run_and_every_other_event() -> None:
    def row(i: str, action: str, t: float, **kw: object) -> str:
        return json.dumps({"instance": i, "action": action, "local": t, "wall": 1.7e9 + t, **kw})

    rows = [row("a", "start", 0, rev=0, kind="absent"), row("a", "acquire", 0.01, rev=1, epoch=1)]
    rows += [row("a", "serve", 0.1 + k / 10, epoch=1) for k in range(5)]  # lines 3-7
    rows += [row("b", "start", 0.65, rev=1, kind="value"), row("a", "serve", 0.7, epoch=1)]  # 8, 9
    rows += [row("a", "renew", 0.8, rev=2, epoch=1), row("a", "serve", 0.9, epoch=1)]  # 10, 11
    small = compact(parse_trace(rows))
    # the run 3-9 (b's start does not end a's run) keeps its ends; renew starts a new run
    assert small.lines == (1, 2, 3, 8, 9, 10, 11)


def test_outage_and_cut_windows_span_each_timed_out_request() -> None:
    def row(i: str, action: str, t: float, **kw: object) -> str:
        return json.dumps({"instance": i, "action": action, "local": t, "wall": 1024.0 + t, **kw})

    trace = parse_trace(
        [
            row("a", "start", 0, rev=0, kind="absent"),
            row("a", "request", 1.0, op="acquire", rev=0),
            row("a", "timeout", 1.5, op="acquire", rev=0),
            row("b", "start", 1.2, rev=0, kind="absent"),
            row("b", "timeout", 1.6),  # a probe: its send is not logged, the window starts at b's start
            row("a", "request", 3.0, op="acquire", rev=0),
            row("a", "timeout", 3.2, op="acquire", rev=0),
        ]
    )
    # a and b are both in a timeout span from 1.2 s to 1.5 s: the KV itself may go down there; elsewhere (a
    # alone from 1.0 s, b alone to 1.6 s, a alone at 3 s) only a cut of that instance may (TraceLease)
    assert outage_windows(trace) == [(1200, 1500)]
    assert cut_windows(trace) == [("a", 1000, 1500), ("a", 3000, 3200), ("b", 1200, 1600)]
    # the KV comes back (an instance is healed) only right before a line that shows it answering: the starts,
    # and the campaigns (the read before a campaign was answered)
    assert up_lines(trace) == [1, 2, 4, 6]


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ('{"params": {"lease": 1.5}}\n{"instance": "a", "action": "start"\n', 2, "not JSON"),
        ('{"instance": "a", "action": "crash", "local": 1.0}\n', 1, "wall"),
        ('\n{"instance": "a", "action": "elect", "local": 1, "wall": 2}\n', 2, "action"),
        ('{"instance": "a", "action": "crash", "local": 1, "wall": 2}\n{"params": {}}\n', 2, "first line"),
        ('{"instance": "a", "action": "request", "local": 1, "wall": 2}\n', 1, "op is required"),
        ('{"instance": "a", "action": "observe", "rev": 3, "local": 1, "wall": 2}\n', 1, "kind is required"),
        ("[1, 2]\n", 1, "not a JSON object"),
    ],
)
def test_bad_ndjson_names_the_line(text: str, line: int, words: str) -> None:
    with pytest.raises(TraceError) as info:
        parse_trace(text.splitlines(keepends=True))
    assert info.value.line == line
    assert f"line {line}" in str(info.value)
    assert words in str(info.value)


def test_trace_check_cli_prints_the_bad_line(tmp_path: Path) -> None:
    runner = CliRunner()
    bad = tmp_path / "bad.ndjson"
    bad.write_text('{"params": {"lease": 1.5}}\n{"instance": "a", "action": "start", "wall": 1}\n')
    result = runner.invoke(app, ["trace-check", str(bad)])
    assert result.exit_code == 2
    assert "line 2" in result.output


def test_trace_check_cli_json_on_the_tampered_trace() -> None:
    result = CliRunner().invoke(app, ["trace-check", "--json", str(TAMPERED)])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["accepted"] is False and report["first_bad_line"] == 18


@pytest.mark.parametrize("name", ["t.ndjson", "t.ndjson.gz"])
def test_trace_writer_appends_events_that_read_back(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    with TraceWriter(path, params=TraceParams(lease=2.0)) as trace:
        trace.emit("a", Action.START, rev=0, kind=KeyKind.ABSENT, local=10.0, wall=100.0)
        trace.emit("a", Action.REQUEST, op=Op.ACQUIRE, local=10.1, wall=100.1)
        trace.emit("a", Action.ACQUIRE, rev=1, epoch=1)
    with TraceWriter(path, params=TraceParams(lease=9.0)) as trace:  # appending: no second header
        trace.emit("a", Action.SERVE, epoch=1)
    parsed = read_trace(path)
    assert parsed.params.lease == 2.0
    assert [e.action for e in parsed.events] == [Action.START, Action.REQUEST, Action.ACQUIRE, Action.SERVE]
    assert parsed.lines == (2, 3, 4, 5)
    assert parsed.events[2].local > 0 and parsed.events[2].wall > 1e9  # stamped with the real clocks
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == name.endswith(".gz")  # gzip's magic number


def test_a_line_s_two_clocks_are_read_together_even_when_the_first_try_is_preempted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A preemption between the monotonic and the wall clock's reading (a busy machine; simulated here: it
    cannot be caused on demand) made one line of a 32,000-line campaign trace look like a clock 1.2 ms off,
    and the trace check rejected it. :func:`clock_pair` reads again until its readings are close."""
    import aegis.sdk.trace_events as te

    mono = iter([100.0, 100.0012, 100.01, 100.01001])  # first try: 1.2 ms between the monotonic readings
    walls = iter([5000.0012, 5000.01])
    monkeypatch.setattr(te.time, "monotonic", lambda: next(mono))
    monkeypatch.setattr(te.time, "time", lambda: next(walls))
    local, wall = clock_pair()
    assert wall == 5000.01 and abs(local - 100.010005) < 1e-9
    monkeypatch.undo()
    local, wall = clock_pair()  # the real clocks
    assert abs((time.time() - wall) - (time.monotonic() - local)) < 0.001


PROBE = TRACES / "valid_outage_probe.ndjson"


def test_campaign_landing_late_after_an_outage_is_accepted() -> None:
    # b probes, campaigns, and the stream loses its leader: the campaign times out (probe mode) but lands
    # when the stream is back, deposing a (paused meanwhile, its window over). Revisions skip the
    # sequence numbers of the probes' scratch writes.
    verdict = check_trace(PROBE)
    assert verdict.accepted
    assert verdict.explained == verdict.events == 18


def test_campaign_right_after_a_timed_out_campaign_is_rejected(tmp_path: Path) -> None:
    rows = _lines(PROBE)
    assert (rows[12]["instance"], rows[12]["action"], rows[12]["rev"]) == ("b", "observe", 5)
    # Instead of waiting (probe mode: the next successful probe restarts the lease timer), b campaigns
    # again on rev 3 right after its campaign timed out.
    rows[12] = {**rows[11], "action": "request", "op": "acquire", "rev": 3, "local": rows[11]["local"] + 0.09}
    rows[12]["wall"] = rows[11]["wall"] + 0.09
    verdict = check_trace(_write(tmp_path / "eager.ndjson", rows[:13]))
    assert not verdict.accepted
    assert verdict.first_bad_line == 13


def test_a_probe_that_saw_the_key_move_restarts_the_timer(tmp_path: Path) -> None:
    def ev(who: str, t: float, action: str, **kw: object) -> dict:
        return {"instance": who, "action": action, **kw, "local": 10.0 + t, "wall": 1.7e9 + t}

    rows = [
        ev("a", 0.000, "start", rev=0, kind="absent"),
        ev("a", 0.001, "request", op="acquire", rev=0),
        ev("a", 0.002, "acquire", rev=1, epoch=1),
        ev("b", 0.100, "start", rev=1, kind="value"),
        ev("a", 0.500, "request", op="renew", rev=1, epoch=1),
        ev("a", 0.502, "renew", rev=2, epoch=1),
        ev("a", 0.600, "crash", epoch=1),
        # b's watch is slow: its probe, a lease after it started, reads rev 2 first
        ev("b", 1.601, "observe", rev=2, kind="value"),
        ev("b", 1.602, "observe", rev=2, kind="value"),  # the watch delivery: not newer, ignored
        ev("b", 2.502, "observe", rev=3, kind="expired"),
        ev("b", 2.510, "request", op="acquire", rev=3),
        ev("b", 2.512, "acquire", rev=4, epoch=4),
    ]
    assert check_trace(_write(tmp_path / "moved.ndjson", rows)).accepted
    # Campaigning on rev 2 before the lease since the probe's read ran out is not a behaviour.
    early = [*rows[:9], ev("b", 2.200, "request", op="acquire", rev=2)]
    verdict = check_trace(_write(tmp_path / "early_moved.ndjson", early))
    assert not verdict.accepted and verdict.first_bad_line == 10


def test_revisions_are_compressed_keeping_order_and_small_gaps() -> None:
    """A trace from a busy bucket (revisions 70, 72, 76, 900): same order, gaps capped, epochs mapped alike."""
    from aegis.sdk.trace_events import Action, KeyKind, Trace, TraceEvent, TraceParams
    from aegis.spec.trace_check import compress_revisions

    events = (
        TraceEvent(instance="a", action=Action.START, rev=0, kind=KeyKind.ABSENT, local=0, wall=1),
        TraceEvent(instance="a", action=Action.ACQUIRE, rev=70, epoch=70, local=0.1, wall=1.1),
        TraceEvent(instance="a", action=Action.RENEW, rev=72, epoch=70, local=0.2, wall=1.2),
        TraceEvent(instance="a", action=Action.RENEW, rev=76, epoch=70, local=0.3, wall=1.3),
        TraceEvent(instance="a", action=Action.RENEW, rev=900, epoch=70, local=0.4, wall=1.4),
    )
    revs = compress_revisions(Trace(TraceParams(), events, (1, 2, 3, 4, 5)), gap_cap=4)
    assert revs == {0: 0, 70: 4, 72: 6, 76: 10, 900: 14}
