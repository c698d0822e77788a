"""The election state machine: scripted faults in the simulator (which drives the SDK's own machine), and the
machine's answers to single inputs.

Random fault schedules, clock rates within the bound and the negative controls that must break the safety
properties are ``tests/test_sim.py``'s (hypothesis drives the simulator there); the simulator checks the spec's
safety properties after every event.
"""

from __future__ import annotations

from aegis.sdk.election import Effect, Election, ElectionParams, Exit, Probe, Write
from aegis.sdk.kv_types import KeyState
from aegis.sim.faults import MIXES, Fault
from aegis.sim.run import RunConfig, RunResult, Simulation, run

PARAMS = ElectionParams(lease_s=0.9, renew_s=0.25, drift=0.05, write_timeout_s=0.25)
TTL_S = 10.0


# -- the machine under scripted faults, in the simulator (the SDK's own machine, driven by ``aegis/sim/``) --------------
# (Random schedules of every fault, with clock rates within the bound: test_sim's hypothesis property.)


def _sim(*faults: Fault, instances: int = 2, duration_s: float = 8.0) -> RunResult:
    cfg = RunConfig(
        seed=3,
        params=PARAMS,
        ttl_s=TTL_S,
        mix=MIXES["calm"],
        instances=instances,
        faults=faults,
        duration_s=duration_s,
        trace=True,
    )
    r = run(cfg)
    assert r.violations == [], r.violations[0].trace
    return r


def test_someone_serves_when_nothing_goes_wrong() -> None:
    r = _sim(instances=3)
    assert len(r.serving_at_end) == 1 and r.failovers == [] and r.false_failovers == []


def test_standby_takes_over_after_the_active_crashes() -> None:
    r = _sim(Fault(3.0, "crash", 30.0))  # restarted after the run
    (fo,) = r.failovers
    assert fo.cause == "crash" and fo.serve_s is not None and fo.serve_s < 2 * PARAMS.lease_s
    assert len(r.serving_at_end) == 1


def test_graceful_stop_hands_over_without_waiting_for_the_lease() -> None:
    r = _sim(Fault(3.0, "stop", 30.0))
    (fo,) = r.failovers
    # well under the 0.9 s lease: the delete marker lets the standby in at once
    assert fo.cause == "stop" and fo.serve_s is not None and fo.serve_s < 0.1
    assert len(r.serving_at_end) == 1


def test_a_stop_taken_after_a_deposition_leaves_the_successors_record() -> None:
    """SIGTERM to a paused active (``pausestop``): a standby takes over during the pause; the old active resumes,
    takes the stop and releases on its own last revision. The compare-and-set fails and the successor keeps the
    key and serves on (a release without compare-and-set would delete the successor's record: the successor's
    next renewal fails and the key goes round again)."""
    cfg = RunConfig(
        seed=3,
        params=PARAMS,
        ttl_s=TTL_S,
        mix=MIXES["calm"],
        instances=2,
        duration_s=10.0,
        trace=True,
        faults=(Fault(3.0, "pausestop", 2.0),),
    )
    sim = Simulation(cfg)
    r = sim.run()
    assert r.violations == [], r.violations[0].trace
    acquired = [(e.instance, e.epoch) for e in r.log.events if getattr(e.action, "value", "") == "acquire"]
    # the first holder, then its successor
    assert len(acquired) == 2 and acquired[0][0] != acquired[1][0], acquired
    (first, _), (successor, epoch) = acquired
    released = [e for e in r.log.events if e.instance == first and getattr(e.op, "value", "") == "release"]
    assert released, "the old active never sent its release: the scenario did not happen"
    assert sim.kv.key.owner == successor and sim.kv.key.epoch == epoch
    assert r.serving_at_end == [successor]


def test_kv_outage_keeps_the_incumbent() -> None:
    """The active stops serving when it cannot renew, and resumes by renewing: no change of leader."""
    r = _sim(Fault(3.0, "nats", 6.0), instances=3, duration_s=12.0)
    assert r.failovers == [] and r.false_failovers == [] and len(r.serving_at_end) == 1
    acquired = [e for e in r.log.events if getattr(e.action, "value", "") == "acquire"]
    assert len(acquired) == 1


