"""Failover with real processes on the 3-node cluster: kill -9, SIGTERM and SIGSTOP of the active ledger
instance, all instances down, the election stream's leader node killed; and a short ``aegis failover`` run.

Each test runs its own ledger group (unique service name) as ``python -m harness.demo serve-active``
subprocesses, with a sticky client calling back to back and a prober calling every instance directly
(:class:`harness.failover.FailoverRig`). Gaps are printed (and measured for real in ``reports/failover.md``),
not asserted beyond sanity bounds; safety (no split brain, no epoch regression) is asserted.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from harness.checkers import Call, Hit, epoch_regressions, longest_gap, percentile, split_brain
from harness.cluster import LocalCluster
from harness.demo import BookRequest
from harness.failover import FailoverRig
from harness.trace_check import check_trace
from sdk.errors import NotFound, ServiceUnavailable
from sdk.registry import Registry
from sdk.schema import InstanceStatus
from sdk.single_active import ensure_election_bucket
from sdk.sticky import StickyClient
from sdk.trace_events import Action as TraceAction
from sdk.trace_events import TraceWriter

ROOT = Path(__file__).resolve().parent.parent


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
    try:
        first = await rig.wait_new_epoch(at, epoch, timeout=10)
        # keep it paused well past its lease, so it wakes up with a stale view of the world
        await asyncio.sleep(max(0.0, at + max(2.0, 2 * lease) - time.monotonic()))
    finally:
        resumed = rig.signal(victim, signal.SIGCONT)
    assert first is not None and first.instance != victim
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
    finally:
        await asyncio.to_thread(cluster.restart, leader)
    assert recovered, "the sticky calls did not recover within 40 s of the stream leader's kill"
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
    assert "failover p50" in (tmp_path / "failover.md").read_text()
