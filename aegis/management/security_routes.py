"""The management API's own security routes: log in, manage users and API keys, read the audit log.

``app.include_router(router)`` mounts them under ``/api``; they need ``app.state.security`` (see
:mod:`aegis.management.auth`). Every change of a user or key, and every failed login, is audited with the acting
principal, the KV revisions before and after, and the request id.

Errors are answered here, not by the application: an SDK error becomes its HTTP status with ``{"detail": ...}``,
and request validation errors (422) leave out the ``input`` pydantic would echo, so a rejected password is never
sent back.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import OAuth2PasswordRequestForm

from aegis.sdk.errors import AegisError, Conflict
from aegis.sdk.registry import Versioned
from aegis.sdk.schema import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyInfo,
    ApiKeyRecord,
    AuditPage,
    PasswordChange,
    Role,
    RoleChange,
    TokenResponse,
    UserCreate,
    UserInfo,
    UserRecord,
)

from .accounts import new_api_key
from .audit import MAX_PAGE, request_id
from .auth import (
    ROLE_SCOPES,
    InvalidScope,
    LoginThrottled,
    NotAuthenticated,
    Principal,
    Security,
    get_security,
    http_status,
    requires,
)


class _SecurityRoute(APIRoute):
    """Answers the SDK's errors and scrubs validation errors (see the module docstring)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                errors = [{k: v for k, v in err.items() if k not in ("input", "url")} for err in exc.errors()]
                return JSONResponse(
                    {"detail": jsonable_encoder(errors)}, status.HTTP_422_UNPROCESSABLE_CONTENT
                )
            except LoginThrottled as exc:
                return JSONResponse(
                    {"detail": exc.message},
                    status.HTTP_429_TOO_MANY_REQUESTS,
                    {"Retry-After": str(exc.retry_after_s)},
                )
            except InvalidScope as exc:  # RFC 6749 section 5.2
                return JSONResponse(
                    {"error": "invalid_scope", "error_description": exc.message, "detail": exc.message},
                    status.HTTP_400_BAD_REQUEST,
                )
            except NotAuthenticated as exc:
                return JSONResponse(
                    {"detail": exc.message}, status.HTTP_401_UNAUTHORIZED, {"WWW-Authenticate": "Bearer"}
                )
            except AegisError as exc:
                return JSONResponse({"detail": exc.message}, http_status(exc))

        return route


router = APIRouter(prefix="/api", tags=["security"], route_class=_SecurityRoute)

Admin = Annotated[Principal, requires("admin")]
SecurityDep = Annotated[Security, Depends(get_security)]
_AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing, invalid, expired or revoked credentials."},
    403: {"description": "insufficient_scope: the credentials lack a scope this route needs."},
}
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _user_info(user: Versioned[UserRecord]) -> UserInfo:
    rec = user.value
    return UserInfo(
        name=rec.name,
        role=rec.role,
        scopes=sorted(ROLE_SCOPES[rec.role]),  # type: ignore[arg-type]  # the role's scopes are Scope values
        created_at=rec.created_at,
        updated_at=rec.updated_at,
        created_by=rec.created_by,
        revision=user.revision,
    )


def _key_info(key: Versioned[ApiKeyRecord]) -> ApiKeyInfo:
    return ApiKeyInfo(**key.value.model_dump(exclude={"key_hash"}), revision=key.revision)


# -- login ------------------------------------------------------------------------------------------------------------


@router.post(
    "/token",
    responses={
        400: {"description": "invalid_scope: a scope that does not exist or the user's role does not grant."},
        401: {"description": "Incorrect user name or password."},
        429: {"description": "Too many failed logins for this user name or address; see Retry-After."},
    },
)
async def login(
    request: Request,
    response: Response,
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    security: SecurityDep,
) -> TokenResponse:
    """OAuth2 password flow: a short-lived access token with the asked scopes (all the role grants when none)."""
    address = request.client.host if request.client else "unknown"
    token = await security.login(form.username, form.password, form.scopes, address, request_id(request))
    response.headers.update(_NO_STORE)
    return token


# -- users ------------------------------------------------------------------------------------------------------------


@router.get("/users", responses=_AUTH_ERRORS)
async def list_users(security: SecurityDep, _: Admin) -> list[UserInfo]:
    """Every user with their role and scopes."""
    return [_user_info(u) for u in await security.accounts.list_users()]


@router.post(
    "/users", status_code=status.HTTP_201_CREATED, responses={**_AUTH_ERRORS, 409: {"description": "Exists."}}
)
async def create_user(
    body: UserCreate, request: Request, security: SecurityDep, principal: Admin
) -> UserInfo:
    """Create a user with a role; the password is stored only as an Argon2 hash."""
    record = UserRecord(
        name=body.name,
        role=body.role,
        password_hash=await security.hash_password(body.password.get_secret_value()),
        created_by=principal.actor,
    )
    created = await security.accounts.create_user(record)
    await security.audit.append(
        principal.actor,
        "user.create",
        f"user:{body.name}",
        None,
        created.revision,
        request_id(request),
        detail=f"role={body.role.value}",
    )
    return _user_info(created)


@router.get("/users/{name}", responses={**_AUTH_ERRORS, 404: {"description": "No such user."}})
async def get_user(name: str, security: SecurityDep, _: Admin) -> UserInfo:
    """One user."""
    return _user_info(await security.accounts.get_user(name))


