"""Checkers: pure functions over a run's history (no I/O, no clocks), shared by ``aegis failover`` and
``aegis campaign``; they run after the run, on what it left (:class:`~aegis.harness.campaign.history.History`).

The history is what the workloads, the rig and the runner recorded: sticky calls and other client operations
(:class:`~aegis.harness.campaign.history.Call`), direct probes of each instance (:class:`~aegis.harness.campaign.history.Hit`),
events received, the command workers' journals, what was done to which process and each fault's start, recovery
and heal, all on this host's monotonic clock. Each checker answers one question a trading desk asks after a
fault:

* :func:`split_brain`: did a deposed instance serve after its successor had served?
* :func:`epoch_regressions`: did a client accept an answer from an older epoch after a newer one?
* :func:`failover_time`: how long from the fault to the first success from a newer epoch?
* :func:`first_hit_of_newer_epoch`: when did a direct probe first get an answer from a newer epoch (the
  election's share of the gap)?
* :func:`longest_gap`: the longest stretch without any success (faults that keep the epoch).
* :func:`failed_calls`: how many operations sent during a fault failed?
* :func:`split_brain_by_fault`: which fault was each split brain's deposed instance answering during?
* :func:`signal_time`: when exactly did the rig signal a fault's victim?
* :func:`lost_events`: acknowledged events that no consumer received.
* :func:`duplicate_commands`: commands a worker processed more than once.

Percentiles of what they measure come from :mod:`aegis.stats` (one definition for the harness and the simulator).
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterable, Sequence

from aegis.harness.campaign.history import Call, Hit, ProcessEvent

FAULT_SIGNALS = frozenset({"SIGKILL", "SIGTERM", "SIGSTOP"})
"""The signals that are a fault (SIGCONT heals one)."""


def split_brain(hits: Sequence[Hit]) -> list[tuple[Hit, Hit]]:
    """Pairs (old, new): ``old`` was sent after ``new`` came back although ``new.epoch > old.epoch``.

    A success carries the epoch its call was admitted under, and goes out only while the instance still serves
    under it: it proves that epoch was served at some moment within ``[sent, received]`` of the probe, no more.
    So only ``old.sent > new.received`` proves that an older epoch served after a newer one had (two actives);
    probes that merely overlap in flight prove nothing, whatever order they complete in. ``hits`` may be in any
    order (concurrent probes complete out of order). Equal times prove no order and are not flagged.

    One pair per offending hit, ``new`` being the earliest-received success of any newer epoch.
    """
    first: dict[int, Hit] = {}
    for h in hits:
        if h.epoch not in first or h.received < first[h.epoch].received:
            first[h.epoch] = h
    # earliest success of any epoch newer than e, for each e (suffix minimum over epochs, newest first)
    newer: dict[int, Hit | None] = {}
    best: Hit | None = None
    for e in sorted(first, reverse=True):
        newer[e] = best
        if best is None or first[e].received < best.received:
            best = first[e]
    out = []
    for h in hits:
        n = newer.get(h.epoch)
        if n is not None and h.sent > n.received:
            out.append((h, n))
    return out


def epoch_regressions(calls: Sequence[Call]) -> int:
    """Accepted sticky replies (in completion order) whose epoch is below one accepted before."""
    top, bad = 0, 0
    for c in calls:
        if not c.ok:
            continue
        if c.epoch < top:
            bad += 1
        top = max(top, c.epoch)
    return bad


def longest_gap(calls: Sequence[Call], since: float, until: float) -> float:
    """Longest stretch in [since, until] without a successful sticky reply."""
    last, worst = since, 0.0
    for c in calls:
        if c.ok and since <= c.received <= until:
            worst = max(worst, c.received - last)
            last = c.received
    return max(worst, until - last)


def failover_time(
    calls: Sequence[Call], fault_at: float, old_epoch: int, until: float = float("inf")
) -> Call | None:
    """The first successful call received after ``fault_at`` (and at latest ``until``) from an epoch newer than
    ``old_epoch``."""
    for c in calls:
        if c.ok and fault_at < c.received <= until and c.epoch > old_epoch:
            return c
    return None


def first_hit_of_newer_epoch(hits: Iterable[Hit], since: float, old_epoch: int) -> Hit | None:
    """The probe success received first after ``since`` from an epoch newer than ``old_epoch`` (hits complete
    out of order: the earliest received, not the first recorded)."""
    best: Hit | None = None
    for h in hits:
        if h.received > since and h.epoch > old_epoch and (best is None or h.received < best.received):
            best = h
    return best


def split_brain_by_fault(starts: Sequence[float], pairs: Iterable[tuple[Hit, Hit]]) -> list[int]:
    """Split-brain pairs per fault (faults started at ``starts``, ascending): each pair counts against the fault
    during which the deposed instance answered, i.e. its probe was sent after that fault was injected and before
    the next one. Judged over the whole history, not when the fault's recovery is declared: a paused active
    resumes when its fault heals, typically after the sticky client has recovered, and would be missed (or
    charged to a later fault)."""
    counts = [0] * len(starts)
    for old, _ in pairs:
        i = bisect.bisect_right(starts, old.sent) - 1
        if i >= 0:
            counts[i] += 1
    return counts


def signal_time(
    events: Iterable[ProcessEvent], instance: str, since: float, until: float = float("inf")
) -> float | None:
    """When the rig sent ``instance`` its first fault signal (SIGKILL, SIGTERM, SIGSTOP) in ``[since, until]``:
    the fault's own time, a little after the runner decided to inject it."""
    for e in events:
        if e.instance == instance and e.action in FAULT_SIGNALS and since <= e.at <= until:
            return e.at
    return None


def failed_calls(calls: Sequence[Call], since: float, until: float) -> int:
    """Calls sent in [since, until] that failed."""
    return sum(1 for c in calls if not c.ok and since <= c.sent <= until)


def lost_events(acked: Iterable[str], received: Iterable[str]) -> list[str]:
    """Event ids the stream acknowledged that no consumer received, in acknowledgement order."""
    got = set(received)
    return [e for e in acked if e not in got]


def duplicate_commands(processed: Iterable[str]) -> dict[str, int]:
    """Command ids processed more than once, with how often."""
    return {k: n for k, n in Counter(processed).items() if n > 1}
