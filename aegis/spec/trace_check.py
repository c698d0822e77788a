"""Trace validation: is an NDJSON election trace a behaviour of the TLA+ spec? (as etcd-io/raft and CCF do)

The trace (:mod:`aegis.sdk.trace_events`) becomes a TLA+ module ``TraceData`` (TLC 2.15 reads no JSON), next to
copies of ``Lease.tla`` and ``TraceLease.tla`` in a temporary directory, with a config that sets the
spec's constants from the trace's settings. TLC then explores every behaviour of the spec that matches
the trace event by event (silent KV steps and silent probes in between are free: the SDK logs a probe
only through its campaign's ``request`` line, or an ``observe`` line when its read saw the key move) and
the verdict is either "accepted" or the first line no behaviour explains.

Times: one tick is 1 ms of wall time, one local unit is 1 microsecond of an instance's monotonic clock
(Rate = 1000 units per tick, so the drift bound is in thousandths). Each instance's clock is aligned to
wall time at its first event. Rounding to these units is forgiven by ``TOLERANCE_US`` on the lease
timer and on the serving window, and by one tick in the drift check.

What keeps a whole campaign's trace checkable (each measured on a real smoke trace, see README):

* ``serve`` lines inside a run of one instance's serves (same epoch, nothing else of that instance in
  between) are not given to TLC: between two of its own events an instance's ``Serving`` can only turn
  false (its role, epoch and deadline change only by its own logged steps; its clock only moves on), so
  the first and the last serve of such a run imply every one between. They count as ``events_implied``.
* TLC dedupes states by ``TraceView`` (``TraceLease.tla``): the spec's own view of instances and key with
  absolute time, clocks and revisions, so a write's exact landing time within its round trip does not
  multiply states.
* Silent steps are confined to where the trace shows a need for them (``TraceLease.tla``): the KV itself may
  go down only inside an *outage window* (the overlapping timeout spans of two or more instances: from an
  instance's last event before a request that timed out to the timeout), one instance may be cut off from the
  KV only inside its own timeout spans (a partitioned node), and the KV comes back, an instance is healed, a
  write lands and another key's write takes a revision only right before a line that shows the KV answering
  (:func:`up_lines`). Silent steps happen at event times. Each of these restrictions can only make TLC reject
  more, never validate a trace the spec does not explain; each was checked against every campaign trace.

A trace of the quorum lease (header ``"election": "quorum"``) is checked the same way against ``QuorumLease.tla``,
by ``TraceQuorumLease.tla`` (:func:`quorum_trace_module`, :func:`quorum_trace_config`): revisions are not given to
TLC, but which line names a revision first (where TLC lands that write) and which timed-out writes may land later
are computed here from them; see that module and ``aegis/spec/README.md``.

The verdict is ``validated`` (every event explained), ``rejected`` (with the first line no behaviour
explains) or ``incomplete`` (TLC's time budget ran out: how far it got). An empty trace, or one with
events of a single instance (nothing to check the exclusion against), is rejected, never accepted.

Example::

    verdict = check_trace(Path("aegis/spec/traces/valid_failover.ndjson"))
    print(verdict.result, verdict.first_bad_line)
"""

from __future__ import annotations

import bisect
import itertools
import json
import math
import re
import shutil
import subprocess
import tempfile
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from aegis.sdk.trace_events import Action, KeyKind, Op, Trace, TraceEvent, read_trace
from aegis.spec.suite import SPEC_DIR, copy_spec
from aegis.spec.tlc import run_tlc

TICK_S = 0.001  # one tick of real time
RATE = 1000  # local units per tick: one unit is a microsecond
UNIT_S = TICK_S / RATE
TOLERANCE_US = 2  # rounding forgiven on the lease timer and the serving window
REVISION_GAP_CAP = 4  # see compress_revisions

_KIND = {KeyKind.VALUE: "val", KeyKind.DELETED: "del", KeyKind.EXPIRED: "exp", KeyKind.ABSENT: "none"}


class TraceCheckError(RuntimeError):
    """TLC could not judge the trace (a spec or tool problem, not a bad trace)."""


Result = Literal["validated", "rejected", "incomplete"]

