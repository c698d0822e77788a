"""Failover with real processes on the 3-node cluster: kill -9, SIGTERM and SIGSTOP of the active ledger
instance, all instances down, the election stream's leader node killed; and a short ``aegis failover`` run.

Each test runs its own ledger group (unique service name) as ``python -m aegis.harness.demo serve-active``
subprocesses, with a sticky client calling back to back and a prober calling every instance directly
(:class:`aegis.harness.campaign.failover.FailoverRig`). Gaps are printed (and measured for real in ``reports/failover.md``),
not asserted beyond sanity bounds; safety (no split brain, no epoch regression) is asserted.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aegis.harness.campaign.checkers import epoch_regressions, longest_gap, split_brain
from aegis.harness.campaign.history import Call, Hit
from aegis.harness.campaign.rig import FailoverRig
from aegis.harness.cluster.local import LocalCluster
from aegis.harness.demo.services import BookRequest
from aegis.sdk.errors import NotFound, ServiceUnavailable
from aegis.sdk.kv_types import KeyState
from aegis.sdk.registry import Registry
from aegis.sdk.schema import InstanceStatus
from aegis.sdk.single_active import ensure_election_bucket
from aegis.sdk.sticky import StickyClient
from aegis.sdk.trace_events import Action as TraceAction
from aegis.sdk.trace_events import TraceWriter
from aegis.spec.trace_check import check_trace
from aegis.stats import percentile

ROOT = Path(__file__).resolve().parent.parent
UNFENCED = "tests.unfenced_instance"
"""The test-only instance program whose instances never stop serving once active (negative control)."""


@pytest.fixture
async def rig(nats_urls: list[str], tmp_path: Path) -> AsyncIterator[FailoverRig]:
    async with FailoverRig(nats_urls, service=f"ledger-{uuid.uuid4().hex[:8]}", log_dir=tmp_path) as r:
        yield r


def _assert_safe(rig: FailoverRig) -> dict:
    summary = rig.summary()
    assert summary["split_brain"] == 0, summary["split_brain_examples"]
    assert summary["epoch_regressions"] == 0
    assert summary["probe_successes"] > 0
    return summary


def test_the_detectors_flag_what_they_should_and_nothing_else() -> None:
    """Negative controls for the measurement: an old epoch answering after a newer one came back is split
    brain; requests merely in flight across the handover are not."""
    hits = [
        Hit(0.000, 0.001, "L1", 5),
        Hit(1.000, 1.001, "L2", 7),  # the new epoch answers first at 1.001
        Hit(0.9995, 1.004, "L1", 5),  # sent before that: overlap in flight, allowed
        Hit(1.002, 1.003, "L1", 5),  # sent after the new epoch answered: split brain
        Hit(1.010, 1.011, "L2", 7),
    ]
    assert [(old.sent, new.epoch) for old, new in split_brain(hits)] == [(1.002, 7)]
    assert split_brain([h for h in hits if h.sent != 1.002]) == []
    calls = [
        Call(0, 1, True, "L1", 5),
        Call(1, 2, True, "L2", 7),
        Call(2, 3, False),
        Call(3, 4, True, "L1", 5),
    ]
    assert epoch_regressions(calls) == 1 and epoch_regressions(calls[:3]) == 0
    assert longest_gap(calls, 0.5, 6.0) == 2.0  # 2 -> 4; then 4 -> 6
    assert percentile([0.1 * i for i in range(1, 11)], 50) == 0.5
    assert percentile([0.1 * i for i in range(1, 11)], 99) == 1.0 and percentile([], 50) is None


def _brute_split_brain(hits: list[Hit]) -> list[tuple[int, float]]:
    """The definition, spelt out in O(n^2): (index of the old hit, receive time of the earliest success of any
    newer epoch) for every hit sent after that success came back."""
    out = []
    for i, h in enumerate(hits):
        newer = [x.received for x in hits if x.epoch > h.epoch]
        if newer and h.sent > min(newer):
            out.append((i, min(newer)))
    return out


def test_split_brain_with_overlapping_probes_and_admission_epochs() -> None:
    """Probes are concurrent and recorded in completion order; each success proves its admission epoch was
    served somewhere in [sent, received]. Only a success *sent* after a newer epoch's success *came back* is
    proof of two actives; anything that overlaps in flight is not."""
    # completion order, not send order: a slow probe of the old active comes back last
    hits = [
        Hit(1.000, 1.002, "L2", 7),  # the new epoch's first success comes back at 1.002
        Hit(0.990, 1.050, "L1", 5),  # sent before 1.002, answered late: in flight across the handover
        Hit(1.002, 1.003, "L1", 5),  # sent exactly when 1.002 came back: order unproven, not flagged
        Hit(1.010, 1.011, "L2", 7),
        Hit(1.0021, 1.060, "L1", 5),  # sent after: split brain, however late its answer came
    ]
    pairs = split_brain(hits)
    assert [(old.sent, new.received) for old, new in pairs] == [(1.0021, 1.002)]
    assert split_brain(hits[:4]) == []
    # the earliest success of ANY newer epoch counts, not only the next epoch's
    three = [
        Hit(0.0, 0.01, "L1", 3),
        Hit(1.5, 1.51, "L3", 9),  # epoch 9 served first
        Hit(2.0, 2.01, "L2", 5),  # epoch 5 served after 9 had: split brain against 9
        Hit(1.6, 1.61, "L1", 3),  # epoch 3 after 9 had: split brain against 9 (5 had not served yet)
        Hit(2.5, 2.51, "L3", 9),
    ]
    assert sorted((old.epoch, new.epoch) for old, new in split_brain(three)) == [(3, 9), (5, 9)]
    assert split_brain([]) == [] and split_brain([Hit(0, 1, "L1", 4), Hit(5, 6, "L1", 4)]) == []
    # the same epoch answering from two probes that overlap is one active, not two
    assert split_brain([Hit(0.0, 0.5, "L1", 4), Hit(0.1, 0.2, "L1", 4), Hit(0.3, 0.31, "L1", 4)]) == []

    rng = random.Random(7)
    flagged = clean = 0
    for _ in range(300):
        # epochs 2 < 5 < 9 < 11 hand over at random times; an epoch's probes are sent while it serves, and
        # (sometimes) for a while after its successor took over: the overlap the checker must find
        handovers = sorted(rng.uniform(0, 5) for _ in range(3))
        bounds = list(zip([0.0, *handovers], [*handovers, 5.0], strict=True))
        hits = []
        for epoch, (begin, end) in zip([2, 5, 9, 11], bounds, strict=True):
            late = rng.choice([0.0, 0.0, 0.0, rng.uniform(0, 0.3)])
            for _ in range(rng.randint(0, 12)):
                sent = rng.uniform(begin, end + late)
                hits.append(Hit(sent, sent + rng.expovariate(50), "L1", epoch))
        rng.shuffle(hits)  # any completion order
        got = [
            (next(i for i, x in enumerate(hits) if x is old), new.received) for old, new in split_brain(hits)
        ]
        assert sorted(got) == _brute_split_brain(hits)
        flagged += bool(got)
        clean += not got
    assert flagged >= 20 and clean >= 100  # both outcomes were exercised


def test_the_unfenced_election_of_the_negative_control_ignores_its_deadline_and_lost_writes() -> None:
    """The test-only election must really be unfenced (else the negative control proves nothing), and only
    through ``serving()``: it still loses its compare-and-set like the SDK's."""
    from unfenced_instance import UnfencedElection

    from aegis.sdk.election import Election, Write

    for cls, unfenced in ((Election, False), (UnfencedElection, True)):
        m = cls()
        [w] = [a for a in m.start(0.0, KeyState(0, "none")) if isinstance(a, Write) or hasattr(a, "req")]
        m.read_done(0.0, KeyState(0, "none"), w.req)
        acquire = m.request
        assert acquire is not None and acquire.op == "acquire"
        m.write_ok(0.01, 7, acquire.id)
        assert m.serving(0.02) and m.epoch == 7
        assert m.serving(5.0) is unfenced  # long past its window (a pause)
        m.tick(5.0)
        renew = m.request
        assert renew is not None and renew.op == "renew"
        m.write_failed(5.01, KeyState(9, "val"), renew.id)  # the successor holds the key
        assert m.role == "standby"
        assert m.serving(5.02) is unfenced and m.may_reply(5.02, 7) is unfenced


