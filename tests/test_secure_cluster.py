"""A secure local cluster (TLS, accounts, least-privilege users per role) and the SDK's TLS and password settings.

One real 3-node cluster with mutual TLS on clients and routes serves the module; each role connects through the
SDK with the settings :meth:`LocalCluster.sdk_settings` gives it. The permission tests look at what the server
answers (its "Permissions Violation" errors) and at what did not happen (a handler that never ran).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import ssl
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import httpx
import nats
import pytest
from waiting import wait_until_async

from aegis.harness.cluster.local import ClusterError, LocalCluster
from aegis.harness.cluster.security import (
    APP_ACCOUNT,
    MANAGEMENT_USER,
    SecurityConfig,
    client_user,
    service_user,
)
from aegis.harness.demo.management import ManagementProcess
from aegis.sdk import wire
from aegis.sdk.commands import CommandClient, CommandContext, CommandWorker
from aegis.sdk.config import load_settings
from aegis.sdk.connection import ConnectionPool
from aegis.sdk.effective_config import REDACTED, effective_config, fetch_effective_config
from aegis.sdk.errors import AegisError, ConfigError, ConnectionRefused, RpcTimeout
from aegis.sdk.events import EventBus, EventContext
from aegis.sdk.kv import bucket
from aegis.sdk.registry import Registry
from aegis.sdk.rpc import CallContext, RpcClient, Service
from aegis.sdk.schema import ServiceDefinition
from aegis.sdk.single_active import SingleActiveService, leader_key
from aegis.sdk.sticky import StickyClient

ROOT = Path(__file__).resolve().parent.parent
CALC, OTHER, LEDGER, CALLER = "calc", "other", "sledger", "tester"


@pytest.fixture(scope="module")
def secure_cluster() -> Iterator[LocalCluster]:
    """A started 3-node secure cluster: users svc-calc, svc-other, svc-sledger, client-tester, management."""
    config = SecurityConfig(services=(CALC, OTHER, LEDGER), clients=(CALLER,))
    with LocalCluster(3, name="secure", secure=config) as c:
        yield c


@pytest.fixture
async def open_pool(secure_cluster: LocalCluster) -> AsyncIterator[Callable[..., Awaitable[ConnectionPool]]]:
    """``await open_pool(user, **overrides)``: an SDK pool on the secure cluster as ``user``; closed at the end."""
    opened: list[ConnectionPool] = []

    async def connect(user: str, **overrides: Any) -> ConnectionPool:
        settings = load_settings(**secure_cluster.sdk_settings(user, name=f"t-{user}", **overrides))
        p = await ConnectionPool.connect(settings)
        opened.append(p)
        return p

    yield connect
    for p in reversed(opened):
        await p.close()


def _calc(instance_id: str, seen: list[int]) -> Service:
    svc = Service(CALC, instance_id=instance_id)

    @svc.rpc("add")
    async def add(req: dict[str, int], ctx: CallContext) -> int:
        seen.append(req["a"])
        return req["a"] + req["b"]

    return svc


def _violations(pool: ConnectionPool) -> list[str]:
    """The server's permission errors seen by ``pool`` (nats-py lower-cases them)."""
    return [e.lower() for e in pool.stats.errors if "permissions violation" in e.lower()]


async def _connz(cluster: LocalCluster, name: str) -> list[dict[str, Any]]:
    conns: list[dict[str, Any]] = []
    for node in range(cluster.size):
        data = await asyncio.to_thread(cluster.monitor, node, "connz", auth=True, limit=1024)
        conns += [c for c in data.get("connections") or [] if c.get("name", "").startswith(name)]
    return conns


# ------------------------------------------------------------------------------------------------ services


async def test_service_user_serves_an_rpc_round_trip_over_mutual_tls(
    secure_cluster: LocalCluster, open_pool: Callable[..., Awaitable[ConnectionPool]]
) -> None:
    seen: list[int] = []
    svc_pool = await open_pool(service_user(CALC))
    svc = _calc("c1", seen)
    await svc.start(svc_pool)  # registry record, heartbeats, $SRV and ctl subscriptions as svc-calc
    try:
        client = await open_pool(client_user(CALLER))
        assert await RpcClient(client).call(CALC, "add", {"a": 2, "b": 3}) == 5
        assert await RpcClient(client).call(CALC, "add", {"a": 4, "b": 5}, instance="c1") == 9
        assert seen == [2, 4]
        assert not _violations(svc_pool) and not _violations(client)
        # The server says: TLS, the right user, the application account.
        conns = await _connz(secure_cluster, f"t-{service_user(CALC)}")
        assert conns, "the service's connections are not in /connz"
        for c in conns:
            assert c.get("tls_version"), c
            assert c.get("authorized_user") == service_user(CALC) and c.get("account") == APP_ACCOUNT, c
    finally:
        await svc.stop()


