"""Checkers: pure functions over a run's history (no I/O, no clocks), shared by ``aegis failover`` and
``aegis campaign``.

The history is what the workloads recorded: sticky calls (:class:`Call`), direct probes of each instance
(:class:`Hit`), events published and received, commands sent and processed, all on this host's monotonic
clock. Each checker answers one question a trading desk asks after a fault:

* :func:`split_brain`: did a deposed instance serve after its successor had served?
* :func:`epoch_regressions`: did a client accept an answer from an older epoch after a newer one?
* :func:`failover_time`: how long from the fault to the first success from a newer epoch?
* :func:`longest_gap`: the longest stretch without any success (faults that keep the epoch).
* :func:`lost_events`: acknowledged events that no consumer received.
* :func:`duplicate_commands`: commands a worker processed more than once.

Percentiles of what they measure come from :mod:`aegis.stats` (one definition for the harness and the simulator).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(slots=True)
class Call:
    """One client operation (a sticky call, an RPC, an event publish, a command): monotonic send/receive times,
    outcome, who answered in which epoch, and its key (idempotency key, event or call id)."""

    sent: float
    received: float
    ok: bool
    instance: str = ""
    epoch: int = 0
    error: str = ""
    key: str = ""


@dataclass(slots=True)
class Hit:
    """One successful direct probe of an instance: the epoch of the reply's ``Aegis-Epoch`` header (the epoch
    the call was admitted under) and the node the probe went through."""

    sent: float
    received: float
    instance: str
    epoch: int
    node: str = ""


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


def failover_time(calls: Sequence[Call], fault_at: float, old_epoch: int) -> Call | None:
    """The first successful call received after ``fault_at`` from an epoch newer than ``old_epoch``."""
    for c in calls:
        if c.ok and c.received > fault_at and c.epoch > old_epoch:
            return c
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
