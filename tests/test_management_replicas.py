"""Two management replicas on one cluster, and the management service through NATS node faults."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator

import httpx
import pytest
from management_server import ManagementServer
from test_management_api import _read_events
from waiting import wait_until

from aegis.harness.cluster.local import LocalCluster


@pytest.fixture(scope="module")
def replicas(
    management: ManagementServer, nats_urls: list[str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[ManagementServer]]:
    """The session's management process and a second replica signing with the same key."""
    second = ManagementServer(nats_urls, tmp_path_factory.mktemp("replica"))
    try:
        yield [management, second]
    finally:
        second.stop()


async def test_a_write_through_one_replica_is_seen_by_the_other_and_by_both_event_streams(
    replicas: list[ManagementServer],
) -> None:
    a, b = replicas
    token = a.token()  # one signing secret: a token from one replica works on the other
    name = f"rep-{uuid.uuid4().hex[:8]}"
    streams = [
        asyncio.create_task(
            asyncio.to_thread(_read_events, s.url, token, None, max_events=1000, max_seconds=4)
        )
        for s in replicas
    ]
    await asyncio.sleep(1.0)
    with a.client(token) as ca, b.client(token) as cb:
        created = ca.post("/api/services", json={"name": name, "owner": "desk"})
        assert created.status_code == 201, created.text
        wait_until(lambda: cb.get(f"/api/services/{name}").status_code == 200, 5, "read through b")
        assert cb.get(f"/api/services/{name}").headers["ETag"] == created.headers["ETag"]
        wait_until(
            lambda: name in [d["definition"]["name"] for d in cb.get("/api/services").json()], 5, "b lists"
        )
        # b changes it with a's ETag; a's next write with the same ETag is refused
        etag = created.headers["ETag"]
        assert (
            cb.put(f"/api/services/{name}", json={"owner": "b"}, headers={"If-Match": etag}).status_code
            == 200
        )
        assert (
            ca.put(f"/api/services/{name}", json={"owner": "a"}, headers={"If-Match": etag}).status_code
            == 412
        )
    for task in streams:
        events = await task
        seen = [json.loads(e["data"]) for e in events if e.get("event") == "definition"]
        assert [(d["name"], d["action"]) for d in seen if d["name"] == name] == [
            (name, "created"),
            (name, "updated"),
        ]


def test_reads_go_on_while_a_node_is_down_and_writes_fail_clearly_without_quorum(
    replicas: list[ManagementServer], cluster: LocalCluster
) -> None:
    a = replicas[0]
    with a.client(a.token()) as c:
        victims = [cluster.nodes[1].name, cluster.nodes[2].name]
        cluster.kill(victims[0])
        try:
            for _ in range(20):  # bounded: every read answers from the caches
                assert c.get("/api/services").status_code == 200
                assert c.get("/api/instances").status_code == 200
            name = f"q-{uuid.uuid4().hex[:8]}"
            # one node down of three: the KV keeps its quorum (a write may wait for a new stream leader)
            wait_until(
                lambda: c.post("/api/services", json={"name": name}).status_code in (201, 409), 30, "write"
            )

            cluster.kill(victims[1])  # two of three down: no quorum
            lost = f"nq-{uuid.uuid4().hex[:8]}"
            r = c.post("/api/services", json={"name": lost}, timeout=30)
            assert r.status_code == 503, r.text
            assert r.json()["detail"]  # says what went wrong
            assert c.get("/api/services").status_code == 200  # reads still answer
        finally:
            for v in victims:
                cluster.restart(v)
            for v in victims:
                cluster.wait_healthy(v, timeout=30)

        # quorum back: the write succeeds, and the refused one was not half-written
        def created() -> bool:
            r = c.post("/api/services", json={"name": lost})
            return r.status_code in (201, 409)

        wait_until(created, 60, "a write after the quorum is back")
        got = c.get(f"/api/services/{lost}")
        assert got.status_code == 200 and got.json()["definition"]["name"] == lost
        assert httpx.get(f"{a.url}/readyz").status_code == 200