UNLIMITED_OUTAGES = 1_000_000
"""MaxOutages for a trace check: outages are bounded by the trace's outage windows, not by a count."""


@dataclass(frozen=True)
class TraceVerdict:
    """The outcome of checking one trace."""

    result: Result
    events: int  # every event of the trace
    explained: int  # events explained in order before the first unexplained one (or before TLC stopped)
    first_bad_line: int | None  # 1-based line in the NDJSON file (rejected only)
    first_bad_event: TraceEvent | None
    distinct: int
    seconds: float
    reason: str = ""  # why rejected or incomplete
    checked: int = 0  # events given to TLC (the rest are implied: see compact())
    instances: int = 0

    @property
    def accepted(self) -> bool:
        """True only when every event was explained."""
        return self.result == "validated"

    def summary(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "result": self.result,
            "accepted": self.accepted,
            "reason": self.reason,
            "events": self.events,
            "explained": self.explained,
            "events_given_to_tlc": self.checked,
            "instances": self.instances,
            "first_bad_line": self.first_bad_line,
            "first_bad_event": None
            if self.first_bad_event is None
            else self.first_bad_event.model_dump(mode="json"),
            "distinct_states": self.distinct,
            "seconds": self.seconds,
            "ms_per_event": round(1000 * self.seconds / self.explained, 2) if self.explained else None,
        }


def compact(trace: Trace) -> Trace:
    """``trace`` without the ``serve`` events strictly inside a run of one instance's serves (same epoch, no
    other event of that instance between them): the first and last of the run imply the rest (see the module
    docstring). Lines keep their numbers, so a verdict names the real line."""
    keep = [True] * len(trace.events)
    run: dict[str, list[int]] = {}  # instance -> indexes of its current serve run
    for k, e in enumerate(trace.events):
        mine = run.setdefault(e.instance, [])
        if e.action == Action.SERVE and mine and trace.events[mine[-1]].epoch == e.epoch:
            if len(mine) >= 2:
                keep[mine[-1]] = False  # no longer the last of the run
            mine.append(k)
        elif e.action == Action.SERVE:
            run[e.instance] = [k]
        else:
            run[e.instance] = []
    pairs = [(e, n) for e, n, k in zip(trace.events, trace.lines, keep, strict=True) if k]
    return replace(trace, events=tuple(e for e, _ in pairs), lines=tuple(n for _, n in pairs))


def _timeout_spans(trace: Trace) -> list[tuple[str, int, int]]:
    """(instance, from, to) in ticks for each request that timed out: from the instance's last event before
    the request (its send, or for an unlogged probe the event before it) to the timeout."""
    t0 = min(e.wall for e in trace.events)
    last: dict[str, TraceEvent] = {}
    spans = []
    for e in trace.events:
        if e.action == Action.TIMEOUT:
            before = last.get(e.instance, e)
            spans.append((e.instance, _tick(before.wall, t0), _tick(e.wall, t0)))
        last[e.instance] = e
    return spans


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(spans):
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


def cut_windows(trace: Trace) -> list[tuple[str, int, int]]:
    """(instance, from, to) in ticks in which that instance may be cut off from the KV silently: its own
    timeout spans (:func:`_timeout_spans`), merged (``TraceLease.CutMayStart`` leaves out the
    :func:`outage_windows` in them)."""
    spans = _timeout_spans(trace)
    return [
        (i, lo, hi)
        for i in sorted({i for i, _, _ in spans})
        for lo, hi in _merge([(a, b) for j, a, b in spans if j == i])
    ]


def outage_windows(trace: Trace) -> list[tuple[int, int]]:
    """Tick intervals in which the KV itself may go down silently: where two or more instances are each inside
    one of their :func:`cut_windows` at once. Where one instance times out alone, a cut of that instance
    explains it; the two never overlap, so TLC searches one explanation."""
    return _shared(cut_windows(trace))


def _shared(cuts: list[tuple[str, int, int]]) -> list[tuple[int, int]]:
    """The stretches covered by the windows of two or more instances (``cuts`` from :func:`cut_windows`)."""
    per = [[(lo, hi) for j, lo, hi in cuts if j == i] for i in sorted({i for i, _, _ in cuts})]
    points = sorted({p for _, lo, hi in cuts for p in (lo, hi)})
    both = [
        (lo, hi)
        for lo, hi in itertools.pairwise(points)
        if sum(any(a <= lo and hi <= b for a, b in windows) for windows in per) >= 2
    ]
    return _merge(both)


