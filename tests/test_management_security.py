"""The management API's security and audit, over real HTTP (httpx through the ASGI app) and a real 3-node cluster.

The app under test is built here: the security router and one protected probe route per scope. Every test gets
its own users bucket and audit stream (unique names), so no test sees another's users, failures or entries.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from fastapi import FastAPI
from nats.js.errors import APIError, NotFoundError
from pydantic import SecretStr
from waiting import wait_until_async

from aegis.management.auth import (
    ROLE_SCOPES,
    SCOPES,
    Principal,
    Security,
    SecuritySettings,
    load_security_settings,
    requires,
)
from aegis.management.login_limit import LoginLimiter
from aegis.management.security_routes import router
from aegis.sdk.connection import ConnectionPool
from aegis.sdk.errors import ConfigError
from aegis.sdk.schema import Role

SECRET = "test-secret-" + "x" * 40
ADMIN_PW = "admin-password-0123"
ISSUER = "aegis-management"
AUDIENCE = "aegis-management-api"


def build_app(security: Security) -> FastAPI:
    """The security router, one probe route per scope, and one that needs two scopes."""
    app = FastAPI()
    app.state.security = security
    app.include_router(router)

    def probe(*scopes: str) -> Callable[..., Awaitable[dict[str, Any]]]:
        async def route(principal: Principal = requires(*scopes)) -> dict[str, Any]:
            return {"name": principal.name, "kind": principal.kind, "scopes": sorted(principal.scopes)}

        return route

    for scope in SCOPES:
        app.get(f"/probe/{scope}")(probe(scope))
    app.get("/probe-two")(probe("services:read", "services:write"))
    return app


SecurityFactory = Callable[..., Awaitable[Security]]


@pytest.fixture
async def make_security(pool: ConnectionPool) -> AsyncIterator[SecurityFactory]:
    """Start a Security on its own bucket and audit stream; ``**overrides`` go to its settings. Stopped and
    removed (stream deletion is allowed; deleting entries is not) when the test ends."""
    started: list[Security] = []

    async def make(**overrides: Any) -> Security:
        tag = uuid.uuid4().hex[:10]
        settings = SecuritySettings(
            **{
                "jwt_secret": SECRET,
                "admin_password": ADMIN_PW,
                "users_bucket": f"aegis_users_t{tag}",
                "audit_stream": f"AEGIS_AUDIT_T{tag}",
                "audit_subject": f"aegis.audit.t{tag}",
                **overrides,
            }
        )
        security = Security(settings, pool)
        await security.start()
        started.append(security)
        return security

    yield make
    for security in started:
        await security.stop()
        await pool.js.delete_stream(f"KV_{security.settings.users_bucket}")
        await pool.js.delete_stream(security.settings.audit_stream)


@pytest.fixture
async def security(make_security: SecurityFactory) -> Security:
    return await make_security()


def http(app: FastAPI, address: str = "127.0.0.1") -> httpx.AsyncClient:
    """A client whose requests come from ``address`` (what the login limiter counts)."""
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app, client=(address, 40000)), base_url="http://mgmt"
    )


@pytest.fixture
async def client(security: Security) -> AsyncIterator[httpx.AsyncClient]:
    async with http(build_app(security)) as c:
        yield c


async def login(
    client: httpx.AsyncClient, user: str, password: str, scope: str | None = None
) -> httpx.Response:
    data = {"username": user, "password": password, **({"scope": scope} if scope is not None else {})}
    return await client.post("/api/token", data=data)


async def token_of(
    client: httpx.AsyncClient, user: str, password: str, scope: str | None = None
) -> dict[str, str]:
    resp = await login(client, user, password, scope)
    assert resp.status_code == 200, resp.text
    return {"Authorization": f"Bearer {resp.json()['access_token']}"}


async def add_user(
    client: httpx.AsyncClient, admin: dict[str, str], name: str, role: Role, password: str
) -> None:
    resp = await client.post(
        "/api/users", json={"name": name, "password": password, "role": role}, headers=admin
    )
    assert resp.status_code == 201, resp.text


async def audit_entries(client: httpx.AsyncClient, admin: dict[str, str]) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    cursor: int | None = 1
    for _ in range(100):  # bounded: the tests write far fewer than 100 pages
        resp = await client.get("/api/audit", params={"cursor": cursor, "limit": 50}, headers=admin)
        assert resp.status_code == 200, resp.text
        page = resp.json()
        entries += page["entries"]
        cursor = page["next_cursor"]
        if cursor is None:
            return entries
    pytest.fail("the audit log did not end within 100 pages")


def forge(**claims: Any) -> str:
    """A token signed with the right secret, with the claims of a valid admin token overridden by ``claims``."""
    now = int(time.time())
    base = {
        "sub": "admin",
        "iat": now,
        "exp": now + 300,
        "iss": ISSUER,
        "aud": AUDIENCE,
        "scope": "services:read",
        "jti": uuid.uuid4().hex,
        "ver": 0,
    }
    secret = claims.pop("_secret", SECRET)
    return jwt.encode(
        {k: v for k, v in {**base, **claims}.items() if v is not None}, secret, algorithm="HS256"
    )


# -- logins and tokens ---------------------------------------------------------------------------------------------------


async def test_login_issues_a_short_lived_token_with_the_asked_scopes(client: httpx.AsyncClient) -> None:
    resp = await login(client, "admin", ADMIN_PW, "services:read audit:read")
    assert resp.status_code == 200, resp.text
    assert resp.headers["cache-control"] == "no-store"
    body = resp.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 900
    assert body["scope"] == "audit:read services:read"
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert {"sub", "exp", "iat", "iss", "aud", "scope", "jti"} <= set(claims)
    assert (claims["sub"], claims["iss"], claims["aud"]) == ("admin", ISSUER, AUDIENCE)
    assert claims["exp"] - claims["iat"] == 900
    assert set(claims["scope"].split()) == {"services:read", "audit:read"}
    headers = {"Authorization": f"Bearer {body['access_token']}"}

    ok = await client.get("/probe/services:read", headers=headers)
    assert ok.status_code == 200 and ok.json() == {
        "name": "admin",
        "kind": "user",
        "scopes": ["audit:read", "services:read"],
    }
    # Asked for a subset: the admin's other scopes are not in this token.
    refused = await client.get("/probe/services:write", headers=headers)
    assert refused.status_code == 403
    assert "insufficient_scope" in refused.json()["detail"]
    assert 'error="insufficient_scope"' in refused.headers["www-authenticate"]

    # No scope asked: everything the role grants.
    full = (await login(client, "admin", ADMIN_PW)).json()
    assert set(full["scope"].split()) == set(SCOPES)


async def test_a_scope_the_role_does_not_grant_cannot_be_asked_for(client: httpx.AsyncClient) -> None:
    admin = await token_of(client, "admin", ADMIN_PW)
    await add_user(client, admin, "vera", Role.VIEWER, "viewer-password-1")
    for scope in ("services:write", "no-such-scope"):
        resp = await login(client, "vera", "viewer-password-1", scope)
        assert resp.status_code == 400, resp.text
        assert resp.json()["error"] == "invalid_scope"


async def test_wrong_password_is_401_and_audited(client: httpx.AsyncClient) -> None:
    wrong = await login(client, "admin", "not-the-password")
    assert wrong.status_code == 401
    assert wrong.headers["www-authenticate"] == "Bearer"
    assert "access_token" not in wrong.text
    unknown = await login(client, "nobody", "whatever-password")
    assert unknown.status_code == 401
    assert unknown.json() == wrong.json()  # an unknown user looks the same as a wrong password

    admin = await token_of(client, "admin", ADMIN_PW)
    failed = [e for e in await audit_entries(client, admin) if e["action"] == "login.failed"]
    assert [(e["actor"], e["target"]) for e in failed] == [
        ("anonymous", "user:admin"),
        ("anonymous", "user:nobody"),
    ]
    assert all(e["request_id"] and "127.0.0.1" in e["detail"] and e["seq"] > 0 for e in failed)


async def test_tampered_expired_foreign_and_misaddressed_tokens_are_401(client: httpx.AsyncClient) -> None:
    good = forge()
    ok = await client.get("/probe/services:read", headers={"Authorization": f"Bearer {good}"})
    assert ok.status_code == 200, "the forging helper must make a valid token, or the refusals prove nothing"

    head, payload, signature = good.split(".")
    other_payload = forge(scope="admin services:read").split(".")[1]
    now = int(time.time())
    bad = {
        "tampered payload": f"{head}.{other_payload}.{signature}",
        "tampered signature": f"{head}.{payload}.{signature[:-4]}{'AAAA' if signature[-4:] != 'AAAA' else 'BBBB'}",
        "expired": forge(iat=now - 3600, exp=now - 60),
        "wrong issuer": forge(iss="someone-else"),
        "wrong audience": forge(aud="another-api"),
        "other secret": forge(_secret="y" * 48),
        "no expiry": forge(exp=None),
        "no jti": forge(jti=None),
        "unsigned": jwt.encode({"sub": "admin", "scope": "services:read"}, None, algorithm="none"),
        "not a jwt": "hello",
        "unknown user": forge(sub="ghost"),
    }
    for what, token in bad.items():
        resp = await client.get("/probe/services:read", headers={"Authorization": f"Bearer {token}"})
        assert resp.status_code == 401, f"{what}: {resp.status_code} {resp.text}"
        assert resp.headers["www-authenticate"].startswith("Bearer"), what


async def test_no_credentials_is_401_with_a_bearer_challenge(client: httpx.AsyncClient) -> None:
    for path in [f"/probe/{s}" for s in SCOPES] + ["/api/users", "/api/keys", "/api/audit"]:
        resp = await client.get(path)
        assert resp.status_code == 401, path
        assert resp.headers["www-authenticate"].startswith("Bearer"), path


async def test_each_role_reaches_exactly_its_scopes_and_one_scope_short_is_403(
    client: httpx.AsyncClient,
) -> None:
    admin = await token_of(client, "admin", ADMIN_PW)
    await add_user(client, admin, "vic", Role.VIEWER, "viewer-password-1")
    await add_user(client, admin, "otto", Role.OPERATOR, "operator-password-1")
    tokens = {
        Role.VIEWER: await token_of(client, "vic", "viewer-password-1"),
        Role.OPERATOR: await token_of(client, "otto", "operator-password-1"),
        Role.ADMIN: admin,
    }
    assert ROLE_SCOPES[Role.VIEWER] == {"services:read", "instances:read", "metrics:read", "config:read"}
    assert ROLE_SCOPES[Role.OPERATOR] == ROLE_SCOPES[Role.VIEWER] | {"services:write"}
    assert ROLE_SCOPES[Role.ADMIN] == set(SCOPES)
    for role, headers in tokens.items():
        for scope in SCOPES:
            resp = await client.get(f"/probe/{scope}", headers=headers)
            expected = 200 if scope in ROLE_SCOPES[role] else 403
            assert resp.status_code == expected, f"{role} on {scope}: {resp.status_code}"
    # A route that needs two scopes, with a token that has one of them.
    one_short = await token_of(client, "otto", "operator-password-1", "services:read")
    resp = await client.get("/probe-two", headers=one_short)
    assert resp.status_code == 403 and "services:write" in resp.json()["detail"]
    assert (await client.get("/probe-two", headers=tokens[Role.OPERATOR])).status_code == 200
    # user management is admin only
    assert (await client.get("/api/users", headers=tokens[Role.OPERATOR])).status_code == 403


# -- API keys ---------------------------------------------------------------------------------------------------------------


async def test_api_key_works_with_its_scopes_and_a_revoked_key_is_401(
    client: httpx.AsyncClient, security: Security
) -> None:
    admin = await token_of(client, "admin", ADMIN_PW)
    created = await client.post(
        "/api/keys", json={"name": "ci deploys", "scopes": ["services:read"]}, headers=admin
    )
    assert created.status_code == 201, created.text
    assert created.headers["cache-control"] == "no-store"
    info = created.json()
    key, key_id = info["key"], info["id"]
    assert key.startswith(f"aegis_{key_id}_") and len(key) > 60
    assert "key_hash" not in info

    used = await client.get("/probe/services:read", headers={"X-API-Key": key})
    assert used.status_code == 200 and used.json()["kind"] == "key" and used.json()["name"] == key_id
    assert (await client.get("/probe/services:write", headers={"X-API-Key": key})).status_code == 403

    # The last use is recorded once, in the background, not on every request.
    async def last_used() -> tuple[float | None, int]:
        rec = await security.accounts.get_key(key_id)
        return rec.value.last_used_at, rec.revision

    await wait_until_async(lambda: _first(last_used()), 10, "the key's last use to be recorded")
    stamped, revision = await last_used()
    for _ in range(3):
        assert (await client.get("/probe/services:read", headers={"X-API-Key": key})).status_code == 200
    await security.stop()  # waits for any background write
    assert await last_used() == (stamped, revision), (
        "a use within the interval must not write the record again"
    )

    for wrong in (
        key[:-1] + ("A" if key[-1] != "A" else "B"),
        f"aegis_{'0' * 16}_{key.split('_', 2)[2]}",
        "junk",
    ):
        assert (await client.get("/probe/services:read", headers={"X-API-Key": wrong})).status_code == 401

    listed = (await client.get("/api/keys", headers=admin)).json()
    assert (
        [k["id"] for k in listed] == [key_id] and "key" not in listed[0] and listed[0]["revoked_at"] is None
    )

    revoked = await client.delete(f"/api/keys/{key_id}", headers=admin)
    assert revoked.status_code == 204
    after = await client.get("/probe/services:read", headers={"X-API-Key": key})
    assert after.status_code == 401 and after.headers["www-authenticate"].startswith("Bearer")
    assert (await client.delete(f"/api/keys/{key_id}", headers=admin)).status_code == 204  # idempotent
    assert (await client.delete("/api/keys/0123456789abcdef", headers=admin)).status_code == 404

    actions = [
        (e["action"], e["target"])
        for e in await audit_entries(client, admin)
        if e["action"].startswith("key.")
    ]
    assert actions == [("key.create", f"key:{key_id}"), ("key.revoke", f"key:{key_id}")]


async def _first(value: Awaitable[tuple[Any, ...]]) -> Any:
    return (await value)[0]


# -- users ------------------------------------------------------------------------------------------------------------------


async def test_password_or_role_change_and_deletion_end_a_users_tokens(client: httpx.AsyncClient) -> None:
    admin = await token_of(client, "admin", ADMIN_PW)
    await add_user(client, admin, "olga", Role.OPERATOR, "operator-password-1")
    olga = await token_of(client, "olga", "operator-password-1")
    assert (await client.get("/probe/services:write", headers=olga)).status_code == 200

    changed = await client.put(
        "/api/users/olga/password", json={"password": "operator-password-2"}, headers=admin
    )
    assert changed.status_code == 204, changed.text
    assert (await client.get("/probe/services:read", headers=olga)).status_code == 401
    assert (await login(client, "olga", "operator-password-1")).status_code == 401
    olga = await token_of(client, "olga", "operator-password-2")

    demoted = await client.put("/api/users/olga/role", json={"role": "viewer"}, headers=admin)
    assert demoted.status_code == 200 and demoted.json()["role"] == "viewer"
    assert (await client.get("/probe/services:read", headers=olga)).status_code == 401
    olga = await token_of(client, "olga", "operator-password-2")
    assert (await client.get("/probe/services:write", headers=olga)).status_code == 403

    assert (await client.delete("/api/users/olga", headers=admin)).status_code == 204
    assert (await client.get("/probe/services:read", headers=olga)).status_code == 401
    assert (await client.delete("/api/users/olga", headers=admin)).status_code == 404
    # The name can be used again after a delete.
    await add_user(client, admin, "olga", Role.VIEWER, "viewer-password-9")

    dup = await client.post("/api/users", json={"name": "olga", "password": "x" * 12}, headers=admin)
    assert dup.status_code == 409
    assert (await client.delete("/api/users/admin", headers=admin)).status_code == 409  # the last admin
    assert (
        await client.put("/api/users/admin/role", json={"role": "viewer"}, headers=admin)
    ).status_code == 409

    actions = [e["action"] for e in await audit_entries(client, admin) if e["action"].startswith("user.")]
    assert actions == [
        "user.bootstrap",
        "user.create",
        "user.password",
        "user.role",
        "user.delete",
        "user.create",
    ]
    revisions = [
        (e["before_revision"], e["after_revision"])
        for e in await audit_entries(client, admin)
        if e["target"] == "user:olga" and not e["action"].startswith("login")
    ]
    assert revisions[0][0] is None and all(after > 0 for _, after in revisions)
    assert all(
        before == prev_after
        for (before, _), (_, prev_after) in zip(revisions[1:4], revisions[:3], strict=True)
    )


async def test_bad_user_input_is_a_clear_4xx(client: httpx.AsyncClient) -> None:
    admin = await token_of(client, "admin", ADMIN_PW)
    cases = [
        {"name": "bad name", "password": "long-enough-password"},
        {"name": "a.b", "password": "long-enough-password"},
        {"name": "ok", "password": "Zq7#pw"},
        {"name": "ok", "password": "long-enough-password", "role": "god"},
        {"name": "ok", "password": "long-enough-password", "extra": 1},
    ]
    for body in cases:
        resp = await client.post("/api/users", json=body, headers=admin)
        assert resp.status_code == 422, (body, resp.text)
        assert body["password"] not in resp.text, "a rejected password must not be echoed"
    assert (await client.get("/api/users/no.such", headers=admin)).status_code == 404
    assert (
        await client.get("/api/audit", params={"cursor": 1, "since": 0}, headers=admin)
    ).status_code == 400
    assert (await client.get("/api/audit", params={"limit": 0}, headers=admin)).status_code == 422
    bad_key = await client.post("/api/keys", json={"name": "k", "scopes": ["root"]}, headers=admin)
    assert bad_key.status_code == 422


# -- rate limiting ----------------------------------------------------------------------------------------------------------


async def test_failed_logins_are_limited_per_address_and_per_user(security: Security) -> None:
    app = build_app(security)
    admin_client = http(app, "127.0.0.1")
    async with admin_client, http(app, "127.0.0.9") as attacker:
        admin = await token_of(admin_client, "admin", ADMIN_PW)
        await add_user(admin_client, admin, "alice", Role.VIEWER, "alice-password-1")

        # One address tries many users: the sixth attempt is refused, even with the right password.
        for i in range(5):
            assert (await login(attacker, f"user{i}", "guess-password")).status_code == 401
        refused = await login(attacker, "alice", "alice-password-1")
        assert refused.status_code == 429, refused.text
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        # Other addresses are not affected.
        assert (await login(admin_client, "alice", "alice-password-1")).status_code == 200

        # One user guessed at from many addresses: refused from a fresh address too.
        for i in range(5):
            async with http(app, f"127.0.1.{i}") as c:
                assert (await login(c, "alice", "wrong-password")).status_code == 401
        async with http(app, "127.0.2.1") as fresh:
            assert (await login(fresh, "alice", "alice-password-1")).status_code == 429
            assert (await login(fresh, "admin", ADMIN_PW)).status_code == 200


def test_login_limiter_window_slides_and_success_clears_only_the_user() -> None:
    now = [1000.0]
    limiter = LoginLimiter(3, 60.0, clock=lambda: now[0])
    for _ in range(3):
        assert limiter.check("bob", "10.0.0.1") is None
        limiter.failed("bob", "10.0.0.1")
        now[0] += 10
    refused = limiter.check("bob", "10.0.0.2")
    assert refused is not None and refused.retry_after_s == 30  # the first failure leaves the window at 1060
    now[0] = 1060.5
    assert limiter.check("bob", "10.0.0.2") is None
    limiter.failed("bob", "10.0.0.1")
    assert limiter.check("carol", "10.0.0.1") is not None  # the address has 3 failures in the window
    limiter.succeeded("bob")
    assert limiter.check("bob", "10.0.0.3") is None
    assert limiter.check("bob", "10.0.0.1") is not None  # a success does not clear the address
    small = LoginLimiter(1, 60.0, max_tracked=10, clock=lambda: now[0])
    for i in range(100):
        small.failed(f"u{i}", f"a{i}")
    assert len(small._failures) <= 10


# -- no default password, no secret in clear -----------------------------------------------------------------------------


async def test_without_a_configured_admin_every_login_fails(
    make_security: SecurityFactory, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="aegis.management.auth"):
        security = await make_security(admin_password=None)
    assert "AEGIS_MGMT_ADMIN_PASSWORD" in caplog.text
    assert await security.accounts.list_users() == []
    async with http(build_app(security)) as client:
        for user, password in [("admin", "admin"), ("admin", ""), ("admin", "password"), ("root", "root")]:
            assert (await login(client, user, password)).status_code in (401, 422), (user, password)
        assert (await login(client, "admin", ADMIN_PW)).status_code == 401


async def test_a_configured_admin_is_created_once_and_not_overwritten(make_security: SecurityFactory) -> None:
    first = await make_security()
    other = SecretStr("another-password-99")
    again = Security(first.settings.model_copy(update={"admin_password": other}), first.pool)
    await again.start()
    async with http(build_app(again)) as client:
        assert (await login(client, "admin", ADMIN_PW)).status_code == 200
        assert (await login(client, "admin", "another-password-99")).status_code == 401
    await again.stop()


async def test_passwords_and_keys_never_appear_in_clear(
    client: httpx.AsyncClient, security: Security
) -> None:
    seen: list[str] = []

    async def call(method: str, path: str, **kwargs: Any) -> httpx.Response:
        resp = await client.request(method, path, **kwargs)
        seen.append(f"{resp.status_code} {dict(resp.headers)} {resp.text}")
        return resp

    user_pw = "users-secret-password-42"
    admin = {"Authorization": f"Bearer {(await login(client, 'admin', ADMIN_PW)).json()['access_token']}"}
    await call(
        "POST", "/api/users", json={"name": "sam", "password": user_pw, "role": "operator"}, headers=admin
    )
    await call("POST", "/api/token", data={"username": "sam", "password": user_pw})
    await call("POST", "/api/token", data={"username": "sam", "password": user_pw + "-wrong"})
    await call("PUT", "/api/users/sam/password", json={"password": user_pw + "-new"}, headers=admin)
    key_resp = await client.post("/api/keys", json={"name": "bot", "scopes": ["metrics:read"]}, headers=admin)
    key = key_resp.json()["key"]
    await call("GET", "/probe/metrics:read", headers={"X-API-Key": key})
    for path in ("/api/users", "/api/users/sam", "/api/keys", "/api/audit"):
        await call("GET", path, headers=admin)
    await call("DELETE", f"/api/keys/{key_resp.json()['id']}", headers=admin)
    await call("GET", "/probe/metrics:read", headers={"X-API-Key": key})

    secrets_ = [ADMIN_PW, user_pw, user_pw + "-wrong", user_pw + "-new", key, key.split("_", 2)[2]]
    for text in seen:
        for secret in secrets_:
            assert secret not in text

    # Every message ever stored in the users bucket and the audit stream (all revisions), raw.
    stored = 0
    for stream in (f"KV_{security.settings.users_bucket}", security.settings.audit_stream):
        info = await security.pool.js.stream_info(stream)
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            try:
                msg = await security.pool.js.get_msg(stream, seq)
            except NotFoundError:  # a revision beyond the bucket's history
                continue
            raw = (msg.data or b"").decode() + str(msg.headers or {})
            stored += 1
            for secret in secrets_:
                assert secret not in raw, f"{stream} #{seq} holds a secret in clear"
            if stream.startswith("KV_") and '"password_hash"' in raw:
                assert '"password_hash":"$argon2id$' in raw
    assert stored >= 8


# -- the audit stream -------------------------------------------------------------------------------------------------------


async def test_audit_stream_is_replicated_and_refuses_delete_and_purge(security: Security) -> None:
    audit = security.audit
    seq = await audit.append("user:admin", "service.update", "service:quotes", 3, 4, "req-1")
    info = await security.pool.js.stream_info(audit.stream)
    assert info.config.deny_delete and info.config.deny_purge
    assert info.config.num_replicas == 3
    with pytest.raises(APIError):
        await security.pool.js.delete_msg(audit.stream, seq)
    with pytest.raises(APIError):
        await security.pool.js.purge_stream(audit.stream)
    with pytest.raises(APIError):
        await security.pool.js.purge_stream(audit.stream, subject=audit.subject)
    page = await audit.page(cursor=seq, limit=1)
    assert [(e.seq, e.action, e.before_revision, e.after_revision, e.request_id) for e in page.entries] == [
        (seq, "service.update", 3, 4, "req-1")
    ]
    users = await security.pool.js.stream_info(f"KV_{security.settings.users_bucket}")
    assert users.config.num_replicas == 3 and users.config.max_msgs_per_subject >= 3


async def test_audit_pages_by_cursor_and_by_time(security: Security) -> None:
    audit = security.audit
    before = (await audit.page()).last_seq  # the bootstrap entry
    seqs = [await audit.append("user:admin", "test", f"t:{i}", request_id=str(i)) for i in range(7)]
    target_time = (await audit.page(cursor=seqs[4], limit=1)).entries[0].time

    pages, cursor = [], seqs[0]
    for _ in range(10):
        page = await audit.page(cursor=cursor, limit=3)
        pages.append([e.target for e in page.entries])
        cursor = page.next_cursor
        if cursor is None:
            break
    assert pages == [["t:0", "t:1", "t:2"], ["t:3", "t:4", "t:5"], ["t:6"]]
    assert page.last_seq == seqs[-1] == before + 7

    by_time = await audit.page(since=target_time, limit=10)
    assert [e.target for e in by_time.entries] == ["t:4", "t:5", "t:6"] and by_time.next_cursor is None
    assert (await audit.page(since=time.time() + 3600)).entries == []
    assert (await audit.page(cursor=seqs[-1] + 1)).entries == []


# -- settings -----------------------------------------------------------------------------------------------------------------


def test_settings_need_a_jwt_secret_and_read_secret_files(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("AEGIS_MGMT_"):
            monkeypatch.delenv(name)
    with pytest.raises(ConfigError, match="AEGIS_MGMT_JWT_SECRET"):
        load_security_settings()
    with pytest.raises(ConfigError, match="too short"):
        load_security_settings(jwt_secret="short")
    monkeypatch.setenv("AEGIS_MGMT_JWT_SECRET", SECRET)
    settings = load_security_settings()
    assert settings.admin_password is None and settings.cors_origins == [] and settings.token_ttl_s == 900
    assert SECRET not in repr(settings)

    (tmp_path / "pw").write_text("file-admin-password\n")
    monkeypatch.setenv("AEGIS_MGMT_ADMIN_PASSWORD_FILE", str(tmp_path / "pw"))
    monkeypatch.setenv("AEGIS_MGMT_CORS_ORIGINS", "https://ops.example, https://x.example")
    settings = load_security_settings()
    assert settings.admin_password is not None
    assert settings.admin_password.get_secret_value() == "file-admin-password"
    assert settings.cors_origins == ["https://ops.example", "https://x.example"]
    monkeypatch.setenv("AEGIS_MGMT_ADMIN_PASSWORD_FILE", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="cannot read"):
        load_security_settings()
    monkeypatch.delenv("AEGIS_MGMT_ADMIN_PASSWORD_FILE")
    monkeypatch.setenv("AEGIS_MGMT_ADMIN_PASSWORD", "short")
    with pytest.raises(ConfigError, match="admin password is too short") as err:
        load_security_settings()
    assert "short'" not in str(err.value)
    with pytest.raises(ValueError, match="unknown scopes"):
        requires("services:delete")
