"""``/api/services``: service definitions on the registry bucket, with optimistic concurrency over HTTP.

The ``ETag`` of a definition is its KV revision. ``PUT`` and ``DELETE`` must name the revision they read in
``If-Match`` (428 without it, 412 with the current revision when it is stale); ``POST`` creates only if absent (409).
Single definitions are read from the KV (through the stream leader: an operator reads their own writes); the list
comes from the watch cache. Every write is audited.
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Header, Path, Request, Response
from fastapi.responses import JSONResponse

from aegis.sdk.errors import Conflict
from aegis.sdk.registry import Registry
from aegis.sdk.schema import DefinitionFields, DefinitionRevision, ServiceDefinition

from .api_models import (
    IF_MATCH_PATTERN,
    NAME_PATTERN,
    DefinitionCreate,
    DefinitionOut,
    ErrorBody,
)
from .audit import request_id
from .auth import Principal, requires
from .http_errors import error

router = APIRouter(prefix="/api/services", tags=["services"])

ServiceName = Annotated[
    str, Path(min_length=1, max_length=128, pattern=NAME_PATTERN, description="Service name.")
]
_ETAG = re.compile(r'^(?:W/)?"?([0-9]{1,19})"?$')
IfMatch = Annotated[
    str | None,
    Header(
        alias="If-Match",
        pattern=IF_MATCH_PATTERN,
        description='The revision the change is based on, as read from the ETag (e.g. "42"). Required.',
    ),
]

_ERRORS: dict[int | str, dict[str, object]] = {
    400: {"model": ErrorBody},
    404: {"model": ErrorBody},
    503: {"model": ErrorBody},
}
_WRITE_ERRORS: dict[int | str, dict[str, object]] = {
    **_ERRORS,
    412: {"model": ErrorBody, "description": "If-Match names a revision that is not the current one."},
    428: {"model": ErrorBody, "description": "If-Match is missing."},
}


def _links(*operations: str) -> dict[str, dict[str, object]]:
    """OpenAPI links from a response that carries a definition and its ETag to the operations on it (clients and
    schemathesis' stateful tests follow them: create -> read -> update with If-Match -> delete)."""
    params: dict[str, dict[str, str]] = {
        "getService": {"name": "$response.body#/definition/name"},
        "serviceHistory": {"name": "$response.body#/definition/name"},
        "replaceService": {
            "name": "$response.body#/definition/name",
            "header.If-Match": "$response.header.ETag",
        },
        "deleteService": {
            "name": "$response.body#/definition/name",
            "header.If-Match": "$response.header.ETag",
        },
    }
    return {op: {"operationId": op, "parameters": params[op]} for op in operations}


def _registry(request: Request) -> Registry:
    return request.app.state.registry  # type: ignore[no-any-return]


def _etag(revision: int) -> dict[str, str]:
    return {"ETag": f'"{revision}"'}


def _if_match(value: str | None) -> int | None:
    match = _ETAG.match(value or "")
    return int(match.group(1)) if match else None


async def _audit(
    request: Request, who: Principal, action: str, target: str, before: int | None, after: int | None
) -> None:
    await request.app.state.security.audit.append(
        actor=who.actor,
        action=action,
        target=target,
        before_revision=before,
        after_revision=after,
        request_id=request_id(request),
    )


@router.get(
    "",
    response_model=list[DefinitionOut],
    operation_id="listServices",
    summary="Every service definition (from the watch cache)",
)
async def list_services(
    request: Request, _: Annotated[Principal, requires("services:read")]
) -> list[DefinitionOut]:
    cached = request.app.state.fleet.definitions
    return [DefinitionOut(definition=d, revision=rev) for _, (d, rev) in sorted(cached.items())]


@router.post(
    "",
    status_code=201,
    response_model=DefinitionOut,
    operation_id="createService",
    responses={
        **_ERRORS,
        201: {"links": _links("getService", "replaceService", "deleteService", "serviceHistory")},
        409: {"model": ErrorBody, "description": "A definition of that name exists."},
    },
    summary="Create a definition (only if none exists)",
)
async def create_service(
    body: DefinitionCreate,
    request: Request,
    response: Response,
    who: Annotated[Principal, requires("services:write")],
) -> DefinitionOut | JSONResponse:
    try:
        stored = await _registry(request).create_definition(body.to_definition())
    except Conflict as exc:
        return error(409, exc.message, current_revision=exc.revision)
    await _audit(request, who, "service.create", body.name, None, stored.revision)
    response.headers.update(_etag(stored.revision))
    response.headers["Location"] = f"/api/services/{body.name}"
    return DefinitionOut(definition=stored.value, revision=stored.revision)


@router.get(
    "/{name}",
    response_model=DefinitionOut,
    operation_id="getService",
    responses={**_ERRORS, 200: {"links": _links("replaceService", "deleteService")}},
    summary="One definition and its ETag",
)
async def get_service(
    name: ServiceName,
    request: Request,
    response: Response,
    _: Annotated[Principal, requires("services:read")],
) -> DefinitionOut:
    stored = await _registry(request).get_definition(name)
    response.headers.update(_etag(stored.revision))
    return DefinitionOut(definition=stored.value, revision=stored.revision)


@router.put(
    "/{name}",
    response_model=DefinitionOut,
    operation_id="replaceService",
    responses={**_WRITE_ERRORS, 200: {"links": _links("getService", "replaceService", "deleteService")}},
    summary="Replace a definition",
)
async def replace_service(
    name: ServiceName,
    body: DefinitionFields,
    request: Request,
    response: Response,
    who: Annotated[Principal, requires("services:write")],
    if_match: IfMatch = None,
) -> DefinitionOut | JSONResponse:
    expected = _if_match(if_match)
    if expected is None:
        return error(428, "If-Match is required: send the ETag of the definition you read")
    try:
        stored = await _registry(request).update_definition(
            ServiceDefinition(name=name, **body.model_dump()), expected
        )
    except Conflict as exc:
        return await _stale(request, name, expected, exc)
    await _audit(request, who, "service.update", name, expected, stored.revision)
    response.headers.update(_etag(stored.revision))
    return DefinitionOut(definition=stored.value, revision=stored.revision)


@router.delete(
    "/{name}",
    status_code=204,
    operation_id="deleteService",
    responses=_WRITE_ERRORS,
    summary="Delete a definition",
)
async def delete_service(
    name: ServiceName,
    request: Request,
    who: Annotated[Principal, requires("services:write")],
    if_match: IfMatch = None,
) -> Response:
    expected = _if_match(if_match)
    if expected is None:
        return error(428, "If-Match is required: send the ETag of the definition you read")
    try:
        await _registry(request).delete_definition(name, expected)
    except Conflict as exc:
        return await _stale(request, name, expected, exc)
    await _audit(request, who, "service.delete", name, expected, None)
    return Response(status_code=204)


@router.get(
    "/{name}/history",
    operation_id="serviceHistory",
    response_model=list[DefinitionRevision],
    responses=_ERRORS,
    summary="The kept revisions of a definition, oldest first (deletes included)",
)
async def service_history(
    name: ServiceName, request: Request, _: Annotated[Principal, requires("services:read")]
) -> list[DefinitionRevision]:
    return await _registry(request).definition_history(name)


async def _stale(request: Request, name: str, expected: int, exc: Conflict) -> JSONResponse:
    current = exc.revision
    if current is None:  # the server did not say: read it
        current = (await _registry(request).get_definition(name)).revision
    return error(
        412,
        f"definition {name!r} is at revision {current}, not {expected}: re-read it and apply your change again",
        headers=_etag(current),
        current_revision=current,
    )