_KV_WAS_UP = frozenset(
    {Action.START, Action.ACQUIRE, Action.RENEW, Action.ADOPT, Action.LOSE, Action.OUTBID, Action.RELEASE}
    | {Action.OBSERVE}
)
"""Lines that show the KV answering (a start reads the key, an answer, a watch delivery)."""


def up_lines(trace: Trace) -> list[int]:
    """1-based indexes of the events that show the KV answering their instance: the KV may come back, or
    the instance be healed, only right before one of them (``TraceLease.UpNext``). A release with no
    revision is the instance giving up after a failed delete, not an answer."""
    return [
        k
        for k, e in enumerate(trace.events, start=1)
        if (e.action in _KV_WAS_UP and not (e.action == Action.RELEASE and e.rev == 0))
        or (e.action == Action.REQUEST and e.op == Op.ACQUIRE)  # a probe's read came back
    ]


def _tick(wall: float, t0: float) -> int:
    return math.floor((wall - t0) / TICK_S + 1e-6)  # 1e-6: float noise, not time


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
            "now": str(_tick(e.wall, t0)),
            "lc": str(max(0, round(aligned / UNIT_S))),
        }
        records.append("[" + ", ".join(f"{k} |-> {v}" for k, v in fields.items()) + "]")
    p = trace.params
    window = math.floor(p.lease * (1 - p.drift) / (1 + p.drift) / UNIT_S) + TOLERANCE_US
    body = ",\n     ".join(records)
    cut_spans = cut_windows(trace)
    windows = ", ".join(f"<<{lo}, {hi}>>" for lo, hi in _shared(cut_spans))
    cuts = ", ".join(f"<<{_tla_string(i)}, {lo}, {hi}>>" for i, lo, hi in cut_spans)
    ups = ", ".join(str(k) for k in up_lines(trace))
    named = sorted({revs[e.rev] for e in trace.events})
    after = ", ".join(str(named[bisect.bisect_right(named, s)]) for s in range(named[-1]))
    return (
        "---- MODULE TraceData ----\n"
        "EXTENDS Integers, Sequences\n"
        f"TraceWindow == {window}\n"
        f"OutageWindows == {{{windows}}}\n"
        f"CutWindows == {{{cuts}}}\n"
        f"UpLines == {{{ups}}}\n"
        f"NextNamedAfter == <<{after}>>\n"
        f"Trace == <<{body}>>\n"
        "====\n"
    )


def _clock_constants(trace: Trace) -> dict[str, object]:
    """The constants both trace checks take from the trace alike: its instances, the clock units and drift, the
    lease and the renewal period."""
    p = trace.params
    instances = sorted({e.instance for e in trace.events})
    return {
        "Inst": "{" + ", ".join(_tla_string(i) for i in instances) + "}",
        "Rate": RATE,
        "Drift": round(p.drift * RATE),
        "DriftBound": round(p.drift * RATE),
        "Lease": max(1, math.floor(p.lease / UNIT_S) - TOLERANCE_US),
        # the renewal (and probe-mode probe) period on the instance's own clock, less the rounding; a trace
        # that does not say allows any schedule (it multiplies the silent probes TLC must try)
        "RenewEvery": 1 if p.renew is None else max(1, math.floor(p.renew / UNIT_S) - TOLERANCE_US),
    }


def _config_text(constants: dict[str, object]) -> str:
    """A trace check's TLC config: the constants, then the trace module's window, view, init, next and the
    invariant that breaks when the whole trace is explained."""
    lines = ["CONSTANTS"] + [f"    {k} = {v}" for k, v in constants.items()]
    lines += ["    Window <- TraceWindow", "VIEW TraceView", "INIT TraceInit", "NEXT TraceNext"]
    lines += ["CONSTRAINT TrackProgress", "INVARIANT TraceNotFinished", ""]
    return "\n".join(lines)


