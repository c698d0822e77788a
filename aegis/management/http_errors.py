"""How the management API answers errors: the SDK's typed errors as HTTP statuses, a body-size limit, request ids.

Every error body is :class:`~aegis.management.api_models.ErrorBody` (``{"detail": ...}``); validation errors keep
FastAPI's 422 body, which names each bad field and why. Nothing a client sends can produce a 500: the SDK raises
:class:`~aegis.sdk.errors.BadRequest` for bad names, pydantic rejects bad bodies, and NATS trouble is a 503.
"""

from __future__ import annotations

import logging
import re
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aegis.sdk.errors import (
    AegisError,
    BadRequest,
    ConfigError,
    Conflict,
    DeadlineExceeded,
    NotFound,
    PayloadTooLarge,
    RpcTimeout,
    ServiceUnavailable,
    UnknownMethod,
)

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-Id"
_REQUEST_ID = re.compile(r"^[-_.a-zA-Z0-9]{1,64}$")

# most specific first
_STATUS: tuple[tuple[type[AegisError], int], ...] = (
    (BadRequest, 400),
    (ConfigError, 400),
    (NotFound, 404),
    (UnknownMethod, 404),
    (Conflict, 409),
    (PayloadTooLarge, 413),
    (DeadlineExceeded, 504),
    (RpcTimeout, 503),  # NATS (the KV, JetStream) did not answer in time
    (ServiceUnavailable, 503),
)


def status_of(exc: AegisError) -> int:
    """The HTTP status of an SDK error (502 for errors a remote instance reported)."""
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 502


def error(status: int, detail: str, headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    """An :class:`~aegis.management.api_models.ErrorBody` response."""
    return JSONResponse({"detail": detail, **extra}, status_code=status, headers=headers)


def install(app: FastAPI, max_body_bytes: int) -> None:
    """Add the error handlers and the body-limit and request-id middleware to ``app``."""

    @app.exception_handler(AegisError)
    async def _aegis_error(request: Request, exc: AegisError) -> JSONResponse:
        status = status_of(exc)
        if status >= 500:
            log.warning("%s %s: %s: %s", request.method, request.url.path, type(exc).__name__, exc.message)
        extra = {"current_revision": exc.revision} if isinstance(exc, Conflict) and exc.revision else {}
        return error(status, exc.message, **extra)

    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    app.add_middleware(RequestId)


def request_id(request: Request) -> str:
    """This request's id (from ``X-Request-Id`` when the client sent a sane one, else generated)."""
    return str(request.scope.get("aegis.request_id", ""))


class RequestId:
    """Give every request an id (the client's ``X-Request-Id`` if well formed) and echo it in the response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = (
            dict(scope.get("headers") or []).get(REQUEST_ID_HEADER.lower().encode(), b"").decode("latin-1")
        )
        rid = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        scope["aegis.request_id"] = rid

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (REQUEST_ID_HEADER.lower().encode(), rid.encode())]
            await send(message)

        await self.app(scope, receive, send_with_id)


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` with 413 before anything parses them.

    Starlette has no body limit of its own (uvicorn neither); a declared ``Content-Length`` over the limit is
    refused at once, a chunked body as soon as it has carried too much.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._refuse(scope, receive, send)
            return
        seen = 0
        too_big = False

        async def limited() -> Message:
            nonlocal seen, too_big
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    too_big = True
                    raise _TooLarge
            return message

        started = False

        async def watch_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited, watch_send)
        except _TooLarge:
            if not started:
                await self._refuse(scope, receive, send)
        except Exception:
            if not too_big:
                raise
            if not started:
                await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error(413, f"request body larger than {self.max_bytes} bytes")
        await response(scope, receive, send)


class _TooLarge(Exception):
    pass
