"""Trace validation: is an NDJSON election trace a behaviour of the TLA+ spec? (as etcd-io/raft and CCF do)

The trace (:mod:`sdk.trace_events`) becomes a TLA+ module ``TraceData`` (TLC 2.15 reads no JSON), next to
copies of ``Lease.tla`` and ``TraceLease.tla`` in a temporary directory, with a config that sets the
spec's constants from the trace's settings. TLC then explores every behaviour of the spec that matches
the trace event by event (silent KV steps and silent probes in between are free: the SDK logs a probe
only through its campaign's ``request`` line, or an ``observe`` line when its read saw the key move) and
the verdict is either "accepted" or the first line no behaviour explains.

Times: one tick is 1 ms of wall time, one local unit is 1 microsecond of an instance's monotonic clock
(Rate = 1000 units per tick, so the drift bound is in thousandths). Each instance's clock is aligned to
wall time at its first event. Rounding to these units is forgiven by ``TOLERANCE_US`` on the lease
timer and on the serving window, and by one tick in the drift check.

Example::

    verdict = check_trace(Path("spec/traces/valid_failover.ndjson"))
    print(verdict.accepted, verdict.first_bad_line)
"""

from __future__ import annotations

import json
import math
import re
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from harness.spec_run import SPEC_DIR
from harness.tlc import run_tlc
from sdk.trace_events import Action, KeyKind, Op, Trace, TraceEvent, read_trace

TICK_S = 0.001  # one tick of real time
RATE = 1000  # local units per tick: one unit is a microsecond
UNIT_S = TICK_S / RATE
TOLERANCE_US = 2  # rounding forgiven on the lease timer and the serving window
REVISION_GAP_CAP = 4  # see compress_revisions

_KIND = {KeyKind.VALUE: "val", KeyKind.DELETED: "del", KeyKind.EXPIRED: "exp", KeyKind.ABSENT: "none"}


class TraceCheckError(RuntimeError):
    """TLC could not judge the trace (a spec or tool problem, not a bad trace)."""


@dataclass(frozen=True)
class TraceVerdict:
    """The outcome of checking one trace."""

    accepted: bool
    events: int
    explained: int  # events explained in order before the first unexplained one
    first_bad_line: int | None  # 1-based line in the NDJSON file
    first_bad_event: TraceEvent | None
    distinct: int
    seconds: float

    def summary(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "accepted": self.accepted,
            "events": self.events,
            "explained": self.explained,
            "first_bad_line": self.first_bad_line,
            "first_bad_event": None
            if self.first_bad_event is None
            else self.first_bad_event.model_dump(mode="json"),
            "distinct_states": self.distinct,
            "seconds": self.seconds,
        }


def _tla_string(text: str) -> str:
    return json.dumps(text)  # a JSON string literal is a valid TLA+ string for ids like "api-1"


def compress_revisions(trace: Trace, gap_cap: int = REVISION_GAP_CAP) -> dict[int, int]:
    """Map each revision the trace names to a smaller one, keeping their order and at most ``gap_cap`` between
    neighbours. Revisions are stream sequence numbers, shared with every other key of the bucket (other
    groups, probe scratch keys): a trace taken on a busy bucket starts at revision 70 or jumps by hundreds,
    and TLC would have to count those other writes one by one. The spec only compares revisions; a gap of
    ``gap_cap`` still leaves room for ``gap_cap - 1`` unlogged writes of the key itself (an unobserved expiry
    marker, a late write) between two named revisions."""
    named = sorted({r for e in trace.events for r in (e.rev, e.epoch) if r > 0})
    out: dict[int, int] = {0: 0}
    last_real = last_new = 0
    for r in named:
        last_new += min(r - last_real, gap_cap)
        last_real = r
        out[r] = last_new
    return out


def trace_module(trace: Trace) -> str:
    """The TLA+ module ``TraceData`` holding ``trace`` as a sequence of records, times in ticks/units."""
    t0 = min(e.wall for e in trace.events)
    revs = compress_revisions(trace)
    first: dict[str, TraceEvent] = {}
    records = []
    for line, e in zip(trace.lines, trace.events, strict=True):
        start = first.setdefault(e.instance, e)
        # The instance's clock, aligned to wall time at its first event: the spec starts all clocks at 0.
        aligned = (start.wall - t0) + (e.local - start.local)
        fields = {
            "line": str(line),
            "i": _tla_string(e.instance),
            "a": _tla_string(e.action.value),
            "op": _tla_string(e.op.value if e.op else "none"),
            "rev": str(revs[e.rev]),
            "ep": str(revs[e.epoch]),
            "kind": _tla_string(_KIND[e.kind] if e.kind else "any"),
            "now": str(math.floor((e.wall - t0) / TICK_S + 1e-6)),  # 1e-6: float noise, not time
            "lc": str(max(0, round(aligned / UNIT_S))),
        }
        records.append("[" + ", ".join(f"{k} |-> {v}" for k, v in fields.items()) + "]")
    p = trace.params
    window = math.floor(p.lease * (1 - p.drift) / (1 + p.drift) / UNIT_S) + TOLERANCE_US
    body = ",\n     ".join(records)
    return (
        "---- MODULE TraceData ----\n"
        "EXTENDS Integers, Sequences\n"
        f"TraceWindow == {window}\n"
        f"Trace == <<{body}>>\n"
        "====\n"
    )


