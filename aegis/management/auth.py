"""Who may call the management API: settings, scopes and roles, signed tokens, API keys, and the FastAPI
dependency every route uses.

People log in with the OAuth2 password flow (``POST /api/token``) and get a short-lived JWT (HS256, PyJWT) that
carries their scopes; machines send an API key in ``X-API-Key``. Either way a route gets a :class:`Principal`::

    @app.get("/api/services")
    async def services(principal: Principal = requires("services:read")) -> ...: ...

``requires`` answers 401 (with ``WWW-Authenticate: Bearer``) without valid credentials and 403
(``insufficient_scope``) when a scope is missing. Its state comes from ``request.app.state.security``, a
:class:`Security` the application builds from :class:`SecuritySettings` and starts with the app::

    security = Security(load_security_settings(), pool)
    await security.start()          # users bucket, audit stream, first admin
    app.state.security = security

A token names its user, and each request checks that user as the watch of the bucket shows it
(:mod:`aegis.management.credential_cache`, no NATS request): deleting a user, changing their password or role (which
bumps ``token_version``) ends their tokens on every replica within the watch's delivery time.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import fastapi
import jwt
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import APIKeyHeader, OAuth2PasswordBearer, SecurityScopes
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from aegis.sdk import wire
from aegis.sdk.config import read_secret_file
from aegis.sdk.connection import ConnectionPool
from aegis.sdk.errors import AegisError, ConfigError, Conflict, NotFound
from aegis.sdk.schema import ApiKeyRecord, Role, Scope, TokenResponse, UserRecord

from .accounts import Accounts, Passwords, api_key_id, api_key_matches
from .audit import Audit
from .credential_cache import CredentialCache
from .login_limit import LoginLimiter

log = logging.getLogger(__name__)

SCOPES: dict[str, str] = {
    "services:read": "Read service definitions.",
    "services:write": "Create, change and delete service definitions.",
    "instances:read": "Read running instances and their status.",
    "metrics:read": "Read metrics.",
    "config:read": "Read the effective configuration of instances.",
    "audit:read": "Read the audit log.",
    "admin": "Manage users and API keys.",
}
"""Every scope and what it allows (shown in the OpenAPI document)."""
assert set(SCOPES) == set(get_args(Scope)), "SCOPES and aegis.sdk.schema.Scope must name the same scopes"

_VIEWER = frozenset({"services:read", "instances:read", "metrics:read", "config:read"})
ROLE_SCOPES: dict[Role, frozenset[str]] = {
    Role.VIEWER: _VIEWER,
    Role.OPERATOR: _VIEWER | {"services:write"},
    Role.ADMIN: frozenset(SCOPES),
}
"""What each role grants. ``admin`` is a scope like the others: it guards user and key management only, and an
admin holds every scope through the role, not through ``admin``."""

JWT_ALGORITHM = "HS256"
MIN_SECRET_LENGTH = 32
MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024
MAX_NAME_LENGTH = 64


class SecuritySettings(BaseSettings):
    """Settings of the management API's security, from ``AEGIS_MGMT_*`` environment variables or arguments.

    The JWT secret has no default: every replica must share one (``AEGIS_MGMT_JWT_SECRET`` or a file named by
    ``AEGIS_MGMT_JWT_SECRET_FILE``). There is no default password either: the first admin is created from
    ``AEGIS_MGMT_ADMIN_PASSWORD`` (or ``AEGIS_MGMT_ADMIN_PASSWORD_FILE``) when that user does not exist yet.
    """

    model_config = SettingsConfigDict(env_prefix="AEGIS_MGMT_", extra="ignore", validate_default=True)

    jwt_secret: SecretStr | None = Field(
        None,
        description=f"HS256 signing key, at least {MIN_SECRET_LENGTH} characters. Required (or the file).",
    )
    jwt_secret_file: Path | None = Field(None, description="File holding the signing key (a mounted secret).")
    jwt_issuer: str = Field("aegis-management", min_length=1)
    jwt_audience: str = Field("aegis-management-api", min_length=1)
    token_ttl_s: int = Field(900, ge=1, le=24 * 3600, description="Lifetime of an access token.")
    clock_skew_s: int = Field(5, ge=0, le=300, description="Leeway for exp/iat between replicas' clocks.")

    admin_user: str = Field("admin", min_length=1, max_length=64)
    admin_password: SecretStr | None = Field(
        None, description="Creates the first admin if it does not exist."
    )
    admin_password_file: Path | None = Field(None, description="File holding the first admin's password.")

    login_max_failures: int = Field(5, ge=1, le=1000, description="Failed logins allowed per window...")
    login_window_s: float = Field(60.0, gt=0, le=24 * 3600, description="...per user name and per address.")
    key_last_used_interval_s: float = Field(
        60.0, ge=0, le=24 * 3600, description="An API key's last-used time is written at most this often."
    )

    users_bucket: str = Field(
        wire.USERS_BUCKET, description="Change only to run two deployments on one cluster."
    )
    audit_stream: str = wire.AUDIT_STREAM
    audit_subject: str = wire.AUDIT_SUBJECT
    audit_max_age_s: float = Field(
        0.0, ge=0, description="Age at which audit entries go; 0 keeps them forever."
    )

    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Browser origins allowed by CORS; none by default. In the environment a comma-separated list.",
    )

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("admin_user")
    @classmethod
    def _admin_is_token(cls, value: str) -> str:
        return wire.check_token("admin user name", value)

    @model_validator(mode="after")
    def _secrets(self) -> SecuritySettings:
        if self.jwt_secret_file is not None:
            self.jwt_secret = SecretStr(read_secret_file(self.jwt_secret_file, "AEGIS_MGMT_JWT_SECRET_FILE"))
        if self.jwt_secret is None:
            raise ValueError(
                "no JWT secret: set AEGIS_MGMT_JWT_SECRET (or AEGIS_MGMT_JWT_SECRET_FILE) to the same random string"
                f" of at least {MIN_SECRET_LENGTH} characters on every replica, e.g. the output of"
                " `python -c 'import secrets; print(secrets.token_urlsafe(48))'`"
            )
        if len(self.jwt_secret.get_secret_value()) < MIN_SECRET_LENGTH:
            raise ValueError(
                f"the JWT secret is too short: use at least {MIN_SECRET_LENGTH} random characters"
            )
        if self.admin_password_file is not None:
            self.admin_password = SecretStr(
                read_secret_file(self.admin_password_file, "AEGIS_MGMT_ADMIN_PASSWORD_FILE")
            )
        if (
            self.admin_password is not None
            and len(self.admin_password.get_secret_value()) < MIN_PASSWORD_LENGTH
        ):
            raise ValueError(
                f"the admin password is too short: use at least {MIN_PASSWORD_LENGTH} characters"
            )
        return self


def load_security_settings(**overrides: Any) -> SecuritySettings:
    """Settings from the environment and ``overrides``; ConfigError (naming the problem, never a secret) if invalid."""
    try:
        return SecuritySettings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid management security settings: {problems}") from None


# -- errors ---------------------------------------------------------------------------------------------------------


class NotAuthenticated(AegisError):
    """No credentials, or credentials that do not check out (HTTP 401)."""

    code = 401


class InvalidScope(AegisError):
    """A token request asked for a scope that does not exist or that the user's role does not grant (HTTP 400)."""

    code = 400