@pytest.mark.parametrize("election", ["lease", "quorum"])
async def test_service_user_runs_a_single_active_election_and_hands_over(
    open_pool: Callable[..., Awaitable[ConnectionPool]], election: Literal["lease", "quorum"]
) -> None:
    """Under the service and client users, with either lease (the quorum lease's three buckets, created by the
    first of them, are in the roles' permissions too)."""
    pools = [await open_pool(service_user(LEDGER)) for _ in range(2)]
    services: list[SingleActiveService] = []
    group = uuid.uuid4().hex[:8]
    for i, p in enumerate(pools):
        svc = SingleActiveService(LEDGER, instance_id=f"s{i}", group=group, election=election)

        @svc.exclusive_rpc("book")
        async def book(req: int, ctx: CallContext) -> str:
            return ctx.instance_id

        services.append(svc)
        await svc.start(p)
    try:
        await wait_until_async(lambda: sum(s.is_active for s in services) == 1, 10, "one active instance")
        (active,) = [s for s in services if s.is_active]
        (standby,) = [s for s in services if not s.is_active]
        client = await open_pool(client_user(CALLER))
        sticky = StickyClient(client, election=election)
        try:
            assert (
                await sticky.call_active(LEDGER, "book", 1, group=active.group, timeout=5)
                == active.instance_id
            )
            await active.stop()  # graceful: deletes the key by compare-and-set under svc-sledger
            await wait_until_async(lambda: standby.is_active, 10, "the standby to take over")
            assert standby.election.epoch > 0
        finally:
            await sticky.close()
        assert not any(_violations(p) for p in pools)
    finally:
        for svc in services:
            await svc.stop()


async def test_events_and_commands_work_under_the_service_and_client_users(
    open_pool: Callable[..., Awaitable[ConnectionPool]],
) -> None:
    calc, other, caller = (
        await open_pool(service_user(CALC)),
        await open_pool(service_user(OTHER)),
        await open_pool(client_user(CALLER)),
    )
    topic = f"orders-{uuid.uuid4().hex[:8]}.created"
    got: list[dict[str, int]] = []

    async def on_order(event: dict[str, int], ctx: EventContext) -> None:
        got.append(event)

    sub = await EventBus(other).subscribe(topic, on_order, group=f"g-{uuid.uuid4().hex[:6]}")
    worker = CommandWorker(calc)
    try:
        await EventBus(calc).publish(topic, {"n": 1})
        await wait_until_async(lambda: got == [{"n": 1}], 10, "the event at the other service")

        async def double(req: int, ctx: CommandContext) -> int:
            await ctx.progress(0.5, "half")
            return 2 * req

        await worker.handle(CALC, "double", double)
        assert await CommandClient(caller).call(CALC, "double", 21, timeout=10) == 42
        assert not any(_violations(p) for p in (calc, other, caller))
    finally:
        await sub.unsubscribe()
        await worker.close()


async def test_service_user_cannot_subscribe_to_another_services_control_subjects(
    secure_cluster: LocalCluster, open_pool: Callable[..., Awaitable[ConnectionPool]]
) -> None:
    pool = await open_pool(service_user(CALC))
    got: list[str] = []

    async def on_msg(msg: Any) -> None:
        got.append(msg.subject)

    await pool.primary.subscribe(f"{wire.CONTROL_PREFIX}.{OTHER}.>", cb=on_msg)
    await pool.primary.subscribe(f"{wire.CONTROL_PREFIX}.{CALC}.>", cb=on_msg)
    await wait_until_async(
        lambda: any(f'subscription to "{wire.CONTROL_PREFIX}.{OTHER}.>"' in e for e in _violations(pool)),
        5,
        "the server to refuse the subscription to aegis.ctl.other.>",
    )
    # Its own control subjects work, and nothing of the other service's reaches it.
    admin = await nats.connect(servers=secure_cluster.urls, **secure_cluster.nats_connect_options())
    try:
        await admin.publish(wire.control_subject(OTHER, "o1", "config"), b"")
        await admin.publish(wire.control_subject(CALC, "c9", "config"), b"")
        await admin.flush()
        await wait_until_async(lambda: got, 5, "the message on its own control subject")
        await pool.primary.flush()
        assert got == [wire.control_subject(CALC, "c9", "config")]
    finally:
        await admin.close()
    # Nor may it write the other service's election key or read another user's inbox.
    await pool.primary.publish(f"$KV.{wire.ELECTION_BUCKET}.{leader_key(OTHER, 'g')}", b"x")
    await pool.primary.subscribe("_INBOX.management.>")
    await wait_until_async(
        lambda: (
            any("publish to" in e and leader_key(OTHER, "g") in e for e in _violations(pool))
            and any('subscription to "_inbox.management.>"' in e for e in _violations(pool))
        ),
        5,
        "the refusals of the other service's election key and the management inbox",
    )


