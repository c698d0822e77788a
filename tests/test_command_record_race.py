"""The commands bucket keeps a stored outcome through a stream leader's isolation, on a real 3-node cluster
with a real nftables cut.

The defect this holds off (found by the ``mixed`` campaign, reproduced here deterministically): a worker on
the stream leader's node claims a call id and stores its outcome just after the leader is cut from the
other nodes. The outcome write waits, in flight, for a quorum. Meanwhile the claim's per-key TTL ends on the
isolated leader. With subject delete markers on the bucket, the leader then proposes an expiry marker,
checked against its applied state (the claim still last) and carrying ``Nats-Rollup: sub``. After the heal
both entries commit in order, and the marker wipes the outcome stored just before it: the call id reads as
free, a second worker runs it and stores a second outcome, and the first worker's retry of its write is
acknowledged as a duplicate of the stored one. Two completions. Without markers the expiry removes the claim
by its sequence, which leaves a later outcome alone.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from aegis.harness.cluster.local import LocalCluster
from aegis.harness.faults.firewall import Endpoint, Firewall, FirewallUnavailable
from aegis.sdk import wire
from aegis.sdk.commands import DONE, CommandWorker, ensure_command_stream, record_key
from aegis.sdk.config import load_settings
from aegis.sdk.connection import ConnectionPool
from aegis.sdk.errors import AegisError
from aegis.sdk.kv import kv_write

CUT_S = 2.5
"""Longer than the claim's TTL (1 s: it ends on the isolated leader), shorter than NATS's shortest Raft
election timeout (4 s), so the isolated node is still the leader when the cut heals."""
SETTLE_S = 2.0
"""The negative's bound: how long after the record reads again the test waits for a wrong expiry marker. One
proposed on the isolated leader is in its log behind the outcome and commits with it once a quorum is back (a
read that succeeds shows one is); this leaves time for it to be applied and read, milliseconds on loopback."""


@pytest.fixture(scope="module")
def gid_cluster() -> Iterator[LocalCluster]:
    with LocalCluster(3, name="record-race", node_gids=True) as c:
        yield c


def _route(c: LocalCluster, name: str) -> Endpoint:
    n = c.node(name)
    return Endpoint(n.name, gid=n.gid, ports=frozenset({n.cluster_port}))


async def _leader(c: LocalCluster, stream: str) -> str:
    """The stream's leader, once there is one. Its own loop, not ``waiting.wait_until_async``: it returns what
    it found (a second look after the wait could find none, during an election)."""
    end = time.monotonic() + 20
    while time.monotonic() < end:
        lead = c.stream_leader(stream)
        if lead is not None:
            return lead
        await asyncio.sleep(0.1)
    pytest.fail(f"no leader for {stream} within 20 s")


@pytest.mark.timeout(120)
async def test_an_outcome_stored_while_the_leader_was_cut_off_survives_the_claims_expiry(
    gid_cluster: LocalCluster,
) -> None:
    try:
        fw = Firewall()
    except FirewallUnavailable as e:  # pragma: no cover - depends on the machine
        pytest.skip(f"nftables unavailable here: {e}")
    c = gid_cluster
    setup = await ConnectionPool.connect(load_settings(servers=c.urls, name="record-race-setup"))
    await ensure_command_stream(setup)
    stream = f"KV_{wire.COMMANDS_BUCKET}"
    lead = await _leader(c, stream)
    on_leader = await ConnectionPool.connect(load_settings(servers=[c.node(lead).url], name="on-leader"))
    key = record_key("race", "apply", "call-1")
    worker = CommandWorker(setup, instance_id="reader")
    try:
        claim = await kv_write(on_leader, wire.COMMANDS_BUCKET, key, b"", revision=0, ttl_s=1, timeout=5)
        others = [n.name for n in c.nodes if n.name != lead]
        cut = fw.cut_sets([_route(c, lead)], [_route(c, o) for o in others])
        try:

            async def store_outcome(timeout: float) -> int:
                return await kv_write(
                    on_leader,
                    wire.COMMANDS_BUCKET,
                    key,
                    b"outcome",
                    revision=claim,
                    ttl_s=3600,
                    headers={wire.COMMAND_STATE_HEADER: DONE},
                    msg_id="race-outcome",
                    timeout=timeout,
                )

            in_flight = asyncio.ensure_future(store_outcome(CUT_S + 5))
            await asyncio.sleep(CUT_S)  # the claim's TTL ends on the isolated leader meanwhile
            assert c.stream_leader(stream) == lead, "the cut node lost its leadership: the premise failed"
        finally:
            fw.heal(cut)
        try:
            stored = await in_flight
        except AegisError:
            stored = await store_outcome(10)  # the same message id: acknowledged as the stored write
        end = time.monotonic() + 10
        while True:  # what every worker sees once the cluster has settled
            try:
                rec = await worker._read(key)
                break
            except AegisError:
                assert time.monotonic() < end, "the record could not be read within 10 s of the heal"
                await asyncio.sleep(0.2)
        await asyncio.sleep(SETTLE_S)  # anything the expiry proposed has committed by now
        rec = await worker._read(key)
        assert rec.state == DONE and rec.data == b"outcome", (
            f"the outcome stored at revision {stored} was wiped: the record is now {rec.state}"
            f" at revision {rec.revision}"
        )
    finally:
        fw.close()
        for p in (on_leader, setup):
            await p.close()
