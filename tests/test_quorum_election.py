"""The quorum lease's machine (aegis/sdk/quorum_election.py), step by step, against docs/quorum-lease.md."""

from __future__ import annotations

import math

import pytest

from aegis.sdk.election import ElectionParams, Exit, StartServing, StopServing, Timer
from aegis.sdk.quorum_election import Claim, Leadership, QuorumElection, QWrite, Slot

P = ElectionParams()  # lease 0.9, renew 0.25, drift 0.05, write timeout 0.25
ABSENT = [Slot(0, None)] * 3


def writes(effects: list) -> list[QWrite]:
    return [e for e in effects if isinstance(e, QWrite)]


def machine(me: str = "a", rng: float = 0.0) -> QuorumElection:
    return QuorumElection(me, P, rng=lambda: rng)


def win(m: QuorumElection, now: float = 0.0, slots: list[Slot] | None = None) -> list[QWrite]:
    """Start ``m`` and acknowledge its claims in all three buckets."""
    claims = writes(m.start(now, slots or ABSENT))
    assert len(claims) == 3
    for i, w in enumerate(claims):
        m.write_ok(now, w.bucket, 10 + i, w.req)
    assert m.serving(now)
    return claims


def test_a_majority_of_acknowledgements_wins_and_the_first_alone_does_not():
    m = machine()
    claims = writes(m.start(0.0, ABSENT))
    assert [w.bucket for w in claims] == [0, 1, 2]
    assert all(w.op == "claim" and w.expected == 0 and w.claim.ballot == 1 for w in claims)
    assert not any(isinstance(e, StartServing) for e in m.write_ok(0.01, 0, 5, claims[0].req))
    assert m.role == "candidate" and not m.serving(0.01)
    out = m.write_ok(0.02, 2, 7, claims[2].req)
    assert StartServing(1) in out and m.epoch == 1 and m.serving(0.02)
    assert [e.kind for e in out if isinstance(e, Leadership)] == ["acquire"]


def test_the_deadline_counts_from_the_second_newest_send_not_the_newest():
    m = machine()
    win(m)  # all three sent at 0.0
    # renewals: bucket 0 lands from a send at 0.3, bucket 1 from 0.55; bucket 2 stalls
    r = {w.bucket: w for w in writes(m.tick(0.3))}
    m.write_ok(0.31, 0, 20, r[0].req)
    r = {w.bucket: w for w in writes(m.tick(0.55))}  # buckets 1 and 2 time out; the next round goes
    assert r[1].expected == 11 and r[2].expected == 12 and r[1].claim.ballot == 1
    m.write_ok(0.56, 1, 21, r[1].req)
    # sends: b0 0.3, b1 0.55, b2 0.0 -> second newest 0.3 (the newest, 0.55, would overlap a successor)
    assert m.deadline == pytest.approx(0.3 + P.window_s)
    assert m.serving(0.3 + P.window_s - 0.001)
    assert not m.serving(0.3 + P.window_s)


def test_one_stalled_bucket_does_not_stop_the_active():
    m = machine()
    win(m)
    now, served_until = 0.0, 0.0
    for _ in range(40):  # 10 s of renewals; bucket 0 never answers
        now += P.renew_s
        for w in writes(m.tick(now)):
            if w.bucket != 0:
                m.write_ok(now + 0.005, w.bucket, 100 + w.req, w.req)
        if m.serving(now + 0.01):
            served_until = now
    assert served_until == now and m.role == "active" and m.held[0] == 10


def test_two_stalled_buckets_end_the_window_and_the_active_steps_down_handing_back_what_it_holds():
    """Rule 6: at the end of its window without acknowledgements from a majority the active steps down and releases
    the buckets it still holds where no write is in flight (a bucket it kept renewing would keep the standbys out).
    Buckets 1 and 2 stall; bucket 0 answers every renewal."""
    m = machine()
    win(m)
    now = 0.0
    while now < P.window_s - P.renew_s:
        now += P.renew_s
        for w in writes(m.tick(now)):
            if w.bucket == 0:
                m.write_ok(now + 0.001, 0, 100 + w.req, w.req)
    assert m.role == "active" and m.serving(now + 0.002)
    out = m.tick(P.window_s + 0.001)
    assert not m.serving(P.window_s + 0.001) and m.role == "standby"
    assert [e.kind for e in out if isinstance(e, Leadership)] == ["lose"]
    assert any(isinstance(e, StopServing) for e in out)
    # bucket 0 (answered, nothing in flight) is handed back at once; 1 and 2 still have renewals in flight
    assert [(w.bucket, w.op, w.claim.released) for w in writes(out)] == [(0, "release", True)]


