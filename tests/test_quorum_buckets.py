"""The quorum lease's three election buckets (aegis/sdk/quorum_buckets.py) on real nats-server clusters: their
stream configuration as the server reads it back, and their stream leaders spread over three nodes by step-downs
with a preferred node (the session's 3-node cluster; a 1-node cluster of this module's own for the cases where it
cannot be done)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from nats.errors import TimeoutError as NatsTimeoutError
from waiting import wait_until_async

from aegis.harness.cluster.local import LocalCluster, node_tag
from aegis.sdk import wire
from aegis.sdk.config import load_settings
from aegis.sdk.connection import ConnectionPool
from aegis.sdk.kv import bucket, kv_write
from aegis.sdk.quorum_buckets import (
    BUCKETS,
    Placement,
    QuorumPlacementKeeper,
    ensure_quorum_buckets,
    leaders_distinct,
    plan_moves,
    quorum_leaders,
    spread_quorum_leaders,
    step_down,
    stream_name,
)


async def _stream_info(pool: ConnectionPool, name: str, timeout: float = 5.0) -> dict[str, Any]:
    """``STREAM.INFO`` as the server answers it (raw JSON, no client defaults in between)."""
    msg = await pool.next().request(f"$JS.API.STREAM.INFO.{name}", b"", timeout=timeout)
    info: dict[str, Any] = json.loads(msg.data)
    assert "error" not in info, info
    return info


async def _server_leaders(pool: ConnectionPool) -> dict[str, str | None]:
    """Each bucket's stream leader as STREAM.INFO names it; None while a stream has none (no answer: while a
    stream elects a leader, nobody may answer its STREAM.INFO)."""
    out: dict[str, str | None] = {}
    for b in BUCKETS:
        try:
            out[b] = (await _stream_info(pool, stream_name(b), timeout=1.0))["cluster"].get("leader")
        except NatsTimeoutError:
            out[b] = None
    return out


async def _pile_up(pool: ConnectionPool) -> str:
    """Put every bucket's stream leader on the node that leads the first bucket (step-downs preferring it); that
    node's name, once STREAM.INFO shows all three there."""
    leaders = await _server_leaders(pool)
    target = leaders[BUCKETS[0]]
    for b in BUCKETS[1:]:
        if leaders[b] != target:
            move = await step_down(pool, b, target, 5.0)
            assert move.accepted, move

    async def piled() -> bool:
        return set((await _server_leaders(pool)).values()) == {target}

    await wait_until_async(piled, 15, f"all three stream leaders on {target}", step=0.1)
    return target


async def test_buckets_have_history_1_and_no_ttl_markers_or_max_age(pool: ConnectionPool) -> None:
    await ensure_quorum_buckets(pool)
    assert BUCKETS == tuple(wire.QUORUM_ELECTION_BUCKETS)
    for b in BUCKETS:
        info = await _stream_info(pool, f"KV_{b}")
        cfg = info["config"]
        assert cfg["subjects"] == [f"$KV.{b}.>"]
        assert cfg["max_msgs_per_subject"] == 1
        assert cfg["num_replicas"] == 3
        assert cfg.get("allow_msg_ttl", False) is False
        assert not cfg.get("subject_delete_marker_ttl")
        assert cfg.get("max_age", 0) == 0
        assert cfg["deny_delete"] is True
        assert cfg["discard"] == "new"
        assert {r["name"] for r in info["cluster"]["replicas"]} | {info["cluster"]["leader"]} == {
            "n1",
            "n2",
            "n3",
        }


async def test_a_key_written_with_a_ttl_is_refused(pool: ConnectionPool) -> None:
    """No per-key TTL: the server itself refuses a write that asks for one."""
    await ensure_quorum_buckets(pool)
    with pytest.raises(Exception, match=r"(?i)ttl"):
        await kv_write(pool, BUCKETS[0], "leader.ttl-probe.g", b"x", revision=None, ttl_s=5, timeout=3)