async def test_kill_9_of_the_active_fails_over_to_a_new_epoch(rig: FailoverRig) -> None:
    await asyncio.sleep(0.5)  # some calls and probes before the fault
    victim, epoch = await rig.active()
    at = rig.kill(victim)
    first = await rig.wait_new_epoch(at, epoch, timeout=10)
    assert first is not None, "no reply from a new epoch within 10 s of kill -9"
    assert first.instance != victim and first.epoch > epoch
    gap = first.received - at
    await asyncio.sleep(0.5)
    summary = _assert_safe(rig)
    print(
        f"\nkill -9 of {victim} (epoch {epoch}): {first.instance} answered in epoch {first.epoch}"
        f" after {gap * 1000:.0f} ms; {summary['calls']} calls, {summary['failed_calls']} failed"
    )
    assert gap < 5


async def test_graceful_stop_of_the_active_hands_over_at_once(rig: FailoverRig) -> None:
    await asyncio.sleep(0.3)
    victim, epoch = await rig.active()
    at = rig.signal(victim, signal.SIGTERM)
    first = await rig.wait_new_epoch(at, epoch, timeout=10)
    assert first is not None, "no reply from a new epoch within 10 s of SIGTERM"
    assert first.instance != victim
    assert await rig.wait_exit(victim) == 0  # it stopped gracefully (released the key), not by a timeout
    gap = first.received - at
    await asyncio.sleep(0.3)
    summary = _assert_safe(rig)
    print(
        f"\ngraceful stop of {victim} (epoch {epoch}): {first.instance} answered in epoch {first.epoch}"
        f" after {gap * 1000:.1f} ms; {summary['failed_calls']} failed calls"
    )
    assert summary["failed_calls"] == 0
    assert gap < 5


