"""SingleActiveService(..., election="quorum") on the real 3-node cluster: the quorum lease (docs/quorum-lease.md)."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from waiting import wait_until_async

from aegis.harness.cluster.local import LocalCluster
from aegis.sdk import wire
from aegis.sdk.config import load_settings
from aegis.sdk.connection import ConnectionPool
from aegis.sdk.errors import NotActive
from aegis.sdk.kv import bucket
from aegis.sdk.quorum_buckets import quorum_leaders, spread_quorum_leaders, step_down
from aegis.sdk.quorum_driver import parse_claim
from aegis.sdk.rpc import CallContext, RpcClient
from aegis.sdk.single_active import SingleActiveService
from aegis.sdk.sticky import StickyClient


def _ledger(name: str, instance_id: str, election: str) -> SingleActiveService:
    svc = SingleActiveService(name, instance_id=instance_id, election=election)  # type: ignore[arg-type]

    @svc.exclusive_rpc("book")
    async def book(req: int, ctx: CallContext) -> str:
        return ctx.instance_id

    return svc


async def _group(pool: ConnectionPool, election: str = "quorum", n: int = 3) -> list[SingleActiveService]:
    name = f"q-{uuid.uuid4().hex[:8]}"
    services = [_ledger(name, f"l{i}", election) for i in range(n)]
    for svc in services:
        await svc.start(pool)
    await wait_until_async(lambda: sum(s.is_active for s in services) == 1, 5, "one active instance")
    return services


def _active(services: list[SingleActiveService]) -> SingleActiveService:
    (active,) = [s for s in services if s.is_active]
    return active


async def test_one_active_holds_its_claim_in_all_three_buckets_and_standbys_name_its_ballot(
    pool: ConnectionPool,
) -> None:
    services = await _group(pool)
    try:
        active = _active(services)
        await asyncio.sleep(0.6)  # a few renewals
        claims = []
        for name in wire.QUORUM_ELECTION_BUCKETS:
            entry = await bucket(pool, name, direct=False).get(active.key)
            claims.append(parse_claim(entry.value or b""))
        assert {(c.holder, c.ballot, c.released) for c in claims if c is not None} == {
            (active.instance_id, active.election.epoch, False)
        }
        assert len([c for c in claims if c is not None]) == 3
        client = RpcClient(pool)
        msg = await client.request(active.name, "book", 1, instance=active.instance_id)
        assert msg.headers[wire.EPOCH_HEADER] == str(active.election.epoch)
        for standby in (s for s in services if s is not active):
            with pytest.raises(NotActive) as err:
                await client.call(active.name, "book", 1, instance=standby.instance_id, timeout=2)
            assert err.value.epoch == active.election.epoch
        assert (
            await StickyClient(pool, election="quorum").call_active(active.name, "book", 7)
            == active.instance_id
        )
    finally:
        for svc in services:
            await svc.stop()


async def test_a_graceful_stop_hands_over_at_once_to_a_higher_ballot(pool: ConnectionPool) -> None:
    services = await _group(pool)
    try:
        old = _active(services)
        ballot = old.election.epoch
        t0 = time.monotonic()
        await old.stop()
        rest = [s for s in services if s is not old]
        await wait_until_async(lambda: sum(s.is_active for s in rest) == 1, 3, "a successor")
        took = time.monotonic() - t0
        new = _active(rest)
        assert new.election.epoch > ballot
        assert took < 0.9, f"handover took {took:.2f}s: the successor waited a lease, not the released claims"
        now = [
            parse_claim((await bucket(pool, b, direct=False).get(old.key)).value or b"")
            for b in wire.QUORUM_ELECTION_BUCKETS
        ]
        assert sum(1 for c in now if c is not None and c.holder == new.instance_id) >= 2
    finally:
        for svc in services:
            await svc.stop()


async def test_a_crash_of_the_node_leading_one_bucket_does_not_fail_the_quorum_lease_over(
    cluster: LocalCluster,
) -> None:
    """The point of the quorum lease. The node that leads one quorum bucket and the single-bucket lease's
    election stream is killed; both groups run side by side on a connection to a node that stays up. The
    single-bucket group loses service while NATS elects a new stream leader (4-9 s: the control that the fault
    was real); the quorum group keeps the same active, serving, the whole time."""
    keep = cluster.nodes[0]
    pool = await ConnectionPool.connect(load_settings(servers=[keep.url]))
    quorum = await _group(pool, "quorum")
    lease = await _group(pool, "lease")
    victim = None
    try:
        placed = await spread_quorum_leaders(pool, timeout=15)
        assert placed.distinct, placed.reason
        leaders = await quorum_leaders(pool)
        victim = next(node for node in leaders.values() if node != keep.name)
        if await asyncio.to_thread(cluster.stream_leader, f"KV_{wire.ELECTION_BUCKET}") != victim:
            move = await step_down(pool, wire.ELECTION_BUCKET, victim, 5)
            assert move.accepted, move.error
        await _wait_leader(cluster, f"KV_{wire.ELECTION_BUCKET}", victim)
        q_active, q_epoch = _active(quorum), _active(quorum).election.epoch
        await asyncio.to_thread(cluster.kill, victim)
        q_gap, l_gap = await _gaps(quorum, lease, seconds=10.0)
        assert l_gap > 1.0, (
            f"the single-bucket lease kept serving ({l_gap:.2f}s gap): the fault stalled nothing"
        )
        assert q_gap == 0.0, f"the quorum lease stopped serving for {q_gap:.2f}s"
        assert _active(quorum) is q_active and q_active.election.epoch == q_epoch
    finally:
        if victim is not None:
            await asyncio.to_thread(cluster.restart, victim)
        for svc in quorum + lease:
            await svc.stop()
        await pool.close()


async def _wait_leader(cluster: LocalCluster, stream: str, node: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while await asyncio.to_thread(cluster.stream_leader, stream) != node:
        assert time.monotonic() < deadline, f"{stream} not led by {node}"
        await asyncio.sleep(0.1)


async def _gaps(
    quorum: list[SingleActiveService], lease: list[SingleActiveService], seconds: float
) -> tuple[float, float]:
    """The longest stretch (sampled every 20 ms) without a serving instance, of each group."""
    gaps = [0.0, 0.0]
    since: list[float | None] = [None, None]
    end = time.monotonic() + seconds
    while (now := time.monotonic()) < end:
        for k, group in enumerate((quorum, lease)):
            serving = any(s.is_active for s in group)
            if serving:
                since[k] = None
            else:
                start = since[k] if since[k] is not None else now
                since[k] = start
                gaps[k] = max(gaps[k], now - start)
        await asyncio.sleep(0.02)
    return gaps[0], gaps[1]


@pytest.mark.parametrize("election", ["lease", "quorum"])
async def test_a_sticky_client_whose_watch_went_silent_finds_the_new_active_by_re_reading(
    pool: ConnectionPool, election: str
) -> None:
    """A watch can stay silent for seconds after a partition (its consumer on the cut node, or being re-created
    without a meta leader): the client's failed attempts on the old active make it re-read the key(s) with direct
    gets. Without the re-read its view would name the stopped instance until the deadline."""
    services = await _group(pool, election, n=2)
    client = StickyClient(pool, election=election)  # type: ignore[arg-type]
    try:
        old = _active(services)
        assert await client.call_active(old.name, "book", 1) == old.instance_id
        (group,) = client._groups.values()
        for watch in group.watches:  # the fault: the client's watch stops delivering
            await watch.unsubscribe()
        await old.stop()
        new = await client.call_active(old.name, "book", 2, timeout=5)
        assert new != old.instance_id and group.view.leader == new
        assert group.view.epoch == _active(services).election.epoch
    finally:
        await client.close()
        for svc in services:
            await svc.stop()


async def test_a_renewal_that_landed_while_a_retry_of_it_was_refused_counts_as_acknowledged(
    pool: ConnectionPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A renewal lands, and a retry of the same message (nats-py resends after a lost answer) is refused on the
    revision the renewal itself created: seen in the partition-quorum campaign's trace, which TLC rejected (in
    the spec a write that lands is acknowledged). The driver tells it from another writer's refusal by the
    message id stored with the record, so the machine takes it as acknowledged: the bucket's send time is this
    renewal's. Scripted (the write is real, the refusal of a retry cannot be caused on demand); later writes to
    that bucket are held back a moment so that no newer renewal moves the send time while the test looks."""
    import aegis.sdk.quorum_driver as qd
    from aegis.sdk.errors import Conflict

    real = qd.kv_write
    scripted: dict[str, object] = {}
    (active,) = await _group(pool, n=1)

    async def landed_then_refused(p, name, key, data, *, revision, **kw):  # noqa: ANN001, ANN202
        if scripted.get("bucket") == name:
            await asyncio.sleep(0.5)
        sent = time.monotonic()
        rev = await real(p, name, key, data, revision=revision, **kw)
        claim = parse_claim(data)
        if "rev" not in scripted and revision and claim is not None and claim.holder == active.instance_id:
            scripted.update(rev=rev, bucket=name, sent=sent)
            raise Conflict(f"wrong last sequence: {rev}", revision=rev)
        return rev

    try:
        monkeypatch.setattr(qd, "kv_write", landed_then_refused)
        await wait_until_async(lambda: "rev" in scripted, 3, "a renewal of the active")
        b = list(wire.QUORUM_ELECTION_BUCKETS).index(scripted["bucket"])
        machine = active.election
        await wait_until_async(
            lambda: machine.held[b] == scripted["rev"], 0.4, "the driver to take the answer"
        )
        # acknowledged: the send time of this renewal (stamped just before the write), not the one before it
        # (a renewal period earlier), which a refusal of a write of ours would have kept
        assert machine.sent[b] >= scripted["sent"] - 0.05  # type: ignore[operator]
        assert active.is_active
    finally:
        await active.stop()
