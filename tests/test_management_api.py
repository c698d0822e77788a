"""The management API over real HTTP (an ``aegis manage`` process) on the real 3-node cluster."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from management_server import ADMIN_PASSWORD, ManagementServer
from waiting import wait_until, wait_until_async

from aegis.harness.cluster.local import LocalCluster
from aegis.harness.cluster.ports import free_port
from aegis.harness.cluster.processes import spawn, wait_stopped
from aegis.management.api_models import NAME_PATTERN
from aegis.management.app import ROUTERS, create_app
from aegis.management.auth import SCOPES, SecuritySettings
from aegis.management.cluster_info import read_cluster
from aegis.management.settings import ManagementSettings, load_management_settings
from aegis.sdk import wire
from aegis.sdk.config import load_settings
from aegis.sdk.connection import ConnectionPool
from aegis.sdk.errors import ConfigError, RemoteError
from aegis.sdk.quorum_buckets import ensure_quorum_buckets, spread_quorum_leaders, step_down
from aegis.sdk.rpc import CallContext, RpcClient, Service
from aegis.sdk.single_active import SingleActiveService

JWT_SECRET = secrets.token_hex(32)


@pytest.fixture(scope="module")
def mgmt(management: ManagementServer) -> ManagementServer:
    return management


@pytest.fixture(scope="module")
def admin(mgmt: ManagementServer) -> Iterator[httpx.Client]:
    with mgmt.client(mgmt.token()) as c:
        yield c


def _name(prefix: str = "svc") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# -------------------------------------------------------------------------------------------- definitions


def test_definition_crud_with_etags(admin: httpx.Client) -> None:
    name = _name()
    r = admin.post("/api/services", json={"name": name, "owner": "fx-desk", "single_active": True})
    assert r.status_code == 201, r.text
    rev1 = r.json()["revision"]
    assert r.headers["ETag"] == f'"{rev1}"' and r.headers["Location"] == f"/api/services/{name}"
    assert r.json()["definition"]["created_at"] > 0  # set by the registry, not the client

    again = admin.post("/api/services", json={"name": name})
    assert again.status_code == 409 and again.json()["current_revision"] == rev1

    got = admin.get(f"/api/services/{name}")
    assert got.status_code == 200 and got.headers["ETag"] == f'"{rev1}"'
    assert got.json()["definition"]["owner"] == "fx-desk"

    body = {"owner": "rates", "single_active": True}
    missing = admin.put(f"/api/services/{name}", json=body)
    assert missing.status_code == 428 and "If-Match" in missing.json()["detail"]

    updated = admin.put(f"/api/services/{name}", json=body, headers={"If-Match": f'"{rev1}"'})
    assert updated.status_code == 200, updated.text
    rev2 = updated.json()["revision"]
    assert rev2 > rev1 and updated.json()["definition"]["owner"] == "rates"

    stale = admin.put(f"/api/services/{name}", json={"owner": "x"}, headers={"If-Match": f'"{rev1}"'})
    assert stale.status_code == 412 and stale.json()["current_revision"] == rev2
    assert stale.headers["ETag"] == f'"{rev2}"'
    assert admin.get(f"/api/services/{name}").json()["definition"]["owner"] == "rates"  # nothing overwritten

    assert admin.delete(f"/api/services/{name}").status_code == 428
    assert admin.delete(f"/api/services/{name}", headers={"If-Match": f'"{rev1}"'}).status_code == 412
    assert admin.delete(f"/api/services/{name}", headers={"If-Match": f'"{rev2}"'}).status_code == 204
    assert admin.get(f"/api/services/{name}").status_code == 404

    history = admin.get(f"/api/services/{name}/history")
    assert history.status_code == 200, history.text
    assert [(h["operation"], (h["value"] or {}).get("owner")) for h in history.json()] == [
        ("PUT", "fx-desk"),
        ("PUT", "rates"),
        ("DEL", None),
    ]
    assert admin.get("/api/services/never-defined-x/history").status_code == 404


def test_the_list_comes_from_the_watch_and_shows_a_new_definition(admin: httpx.Client) -> None:
    name = _name()
    assert admin.post("/api/services", json={"name": name}).status_code == 201
    wait_until(
        lambda: name in [d["definition"]["name"] for d in admin.get("/api/services").json()], 5, "listed"
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "a.b"}, "name"),
        ({"name": "a b"}, "name"),
        ({"name": ""}, "name"),
        ({"name": "ok", "single_active": "maybe"}, "single_active"),
        ({"name": "ok", "single_active": "0"}, "single_active"),
        ({"name": "ok", "max_error_rate": "0.5"}, "max_error_rate"),
        ({"name": "ok", "max_error_rate": 2}, "max_error_rate"),
        ({"name": "ok", "owner": "x" * 201}, "owner"),
        ({"name": "ok", "created_at": 1.0}, "created_at"),
        ({"name": "ok", "colour": "red"}, "colour"),
        ({}, "name"),
    ],
)
def test_bad_definitions_are_refused_naming_the_field(admin: httpx.Client, body: dict, field: str) -> None:
    r = admin.post("/api/services", json=body)
    assert r.status_code == 422, r.text
    assert any(err["loc"][-1] == field for err in r.json()["detail"]), r.json()


def test_bad_names_in_paths_bodies_that_are_not_json_and_oversized_bodies(admin: httpx.Client) -> None:
    assert admin.get("/api/services/a.b").status_code == 422
    assert admin.get("/api/services/a*").status_code == 422
    r = admin.post("/api/services", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 422
    huge = {"name": _name(), "description": "x" * 200_000}
    r = admin.post("/api/services", json=huge)
    assert r.status_code == 413 and "larger than" in r.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit counts the bytes as they come
        yield b'{"name": "chunked", "description": "'
        for _ in range(100):
            yield b"x" * 1024
        yield b'"}'

    r = admin.post("/api/services", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "larger than" in r.json()["detail"]
    assert admin.get("/api/services/chunked").status_code == 404  # nothing half-written
    r = admin.put("/api/services/x", json={"owner": "y"}, headers={"If-Match": "not-a-revision"})
    assert r.status_code == 422
    assert NAME_PATTERN  # the pattern the API documents is the SDK's token rule (a.b and a* fail above)


# -------------------------------------------------------------------------------------------- instances


async def test_instances_health_and_live_metrics(mgmt: ManagementServer, pool: ConnectionPool) -> None:
    svc = Service(_name("ops"), version="3.4.5")

    @svc.rpc("ping")
    async def ping(req: None) -> str:
        return "pong"

    @svc.rpc("fail")
    async def fail(req: None) -> str:
        raise ValueError("boom")

    api = mgmt.async_client(mgmt.token())
    view: dict | None = None

    async def health_is(state: str) -> bool:
        nonlocal view
        found = (await api.get("/api/instances", params={"service": svc.name})).json()
        view = found[0] if found else None
        return view is not None and view["health"] == state

    await svc.start(pool)
    try:
        await wait_until_async(lambda: health_is("healthy"), 10, "healthy")
        assert view is not None
        assert view["instance"]["instance_id"] == svc.instance_id and view["instance"]["version"] == "3.4.5"
        assert view["heartbeat_age_s"] < 5

        live = (await api.get("/api/metrics", params={"service": svc.name})).json()
        assert [r["instance_id"] for r in live] == [svc.instance_id]

        # errors over the default 5 % in the current window: degraded, with the reason
        client = RpcClient(pool)
        for _ in range(20):
            with pytest.raises(RemoteError):
                await client.call(svc.name, "fail", None, timeout=2)
        await wait_until_async(lambda: health_is("degraded"), 10, "degraded")
        assert view is not None
        assert any("fail: error rate" in reason for reason in view["reasons"]), view["reasons"]

        only = (await api.get("/api/instances", params={"service": svc.name, "status": "degraded"})).json()
        assert [o["instance"]["instance_id"] for o in only] == [svc.instance_id]
        assert (await api.get("/api/instances", params={"status": "sideways"})).status_code == 422
    finally:
        await svc.stop()
    await wait_until_async(lambda: health_is("down"), 10, "down")
    assert view is not None and view["ended"] == "deleted"
    assert (await api.get("/api/metrics", params={"service": svc.name})).json() == []
    await api.aclose()


CHILD = """
import asyncio, sys
from aegis.sdk.connection import connect
from aegis.sdk.errors import ConfigError, RemoteError
from aegis.sdk.rpc import CallContext, RpcClient, Service
from aegis.sdk.single_active import SingleActiveService