async def test_paused_active_never_answers_after_its_successor(rig: FailoverRig) -> None:
    await asyncio.sleep(0.3)
    victim, epoch = await rig.active()
    lease = rig.params.election.lease_s
    at = rig.signal(victim, signal.SIGSTOP)
    sent_before = rig.probes_sent[victim]
    try:
        first = await rig.wait_new_epoch(at, epoch, timeout=10)
        # keep it paused well past its lease, so it wakes up with a stale view of the world
        await asyncio.sleep(max(0.0, at + max(2.0, 2 * lease) - time.monotonic()))
    finally:
        resumed = rig.signal(victim, signal.SIGCONT)
    assert first is not None and first.instance != victim
    # The prober did not wait for the paused instance's probes to time out (0.2 s each) before sending the
    # next ones: nominally one per node every probe_interval_s (300 in 2 s); a blocking prober sends 10.
    sent_paused = rig.probes_sent[victim] - sent_before
    assert sent_paused >= 60, sent_paused
    # after SIGCONT it is a standby: it answers the prober with NotActive, and the registry says so
    assert await rig.wait_standby(victim, resumed, timeout=5), (
        f"{victim} did not answer NotActive after SIGCONT"
    )
    reg = Registry(rig.pool)
    status = None
    for _ in range(50):
        try:
            status = (await reg.get_instance(rig.service, victim)).status
        except NotFound:
            status = None
        if status is InstanceStatus.STANDBY:
            break
        await asyncio.sleep(0.1)
    assert status is InstanceStatus.STANDBY
    await asyncio.sleep(0.5)
    _assert_safe(rig)
    # the same check spelt out for the victim: nothing from its old epoch sent after the new epoch answered
    new_served = min(h.received for h in rig.hits if h.epoch > epoch)
    late = [h for h in rig.hits if h.instance == victim and h.epoch <= epoch and h.sent > new_served]
    assert late == []
    old_hits = [h for h in rig.hits if h.epoch == epoch]
    print(
        f"\nSIGSTOP of {victim} (epoch {epoch}) for {resumed - at:.1f} s: {first.instance} answered in epoch"
        f" {first.epoch} after {(first.received - at) * 1000:.0f} ms; old epoch's last probe answer"
        f" {(max(h.received for h in old_hits) - at) * 1000:.0f} ms after the pause; standby after SIGCONT"
    )


async def test_the_prober_probes_every_instance_through_every_node(
    rig: FailoverRig, nats_urls: list[str]
) -> None:
    """One connection pinned to each node of the cluster, each instance probed through each of them."""
    await asyncio.sleep(1.0)
    assert sorted(lk.url for lk in rig._links) == sorted(nats_urls)
    for lk in rig._links:
        assert not lk.off_node() and lk.pool.connected_urls[0].endswith(lk.url.rpartition(":")[2])
    active, _ = await rig.active()
    assert {h.node for h in rig.hits if h.instance == active} == set(nats_urls)
    assert {h.instance for h in rig.hits} == {active}  # standbys answer NotActive, never a success
    assert all(t > 0 for t in rig.not_active_at.values()) and set(rig.not_active_at) == set(rig.instances) - {
        active
    }
    print(f"\nprober: {dict(rig.probes_sent)} probes sent, {len(rig.hits)} successes in ~1.3 s")