class LoginThrottled(AegisError):
    """Too many failed logins for the user name or the client address (HTTP 429)."""

    code = 429

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def http_status(exc: AegisError) -> int:
    """The HTTP status for an SDK error: its code when that is an HTTP error status, else 503 for the ones that
    mean NATS could not answer in time, 500 otherwise."""
    if exc.code == 408:  # RpcTimeout: the cluster did not answer, not the client being slow
        return 503
    return exc.code if 400 <= exc.code <= 599 else 500


# -- principals and the service object -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a user (logged in with a token) or an API key (``name`` is the key's id)."""

    name: str
    kind: Literal["user", "key"]
    scopes: frozenset[str]
    label: str = ""
    """For a key, the name people gave it."""

    @property
    def actor(self) -> str:
        """How the audit log names this principal: ``user:<name>`` or ``key:<id>``."""
        return f"{self.kind}:{self.name}"


class Security:
    """Accounts, tokens, API keys, the login limiter and the audit log of one management process.

    Build it from :class:`SecuritySettings` and a connection pool, ``await start()`` before serving and
    ``await stop()`` after. See the module docstring.
    """

    def __init__(self, settings: SecuritySettings, pool: ConnectionPool) -> None:
        self.settings = settings
        self.pool = pool
        self.credentials = CredentialCache(pool, settings.users_bucket)
        # this replica's own writes (a revoked key, a changed password) count at once, not after the watch echo
        self.accounts = Accounts(pool, bucket_name=settings.users_bucket, on_write=self.credentials.written)
        self.audit = Audit(
            pool,
            stream=settings.audit_stream,
            subject=settings.audit_subject,
            max_age_s=settings.audit_max_age_s,
        )
        self.limiter = LoginLimiter(settings.login_max_failures, settings.login_window_s)
        self.passwords: Passwords | None = None
        self._secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else ""
        if len(self._secret) < MIN_SECRET_LENGTH:
            raise ConfigError(
                "SecuritySettings without a JWT secret: build them with load_security_settings()"
            )
        self._key_used_at: dict[str, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Create the users bucket and the audit stream if needed, and the first admin if one is configured."""
        # The dummy hash for unknown users costs one Argon2 hash: made off the loop.
        self.passwords = await asyncio.to_thread(Passwords)
        await self.accounts.open()
        await self.audit.open()
        await self._bootstrap_admin()
        await self.credentials.start()

    async def stop(self) -> None:
        """Stop the credentials watch; let pending last-used writes finish (briefly), then drop them."""
        await self.credentials.stop()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=2.0)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    def _passwords(self) -> Passwords:
        if self.passwords is None:
            raise RuntimeError("Security.start() was not awaited")
        return self.passwords

    async def hash_password(self, password: str) -> str:
        """The Argon2 hash to store for a new password."""
        return await self._passwords().hash(password)

    async def _bootstrap_admin(self) -> None:
        name = self.settings.admin_user
        password = self.settings.admin_password
        if password is None:
            if not await self.accounts.has_users():
                log.warning(
                    "no users exist and no admin is configured, so every login fails: set AEGIS_MGMT_ADMIN_PASSWORD"
                    " (or AEGIS_MGMT_ADMIN_PASSWORD_FILE, a file holding it) and restart to create the user %r",
                    name,
                )
            return
        try:
            await self.accounts.get_user(name)
            log.info("admin user %r exists; the configured admin password is not applied to it", name)
            return
        except NotFound:
            pass
        record = UserRecord(
            name=name,
            role=Role.ADMIN,
            password_hash=await self._passwords().hash(password.get_secret_value()),
            created_by="bootstrap",
        )
        try:
            created = await self.accounts.create_user(record)
        except Conflict:  # another replica created it first
            return
        await self.audit.append("system", "user.bootstrap", f"user:{name}", None, created.revision)
        log.info("created the admin user %r from the configured admin password", name)

    # -- logins and tokens ----------------------------------------------------------------------------------------

    async def login(
        self, username: str, password: str, scopes: list[str], address: str, request_id: str = ""
    ) -> TokenResponse:
        """Check a user's password and issue a token with ``scopes`` (all the role grants when empty).

        Raises LoginThrottled (too many failures), NotAuthenticated (wrong user or password; audited as
        ``login.failed``) or InvalidScope. Unknown users cost the same Argon2 work as known ones.
        """
        refused = self.limiter.check(username[:MAX_NAME_LENGTH], address)
        if refused is not None:
            log.info("login for %r from %s refused: %s", username[:64], address, refused.reason)
            raise LoginThrottled(
                f"{refused.reason}; retry in {refused.retry_after_s} s", refused.retry_after_s
            )
        user: UserRecord | None = None
        if len(username) <= MAX_NAME_LENGTH and len(password) <= MAX_PASSWORD_LENGTH:
            try:
                user = (await self.accounts.get_user(username)).value
            except NotFound:
                pass
            ok = await self._passwords().verify_user(password, user)
        else:  # never a valid login: no hash of a megabyte-long "password"
            ok = False
        if not ok:
            self.limiter.failed(username[:MAX_NAME_LENGTH], address)
            # Only a name that could be a user is recorded: a password typed into the name field is not.
            target = f"user:{username}" if user is not None or _is_token(username) else "user:<invalid name>"
            await self.audit.append(
                "anonymous", "login.failed", target, request_id=request_id, detail=f"from {address}"
            )
            raise NotAuthenticated("incorrect user name or password")
        assert user is not None
        self.limiter.succeeded(username)
        granted = ROLE_SCOPES[user.role]
        unknown = sorted(set(scopes) - set(SCOPES))
        if unknown:
            raise InvalidScope(f"unknown scopes {unknown}; the scopes are {sorted(SCOPES)}")
        beyond = sorted(set(scopes) - granted)
        if beyond:
            raise InvalidScope(f"role {user.role.value!r} does not grant {beyond}")
        token = self.issue_token(user, set(scopes) or granted)
        await self.audit.append(
            f"user:{user.name}",
            "login",
            f"user:{user.name}",
            request_id=request_id,
            detail=f"scope={token.scope}",
        )
        return token

    def issue_token(self, user: UserRecord, scopes: set[str] | frozenset[str]) -> TokenResponse:
        """A signed access token for ``user`` with ``scopes`` (not checked against the role here)."""
        now = int(time.time())
        scope = " ".join(sorted(scopes))
        claims = {
            "sub": user.name,
            "iat": now,
            "exp": now + self.settings.token_ttl_s,
            "iss": self.settings.jwt_issuer,
            "aud": self.settings.jwt_audience,
            "scope": scope,
            "jti": uuid.uuid4().hex,
            "ver": user.token_version,
        }
        token = jwt.encode(claims, self._secret, algorithm=JWT_ALGORITHM)
        return TokenResponse(access_token=token, expires_in=self.settings.token_ttl_s, scope=scope)

    async def authenticate_token(self, token: str) -> Principal:
        """The user a token belongs to, with the token's scopes that the user's role still grants.

        NotAuthenticated for a bad signature, an expired token, a wrong issuer or audience, a missing claim, or a
        user who is gone or changed password or role since the token was issued.
        """
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[JWT_ALGORITHM],
                audience=self.settings.jwt_audience,
                issuer=self.settings.jwt_issuer,
                leeway=self.settings.clock_skew_s,
                options={"require": ["exp", "iat", "sub", "iss", "aud", "jti", "scope"]},
            )
        except jwt.ExpiredSignatureError:
            raise NotAuthenticated("the token has expired: log in again") from None
        except jwt.InvalidTokenError as exc:
            raise NotAuthenticated(f"invalid token ({type(exc).__name__})") from None
        name, scope = claims.get("sub"), claims.get("scope")
        if not isinstance(name, str) or not isinstance(scope, str):
            raise NotAuthenticated("invalid token (malformed claims)")
        cached = self.credentials.user(name)
        if cached is not None and claims.get("ver", 0) <= cached.value.token_version:
            user = cached.value  # no NATS request: the common case
        else:  # not in the watch yet (created a moment ago elsewhere), or the watch lags behind the token
            try:
                user = (await self.accounts.get_user(name)).value
            except NotFound:
                raise NotAuthenticated("the token's user no longer exists") from None
        if claims.get("ver", 0) != user.token_version:
            raise NotAuthenticated("the token was revoked by a password or role change: log in again")
        return Principal(name, "user", frozenset(scope.split()) & ROLE_SCOPES[user.role])

    async def authenticate_key(self, key: str) -> Principal:
        """The principal of an API key; NotAuthenticated if it is malformed, unknown, wrong or revoked."""
        key_id = api_key_id(key)
        if key_id is None:
            raise NotAuthenticated("invalid API key")
        found = self.credentials.key(key_id)  # no NATS request: the common case
        if found is None:  # not in the watch yet (created a moment ago elsewhere)
            try:
                found = await self.accounts.get_key(key_id)
            except NotFound:
                raise NotAuthenticated("invalid API key") from None
        record = found.value
        if not api_key_matches(key, record):
            raise NotAuthenticated("invalid API key")
        if record.revoked_at is not None:
            raise NotAuthenticated("the API key has been revoked")
        self._note_key_used(record, found.revision)
        return Principal(record.id, "key", frozenset(record.scopes), label=record.name)

    def _note_key_used(self, record: ApiKeyRecord, revision: int) -> None:
        """Record the last use in the bucket at most once per interval per key, in the background: a KV write per
        request would make every call of a busy machine client a replicated write."""
        now = time.monotonic()
        last = self._key_used_at.get(record.id)
        if last is not None and now - last < self.settings.key_last_used_interval_s:
            return
        self._key_used_at[record.id] = now
        task = asyncio.create_task(self._write_key_used(record.id, revision))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write_key_used(self, key_id: str, revision: int) -> None:
        used_at = time.time()
        try:
            await self.accounts.update_key(
                key_id, lambda rec: rec.model_copy(update={"last_used_at": used_at}), revision=revision
            )
        except Conflict:
            pass  # changed since it was read (revoked, or another replica wrote its last use): nothing to add
        except AegisError as exc:
            log.warning("cannot record the last use of API key %s: %s", key_id, exc)


def _is_token(value: str) -> bool:
    try:
        wire.check_token("name", value)
    except ValueError:
        return False
    return len(value) <= MAX_NAME_LENGTH


# -- FastAPI dependencies ----------------------------------------------------------------------------------------------

TOKEN_URL = "/api/token"
_bearer = OAuth2PasswordBearer(tokenUrl=TOKEN_URL, scopes=SCOPES, auto_error=False)
_api_key = APIKeyHeader(name=wire.API_KEY_HEADER, auto_error=False, description="An API key for machines.")


def get_security(request: Request) -> Security:
    """The application's :class:`Security` (``app.state.security``)."""
    security = getattr(request.app.state, "security", None)
    if not isinstance(security, Security):
        raise RuntimeError("app.state.security is not set: build a Security, await start(), assign it")
    return security


async def current_principal(
    security_scopes: SecurityScopes,
    request: Request,
    token: Annotated[str | None, Depends(_bearer)],
    api_key: Annotated[str | None, Depends(_api_key)],
) -> Principal:
    """Authenticate the request (a Bearer token, else an API key) and check ``security_scopes``.

    Prefer :func:`requires`, which names the scopes. The principal is also left in ``request.state.principal``.
    """
    security = get_security(request)
    wanted = f' scope="{security_scopes.scope_str}"' if security_scopes.scopes else ""
    try:
        if token:
            principal = await security.authenticate_token(token)
        elif api_key:
            principal = await security.authenticate_key(api_key)
        else:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "not authenticated: send a Bearer token or an X-API-Key",
                headers={"WWW-Authenticate": f"Bearer{wanted}"},
            )
    except NotAuthenticated as exc:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            exc.message,
            headers={"WWW-Authenticate": f'Bearer error="invalid_token"{wanted.replace(" ", ", ", 1)}'},
        ) from None
    except AegisError as exc:  # the cluster could not answer: not the caller's fault
        raise HTTPException(http_status(exc), f"cannot check credentials now: {exc.message}") from None
    missing = [s for s in security_scopes.scopes if s not in principal.scopes]
    if missing:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"insufficient_scope: this needs {' '.join(missing)}",
            headers={
                "WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{security_scopes.scope_str}"'
            },
        )
    request.state.principal = principal
    return principal


def requires(*scopes: str) -> Any:
    """A FastAPI dependency that yields the caller's :class:`Principal` if it holds every one of ``scopes``.

    ``async def route(principal: Principal = requires("services:write"))``. An unknown scope is a programming
    error, raised at import time (ValueError).
    """
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise ValueError(f"unknown scopes {unknown}; the scopes are {sorted(SCOPES)}")
    return fastapi.Security(current_principal, scopes=list(scopes))


__all__ = [
    "JWT_ALGORITHM",
    "ROLE_SCOPES",
    "SCOPES",
    "TOKEN_URL",
    "InvalidScope",
    "LoginThrottled",
    "NotAuthenticated",
    "Principal",
    "Security",
    "SecuritySettings",
    "current_principal",
    "get_security",
    "http_status",
    "load_security_settings",
    "requires",
]