def test_release_deletes_again_when_the_key_holds_our_lost_renewal() -> None:
    m = Election(PARAMS)
    probe = next(a for a in m.start(0.0, KeyState(0, "none")) if isinstance(a, Probe))
    acquire = next(a for a in m.read_done(0.001, KeyState(0, "none"), probe.req) if isinstance(a, Write))
    m.write_ok(0.002, 1, acquire.req)
    renew = next(a for a in m.tick(0.3) if isinstance(a, Write))
    assert (renew.op, renew.expected) == ("renew", 1)
    m.stop(0.4)  # asked to stop while the renewal is in flight: the release waits for its answer
    # the renewal times out (the KV stored it at revision 2 all the same): now the release goes out, on rev 1
    release = next(a for a in m.tick(0.3 + PARAMS.write_timeout_s) if isinstance(a, Write))
    assert (release.op, release.expected) == ("release", 1)
    again = [
        a for a in m.write_failed(0.56, KeyState(2, "val"), release.req, ours=True) if isinstance(a, Write)
    ]
    assert [(a.op, a.expected) for a in again] == [("release", 2)]
    assert any(isinstance(a, Exit) for a in m.write_ok(0.57, 3, again[0].req))
    # someone else's write in the key: nothing to delete, just exit
    m2 = Election(PARAMS)
    p2 = next(a for a in m2.start(0.0, KeyState(0, "none")) if isinstance(a, Probe))
    a2 = next(a for a in m2.read_done(0.001, KeyState(0, "none"), p2.req) if isinstance(a, Write))
    m2.write_ok(0.002, 1, a2.req)
    r2 = next(a for a in m2.stop(0.1) if isinstance(a, Write))
    assert any(isinstance(a, Exit) for a in m2.write_failed(0.11, KeyState(5, "val"), r2.req))


def test_the_serving_window_counts_from_the_send_of_the_write_not_its_ack() -> None:
    """The spec's window rule: the standbys' lease timers may have started when the write was sent, so a slow
    acknowledgement must not stretch the window (``Neg_WindowFromAck`` in TLC, ``window_from_ack`` in mutants)."""
    m = Election(PARAMS)
    probe = next(a for a in m.start(0.0, KeyState(0, "none")) if isinstance(a, Probe))
    acquire = next(a for a in m.read_done(0.0, KeyState(0, "none"), probe.req) if isinstance(a, Write))
    slow_ack = 0.2  # within the write timeout
    m.write_ok(slow_ack, 1, acquire.req)
    assert m.serving(PARAMS.window_s - 0.01)
    assert not m.serving(PARAMS.window_s + 0.01)  # an ack-based window would still run until window + 0.2
    # a renewal acknowledged late: again the window ends at its send plus the window
    renew = next(a for a in m.tick(0.3) if isinstance(a, Write))
    m.write_ok(0.3 + slow_ack, 2, renew.req)
    assert m.serving(0.3 + PARAMS.window_s - 0.01) and not m.serving(0.3 + PARAMS.window_s + 0.01)


def test_a_reply_carries_its_admission_epoch_and_only_while_it_still_serves_under_it() -> None:
    """``Election.reply_epoch``, the rule the SDK's ``Service`` and the simulator ask when a handler finishes:
    the admission epoch, never a newer one the instance has learnt meanwhile, and nothing once the window
    ended or the lease was lost and won again (a different epoch)."""
    m = Election(PARAMS)
    probe = next(a for a in m.start(0.0, KeyState(0, "none")) if isinstance(a, Probe))
    acquire = next(a for a in m.read_done(0.001, KeyState(0, "none"), probe.req) if isinstance(a, Write))
    m.write_ok(0.002, 7, acquire.req)
    assert m.serving(0.1) and m.epoch == 7
    # a successor's epoch 9 reached the watch while the handler ran: the reply still says 7
    assert m.reply_epoch(0.1, 7, 9) == 7
    assert m.reply_epoch(0.1, 7, 7) == 7
    # the window ran out (no renewal landed): the outcome is withheld, whatever the instance knows
    assert m.reply_epoch(0.001 + PARAMS.window_s + 0.01, 7, 7) is None
    # lost (a compare-and-set of its renewal failed), then won again with epoch 12: a call of epoch 7 is withheld
    renew = next(a for a in m.tick(0.3) if isinstance(a, Write))
    m.write_failed(0.31, KeyState(9, "val"), renew.req)
    assert not m.serving(0.32) and m.reply_epoch(0.32, 7, 9) is None
    campaign = _campaign(m, 0.32 + PARAMS.lease_s, KeyState(9, "val"))
    m.write_ok(0.33 + PARAMS.lease_s, 12, campaign.req)
    now = 0.34 + PARAMS.lease_s
    assert m.serving(now) and m.reply_epoch(now, 7, 12) is None and m.reply_epoch(now, 12, 12) == 12


def _campaign(m: Election, now: float, key: KeyState, actions: list[Effect] | None = None) -> Write:
    """Drive a ready standby through its probe (from ``actions``, else a tick) to the campaign it sends."""
    probe = next(a for a in (m.tick(now) if actions is None else actions) if isinstance(a, Probe))
    return next(a for a in m.read_done(now, key, probe.req) if isinstance(a, Write))


