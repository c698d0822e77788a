"""Trace validation: NDJSON election traces checked against the TLA+ spec with TLC."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aegis.cli import app
from harness.trace_check import check_trace
from sdk.trace_events import (
    Action,
    KeyKind,
    Op,
    TraceError,
    TraceParams,
    TraceWriter,
    parse_trace,
    read_trace,
)

TRACES = Path(__file__).resolve().parent.parent / "spec" / "traces"
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
    rows[20] = {**rows[20], "rev": 7}
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
    rows[6] = ev(1.102, "lose", rev=2, epoch=1)
    verdict = check_trace(_write(tmp_path / "lose.ndjson", rows))
    assert not verdict.accepted and verdict.first_bad_line == 7


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


def test_trace_writer_appends_events_that_read_back(tmp_path: Path) -> None:
    path = tmp_path / "t.ndjson"
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