def trace_config(trace: Trace) -> str:
    """The TLC config for ``TraceLease``: the spec's constants from the trace's settings."""
    p = trace.params
    counts = Counter(e.action for e in trace.events)
    releases = sum(1 for e in trace.events if e.op == Op.RELEASE)
    constants = {
        **_clock_constants(trace),
        "TTL": round(p.ttl / TICK_S),
        "ExpiryLate": 0,
        "ObsDelay": 0,
        "NetDelay": 0,
        "MaxCrashes": counts[Action.CRASH],
        "MaxPauses": counts[Action.PAUSE],
        # An outage is silent; the answers it swallows show up as timeouts. It may start only inside the
        # trace's outage windows (TraceLease.OutageMayStart), as often as the trace needs there.
        "MaxOutages": UNLIMITED_OUTAGES,
        "MaxCuts": UNLIMITED_OUTAGES,
        "SelfConflicts": "TRUE",  # a landed renewal answered as a conflict with itself (Lease.tla)
        "StaleWatch": "TRUE",  # a watch resuming after a cut delivers a value the key no longer holds
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
    return _config_text(constants)


_NAMES_REVISION = frozenset({Action.START, Action.OBSERVE, Action.REFUSE, Action.ACK})
"""Quorum lines that name a revision of their bucket: a start's read, a watch delivery, the revision a refused write
found, an acknowledged write's own. The first line naming a revision other than its own ack is where the write
lands for TLC (``TraceQuorumLease.Names``)."""


def _may_land_later(trace: Trace) -> set[int]:
    """Indexes of the ``timeout`` lines whose write may still have landed later: some later line names a revision
    of that bucket that no ``ack`` line names (a write nobody was told of) whose record, where a line shows it, is
    the one the timed-out request wrote. Elsewhere TLC drops the write for good (``TraceQuorumLease``): keeping
    every timed-out write of a stalled bucket pending multiplied the search by each subset of them."""
    acked = {(e.bucket, e.rev) for e in trace.events if e.action == Action.ACK}
    shown: dict[tuple[int, int], tuple[str | None, int | None, int | None, bool | None]] = {}
    first: dict[tuple[int, int], int] = {}
    for k, e in enumerate(trace.events):
        if e.bucket is not None and e.rev > 0 and e.action in _NAMES_REVISION:
            first.setdefault((e.bucket, e.rev), k)
            if e.kind == KeyKind.VALUE:
                shown.setdefault((e.bucket, e.rev), (e.holder, e.ballot, e.floor, e.released))
    orphans = [(k, key) for key, k in first.items() if key not in acked]
    sent: dict[tuple[str, int], TraceEvent] = {}
    out: set[int] = set()
    for k, e in enumerate(trace.events):
        if e.action == Action.REQUEST and e.bucket is not None:
            sent[(e.instance, e.bucket)] = e
        elif e.action == Action.TIMEOUT and e.bucket is not None:
            req = sent.get((e.instance, e.bucket))
            record = None if req is None else (req.holder, req.ballot, req.floor, req.released)
            if any(key[0] == e.bucket and at > k and shown.get(key, record) == record for at, key in orphans):
                out.add(k)
    return out


def _quorum_fields(e: TraceEvent) -> dict[str, str]:
    """The quorum lease's fields of an event, as TraceQuorumLease.tla reads them."""
    return {
        "b": str(e.bucket + 1 if e.bucket is not None else 0),
        "bal": str(e.ballot or 0),
        "fl": str(e.floor or 0),
        "hold": _tla_string(e.holder or ""),
        "rel": _tla_string("any" if e.released is None else "yes" if e.released else "no"),
    }


def _quorum_record(e: TraceEvent | None, rev: int) -> str:
    """A bucket's record as QuorumLease writes it (``NoRec`` for an absent key)."""
    if e is None or e.kind != KeyKind.VALUE:
        return '[rev |-> 0, kind |-> "none", holder |-> "none", bal |-> 0, floor |-> 0, rel |-> FALSE]'
    return (
        f'[rev |-> {rev}, kind |-> "val", holder |-> {_tla_string(e.holder or "")}, bal |-> {e.ballot or 0},'
        f" floor |-> {e.floor or 0}, rel |-> {'TRUE' if e.released else 'FALSE'}]"
    )


def quorum_trace_module(trace: Trace) -> str:
    """The TLA+ module ``TraceData`` for ``TraceQuorumLease``: ``trace`` as a sequence of records (times as in
    :func:`trace_module`; revisions are not given: the spec's compare-and-set decides the outcomes), the serving
    window, and ``InitKV``: the records the buckets held when the first instance started (its start lines)."""
    t0 = min(e.wall for e in trace.events)
    first: dict[str, TraceEvent] = {}
    records = []
    last: dict[str, TraceEvent] = {}
    starts = [e for e in trace.events if e.action == Action.START]
    opener = starts[0].instance if starts else None
    initial: dict[int, TraceEvent] = {}
    for e in starts:
        if e.instance != opener or e.bucket is None or e.bucket in initial:
            break
        initial[e.bucket] = e
    # (bucket, revision) some earlier line named: the first start's reads name what the buckets held already
    named = {(b, e.rev) for b, e in initial.items() if e.rev > 0}
    for line, e in zip(trace.lines, trace.events, strict=True):
        start = first.setdefault(e.instance, e)
        aligned = (start.wall - t0) + (e.local - start.local)
        before = last.get(e.instance)
        fst = e.action == Action.START and not (
            before is not None and before.action == Action.START and before.local == e.local
        )
        last[e.instance] = e
        names = e.bucket is not None and e.rev > 0 and e.action in _NAMES_REVISION
        lands = names and (e.bucket, e.rev) not in named  # a write lands for TLC right before this line
        fresh = lands and e.action != Action.ACK
        if names:
            named.add((e.bucket, e.rev))  # type: ignore[arg-type]
        fields = {
            "line": str(line),
            "i": _tla_string(e.instance),
            "a": _tla_string(e.action.value),
            "op": _tla_string(e.op.value if e.op else "none"),
            **_quorum_fields(e),
            "kind": _tla_string(_KIND[e.kind] if e.kind else "any"),
            "ep": str(e.epoch),
            "now": str(_tick(e.wall, t0)),
            "lc": str(max(0, round(aligned / UNIT_S))),
            "fst": "TRUE" if fst else "FALSE",
            "nm": "TRUE" if names else "FALSE",
            "fr": "TRUE" if fresh else "FALSE",
            "ld": "TRUE" if lands else "FALSE",
        }
        records.append("[" + ", ".join(f"{k} |-> {v}" for k, v in fields.items()) + "]")
    may_land = _may_land_later(trace)
    for k, rec in enumerate(records):
        records[k] = rec[:-1] + f", pd |-> {'TRUE' if k in may_land else 'FALSE'}]"
    kv = ", ".join(_quorum_record(initial.get(b), b + 1) for b in range(3))
    p = trace.params
    window = math.floor(p.lease * (1 - p.drift) / (1 + p.drift) / UNIT_S) + TOLERANCE_US
    body = ",\n     ".join(records)
    return (
        "---- MODULE TraceData ----\n"
        "EXTENDS Integers, Sequences\n"
        f"TraceWindow == {window}\n"
        f"InitKV == <<{kv}>>\n"
        "InitSeq == 3\n"
        f"InstSeq == <<{', '.join(_tla_string(i) for i in sorted({e.instance for e in trace.events}))}>>\n"
        f"Trace == <<{body}>>\n"
        "====\n"
    )


def quorum_trace_config(trace: Trace) -> str:
    """The TLC config for ``TraceQuorumLease``: QuorumLease's constants from the trace's settings. Pauses and node
    crashes are silent steps bounded by where the trace needs them (``TraceQuorumLease.tla``), not by a count."""
    counts = Counter(e.action for e in trace.events)
    constants = {
        **_clock_constants(trace),
        "ObsDelay": 0,
        "NetDelay": 0,
        "Quorum": 2,
        # a standby's exit is a crash to the spec (TraceQuorumLease: it has no standby exit)
        "MaxCrashes": counts[Action.CRASH] + counts[Action.EXIT],
        "MaxPauses": UNLIMITED_OUTAGES,
        "MaxReleases": counts[Action.STOP],
        "MaxNodeCrashes": UNLIMITED_OUTAGES,
        "MaxResets": 0,  # the durability assumption (sync_interval: always)
        "Timely": "FALSE",  # delays are whatever the trace shows
        "DeadlineRule": '"median"',
        "ResetRule": '"quarantine"',
        "Erasable": "FALSE",
    }
    return _config_text(constants)


SHORT_TRACE_EVENTS = 3000
"""A trace of at most this many events (after compaction) is checked in seconds: TLC runs with C1 only
(:func:`aegis.spec.tlc.run_tlc`'s ``short``; measured: half the CPU on the example traces)."""


def check(trace: Trace, *, timeout: float = 300, workers: int = 1) -> TraceVerdict:
    """Check a parsed trace against the spec with TLC: ``validated``, ``rejected`` or, when TLC needs more
    than ``timeout`` seconds, ``incomplete`` with how many events it explained by then."""
    n = len(trace.events)
    instances = len({e.instance for e in trace.events})
    if not trace.events:
        return TraceVerdict("rejected", 0, 0, None, None, 0, 0.0, reason="the trace is empty")
    if instances < 2:
        return TraceVerdict(
            "rejected",
            n,
            0,
            None,
            None,
            0,
            0.0,
            reason=f"one-sided: only {trace.events[0].instance} logged events (exclusion needs two instances)",
            instances=instances,
        )
    small = compact(trace)
    quorum = trace.params.election == "quorum"
    checker = "TraceQuorumLease" if quorum else "TraceLease"
    with tempfile.TemporaryDirectory(prefix="aegis-trace-") as tmp:
        folder = Path(tmp)
        copy_spec(folder)
        if quorum:
            shutil.copy(SPEC_DIR / "QuorumLease.tla", folder / "QuorumLease.tla")
        shutil.copy(SPEC_DIR / f"{checker}.tla", folder / f"{checker}.tla")
        (folder / "TraceData.tla").write_text(quorum_trace_module(small) if quorum else trace_module(small))
        cfg = folder / f"{checker}.cfg"
        cfg.write_text(quorum_trace_config(small) if quorum else trace_config(small))
        try:
            result = run_tlc(
                folder / f"{checker}.tla",
                cfg,
                workers=workers,
                deadlock=False,
                timeout=timeout,
                short=len(small.events) <= SHORT_TRACE_EVENTS,
            )
        except subprocess.TimeoutExpired as exc:
            out = exc.output.decode(errors="replace") if isinstance(exc.output, bytes) else exc.output or ""
            done = _reached(out) - 1
            return TraceVerdict(
                "incomplete",
                n,
                _explained(trace, small, done),
                None,
                None,
                0,
                float(timeout),
                reason=f"TLC explained {done} of the {len(small.events)} events given to it in its {timeout:.0f} s"
                " budget",
                checked=len(small.events),
                instances=instances,
            )
    if result.status == "invariant" and result.violated == "TraceNotFinished":
        return TraceVerdict(
            "validated",
            n,
            n,
            None,
            None,
            result.distinct,
            result.seconds,
            checked=len(small.events),
            instances=instances,
        )
    if result.status != "pass":
        raise TraceCheckError(f"TLC could not check the trace: {result.status} {result.message or ''}")
    stuck = _reached(result.output)  # index (1-based) of the first event no behaviour explains
    bad = small.events[stuck - 1]
    line = small.lines[stuck - 1]
    return TraceVerdict(
        "rejected",
        n,
        _explained(trace, small, stuck - 1),
        line,
        bad,
        result.distinct,
        result.seconds,
        reason=f"no behaviour of the spec explains line {line} ({bad.instance} {bad.action.value})",
        checked=len(small.events),
        instances=instances,
    )


def _reached(output: str) -> int:
    """The largest trace index TLC reached (TraceLease's TrackProgress lines); 1 when none."""
    return max((int(x) for x in re.findall(r'<<"reached", (\d+)>>', output)), default=1)


def _explained(full: Trace, small: Trace, done: int) -> int:
    """Events of ``full`` up to the ``done``-th event of its compaction ``small`` (implied ones included)."""
    if done <= 0:
        return 0
    last_line = small.lines[done - 1]
    return sum(1 for line in full.lines if line <= last_line)


def check_trace(path: Path, *, timeout: float = 300, workers: int = 1) -> TraceVerdict:
    """Read an NDJSON trace file and check it (raises ``TraceError`` for a malformed line)."""
    return check(read_trace(path), timeout=timeout, workers=workers)