async def test_a_user_added_while_the_cluster_runs_gets_in_and_connections_stay(
    secure_cluster: LocalCluster, open_pool: Callable[..., Awaitable[ConnectionPool]]
) -> None:
    caller = await open_pool(client_user(CALLER))
    name = f"late{uuid.uuid4().hex[:6]}"
    added = await asyncio.to_thread(secure_cluster.add_users, services=(name,))
    assert added == [service_user(name)]
    svc = Service(name, instance_id="x1")

    @svc.rpc("echo")
    async def echo(req: int, ctx: CallContext) -> int:
        return req

    await svc.start(await open_pool(service_user(name)))
    try:
        assert await RpcClient(caller).call(name, "echo", 3) == 3
        assert caller.stats.disconnects == 0  # the reload left the other users' connections alone
    finally:
        await svc.stop()


# ------------------------------------------------------------------------------------------------ management


async def test_management_reads_kv_and_configs_but_cannot_call_services(
    open_pool: Callable[..., Awaitable[ConnectionPool]],
) -> None:
    seen: list[int] = []
    svc_pool = await open_pool(service_user(CALC))
    svc = _calc("c2", seen)
    await svc.start(svc_pool)
    try:
        mgmt = await open_pool(MANAGEMENT_USER)
        registry = await Registry(mgmt).open()
        assert "c2" in {r.instance_id for r in await registry.list_instances(CALC)}
        entry = await bucket(mgmt, wire.INSTANCES_BUCKET, direct=True).get(f"{CALC}.c2")
        assert entry.value and b"c2" in entry.value
        # It writes definitions (compare-and-set through the registry); a service may not.
        name = f"def-{uuid.uuid4().hex[:8]}"
        created = await registry.create_definition(ServiceDefinition(name=name, owner="ops"))
        assert (await registry.get_definition(name)).revision == created.revision
        with pytest.raises(AegisError):
            await Registry(svc_pool, timeout=1).create_definition(ServiceDefinition(name=f"{name}-x"))
        await wait_until_async(
            lambda: any(f"$kv.{wire.DEFINITIONS_BUCKET}.{name}-x" in e for e in _violations(svc_pool)),
            5,
            "the server to refuse the service's definition write",
        )
        cfg = await fetch_effective_config(mgmt, CALC, "c2")
        assert cfg.settings["user"].value == service_user(CALC)
        assert cfg.settings["password"].value is None and cfg.settings["password_file"].value
        with pytest.raises(RpcTimeout):
            await RpcClient(mgmt).call(CALC, "add", {"a": 7, "b": 1}, timeout=0.5)
        await wait_until_async(
            lambda: any(f'publish to "{wire.RPC_PREFIX}.{CALC}.add"' in e for e in _violations(mgmt)),
            5,
            "the server to refuse management's publish to aegis.rpc.calc.add",
        )
        assert 7 not in seen, "the handler ran for a call the management user must not make"
    finally:
        await svc.stop()


# ------------------------------------------------------------------------------------------------ refusals


async def test_a_client_without_tls_settings_is_refused_with_a_clear_error(
    secure_cluster: LocalCluster,
) -> None:
    creds = secure_cluster.credentials(MANAGEMENT_USER)
    settings = load_settings(servers=secure_cluster.urls, user=creds.user, password_file=creds.password_file)
    with pytest.raises(ConnectionRefused, match="certificate"):
        await ConnectionPool.connect(settings)


async def test_a_client_without_its_certificate_is_refused_by_mutual_tls(
    secure_cluster: LocalCluster,
) -> None:
    creds = secure_cluster.credentials(MANAGEMENT_USER)
    settings = load_settings(
        servers=secure_cluster.urls,
        user=creds.user,
        password_file=creds.password_file,
        tls_ca=secure_cluster.ca_file,
        connect_timeout_s=1,
    )
    with pytest.raises(ConnectionRefused, match="TLS"):
        await ConnectionPool.connect(settings)