def test_a_standby_campaigns_only_when_a_majority_is_free():
    m = machine("b")
    held = Slot(3, Claim("a", 4, 4))
    out = m.start(0.0, [held, held, Slot(0, None)])
    assert writes(out) == []  # one free bucket of three
    # bucket 1's holder stays silent for a lease; bucket 0 keeps being renewed
    m.observe(0.5, 0, Slot(4, Claim("a", 4, 4)))
    assert writes(m.tick(P.lease_s - 0.01)) == []
    claims = writes(m.tick(P.lease_s))
    assert [w.bucket for w in claims] == [1, 2]  # never the bucket that is not free
    assert all(w.claim.ballot == 5 and w.claim.floor == 5 for w in claims)
    assert claims[0].expected == 3 and claims[1].expected == 0


def test_ballot_is_above_every_floor_seen_and_floors_never_go_down():
    m = machine("b")
    slots = [
        Slot(2, Claim("x", 3, 9, released=True)),
        Slot(5, Claim("y", 7, 7, released=True)),
        Slot(0, None),
    ]
    claims = writes(m.start(0.0, slots))
    assert {w.claim.ballot for w in claims} == {10}
    assert all(w.claim.floor >= 10 for w in claims)


def test_a_candidate_that_cannot_reach_a_majority_releases_what_it_holds_and_backs_off():
    m = machine("b", rng=0.5)
    claims = writes(m.start(0.0, ABSENT))
    m.write_ok(0.01, 0, 1, claims[0].req)
    m.write_failed(0.02, 1, Slot(1, Claim("c", 1, 1)), claims[1].req)
    out = m.write_failed(0.03, 2, Slot(1, Claim("c", 1, 1)), claims[2].req)
    released = writes(out)
    assert m.role == "standby" and not m.serving(0.03)
    assert [(w.bucket, w.op, w.expected, w.claim.released) for w in released] == [(0, "release", 1, True)]
    assert m.backoff_until == pytest.approx(0.03 + 0.5 * P.renew_s)


def test_a_claim_that_lands_after_the_campaign_was_given_up_is_handed_back():
    m = machine("b")
    claims = writes(m.start(0.0, ABSENT))
    m.write_failed(0.01, 0, Slot(1, Claim("c", 1, 1)), claims[0].req)
    m.write_failed(0.01, 1, Slot(1, Claim("c", 1, 1)), claims[1].req)
    out = m.write_ok(0.02, 2, 1, claims[2].req)
    assert [(w.bucket, w.op) for w in writes(out)] == [(2, "release")]
    assert not any(isinstance(e, StartServing) for e in out)


def test_losing_a_majority_of_buckets_stops_serving_at_once_and_hands_back_the_rest():
    m = machine()
    win(m)
    r = {w.bucket: w for w in writes(m.tick(P.renew_s))}
    m.write_failed(0.26, 0, Slot(30, Claim("z", 9, 9)), r[0].req)
    assert m.serving(0.26)  # two buckets left
    out = m.write_failed(0.27, 1, Slot(31, Claim("z", 9, 9)), r[1].req)
    assert any(isinstance(e, StopServing) for e in out) and not m.serving(0.27)
    assert [e.kind for e in out if isinstance(e, Leadership)] == ["lose"]
    m.write_ok(0.28, 2, 40, r[2].req)  # the renewal still in flight lands: a minority, handed back
    assert m.role == "standby" and not m.serving(0.28)


def test_an_own_late_renewal_is_adopted_not_lost():
    m = machine()
    win(m)
    r = {w.bucket: w for w in writes(m.tick(P.renew_s))}
    m.tick(P.renew_s + P.write_timeout_s)  # all three time out
    again = {w.bucket: w for w in writes(m.tick(2 * P.renew_s + P.write_timeout_s))}
    assert again[0].expected == r[0].expected  # retried on the same revision
    m.write_failed(0.8, 0, Slot(50, Claim("a", 1, 1)), again[0].req)
    assert m.held[0] == 50 and m.role == "active"