async def main():
    pool = await connect(servers=sys.argv[1].split(","))
    svc = Service(sys.argv[2], instance_id=sys.argv[3])

    @svc.rpc("ping")
    async def ping(req: None) -> str:
        return "pong"

    await svc.start(pool)
    print("up", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def test_a_frozen_instance_turns_stale_then_down_by_expiry_and_its_config_times_out(
    admin: httpx.Client, nats_urls: list[str]
) -> None:
    service, instance = _name("frz"), "i1"
    proc = spawn([sys.executable, "-c", CHILD, ",".join(nats_urls), service, instance], stdout=-1)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"up"
        path = f"/api/instances/{service}/{instance}"
        wait_until(lambda: admin.get(path).status_code == 200, 10, "listed")
        cfg = admin.get(f"{path}/config")
        assert cfg.status_code == 200, cfg.text
        assert cfg.json()["instance_id"] == instance and "settings" in cfg.json()

        proc.send_signal(signal.SIGSTOP)
        wait_stopped(proc.pid)
        wait_until(lambda: admin.get(path).json()["health"] == "stale", 10, "stale")
        r = admin.get(f"{path}/config")
        assert r.status_code in (404, 504), r.text  # 404 once expired; 504 while listed but silent
        if r.status_code == 504:
            assert "did not answer" in r.json()["detail"]
        wait_until(lambda: admin.get(path).json()["health"] == "down", 15, "down")
        assert admin.get(path).json()["ended"] == "expired"
        assert admin.get(f"{path}/config").status_code == 404
    finally:
        proc.send_signal(signal.SIGCONT)
        proc.kill()
        proc.wait(10)
    assert admin.get("/api/instances/nosuch/nobody").status_code == 404
    assert admin.get("/api/instances/nosuch/nobody/config").status_code == 404


# ------------------------------------------------------------------------------------------ live stream


def _read_events(url: str, token: str, last_id: str | None = None, **params: object) -> list[dict]:
    headers = {"Authorization": f"Bearer {token}"}
    if last_id:
        headers["Last-Event-ID"] = last_id
    events: list[dict] = []
    with httpx.stream("GET", f"{url}/api/events", params=params, headers=headers, timeout=30) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        current: dict = {}
        for line in r.iter_lines():
            if not line:
                if "data" in current:
                    events.append(current)
                current = {}
                continue
            key, _, value = line.partition(": ")
            if key in ("id", "event", "data"):
                current[key] = value
    return events


async def test_events_stream_definition_changes_and_resume_from_last_event_id(
    mgmt: ManagementServer, admin: httpx.Client
) -> None:
    token = mgmt.token()
    names = [_name("evt") for _ in range(3)]
    reader = asyncio.create_task(
        asyncio.to_thread(_read_events, mgmt.url, token, None, max_events=500, max_seconds=3)
    )
    await asyncio.sleep(0.5)  # subscribed
    for name in names:
        r = await asyncio.to_thread(admin.post, "/api/services", json={"name": name})
        assert r.status_code == 201
    events = await reader
    mine = [e for e in events if e.get("event") == "definition" and json.loads(e["data"])["name"] in names]
    assert [json.loads(e["data"])["name"] for e in mine] == names
    assert all(json.loads(e["data"])["action"] == "created" for e in mine)

    # resume after the first: the other two come again from the buffer
    resumed = await asyncio.to_thread(
        _read_events, mgmt.url, token, mine[0]["id"], max_events=200, max_seconds=1
    )
    again = [json.loads(e["data"])["name"] for e in resumed if e.get("event") == "definition"]
    assert names[1] in again and names[2] in again and names[0] not in again

    stale = await asyncio.to_thread(
        _read_events, mgmt.url, token, "nosuchboot-1", max_events=1, max_seconds=1
    )
    assert stale and stale[0]["event"] == "reset"


# ------------------------------------------------------------------------------------- cluster & ops


def test_cluster_view_names_every_node_and_the_aegis_buckets(
    admin: httpx.Client, cluster: LocalCluster
) -> None:
    r = admin.get("/api/cluster")
    assert r.status_code == 200, r.text
    view = r.json()
    assert sorted(n["name"] for n in view["nodes"]) == sorted(n.name for n in cluster.nodes)
    streams = {s["stream"]: s for s in view["streams"]}
    assert "KV_aegis_definitions" in streams and "KV_aegis_instances" in streams
    assert all(s["leader"] in {n.name for n in cluster.nodes} for s in streams.values())
    assert all(len(s["replicas"]) == 2 for s in streams.values() if s["stream"].startswith("KV_aegis"))
    # the session's management process reads the meta leader from the nodes' monitoring /jsz
    assert view["meta_leader"] == cluster.meta_leader() and view["meta_leader"] is not None, view
    assert view["meta_leader_from"] in cluster.monitor_urls


async def test_without_monitoring_urls_the_meta_leader_is_unknown_and_the_view_says_why(
    pool: ConnectionPool, cluster: LocalCluster
) -> None:
    """An application-account user is not answered by the system account; an unreachable monitoring URL is
    skipped and named; a reachable one gives the leader."""
    dead = f"http://127.0.0.1:{free_port()}"
    view = await read_cluster(pool, [dead], timeout=1.0)
    assert view.meta_leader is None and view.meta_leader_from is None
    assert f"{dead}/jsz: ConnectError" in view.meta_leader_note
    assert "AEGIS_MGMT_MONITOR_URLS" in view.meta_leader_note
    view = await read_cluster(pool, [dead, cluster.monitor_urls[1]], timeout=1.0)
    assert view.meta_leader == cluster.meta_leader() and view.meta_leader_from == cluster.monitor_urls[1]


async def test_the_cluster_view_says_whether_the_quorum_buckets_leaders_sit_on_three_nodes(
    pool: ConnectionPool,
) -> None:
    """What lets the quorum lease ride through a node crash, shown to operators: distinct when spread, and when two
    buckets' leaders share a node, which node and buckets."""
    await ensure_quorum_buckets(pool)
    try:
        placed = await spread_quorum_leaders(pool, timeout=15)
        assert placed.distinct, placed.reason
        view = await read_cluster(pool, timeout=2.0)
        assert view.quorum_leaders_distinct is True and view.quorum_leaders_note == ""
        q0, q1 = wire.QUORUM_ELECTION_BUCKETS[:2]
        target = placed.leaders_after[q0]
        assert target is not None
        move = await step_down(pool, q1, target, 5)
        assert move.accepted, move.error
        deadline = asyncio.get_running_loop().time() + 15
        while True:  # (stream info goes unanswered for a moment while a leader hands over)
            with contextlib.suppress(TimeoutError):
                view = await read_cluster(pool, timeout=2.0)
                if view.quorum_leaders_distinct is False:
                    break
            assert asyncio.get_running_loop().time() < deadline, view
            await asyncio.sleep(0.2)
        assert view.quorum_leaders_note == f"{target}: KV_{q0}, KV_{q1}", view.quorum_leaders_note
    finally:
        await spread_quorum_leaders(pool, timeout=15)


def test_healthz_readyz_need_no_credentials_and_metrics_is_prometheus_text(
    mgmt: ManagementServer, admin: httpx.Client
) -> None:
    with mgmt.client() as anon:
        assert anon.get("/healthz").status_code == 200
        ready = anon.get("/readyz")
        assert ready.status_code == 200 and ready.json()["ready"] is True
        assert set(ready.json()["caches"]) == {
            "definitions",
            "instances",
            "election",
            *(f"election_q{b}" for b in range(3)),
            "credentials",
        }
        assert anon.get("/metrics").status_code == 401
    text = admin.get("/metrics")
    assert text.status_code == 200 and text.headers["content-type"].startswith("text/plain")
    assert "# TYPE aegis_instance_health gauge" in text.text


# ------------------------------------------------------------------------------------------------ security


def _required_scopes(dependant: Dependant) -> set[str]:
    found = set(dependant.own_oauth_scopes or [])
    for sub in dependant.dependencies:
        found |= _required_scopes(sub)
    return found


OPEN_ROUTES = {"/healthz", "/readyz", "/api/token"}


def test_every_route_refuses_without_credentials_and_without_its_scope(mgmt: ManagementServer) -> None:
    """Walks the app's own route table: a route added later cannot ship open."""
    routes = [r for router in ROUTERS for r in router.routes if isinstance(r, APIRoute)]
    operations = {
        (p, m.upper())
        for p, ops in create_app(
            ManagementSettings(),
            nats=load_settings(servers=["nats://127.0.0.1:1"]),
            security=SecuritySettings(jwt_secret=JWT_SECRET),
        )
        .openapi()["paths"]
        .items()
        for m in ops
    }  # the app is never started: only its routes are read
    # every operation the app serves comes from ROUTERS, so walking them walks the app
    assert operations == {(r.path, m) for r in routes for m in r.methods}
    assert {r.path for r in routes} >= {
        "/api/services",
        "/api/instances",
        "/api/events",
        "/metrics",
        "/api/audit",
    }
    checked = 0
    tokens: dict[frozenset[str], str] = {}
    with mgmt.client() as anon:
        for route in routes:
            path = re.sub(r"\{[^}]+\}", "x", route.path)
            for method in sorted(route.methods):
                if route.path in OPEN_ROUTES:
                    continue
                r = anon.request(method, path)
                assert r.status_code == 401, f"{method} {route.path} without credentials: {r.status_code}"
                assert r.headers["WWW-Authenticate"].startswith("Bearer")
                needed = _required_scopes(route.dependant)
                assert needed, f"{method} {route.path} names no scope"
                others = frozenset(SCOPES) - needed
                if others not in tokens:
                    tokens[others] = mgmt.token(sorted(others))
                r = anon.request(method, path, headers={"Authorization": f"Bearer {tokens[others]}"})
                assert r.status_code == 403, (
                    f"{method} {route.path} without {needed}: {r.status_code} {r.text}"
                )
                checked += 1
    assert checked >= 20


# --------------------------------------------------------------------------------- groups and history


@pytest.mark.parametrize("election", ["lease", "quorum"])
async def test_groups_show_the_active_and_its_standby_and_failovers_after_a_handover(
    mgmt: ManagementServer, connect_pool: Callable[..., Awaitable[ConnectionPool]], election: str
) -> None:
    """Either lease: the quorum lease's active is the holder of the ballot claimed in a majority of its three
    buckets."""
    name = _name("grp")
    a, b = (SingleActiveService(name, instance_id=i, election=election) for i in ("a", "b"))  # type: ignore[arg-type]
    for svc in (a, b):

        @svc.exclusive_rpc("book")
        async def book(req: int, ctx: CallContext) -> int:
            return ctx.epoch

    api = mgmt.async_client(mgmt.token())
    group: dict | None = None

    async def group_is(active: str, standbys: list[str]) -> bool:
        nonlocal group
        groups = [g for g in (await api.get("/api/groups")).json() if g["service"] == name]
        group = groups[0] if groups else None
        return group is not None and group["active_instance_id"] == active and group["standbys"] == standbys

    try:
        await a.start(await connect_pool())
        await wait_until_async(lambda: a.is_active, 5, "a active")
        await b.start(await connect_pool())
        await wait_until_async(lambda: group_is("a", ["b"]), 10, "a active, b standing by")
        assert group is not None and group["group"] == "default" and group["epoch"] == a.election.epoch
        assert group["since"] is not None
        first_epoch = group["epoch"]

        await a.stop()
        await wait_until_async(lambda: group_is("b", []), 10, "b active after a's graceful stop")
        assert group is not None and group["epoch"] > first_epoch

        url = f"/api/groups/{name}/default/failovers"

        async def handed_over() -> bool:
            kinds = [(c["kind"], c["instance_id"]) for c in (await api.get(url)).json()]
            return {("acquire", "a"), ("release", "a"), ("acquire", "b")} <= set(kinds)

        await wait_until_async(handed_over, 10, "the handover in the failover log")
        assert (await api.get(f"/api/groups/{name}/x.y/failovers")).status_code == 422
    finally:
        await b.stop()
        await a.stop()
        await api.aclose()


@pytest.fixture
def pool_settings() -> dict[str, Any]:
    return {"metrics_history_interval_s": 0.2}


async def test_metrics_history_returns_one_point_per_step_with_window_figures(
    mgmt: ManagementServer, pool: ConnectionPool
) -> None:
    svc = Service(_name("hist"))

    @svc.rpc("ping")
    async def ping(req: None) -> str:
        return "pong"

    api = mgmt.async_client(mgmt.token())
    await svc.start(pool)
    try:
        start = time.time()
        client = RpcClient(pool)
        for _ in range(30):
            await client.call(svc.name, "ping", None)
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        url = f"/api/instances/{svc.name}/{svc.instance_id}/metrics"
        r = await api.get(url, params={"since": start - 1, "until": time.time(), "step": 0.5})
        assert r.status_code == 200, r.text
        points = r.json()["points"]
        assert len(points) >= 3
        taken = [p["taken_at"] for p in points]
        assert taken == sorted(taken) and all(b - a >= 0.4 for a, b in zip(taken, taken[1:], strict=False))
        assert sum(p["methods"]["ping"]["window"]["requests"] for p in points if "ping" in p["methods"]) > 0

        paged = (
            await api.get(url, params={"since": start - 1, "until": time.time(), "step": 0.5, "limit": 2})
        ).json()
        assert len(paged["points"]) == 2 and paged["next_since"] is not None
        more = (
            await api.get(url, params={"since": paged["next_since"], "until": time.time(), "step": 0.5})
        ).json()
        assert more["points"] and more["points"][0]["taken_at"] > paged["points"][-1]["taken_at"]

        bad = await api.get(url, params={"since": 10, "until": 5})
        assert bad.status_code == 400 and "before since" in bad.json()["detail"]
    finally:
        await svc.stop()
        await api.aclose()


# ------------------------------------------------------------------------------------------------- the CLI


def _services_cli(
    mgmt: ManagementServer, *args: str, password: str | None = None
) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "AEGIS_MGMT_URL": mgmt.url,
        "AEGIS_MGMT_USER": "admin",
        "COLUMNS": "200",
        "NO_COLOR": "1",
    }
    env["AEGIS_MGMT_PASSWORD"] = password if password is not None else ADMIN_PASSWORD
    return subprocess.run(
        [sys.executable, "-m", "aegis.cli", "services", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_services_command_creates_updates_and_deletes_through_the_api(mgmt: ManagementServer) -> None:
    name = _name("cli")
    made = _services_cli(mgmt, "create", name, "--owner", "fx-desk", "--json")
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)[0]["definition"]["owner"] == "fx-desk"

    again = _services_cli(mgmt, "create", name)
    assert again.returncode == 1 and "409" in again.stderr and "already defined" in again.stderr

    changed = _services_cli(mgmt, "update", name, "--version", "2.0.0", "--json")
    assert changed.returncode == 0, changed.stderr
    (item,) = json.loads(changed.stdout)
    assert (item["definition"]["owner"], item["definition"]["version"]) == ("fx-desk", "2.0.0")

    listed = _services_cli(mgmt, "list")
    assert listed.returncode == 0 and name in listed.stdout and "2.0.0" in listed.stdout
    history = _services_cli(mgmt, "history", name, "--json")
    assert [h["operation"] for h in json.loads(history.stdout)] == ["PUT", "PUT"]

    assert _services_cli(mgmt, "delete", name, "--yes").returncode == 0
    gone = _services_cli(mgmt, "get", name)
    assert gone.returncode == 1 and "404" in gone.stderr

    wrong = _services_cli(mgmt, "list", password="not the password")
    assert wrong.returncode == 1 and "401" in wrong.stderr
    bad = _services_cli(mgmt, "create", "a.b")
    assert bad.returncode == 1 and "422" in bad.stderr


def test_bad_management_settings_name_the_field_and_manage_refuses_to_start(tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.toml"
    wrong.write_text("port = 'eighty'\n")
    with pytest.raises(ConfigError, match=r"port: .*got 'eighty'.*wrong\.toml"):
        load_management_settings(wrong)
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("colour = 'red'\n")
    with pytest.raises(ConfigError, match="colour: unknown setting"):
        load_management_settings(unknown)
    assert load_management_settings(wrong, port=9).port == 9  # an override wins over the file
    with pytest.raises(ConfigError, match=r"monitor_urls: .*'127.0.0.1:8222' is not an HTTP URL"):
        load_management_settings(monitor_urls="http://127.0.0.1:8223, 127.0.0.1:8222")

    env = {k: v for k, v in os.environ.items() if not k.startswith("AEGIS_MGMT_")}
    proc = subprocess.run(
        [sys.executable, "-m", "aegis.cli", "manage"], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2 and "JWT secret" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