async def test_ensure_is_idempotent_and_keeps_the_streams(
    pool: ConnectionPool, connect_pool: Callable[..., Any]
) -> None:
    await ensure_quorum_buckets(pool)
    rev = await kv_write(pool, BUCKETS[1], "leader.idem.g", b"kept", revision=None)
    created = {b: (await _stream_info(pool, stream_name(b)))["created"] for b in BUCKETS}
    await ensure_quorum_buckets(pool)  # cached for this pool
    other = await connect_pool()
    await asyncio.gather(
        ensure_quorum_buckets(other), ensure_quorum_buckets(other)
    )  # a fresh pool: the server path
    assert {b: (await _stream_info(pool, stream_name(b)))["created"] for b in BUCKETS} == created
    entry = await bucket(pool, BUCKETS[1], direct=False).get("leader.idem.g")
    assert (entry.value, entry.revision) == (b"kept", rev)


async def test_spread_moves_piled_up_leaders_onto_three_nodes(pool: ConnectionPool) -> None:
    await ensure_quorum_buckets(pool)
    target = await _pile_up(pool)
    assert await quorum_leaders(pool) == dict.fromkeys(BUCKETS, target)

    report = await spread_quorum_leaders(pool, timeout=15.0)

    assert report.distinct, report
    assert report.reason is None
    assert report.leaders_before == dict.fromkeys(BUCKETS, target)
    assert leaders_distinct(report.leaders_after)
    assert set(report.leaders_after.values()) == {"n1", "n2", "n3"}
    assert report.leaders_after == await _server_leaders(pool) == await quorum_leaders(pool)
    # fewest moves: one bucket stays on the node, the other two go to the nodes that led nothing
    assert len(report.moves) == 2 and all(m.accepted and m.from_node == target for m in report.moves)
    assert {m.preferred for m in report.moves} == {"n1", "n2", "n3"} - {target}
    assert all(report.leaders_after[m.bucket] == m.preferred for m in report.moves)
    assert report.rounds == 1

    again = await spread_quorum_leaders(pool, timeout=5.0)  # already spread: nothing to do
    assert again.distinct and again.moves == () and again.rounds == 0
    assert again.leaders_before == again.leaders_after == report.leaders_after


async def test_spread_moves_only_the_bucket_that_shares_a_node(pool: ConnectionPool) -> None:
    await ensure_quorum_buckets(pool)
    if not leaders_distinct(await quorum_leaders(pool)):
        assert (await spread_quorum_leaders(pool, timeout=15.0)).distinct
    leaders = await _server_leaders(pool)
    q0, q1, q2 = BUCKETS
    move = await step_down(pool, q1, leaders[q0], 5.0)  # q1 onto q0's node: q1's old node now leads nothing
    assert move.accepted, move

    async def shared() -> bool:
        return (await _server_leaders(pool))[q1] == leaders[q0]

    await wait_until_async(shared, 15, f"{q1} led by {leaders[q0]}", step=0.1)

    report = await spread_quorum_leaders(pool, timeout=15.0)
    assert report.distinct, report
    assert [m.bucket for m in report.moves] in ([q0], [q1])
    (m,) = report.moves
    assert m.preferred == leaders[q1]  # the one node that led none of the others
    assert report.leaders_after == await _server_leaders(pool)


async def test_a_step_down_the_server_cannot_honour_is_reported_refused(pool: ConnectionPool) -> None:
    await ensure_quorum_buckets(pool)
    leader = (await _server_leaders(pool))[BUCKETS[2]]
    same = await step_down(pool, BUCKETS[2], leader, 5.0)
    assert not same.accepted and same.error is not None
    assert "already leader" in same.error and "10005" in same.error
    unknown = await step_down(pool, BUCKETS[2], "no-such-node", 5.0)
    assert not unknown.accepted and unknown.error is not None and "not known" in unknown.error
    assert (await _server_leaders(pool))[BUCKETS[2]] == leader  # refused: nothing moved