def test_the_active_reclaims_a_free_bucket_only_where_no_newer_ballot_was_claimed():
    m = machine()
    win(m)  # ballot 1
    m.observe(
        0.1, 0, Slot(60, Claim("a", 1, 1, released=True))
    )  # its own claim there, released (a late write)
    m.held[0] = 0
    r = {w.bucket: w for w in writes(m.tick(P.renew_s))}
    assert r[0].op == "claim" and r[0].expected == 60 and r[0].claim == Claim("a", 1, 1)
    # a newer ballot was claimed there and released: taking it back with ballot 1 could let ballot 1 serve again
    # after ballot 5 served (TLC's counterexample to the first version of rule 5)
    m = machine()
    win(m)
    m.observe(0.1, 0, Slot(60, Claim("c", 5, 5, released=True)))
    m.held[0] = 0
    r = {w.bucket: w for w in writes(m.tick(P.renew_s))}
    assert 0 not in r and {1, 2} <= set(r)


def test_graceful_stop_releases_every_bucket_then_exits():
    m = machine()
    win(m)
    out = m.stop(0.1)
    assert not m.serving(0.1) and any(isinstance(e, StopServing) for e in out)
    rel = writes(out)
    assert sorted((w.bucket, w.op, w.claim.released) for w in rel) == [
        (0, "release", True),
        (1, "release", True),
        (2, "release", True),
    ]
    m.write_ok(0.11, 0, 70, rel[0].req)
    m.write_ok(0.11, 1, 71, rel[1].req)
    out = m.write_ok(0.12, 2, 72, rel[2].req)
    assert isinstance(out[-1], Exit)
    assert [e.kind for e in out if isinstance(e, Leadership)] == ["release"]


def test_standbys_see_a_released_majority_as_free_at_once():
    m = machine("b")
    rel = Slot(9, Claim("a", 1, 1, released=True))
    assert len(writes(m.start(0.0, [rel, rel, Slot(8, Claim("a", 1, 1))]))) == 2


def test_clients_are_told_only_a_ballot_seen_in_a_majority():
    m = machine("b")
    m.start(0.0, [Slot(1, Claim("a", 3, 3)), Slot(1, Claim("a", 3, 3)), Slot(2, Claim("c", 8, 8))])
    assert m.majority_ballot() == (3, "a")  # c's ballot 8 is a partial claim that never served


def test_a_timer_is_always_set_while_started():
    m = machine()
    out = m.start(0.0, ABSENT)
    assert isinstance(out[-1], Timer) and out[-1].at == pytest.approx(P.write_timeout_s)
    assert m.deadline == -math.inf


def test_a_watch_delivery_handled_before_the_start_is_not_undone_by_the_older_reads():
    m = machine("b")
    newer = Slot(9, Claim("a", 2, 2))
    m.observe(0.0, 1, newer)  # the watch was quicker than the start's event
    m.start(0.0, [Slot(5, Claim("a", 2, 2)), Slot(5, Claim("a", 2, 2)), Slot(0, None)])
    assert m.seen[1] == newer and m.seen[0].rev == 5


def test_a_candidate_claims_a_bucket_that_goes_free_during_its_campaign():
    """Rule 2: lease timers run per bucket. Buckets 0 and 2 go free first (0 is stalled: its claim will time
    out); bucket 1, renewed a moment later by the silent holder, goes free during the campaign and is claimed with
    the same ballot, which wins with 1 and 2 instead of giving up when bucket 0 times out."""
    old = Claim("b", 4, 4)
    m = machine()
    m.start(0.0, [Slot(5, old), Slot(6, old), Slot(7, old)])
    m.observe(0.1, 1, Slot(8, old))  # the holder's last renewal of bucket 1 landed later
    claims = writes(m.tick(P.lease_s))  # 0 and 2 are free, 1 is not yet
    assert [w.bucket for w in claims] == [0, 2] and m.role == "candidate" and m.ballot == 5
    m.write_ok(P.lease_s + 0.005, 2, 9, claims[1].req)
    more = writes(m.tick(0.1 + P.lease_s))  # bucket 1 goes free before bucket 0's write times out
    assert [(w.bucket, w.op, w.expected, w.claim.ballot) for w in more] == [(1, "claim", 8, 5)]
    out = m.write_ok(0.1 + P.lease_s + 0.005, 1, 10, more[0].req)
    assert StartServing(5) in out and m.role == "active" and m.epoch == 5