def trace_config(trace: Trace) -> str:
    """The TLC config for ``TraceLease``: the spec's constants from the trace's settings."""
    p = trace.params
    counts = Counter(e.action for e in trace.events)
    releases = sum(1 for e in trace.events if e.op == Op.RELEASE)
    instances = sorted({e.instance for e in trace.events})
    constants = {
        "Inst": "{" + ", ".join(_tla_string(i) for i in instances) + "}",
        "Rate": RATE,
        "Drift": round(p.drift * RATE),
        "DriftBound": round(p.drift * RATE),
        "Lease": max(1, math.floor(p.lease / UNIT_S) - TOLERANCE_US),
        "RenewEvery": 1,  # the renewal schedule is the SDK's business; any is allowed
        "TTL": round(p.ttl / TICK_S),
        "ExpiryLate": 0,
        "ObsDelay": 0,
        "NetDelay": 0,
        "MaxCrashes": counts[Action.CRASH],
        "MaxPauses": counts[Action.PAUSE],
        # An outage is silent; the answers it swallows show up as timeouts. One outage per timeout line
        # and no more: a silent outage anywhere multiplies the search (a real 333-line trace: 75 s
        # without, over 300 s with). A probe's timeout is not logged by the SDK (it could log it as a
        # `timeout` line without op, which the spec accepts).
        "MaxOutages": counts[Action.TIMEOUT],
        "MaxReleases": releases,
        "Timely": "FALSE",  # delays are whatever the trace shows
        "Fencing": "TRUE",
        "UseCAS": "TRUE",
        "WithClient": "FALSE",
        "MaxCalls": 0,
        "ClientCheck": "TRUE",
        "WindowRule": '"safe"',
        "ReplyRule": '"fenced"',
    }
    lines = ["CONSTANTS"] + [f"    {k} = {v}" for k, v in constants.items()]
    lines += ["    Window <- TraceWindow", "INIT TraceInit", "NEXT TraceNext"]
    lines += ["CONSTRAINT TrackProgress", "INVARIANT TraceNotFinished", ""]
    return "\n".join(lines)


def check(trace: Trace, *, timeout: float = 300) -> TraceVerdict:
    """Check a parsed trace against the spec with TLC."""
    if not trace.events:
        return TraceVerdict(True, 0, 0, None, None, 0, 0.0)
    with tempfile.TemporaryDirectory(prefix="aegis-trace-") as tmp:
        folder = Path(tmp)
        for name in ("Lease.tla", "TraceLease.tla"):
            shutil.copy(SPEC_DIR / name, folder / name)
        (folder / "TraceData.tla").write_text(trace_module(trace))
        cfg = folder / "TraceLease.cfg"
        cfg.write_text(trace_config(trace))
        result = run_tlc(folder / "TraceLease.tla", cfg, workers=1, deadlock=False, timeout=timeout)
    n = len(trace.events)
    if result.status == "invariant" and result.violated == "TraceNotFinished":
        return TraceVerdict(True, n, n, None, None, result.distinct, result.seconds)
    if result.status != "pass":
        raise TraceCheckError(f"TLC could not check the trace: {result.status} {result.message or ''}")
    reached = [int(x) for x in re.findall(r'<<"reached", (\d+)>>', result.output)]
    stuck = max(reached, default=1)  # index (1-based) of the first event no behaviour explains
    return TraceVerdict(
        accepted=False,
        events=n,
        explained=stuck - 1,
        first_bad_line=trace.lines[stuck - 1],
        first_bad_event=trace.events[stuck - 1],
        distinct=result.distinct,
        seconds=result.seconds,
    )


def check_trace(path: Path, *, timeout: float = 300) -> TraceVerdict:
    """Read an NDJSON trace file and check it (raises ``TraceError`` for a malformed line)."""
    return check(read_trace(path), timeout=timeout)
