"""Process and fleet-wide routes: ``/healthz``, ``/readyz``, Prometheus ``/metrics`` and the live ``/api/events``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from fastapi.sse import EventSourceResponse, ServerSentEvent

from . import prometheus
from .api_models import AUTH_RESPONSES, Readiness
from .auth import Principal, requires

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="The process is up (no auth)")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness}},
    summary="Ready to serve (no auth)",
)
async def readyz(request: Request) -> Readiness | JSONResponse:
    pool = request.app.state.pool
    state = Readiness(
        ready=False,
        nats_connected=pool is not None and any(nc.is_connected for nc in pool.clients),
        caches=(
            {**request.app.state.fleet.ready, "credentials": request.app.state.security.credentials.ready}
            if request.app.state.fleet is not None
            else {}
        ),
    )
    state.ready = state.nats_connected and bool(state.caches) and all(state.caches.values())
    if not state.ready:
        return JSONResponse(state.model_dump(), status_code=503)
    return state


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {}}, "description": "Prometheus text format"},
        **AUTH_RESPONSES,
    },
    summary="Per-instance and per-method figures for Prometheus",
)
async def prometheus_metrics(request: Request, _: Annotated[Principal, requires("metrics:read")]) -> Response:
    return Response(prometheus.render(request.app.state.fleet), media_type=prometheus.CONTENT_TYPE)


@router.get(
    "/api/events",
    response_class=EventSourceResponse,
    responses=AUTH_RESPONSES,
    summary="Live changes (instance, health, leadership, definition) as server-sent events",
)
async def events(
    request: Request,
    _: Annotated[Principal, requires("instances:read")],
    last_event_id: Annotated[
        str | None, Header(alias="Last-Event-ID", max_length=64, description="Resume after this event.")
    ] = None,
    max_events: Annotated[
        int | None, Query(ge=1, le=100_000, description="Close after this many events.")
    ] = None,
    max_seconds: Annotated[float | None, Query(gt=0, le=86_400, description="Close after this long.")] = None,
) -> AsyncIterator[ServerSentEvent]:
    async for event in request.app.state.events.subscribe(
        last_event_id, max_events=max_events, max_seconds=max_seconds
    ):
        yield ServerSentEvent(raw_data=event.json(), event=event.type, id=event.id)