async def test_a_wrong_password_is_refused_naming_the_authorization_violation(
    secure_cluster: LocalCluster, tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong.password"
    wrong.write_text("not-the-password\n")
    settings = load_settings(**secure_cluster.sdk_settings(MANAGEMENT_USER, password_file=wrong))
    with pytest.raises(ConnectionRefused, match="Authorization Violation"):
        await ConnectionPool.connect(settings)


def _first_bytes(port: int, context: ssl.SSLContext | None = None) -> bytes:
    """What a port sends first, over TLS with ``context``; b"" when it sends nothing within 2 s."""
    with socket.create_connection(("127.0.0.1", port), timeout=2) as raw:
        sock = raw if context is None else context.wrap_socket(raw, server_hostname="127.0.0.1")
        try:
            return sock.recv(4096)
        except TimeoutError:
            return b""


def test_client_and_route_ports_require_tls_with_a_certificate_of_the_ca(
    secure_cluster: LocalCluster,
) -> None:
    node = secure_cluster.nodes[0]
    info = json.loads(_first_bytes(node.client_port).split(b" ", 1)[1])
    assert info["tls_required"] and info["tls_verify"] and info["auth_required"], info
    # Routes speak TLS first: nothing in clear, a handshake without a client certificate is refused.
    assert _first_bytes(node.cluster_port) == b""
    no_cert = ssl.create_default_context(cafile=str(secure_cluster.ca_file))
    with pytest.raises(ssl.SSLError, match="CERTIFICATE_REQUIRED"):
        _first_bytes(node.cluster_port, no_cert)
    routes = secure_cluster.routez(0)
    assert routes["num_routes"] >= secure_cluster.size - 1, routes


# ------------------------------------------------------------------------------------------------ files, settings


def test_secrets_and_node_configs_are_private_files(secure_cluster: LocalCluster) -> None:
    secrets_dir = secure_cluster.ca_file.parent
    assert secrets_dir.stat().st_mode & 0o777 == 0o700
    files = [*secrets_dir.iterdir(), *(n.config_path for n in secure_cluster.nodes)]
    assert len(files) > 10
    for f in files:
        assert f.stat().st_mode & 0o777 == 0o600, f
    user, password_file = secure_cluster.credentials(service_user(CALC))
    assert user == service_user(CALC) and password_file.name == f"{user}.password"
    assert password_file.read_text().strip() in secure_cluster.nodes[0].config_path.read_text()
    assert all(u.startswith("tls://127.0.0.1:") for u in secure_cluster.urls)
    for node in secure_cluster.nodes:  # monitoring stays on loopback
        assert node.monitor_url.startswith("http://127.0.0.1:")
    with pytest.raises(ClusterError, match="no NATS user"):
        secure_cluster.credentials("svc-nobody")


def test_tls_settings_are_checked_when_loaded(secure_cluster: LocalCluster, tmp_path: Path) -> None:
    creds = secure_cluster.credentials(MANAGEMENT_USER)
    with pytest.raises(ConfigError, match="tls_cert and tls_key go together"):
        load_settings(tls_ca=secure_cluster.ca_file, tls_cert=creds.cert_file)
    with pytest.raises(ConfigError, match=r"tls_ca file .*missing\.pem.* does not exist"):
        load_settings(tls_ca=tmp_path / "missing.pem")
    with pytest.raises(ConfigError, match="either password or password_file"):
        load_settings(user="u", password="p", password_file=creds.password_file)
    with pytest.raises(ConfigError, match="password_file is set but user is not"):
        load_settings(password_file=creds.password_file)
    with pytest.raises(ConfigError, match="inbox_prefix"):
        load_settings(inbox_prefix="_INBOX.>")
    if os.geteuid() != 0:  # root reads anything
        unreadable = tmp_path / "key.pem"
        unreadable.write_text("x")
        unreadable.chmod(0)
        with pytest.raises(ConfigError, match="not readable"):
            load_settings(tls_ca=unreadable)


async def test_bad_pem_or_empty_password_file_is_a_config_error(
    secure_cluster: LocalCluster, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    with pytest.raises(ConfigError, match="tls_ca"):
        await ConnectionPool.connect(
            load_settings(**secure_cluster.sdk_settings(MANAGEMENT_USER, tls_ca=bad))
        )
    empty = tmp_path / "empty.password"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match="empty"):
        await ConnectionPool.connect(
            load_settings(**secure_cluster.sdk_settings(MANAGEMENT_USER, password_file=empty))
        )


def test_effective_config_hides_the_password_and_shows_only_paths(secure_cluster: LocalCluster) -> None:
    settings = load_settings(**secure_cluster.sdk_settings(MANAGEMENT_USER))
    cfg = effective_config(settings, "mgmt", "m1")
    text = cfg.model_dump_json()
    password = secure_cluster.credentials(MANAGEMENT_USER).password_file.read_text().strip()
    assert password not in text
    explicit = effective_config(load_settings(user="u", password=password), "mgmt", "m1")
    assert password not in explicit.model_dump_json()
    assert explicit.settings["password"].value == REDACTED and explicit.settings["password"].secret


def test_a_plain_cluster_is_unchanged() -> None:
    plain = LocalCluster(3)
    try:
        _ = plain.base_dir  # writes the configs
        text = plain.nodes[0].config_path.read_text()
        assert "tls" not in text and "accounts" not in text and "authorization" not in text
        assert all(u.startswith("nats://") for u in plain.urls) and plain.security is None
        assert plain.account == "$G" and plain.sdk_settings() == {"servers": plain.urls}
        with pytest.raises(ClusterError, match="not secure"):
            plain.credentials(MANAGEMENT_USER)
        assert not (plain.base_dir / "secrets").exists()
    finally:
        plain.close()


async def test_a_restarted_node_rejoins_through_the_secure_routes(
    secure_cluster: LocalCluster, open_pool: Callable[..., Awaitable[ConnectionPool]]
) -> None:
    await Registry(await open_pool(MANAGEMENT_USER)).open()  # the registry's R3 buckets exist
    # restart() waits until an R3 stream can be placed: the probe connects as admin over mutual TLS.
    node = await asyncio.to_thread(secure_cluster.restart, "n3")
    assert node.running and node.url.startswith("tls://")
    stream = f"KV_{wire.INSTANCES_BUCKET}"
    await wait_until_async(  # looked up in the account AEGIS by default
        lambda: asyncio.to_thread(secure_cluster.stream_leader, stream), 15, f"a leader of {stream}"
    )


# ------------------------------------------------------------------------------------------------ aegis up


def test_aegis_up_secure_runs_the_demo_under_its_users() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "aegis.cli", "up", "--secure", "--nodes", "1", "--instances", "1"]
        + ["--duration", "4", "--rate", "50"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "240", "NO_COLOR": "1", "PYTHONUNBUFFERED": "1"},
        cwd=ROOT,
        timeout=120,
    )
    out = proc.stdout
    assert proc.returncode == 0, proc.stderr + out
    assert re.search(r"tls://127\.0\.0\.1:\d+", out), out
    assert re.search(r"CA \S+/secrets/ca\.pem", out), out
    for user in (service_user("quotes"), service_user("ledger"), client_user("up"), MANAGEMENT_USER):
        assert re.search(rf"{user}\W+/\S*/secrets/{user}\.password", out), (user, out)
    ok = [int(n) for n in re.findall(r"ok (\d+)", out)]
    assert ok and max(ok) > 0 and "failed 0" in out, out
    sticky = re.findall(r"active (L\d) epoch (\d+)  sticky ok (\d+)  failed (\d+)", out)
    assert sticky and int(sticky[-1][2]) > 0 and sticky[-1][3] == "0", out


