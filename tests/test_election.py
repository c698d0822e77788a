"""The election state machine against an in-memory KV, under hypothesis-chosen delays, drift and faults.

A tiny discrete-event world: real time, per-instance clocks with their own rate, a KV with revisions,
compare-and-set, TTL expiry markers and outages, network delays for requests, answers and watch deliveries,
crashes, restarts, pauses and graceful stops. After every event it checks the spec's safety properties: never two
instances serving at the same real time, epochs granted in strictly increasing order, and a serving instance
holds the newest epoch that ever served. The negative controls (clock drift beyond the bound, fencing removed)
must make it find a violation, or the checks prove nothing.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sdk.election import (
    Effect,
    Election,
    ElectionParams,
    Exit,
    Probe,
    StartServing,
    StopServing,
    Timer,
    Write,
)
from sdk.kv_types import KeyState

PARAMS = ElectionParams(lease_s=0.9, renew_s=0.25, drift=0.05, write_timeout_s=0.25)
TTL_S = 10.0


class Violation(AssertionError):
    pass


@dataclass
class Node:
    machine: Election
    rate: float
    up: bool = False
    paused_until: float = 0.0
    incarnation: int = 0
    timer_token: int = 0

    def clock(self, t: float) -> float:
        return self.rate * t


@dataclass
class World:
    rates: list[float]
    delays: list[float]
    params: ElectionParams = PARAMS
    fencing: bool = True
    t: float = 0.0
    rev: int = 0
    key: KeyState = field(default_factory=lambda: KeyState(0, "none"))
    kv_up: bool = True
    granted: list[int] = field(default_factory=list)
    hi_served: int = 0
    served: set[int] = field(default_factory=set)
    failovers: int = 0
    owner: tuple[int, int] = (-1, 0)

    def __post_init__(self) -> None:
        self.nodes = [Node(Election(self.params), rate) for rate in self.rates]
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._delay = itertools.cycle(self.delays)

    # -- plumbing ------------------------------------------------------------------------------------------
    def at(self, when: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self._heap, (when, next(self._seq), fn))

    def delay(self) -> float:
        return next(self._delay)

    def run_until(self, horizon: float) -> None:
        while self._heap and self._heap[0][0] <= horizon:
            when, _, fn = heapq.heappop(self._heap)
            self.t = max(self.t, when)
            fn()
            self.check()

    def to_node(self, i: int, fn: Callable[[float], list[Effect]]) -> None:
        """Deliver an event to node i now (or when its pause ends); stale for a crashed incarnation."""
        node = self.nodes[i]
        inc = node.incarnation

        def deliver() -> None:
            if not node.up or node.incarnation != inc:
                return
            if self.t < node.paused_until:
                self.at(node.paused_until, deliver)
                return
            self.carry_out(i, fn(node.clock(self.t)))

        deliver()

    def carry_out(self, i: int, actions: list[Effect]) -> None:
        node = self.nodes[i]
        for a in actions:
            if isinstance(a, Write):
                inc = node.incarnation
                self.at(self.t + self.delay(), lambda a=a, i=i, inc=inc: self.apply(i, a, inc))
            elif isinstance(a, Probe):
                inc = node.incarnation
                self.at(self.t + self.delay(), lambda i=i, inc=inc, r=a.req: self.read(i, inc, r))
            elif isinstance(a, Timer):
                node.timer_token += 1
                token = node.timer_token
                when = max(self.t, a.at / node.rate + 1e-9)  # never before the local time asked for

                def fire(i: int = i, token: int = token) -> None:
                    if self.nodes[i].timer_token == token:
                        self.to_node(i, self.nodes[i].machine.tick)

                self.at(when, fire)
            elif isinstance(a, StartServing):
                self.served.add(a.epoch)
            elif isinstance(a, Exit):
                node.up = False
            elif isinstance(a, StopServing):
                pass

    # -- the KV --------------------------------------------------------------------------------------------
    def apply(self, i: int, w: Write, inc: int) -> None:
        if not self.kv_up:
            return  # lost: the sender times out
        if w.expected != self.key.rev:
            current = self.key
            # the key still holds this instance's own renewal (an earlier one whose answer came too late)
            ours = w.op in ("renew", "release") and current.kind == "val" and self.owner == (i, w.epoch)
            self.at(
                self.t + self.delay(),
                lambda: self.to_node_if(
                    i, inc, lambda now: self.m(i).write_failed(now, current, w.req, ours=ours)
                ),
            )
            return
        self.rev += 1
        rev = self.rev
        self.key = KeyState(rev, "del" if w.op == "release" else "val")
        self.owner = (i, rev if w.op == "acquire" else w.epoch)
        if w.op == "acquire":
            if self.granted and rev <= self.granted[-1]:
                raise Violation(f"epoch {rev} granted after {self.granted[-1]}")
            self.granted.append(rev)
        self.at(
            self.t + self.delay(),
            lambda: self.to_node_if(i, inc, lambda now: self.m(i).write_ok(now, rev, w.req)),
        )
        self.broadcast(self.key)
        if self.key.kind == "val":
            self.at(self.t + TTL_S, lambda: self.expire(rev))

    def read(self, i: int, inc: int, req: int) -> None:
        if self.kv_up:
            key = self.key
            self.at(
                self.t + self.delay(),
                lambda: self.to_node_if(i, inc, lambda now: self.m(i).read_done(now, key, req)),
            )

    def expire(self, rev: int) -> None:
        if self.kv_up and self.key.rev == rev and self.key.kind == "val":
            self.rev += 1
            self.key = KeyState(self.rev, "exp")
            self.broadcast(self.key)

    def broadcast(self, key: KeyState) -> None:
        for j in range(len(self.nodes)):
            self.at(
                self.t + self.delay(), lambda j=j: self.to_node(j, lambda now: self.m(j).observe(now, key))
            )

    def m(self, i: int) -> Election:
        return self.nodes[i].machine

    def to_node_if(self, i: int, inc: int, fn: Callable[[float], list[Effect]]) -> None:
        if self.nodes[i].incarnation == inc:
            self.to_node(i, fn)

    # -- faults --------------------------------------------------------------------------------------------
    def start(self, i: int) -> None:
        node = self.nodes[i]
        if node.up or not self.kv_up:
            return
        node.up = True
        node.incarnation += 1
        node.machine = Election(self.params)
        key = self.key
        self.to_node(i, lambda now: node.machine.start(now, key))

    def crash(self, i: int) -> None:
        node = self.nodes[i]
        node.up = False
        node.incarnation += 1
        node.timer_token += 1

    def pause(self, i: int, seconds: float) -> None:
        self.nodes[i].paused_until = max(self.nodes[i].paused_until, self.t + seconds)

    def stop(self, i: int) -> None:
        if self.nodes[i].up:
            self.to_node(i, self.m(i).stop)

    def outage(self, seconds: float) -> None:
        self.kv_up = False
        self.at(self.t + seconds, lambda: setattr(self, "kv_up", True))

    # -- the properties ------------------------------------------------------------------------------------
    def serving(self) -> list[int]:
        out = []
        for i, node in enumerate(self.nodes):
            m = node.machine
            if not node.up:
                continue
            if m.role == "active" and (not self.fencing or m.serving(node.clock(self.t))):
                out.append(i)
        return out

    def check(self) -> None:
        now_serving = self.serving()
        if len(now_serving) > 1:
            epochs = [self.m(i).epoch for i in now_serving]
            raise Violation(f"t={self.t:.3f}: instances {now_serving} serve at once (epochs {epochs})")
        for i in now_serving:
            e = self.m(i).epoch
            if e < self.hi_served:
                raise Violation(f"t={self.t:.3f}: instance {i} serves epoch {e} after epoch {self.hi_served}")
            self.hi_served = e


FAULTS = st.tuples(
    st.floats(0.0, 12.0),
    st.sampled_from(["crash", "restart", "pause", "stop", "outage"]),
    st.integers(0, 2),
    st.floats(0.05, 6.0),
)


def _run(rates: list[float], delays: list[float], faults: list, *, fencing: bool = True) -> World:
    world = World(rates, delays, fencing=fencing)
    for i in range(len(rates)):
        world.at(0.01 * i, lambda i=i: world.start(i))
    for when, kind, who, length in faults:
        i = who % len(rates)
        action = {
            "crash": lambda i=i: world.crash(i),
            "restart": lambda i=i: world.start(i),
            "pause": lambda i=i, s=length: world.pause(i, s),
            "stop": lambda i=i: world.stop(i),
            "outage": lambda s=length: world.outage(s),
        }[kind]
        world.at(when, action)
    world.run_until(15.0)
    return world


RATES_IN_BOUND = st.lists(st.floats(1 - PARAMS.drift, 1 + PARAMS.drift), min_size=2, max_size=3)
DELAYS = st.lists(st.floats(0.0005, 0.3), min_size=1, max_size=20)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rates=RATES_IN_BOUND, delays=DELAYS, faults=st.lists(FAULTS, max_size=8))
def test_no_two_instances_serve_at_once_within_the_drift_bound(
    rates: list[float], delays: list[float], faults: list
) -> None:
    world = _run(rates, delays, faults)
    assert world.granted == sorted(set(world.granted))


def test_someone_serves_when_nothing_goes_wrong() -> None:
    world = _run([1.0, 1.02, 0.97], [0.001, 0.003], [])
    assert len(world.serving()) == 1 and len(world.granted) == 1


def test_standby_takes_over_after_the_active_crashes() -> None:
    world = _run([1.0, 1.0], [0.002], [(3.0, "crash", 0, 0.0)])
    assert world.serving() == [1] and len(world.granted) == 2


def test_graceful_stop_hands_over_without_waiting_for_the_lease() -> None:
    world = World([1.0, 1.0], [0.002])
    world.at(0.0, lambda: world.start(0))
    world.at(0.01, lambda: world.start(1))
    world.run_until(3.0)
    world.stop(0)
    world.run_until(3.05)  # well under the 0.9 s lease: the delete marker lets the standby in at once
    assert world.serving() == [1]


def test_kv_outage_keeps_the_incumbent() -> None:
    """The active stops serving when it cannot renew, and resumes by renewing: no change of leader."""
    world = _run([1.0, 1.0, 1.0], [0.002], [(3.0, "outage", 0, 6.0)])
    assert len(world.granted) == 1 and len(world.serving()) == 1


@pytest.mark.parametrize("fencing", [True, False], ids=["drift-beyond-bound", "no-fencing"])
def test_negative_controls_find_split_brain(fencing: bool) -> None:
    """Clocks 30 % apart (bound 5 %), or no self-fencing: some schedule must break NoOverlap."""
    rates = [0.7, 1.3] if fencing else [1.0, 1.0]
    found = []
    for pause in (0.3, 0.6, 0.8, 1.0, 1.5):
        try:
            _run(rates, [0.002, 0.05, 0.01], [(3.0, "pause", 0, pause)], fencing=fencing)
        except Violation as exc:
            found.append(str(exc))
    assert found and "serve at once" in found[0]


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