async def test_an_unfenced_paused_active_is_caught_as_split_brain(
    nats_urls: list[str], tmp_path: Path
) -> None:
    """Negative control on real processes: the same pause as above, with instances whose election never stops
    serving once active (tests/unfenced_instance.py). Woken up, the deposed active answers under its old epoch
    after its successor served: the prober and the checker must report it."""
    service = f"ledger-{uuid.uuid4().hex[:8]}"
    async with FailoverRig(nats_urls, service=service, log_dir=tmp_path, instance_module=UNFENCED) as rig:
        await asyncio.sleep(0.3)
        victim, epoch = await rig.active()
        at = rig.signal(victim, signal.SIGSTOP)
        try:
            first = await rig.wait_new_epoch(at, epoch, timeout=10)
            await asyncio.sleep(max(0.0, at + 2.0 - time.monotonic()))
        finally:
            resumed = rig.signal(victim, signal.SIGCONT)
        await asyncio.sleep(0.5)
        summary = rig.summary()
    assert first is not None and first.instance != victim
    pairs = split_brain(rig.hits)  # the probes in flight at close may have added some since the summary
    assert summary["split_brain"] > 0 and len(pairs) >= summary["split_brain"]
    assert {(old.instance, old.epoch) for old, _ in pairs} == {(victim, epoch)}
    assert all(new.epoch > epoch and new.instance != victim for _, new in pairs)
    assert any(old.sent > resumed for old, _ in pairs)  # it went on serving after SIGCONT
    overlap = max(old.sent for old, _ in pairs) - min(new.received for _, new in pairs)
    print(
        f"\nunfenced SIGSTOP of {victim} (epoch {epoch}) for {resumed - at:.1f} s: split brain {len(pairs)}"
        f" (old epoch served at least {overlap * 1000:.0f} ms after epoch {first.epoch} had)"
    )


async def test_all_instances_down_raises_service_unavailable_at_the_deadline(rig: FailoverRig) -> None:
    victim, _ = await rig.active()
    for name in rig.instances:
        rig.kill(name)
    client = StickyClient(rig.pool, attempt_timeout_s=0.25)
    started = time.monotonic()
    with pytest.raises(ServiceUnavailable) as exc:
        await client.call_active(rig.service, "book", BookRequest(ref="x"), timeout=1.0)
    took = time.monotonic() - started
    await client.close()
    message = exc.value.message
    print(f"\nall down: ServiceUnavailable after {took * 1000:.0f} ms: {message}")
    # Not before the deadline (1 s); each attempt is capped by the time left, so what comes after the
    # deadline is scheduling of a loaded machine: 0.6 s of slack for it.
    assert 0.95 <= took <= 1.6
    assert rig.service in message and "tried" in message
    assert f"{victim}: NoResponders" in message  # the key still names the last active: it was tried


async def test_election_stream_leader_killed_no_split_brain(rig: FailoverRig, cluster: LocalCluster) -> None:
    await ensure_election_bucket(rig.pool)
    leader = await asyncio.to_thread(cluster.stream_leader, "KV_aegis_election")
    assert leader is not None
    await asyncio.sleep(0.3)
    victim, epoch = await rig.active()
    at = time.monotonic()
    await asyncio.to_thread(cluster.kill, leader)
    try:
        recovered = await rig.wait_recovered(at, min_s=3.0, steady_s=1.5, timeout=40)
        gap = longest_gap(rig.calls, at, time.monotonic())
        after, after_epoch = await rig.active(timeout=5)
        moved = {lk.url: lk.pool.connected_urls[0] for lk in rig._links if lk.off_node()}
    finally:
        await asyncio.to_thread(cluster.restart, leader)
    back = time.monotonic()
    assert recovered, "the sticky calls did not recover within 40 s of the stream leader's kill"
    # The prober's connection to the killed node failed over to another node; it is pinned back to its own
    # node once that runs again, and probes through it succeed again (the next fault is seen from every node).
    url = next(n.url for n in cluster.nodes if n.name == leader)
    link = next(lk for lk in rig._links if lk.url == url)
    for _ in range(200):  # up to 20 s
        if any(h.node == url and h.sent > back for h in rig.hits):
            break
        await asyncio.sleep(0.1)
    assert not link.off_node() and any(h.node == url and h.sent > back for h in rig.hits), (url, moved)
    print(f"\nprober connection to {leader} while it was down: {moved or 'reconnecting'}; pinned back")
    summary = _assert_safe(rig)
    failed = [c for c in rig.calls if not c.ok and c.sent >= at]
    print(
        f"\nKV stream leader {leader} killed: longest gap without a sticky reply {gap * 1000:.0f} ms;"
        f" active {victim}/{epoch} -> {after}/{after_epoch}; {len(failed)} failed calls;"
        f" epochs seen {summary['epochs_seen'][-3:]}"
    )
    assert split_brain(rig.hits) == []