def test_a_stale_failure_answer_does_not_override_the_watch() -> None:
    """The spec's ordering rule: what the watch delivered since a campaign left beats the campaign's answer."""
    m = Election(PARAMS)
    m.start(0.0, KeyState(5, "val"))
    acquire = _campaign(m, PARAMS.lease_s, KeyState(5, "val"))
    assert (acquire.op, acquire.expected) == ("acquire", 5)
    # the incumbent renewed (6) and then stopped gracefully (7); the watch delivers the marker first ...
    m.observe(1.0, KeyState(7, "del"))
    # ... and then the campaign's answer, naming revision 6: older news, ignored
    actions = m.write_failed(1.01, KeyState(6, "val"), acquire.req)
    assert (m.seen, m.seen_at) == (KeyState(7, "del"), 1.0)
    # it takes over at once on the marker (probe, then a campaign on 7) instead of waiting a whole lease
    again = _campaign(m, 1.02, KeyState(7, "del"), actions)
    assert again.expected == 7
    # "absent" has no revision: it counts only if the watch delivered nothing since the campaign left
    m.observe(1.03, KeyState(8, "val"))
    m.write_failed(1.04, KeyState(0, "none"), again.req)
    assert m.seen == KeyState(8, "val") and not m.ready(1.04)
    # with no delivery in between, "absent" counts: the standby creates the key
    m2 = Election(PARAMS)
    first = _campaign(m2, 0.0, KeyState(5, "del"), m2.start(0.0, KeyState(5, "del")))
    actions = m2.write_failed(0.01, KeyState(0, "none"), first.req)
    assert m2.seen == KeyState(0, "none")
    assert _campaign(m2, 0.02, KeyState(0, "none"), actions).expected == 0
    # the watch cursor is separate from what it believes: a late delivery of the old marker changes nothing
    m2.observe(0.03, KeyState(5, "del"))
    assert m2.seen == KeyState(0, "none") and m2.wpos == 5


def test_crash_forgets_everything_so_a_restart_campaigns_again() -> None:
    m = Election(PARAMS)
    probe = next(a for a in m.start(0.0, KeyState(0, "none")) if isinstance(a, Probe))
    acquire = next(a for a in m.read_done(0.0, KeyState(0, "none"), probe.req) if isinstance(a, Write))
    m.write_ok(0.001, 1, acquire.req)
    m.stop(0.1)  # crashes in the middle of a graceful stop
    m.crash()
    assert (m.role, m.epoch, m.stopping, m.probe, m.wpos) == ("standby", 0, False, False, 0)
    actions = m.start(5.0, KeyState(2, "del"))
    assert any(isinstance(a, Probe) for a in actions)  # campaigns on the marker: not stuck "stopping"


def test_a_timeout_after_newer_news_does_not_put_a_standby_in_probe_mode() -> None:
    """TLC's finding: a probe that timed out during an outage, answered after the watch delivered the delete
    marker, must not make the standby wait out probe mode; the marker lets it in at once."""
    m = Election(PARAMS)
    m.start(0.0, KeyState(5, "val"))
    probe = next(a for a in m.tick(PARAMS.lease_s) if isinstance(a, Probe))
    m.observe(1.0, KeyState(6, "del"))  # the KV is back: the incumbent's graceful stop
    actions = m.write_timeout(1.2, probe.req)
    assert not m.probe and m.ready(1.2)
    campaign = _campaign(m, 1.2, KeyState(6, "del"), actions)
    assert (campaign.op, campaign.expected) == ("acquire", 6)
    # with nothing newer, a timeout does mean probe mode: no campaign straight after the next probe
    m2 = Election(PARAMS)
    m2.start(0.0, KeyState(5, "val"))
    p2 = next(a for a in m2.tick(PARAMS.lease_s) if isinstance(a, Probe))
    m2.write_timeout(1.2, p2.req)
    assert m2.probe and not m2.ready(1.2) and m2.ready(1.2 + PARAMS.renew_s)
    p3 = next(a for a in m2.tick(1.2 + PARAMS.renew_s) if isinstance(a, Probe))
    assert not any(isinstance(a, Write) for a in m2.read_done(1.5, KeyState(5, "val"), p3.req))
    m3 = Election(PARAMS)
    m3.start(0.0, KeyState(5, "val"))
    m3.write_timeout(1.0, next(a for a in m3.tick(PARAMS.lease_s) if isinstance(a, Probe)).req)
    assert m3.probe
    m3.observe(1.1, KeyState(7, "val"))  # the KV took a write: a newer revision ends probe mode
    assert not m3.probe and m3.seen_at == 1.1