async def _refuse_last_admin(security: Security, name: str) -> None:
    others = [
        u for u in await security.accounts.list_users() if u.value.role is Role.ADMIN and u.value.name != name
    ]
    if not others:
        raise Conflict(f"{name!r} is the last admin: make another user admin first")


@router.delete(
    "/users/{name}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={
        **_AUTH_ERRORS,
        404: {"description": "No such user."},
        409: {"description": "The last admin."},
    },
)
async def delete_user(name: str, request: Request, security: SecurityDep, principal: Admin) -> None:
    """Delete a user; their tokens stop working at once. The last admin cannot be deleted."""
    current = await security.accounts.get_user(name)
    if current.value.role is Role.ADMIN:
        await _refuse_last_admin(security, name)
    marker = await security.accounts.delete_user(name, current.revision)
    await security.audit.append(
        principal.actor, "user.delete", f"user:{name}", current.revision, marker, request_id(request)
    )


@router.put(
    "/users/{name}/password",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**_AUTH_ERRORS, 404: {"description": "No such user."}},
)
async def set_password(
    name: str, body: PasswordChange, request: Request, security: SecurityDep, principal: Admin
) -> None:
    """Set a user's password; the tokens issued before stop working."""
    await security.accounts.get_user(name)  # 404 before paying for a hash
    new_hash = await security.hash_password(body.password.get_secret_value())
    before, after = await security.accounts.update_user(
        name, lambda u: u.model_copy(update={"password_hash": new_hash, "token_version": u.token_version + 1})
    )
    await security.audit.append(
        principal.actor, "user.password", f"user:{name}", before, after.revision, request_id(request)
    )


@router.put(
    "/users/{name}/role",
    responses={
        **_AUTH_ERRORS,
        404: {"description": "No such user."},
        409: {"description": "The last admin."},
    },
)
async def set_role(
    name: str, body: RoleChange, request: Request, security: SecurityDep, principal: Admin
) -> UserInfo:
    """Change a user's role; the tokens issued before stop working. The last admin cannot be demoted."""
    current = await security.accounts.get_user(name)
    if current.value.role is Role.ADMIN and body.role is not Role.ADMIN:
        await _refuse_last_admin(security, name)
    before, after = await security.accounts.update_user(
        name, lambda u: u.model_copy(update={"role": body.role, "token_version": u.token_version + 1})
    )
    await security.audit.append(
        principal.actor,
        "user.role",
        f"user:{name}",
        before,
        after.revision,
        request_id(request),
        detail=f"{current.value.role.value} -> {body.role.value}",
    )
    return _user_info(after)


# -- API keys -----------------------------------------------------------------------------------------------------------


@router.get("/keys", responses=_AUTH_ERRORS)
async def list_keys(security: SecurityDep, _: Admin) -> list[ApiKeyInfo]:
    """Every API key, revoked ones included (never the key or its hash)."""
    return [_key_info(k) for k in await security.accounts.list_keys()]


@router.post("/keys", status_code=status.HTTP_201_CREATED, responses=_AUTH_ERRORS)
async def create_key(
    body: ApiKeyCreate, request: Request, response: Response, security: SecurityDep, principal: Admin
) -> ApiKeyCreated:
    """Create an API key with the given scopes. The answer is the only time the key is shown: keep it."""
    key, record = new_api_key(body.name, body.scopes, principal.actor)
    created = await security.accounts.create_key(record)
    await security.audit.append(
        principal.actor,
        "key.create",
        f"key:{record.id}",
        None,
        created.revision,
        request_id(request),
        detail=f"name={record.name!r} scopes={' '.join(record.scopes)}",
    )
    response.headers.update(_NO_STORE)
    return ApiKeyCreated(**_key_info(created).model_dump(), key=key)


@router.delete(
    "/keys/{key_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**_AUTH_ERRORS, 404: {"description": "No such key."}},
)
async def revoke_key(key_id: str, request: Request, security: SecurityDep, principal: Admin) -> None:
    """Revoke an API key: it stops working at once. Revoking a revoked key changes nothing."""
    current = await security.accounts.get_key(key_id)
    if current.value.revoked_at is not None:
        return
    now = time.time()
    before, after = await security.accounts.update_key(
        key_id,
        lambda k: (
            k
            if k.revoked_at is not None
            else k.model_copy(update={"revoked_at": now, "revoked_by": principal.actor})
        ),
    )
    await security.audit.append(
        principal.actor, "key.revoke", f"key:{key_id}", before, after.revision, request_id(request)
    )


# -- audit ----------------------------------------------------------------------------------------------------------------


@router.get("/audit", responses={**_AUTH_ERRORS, 400: {"description": "Both cursor and since."}})
async def read_audit(
    security: SecurityDep,
    _: Annotated[Principal, requires("audit:read")],
    since: Annotated[
        datetime | None, Query(description="Entries at or after this time (ISO 8601, or UNIX seconds).")
    ] = None,
    cursor: Annotated[
        int | None, Query(ge=1, description="A page's next_cursor (a stream sequence).")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
) -> AuditPage:
    """A page of the audit log, oldest first. Follow ``next_cursor`` until it is null."""
    since_s = None
    if since is not None:
        since_s = (since if since.tzinfo else since.replace(tzinfo=UTC)).timestamp()
    return await security.audit.page(cursor=cursor, since=since_s, limit=limit)


__all__ = ["router"]