async def test_a_real_failover_trace_is_a_behaviour_of_the_spec(nats_urls: list[str], tmp_path: Path) -> None:
    """Three real instances write the spec's trace; the rig adds the kill -9. TLC accepts the merged trace of
    the failover, and rejects the same trace with the crash taken out and the victim serving after its
    successor (so the check can fail on this very trace)."""
    traces = tmp_path / "traces"
    traces.mkdir()
    service = f"ledger-{uuid.uuid4().hex[:8]}"
    async with FailoverRig(nats_urls, service=service, log_dir=tmp_path, trace_dir=traces) as rig:
        await asyncio.sleep(0.3)
        victim, epoch = await rig.active()
        at = rig.kill(victim)
        first = await rig.wait_new_epoch(at, epoch, timeout=10)
        assert first is not None, "no reply from a new epoch within 10 s of kill -9"
        await asyncio.sleep(0.2)
    trace = rig.trace(tmp_path / "failover.ndjson")
    actions = Counter(e.action for e in trace.events)
    assert actions[TraceAction.CRASH] == 1 and actions[TraceAction.ACQUIRE] >= 2, actions
    assert actions[TraceAction.RELEASE] >= 1 and actions[TraceAction.SERVE] >= 2, actions
    verdict = await asyncio.to_thread(check_trace, tmp_path / "failover.ndjson")
    print(f"\nfailover trace: {verdict.summary()}")
    assert verdict.accepted, verdict.summary()

    # Tampered: the victim was not killed, and answers with its old epoch just after its successor served.
    events = [e for e in trace.events if e.action != TraceAction.CRASH]
    new_serve = next(
        i for i, e in enumerate(events) if e.action == TraceAction.SERVE and e.epoch == first.epoch
    )
    last = max((e for e in events[:new_serve] if e.instance == victim), key=lambda e: e.wall)
    late = events[new_serve].wall + 0.001
    stale = last.model_copy(
        update={
            "action": TraceAction.SERVE,
            "epoch": epoch,
            "rev": 0,
            "op": None,
            "kind": None,
            "wall": late,
            "local": last.local + (late - last.wall),
        }
    )
    events.insert(new_serve + 1, stale)
    tampered = tmp_path / "tampered.ndjson"
    with TraceWriter(tampered, params=trace.params) as writer:
        for e in events:
            writer.write(e)
    bad = await asyncio.to_thread(check_trace, tampered)
    assert not bad.accepted and bad.first_bad_event == stale, bad.summary()


@pytest.mark.slow
def test_failover_cli_json_prints_the_contract_keys(tmp_path: Path) -> None:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "aegis.cli",
            "failover",
            "--kills",
            "2",
            "--graceful",
            "1",
            "--json",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    for key in ("kills", "failover_p50_s", "failover_p99_s", "graceful_p99_s", "split_brain"):
        assert key in report, key
    assert report["kills"] == 2 and report["graceful_stops"] == 1
    assert report["split_brain"] == 0 and report["epoch_regressions"] == 0
    assert len(report["faults"]) == 3 and all(f["gap_s"] is not None for f in report["faults"])
    assert 0 < report["failover_p50_s"] <= report["failover_p99_s"] < 5
    print(
        f"\naegis failover --kills 2 --graceful 1: p50 {report['failover_p50_s']} s,"
        f" p99 {report['failover_p99_s']} s, graceful p99 {report['graceful_p99_s']} s,"
        f" took {report['took_s']} s"
    )
    assert (tmp_path / "failover.json").is_file()
    assert "| failover (kill -9) | p50 " in (tmp_path / "failover.md").read_text()