def _p(bucket_name: str, leader: str | None, *peers: str) -> Placement:
    return Placement(bucket=bucket_name, leader=leader, peers=frozenset(peers), current=frozenset(peers))


def test_plan_moves_as_few_leaders_as_possible_to_nodes_that_lead_nothing() -> None:
    q0, q1, q2 = BUCKETS
    abc = ("a", "b", "c")
    assert plan_moves({q0: _p(q0, "a", *abc), q1: _p(q1, "b", *abc), q2: _p(q2, "c", *abc)}) == ({}, None)
    shared = {q0: _p(q0, "a", *abc), q1: _p(q1, "a", *abc), q2: _p(q2, "c", *abc)}
    assert plan_moves(shared) == ({q1: "b"}, None)
    # a caught-up peer goes before one that lags: q0 to c, not to b (which the name alone would pick)
    lagging = Placement(bucket=q0, leader="a", peers=frozenset(abc), current=frozenset({"a", "c"}))
    assert plan_moves({q0: lagging, q1: _p(q1, "a", "a"), q2: _p(q2, "d", "d")}) == ({q0: "c"}, None)
    assert plan_moves({q0: _p(q0, "a", *abc), q1: _p(q1, "a", "a"), q2: _p(q2, "d", "d")}) == (
        {q0: "b"},
        None,
    )
    targets, why = plan_moves({b: _p(b, "a", *abc) for b in BUCKETS})
    assert why is None and len(targets) == 2 and set(targets.values()) == {"b", "c"}
    # a target must be a peer of its own stream: q1 can only go to d
    assert plan_moves({q0: _p(q0, "a", "a", "b"), q1: _p(q1, "a", "a", "d"), q2: _p(q2, "b", *abc)}) == (
        {q1: "d"},
        None,
    )


def test_plan_moves_says_why_no_distinct_placement_exists() -> None:
    q0, q1, q2 = BUCKETS
    targets, why = plan_moves({b: _p(b, "a", "a", "b") for b in BUCKETS})
    assert targets == {} and why is not None and "fewer than 3 nodes" in why
    # three nodes hold replicas, but q0 and q1 can both be led by a only
    targets, why = plan_moves({q0: _p(q0, "a", "a"), q1: _p(q1, "a", "a"), q2: _p(q2, "b", "b", "c")})
    assert targets == {} and why is not None and "no placement" in why
    targets, why = plan_moves({q0: _p(q0, None), q1: _p(q1, "a", "a"), q2: _p(q2, "a", "a")})
    assert targets == {} and why is not None and "no stream leader" in why and q0 in why


async def test_keeper_spreads_leaders_that_pile_up(pool: ConnectionPool) -> None:
    await ensure_quorum_buckets(pool)
    target = await _pile_up(pool)
    keeper = QuorumPlacementKeeper()
    await keeper.start(pool, interval_s=0.2)
    try:
        with pytest.raises(RuntimeError):
            await keeper.start(pool)

        async def spread() -> bool:
            return leaders_distinct(await _server_leaders(pool))

        async def reported() -> bool:
            return keeper.last_report is not None and keeper.last_report.distinct and await spread()

        await wait_until_async(reported, 20, "the keeper to spread the piled-up leaders", step=0.1)
        first = keeper.last_report
        assert first is not None
        assert first.leaders_before == dict.fromkeys(BUCKETS, target)
        assert first.leaders_after == await _server_leaders(pool)

        # while it runs: q1 onto q0's node; the keeper sees it at its next check and moves one of them away
        q0, q1, _ = BUCKETS
        leaders = first.leaders_after
        move = await step_down(pool, q1, leaders[q0], 5.0)
        assert move.accepted, move

        async def spread_again() -> bool:
            report = keeper.last_report
            return report is not first and report is not None and report.distinct and await spread()

        await wait_until_async(spread_again, 20, "the keeper to spread the leaders again", step=0.1)
        again = keeper.last_report
        assert again is not None and again.leaders_before[q1] == again.leaders_before[q0] == leaders[q0]
    finally:
        await keeper.stop()
    assert not keeper.running
    await keeper.stop()  # idempotent


