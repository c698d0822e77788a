"""How the management API answers errors: the SDK's typed errors as HTTP statuses (one mapping,
:func:`aegis.management.auth.http_status`), a body-size limit, request ids.

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

from aegis.sdk import wire
from aegis.sdk.errors import AegisError, Conflict

from .auth import http_status

log = logging.getLogger(__name__)

_REQUEST_ID = re.compile(r"^[-_.a-zA-Z0-9]{1,64}$")
_HEADER = wire.REQUEST_ID_HEADER.lower().encode()


def error(status: int, detail: str, headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    """An :class:`~aegis.management.api_models.ErrorBody` response."""
    return JSONResponse({"detail": detail, **extra}, status_code=status, headers=headers)


def install(app: FastAPI, max_body_bytes: int) -> None:
    """Add the error handlers and the body-limit and request-id middleware to ``app``."""

    @app.exception_handler(AegisError)
    async def _aegis_error(request: Request, exc: AegisError) -> JSONResponse:
        status = http_status(exc)
        if status >= 500:
            log.warning("%s %s: %s: %s", request.method, request.url.path, type(exc).__name__, exc.message)
        extra = {"current_revision": exc.revision} if isinstance(exc, Conflict) and exc.revision else {}
        return error(status, exc.message, **extra)

    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    app.add_middleware(RequestId)


class RequestId:
    """Give every request an id (the client's ``X-Request-ID`` if well formed) and echo it in the response.

    The id lands in ``request.state.request_id``, where :func:`aegis.management.audit.request_id` (and so every
    audit entry of the request) finds it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers") or []).get(_HEADER, b"").decode("latin-1")
        rid = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (_HEADER, rid.encode())]
            await send(message)

        await self.app(scope, receive, send_with_id)


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` with 413 before anything parses them.

    Starlette has no body limit of its own (uvicorn neither). A declared ``Content-Length`` over the limit is
    refused at once; a body without one (chunked) is read here up to the limit and handed on whole, or refused as
    soon as it has carried too much (an error raised from inside the app's body read would be turned into a 400 by
    FastAPI's body parsing).
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            if not declared.isdigit() or int(declared) > self.max_bytes:
                await self._refuse(scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: let the app see it
                await self.app(scope, _replay(message, receive), send)
                return
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        await self.app(
            scope, _replay({"type": "http.request", "body": bytes(body), "more_body": False}, receive), send
        )

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error(413, f"request body larger than {self.max_bytes} bytes")
        await response(scope, receive, send)


def _replay(first: Message, receive: Receive) -> Receive:
    """A receive that gives ``first`` (the body read already), then the client's own messages (a streaming
    response listens there for the client going away)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return first
        return await receive()

    return replay