def test_a_candidate_does_not_claim_a_bucket_whose_floor_is_at_its_ballot():
    """A floor at the candidate's ballot: another candidate of the same ballot claimed there and may have
    served (a released record keeps its floor): no claim, the campaign gives up when it cannot reach a majority."""
    old = Claim("b", 4, 4)
    m = machine()
    m.start(0.0, [Slot(5, old), Slot(6, old), Slot(7, old)])
    m.observe(0.1, 1, Slot(8, old))
    claims = writes(m.tick(P.lease_s))
    assert [w.bucket for w in claims] == [0, 2] and m.ballot == 5
    out = m.observe(P.lease_s + 0.002, 1, Slot(9, Claim("c", 5, 5, released=True)))  # free, but at floor 5
    out += m.write_failed(P.lease_s + 0.004, 2, Slot(10, Claim("c", 5, 5)), claims[1].req)
    out += m.tick(P.lease_s + 0.01)
    assert not [w for w in writes(out) if w.op == "claim"]
    assert m.role == "standby"  # bucket 0 in flight alone: below a majority, it gave up


def test_a_standby_does_not_campaign_while_a_write_of_its_own_is_in_flight():
    """Rule 2 (the spec's CanCampaign requires AllIdle). An active that stepped down at the end of its window still
    has renewals in flight; it campaigns only once every one is answered or timed out. The partition campaign's
    trace check found the SDK campaigning on the two idle free buckets beside a renewal still in flight, which
    the spec does not do."""
    m = machine()
    win(m)
    now = 0.0
    while now < P.window_s - P.renew_s:  # buckets 1 and 2 stall; bucket 0 answers
        now += P.renew_s
        for w in writes(m.tick(now)):
            if w.bucket == 0:
                m.write_ok(now + 0.001, 0, 100 + w.req, w.req)
    t = P.window_s + 0.001
    (release,) = writes(m.tick(t))
    m.write_ok(t + 0.001, 0, 300, release.req)
    m.observe(t + 0.002, 0, Slot(300, Claim("a", 1, 1, released=True)))
    last_renewal = m.requests[1].sent_at
    m.write_timeout(P.lease_s + 0.01, 2, m.requests[2].id)  # bucket 2 answers; bucket 1 is still in flight
    assert m.role == "standby" and m.requests[1] is not None
    assert writes(m.tick(P.lease_s + 0.02)) == []  # 0 and 2 are free and idle, but a write is in flight
    claims = writes(
        m.tick(last_renewal + P.write_timeout_s)
    )  # bucket 1's renewal timed out: now it campaigns
    assert m.role == "candidate" and sorted(w.bucket for w in claims) == [0, 1, 2]


def test_a_majority_acknowledged_after_its_window_ended_wins_then_steps_down_and_hands_back():
    """Found by the pinned partition campaign: acknowledgements that come later than a window (a bucket that was
    unreachable for seconds answers at last) gave a candidate two buckets and no window; it neither won nor gave
    up, and kept both buckets from everyone else. As the spec's AnswerCore: it wins, and rule 6 steps it down at
    once, handing both back."""
    m = machine("b")
    claims = {w.bucket: w for w in writes(m.start(0.0, ABSENT))}
    m.write_ok(0.01, 2, 7, claims[2].req)  # bucket 2 at once
    m.write_failed(0.02, 1, Slot(9, Claim("c", 1, 1)), claims[1].req)  # bucket 1 lost to another candidate
    assert m.role == "candidate"
    late = 0.0 + P.window_s + 1.0  # bucket 0 answers long after any window from these sends
    out = m.write_ok(late, 0, 5, claims[0].req)
    assert [e.kind for e in out if isinstance(e, Leadership)] == ["acquire", "lose"]
    assert not any(isinstance(e, StartServing) for e in out) and not m.serving(late)
    assert m.role == "standby"
    released = writes(out)
    assert sorted(w.bucket for w in released) == [0, 2]
    assert all(w.op == "release" and w.claim.released for w in released)