# --------------------------------------------------------------------------------------------------
# One node: the leaders cannot be spread
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def single_node() -> Iterator[LocalCluster]:
    with LocalCluster(1, name="quorum-one") as c:
        yield c


@pytest.fixture
async def single_pool(single_node: LocalCluster) -> AsyncIterator[ConnectionPool]:
    p = await ConnectionPool.connect(load_settings(servers=single_node.urls))
    try:
        yield p
    finally:
        await p.close()


async def test_one_node_reports_not_distinct_with_a_reason(single_pool: ConnectionPool) -> None:
    await ensure_quorum_buckets(single_pool)
    for b in BUCKETS:
        cfg = (await _stream_info(single_pool, stream_name(b)))["config"]
        assert cfg["num_replicas"] == 1 and cfg["max_msgs_per_subject"] == 1
    report = await spread_quorum_leaders(single_pool, timeout=3.0)
    assert not report.distinct
    assert report.reason is not None and "fewer than 3 nodes" in report.reason
    assert report.moves == () and report.rounds == 0
    assert report.leaders_before == report.leaders_after == dict.fromkeys(BUCKETS, "n1")
    refused = await step_down(single_pool, BUCKETS[0], "n1", 3.0)
    assert (
        not refused.accepted and refused.error is not None and "10010" in refused.error
    )  # clustering required


async def test_keeper_warns_once_when_it_cannot_spread(
    single_pool: ConnectionPool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="aegis.sdk.quorum_buckets")
    keeper = QuorumPlacementKeeper(spread_timeout_s=1.0)
    await keeper.start(single_pool, interval_s=0.05)
    try:
        await wait_until_async(lambda: keeper.checks >= 4, 10, "four checks of the keeper")
    finally:
        await keeper.stop()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "fewer than 3 nodes" in warnings[0].getMessage()
    assert keeper.last_report is not None and not keeper.last_report.distinct


# --- pinned R1 buckets (rule 9's other layout) ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def tagged() -> Iterator[LocalCluster]:
    with LocalCluster(3, name="quorum-pinned", node_tags=True) as c:
        yield c


async def test_pinned_buckets_have_one_replica_each_on_their_tagged_node(tagged: LocalCluster) -> None:
    tags = [node_tag(n.name) for n in tagged.nodes]
    pinned = await ConnectionPool.connect(load_settings(servers=tagged.urls, quorum_bucket_tags=tags))
    # an instance without the setting (and no replicas asked for) must keep the layout it finds, not undo it
    plain = await ConnectionPool.connect(load_settings(servers=tagged.urls))
    try:
        await ensure_quorum_buckets(pinned)
        await ensure_quorum_buckets(plain)
        for k, b in enumerate(BUCKETS):
            info = await _stream_info(plain, stream_name(b))
            assert info["config"]["num_replicas"] == 1
            assert info["config"]["placement"]["tags"] == [tags[k]]
            assert info["cluster"]["leader"] == tagged.nodes[k].name
        # a pinned bucket takes writes like any other
        assert await kv_write(plain, BUCKETS[2], "leader.pinned.g", b"v", revision=None) >= 1
        assert leaders_distinct(await quorum_leaders(plain))
    finally:
        await pinned.close()
        await plain.close()


async def test_pinned_tags_must_be_three_different_ones(tagged: LocalCluster) -> None:
    pool = await ConnectionPool.connect(load_settings(servers=tagged.urls))
    try:
        for bad in (["node:n1", "node:n2"], ["node:n1", "node:n1", "node:n2"]):
            with pytest.raises(ValueError, match="three|3 different"):
                await ensure_quorum_buckets(pool, tags=bad)
    finally:
        await pool.close()