async def test_the_management_api_runs_as_the_management_user_and_sees_a_secure_service(
    secure_cluster: LocalCluster, open_pool: Callable[..., Awaitable[ConnectionPool]], tmp_path: Path
) -> None:
    """``aegis manage`` under its least-privilege user (as ``aegis up --secure`` runs it): it creates its own
    streams, writes definitions, users and audit entries, and lists a service running under its own user."""
    mgmt = await asyncio.to_thread(
        ManagementProcess.start, secure_cluster.sdk_env(MANAGEMENT_USER), tmp_path / "manage"
    )
    svc = _calc("m1", [])
    try:
        await svc.start(await open_pool(service_user(CALC)))
        token = await asyncio.to_thread(mgmt.token)
        async with httpx.AsyncClient(base_url=mgmt.url, headers={"Authorization": f"Bearer {token}"}) as api:
            created = await api.post("/api/services", json={"name": f"sec-{uuid.uuid4().hex[:6]}"})
            assert created.status_code == 201, created.text

            async def listed() -> bool:
                r = await api.get("/api/instances", params={"service": CALC})
                return r.status_code == 200 and any(v["instance"]["instance_id"] == "m1" for v in r.json())

            await wait_until_async(listed, 10, "the secure service listed by the management API")
            config = await api.get(f"/api/instances/{CALC}/m1/config")
            assert config.status_code == 200, config.text
            audit = await api.get("/api/audit", params={"limit": 50})
            assert audit.status_code == 200 and any(
                e["action"] == "service.create" for e in audit.json()["entries"]
            )
    finally:
        await svc.stop()
        await asyncio.to_thread(mgmt.stop)
