"""The sticky client's rules (``aegis.sdk.sticky_core``), one decision at a time. The SDK's asyncio driver and the
simulator both carry them out (``tests/test_single_active.py``, ``tests/test_sim.py``)."""

from __future__ import annotations

import pytest

from aegis.sdk.sticky_core import (
    FIRST_BACKOFF_S,
    MAX_BACKOFF_S,
    SUSPECT_S,
    Accept,
    Attempt,
    CallCore,
    Connections,
    GiveUp,
    GroupView,
    Kind,
    Outcome,
    Wait,
)


def _call(view: GroupView, timeout_s: float = 2.0) -> CallCore:
    return CallCore(view, 0.0, timeout_s, attempt_timeout_s=1.0, what="orders/default place")


def test_the_watch_never_moves_the_leader_back_to_an_older_epoch() -> None:
    view = GroupView()
    view.observe("a", 7)
    view.observe("b", 5)  # a late delivery of an older record
    assert (view.leader, view.epoch) == ("a", 7)
    view.observe(None, 0)  # a marker: no leader known
    assert view.leader is None and view.epoch == 7
    off = GroupView(epoch_check=False)  # the negative control
    off.observe("a", 7)
    off.observe("b", 5)
    assert off.leader == "b"


def test_a_reply_older_than_one_accepted_is_dropped_and_the_call_retried() -> None:
    view = GroupView()
    view.observe("b", 9)
    view.accepted = 9
    call = _call(view)
    attempt = call.next(0.0)
    assert attempt == Attempt("b", 1.0)
    step = call.outcome(0.01, attempt, Outcome.ok(8))
    assert isinstance(step, Wait) and step.until_change
    assert call.retries == 1 and "stale reply from epoch 8 < 9" in call.tried[-1]
    assert call.outcome(0.02, attempt, Outcome.ok(9)) == Accept(9)


def test_a_new_active_that_has_not_processed_its_acquire_is_asked_again_shortly() -> None:
    view = GroupView()
    view.observe("b", 9)
    call = _call(view)
    attempt = call.next(0.0)
    assert isinstance(attempt, Attempt)
    step = call.outcome(0.01, attempt, Outcome(Kind.NOT_ACTIVE, epoch=8))
    # the instance was just elected: ask it again, no re-read (the view is newer than the instance)
    assert step == Wait(FIRST_BACKOFF_S, until_change=False) and call.retries == 0


def test_failures_wait_for_the_watch_with_a_doubling_backoff_unless_it_named_someone_else() -> None:
    view = GroupView()
    view.observe("a", 3)
    call = _call(view, timeout_s=10.0)
    waits = []
    for i in range(7):
        attempt = call.next(float(i))
        assert isinstance(attempt, Attempt)
        step = call.outcome(float(i), attempt, Outcome(Kind.NO_ANSWER, detail="RpcTimeout"))
        assert isinstance(step, Wait) and step.until_change and step.reread  # the watch may be stalled
        waits.append(step.seconds)
    assert waits[0] == FIRST_BACKOFF_S and waits == sorted(waits) and waits[-1] == MAX_BACKOFF_S
    attempt = call.next(8.0)
    assert isinstance(attempt, Attempt)
    view.observe("b", 4)  # the watch names the new active while the attempt fails
    assert call.outcome(8.0, attempt, Outcome(Kind.LEASE_LOST, epoch=3, known_epoch=4)) is None
    assert call.next(8.0) == Attempt("b", 1.0)  # a new target starts from the first backoff again


@pytest.mark.parametrize("leader", [None, "a"])
def test_at_the_deadline_the_call_gives_up_saying_what_it_tried(leader: str | None) -> None:
    view = GroupView()
    if leader is not None:
        view.observe(leader, 1)
    call = _call(view, timeout_s=0.5)
    first = call.next(0.0)
    if leader is None:
        assert first == Wait(MAX_BACKOFF_S, reread=True)
    else:
        assert isinstance(first, Attempt) and first.timeout_s == 0.5  # an attempt never outlives the call
        call.outcome(0.5, first, Outcome(Kind.NO_ANSWER, detail="NoResponders"))
    step = call.next(0.5)
    assert isinstance(step, GiveUp) and "orders/default place" in step.reason
    assert ("no leader in the election key" if leader is None else "a: NoResponders") in step.reason


# -- which connection an attempt goes through -------------------------------------------------------------------------


def test_an_attempt_passes_over_a_connection_that_failed_since_it_last_answered() -> None:
    """Found by the pinned partition campaign: with a pool of two, the retry after a new leader was named went, in
    turn, through the connection on the cut server and waited out a whole attempt timeout (gaps of 2.0 s)."""
    conns = Connections()
    assert [conns.pick(t, 2, 0.0) for t in range(4)] == [0, 1, 0, 1]  # nothing known: in turn
    conns.ok(0, 1.0)
    conns.ok(1, 1.0)
    conns.bad(1, 2.0)  # e.g. a re-read through it timed out
    assert conns.pick(1, 2, 2.5) == 0 and conns.pick(0, 2, 2.5) == 0
    conns.ok(1, 3.0)  # it answers again: back in turn
    assert conns.pick(1, 2, 3.5) == 1


def test_when_every_connection_failed_attempts_go_in_turn_and_suspicion_ends() -> None:
    conns = Connections()
    conns.bad(0, 1.0)
    conns.bad(1, 1.0)
    assert [conns.pick(t, 2, 1.5) for t in range(3)] == [0, 1, 0]
    assert conns.suspect(0, 1.0 + SUSPECT_S - 0.01)
    assert not conns.suspect(0, 1.0 + SUSPECT_S)  # passed over for SUSPECT_S at most
    conns.bad(1, 1.0 + SUSPECT_S)
    assert conns.pick(1, 2, 1.0 + SUSPECT_S) == 0
