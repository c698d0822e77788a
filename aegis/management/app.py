"""The management service: a stateless FastAPI app over NATS (``aegis manage`` runs it with uvicorn).

Everything it knows lives on NATS (definitions, instance records, election keys, users, audit), so several replicas
can run behind a load balancer: each keeps its own watch caches and its own event stream::

    app = create_app()                        # settings from the environment (AEGIS_ and AEGIS_MGMT_)
    uvicorn.run(app, host="127.0.0.1", port=8080)

Start-up connects to NATS, makes sure the buckets and streams exist, starts the security layer (users, keys,
audit) and loads the caches; ``/readyz`` says 200 once the caches are warm.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from importlib.metadata import version
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from aegis.sdk.config import AegisSettings, load_settings
from aegis.sdk.connection import connect
from aegis.sdk.leadership import ensure_leadership_stream
from aegis.sdk.quorum_buckets import ensure_quorum_buckets
from aegis.sdk.registry import Registry, ensure_registry
from aegis.sdk.single_active import ensure_election_bucket

from . import http_errors, instances_routes, ops_routes, security_routes, services_routes
from .api_models import AUTH_RESPONSES, IF_MATCH_PATTERN
from .auth import Security, SecuritySettings, load_security_settings
from .cluster_info import ClusterReader
from .event_hub import EventHub
from .fleet import Fleet
from .settings import ManagementSettings, load_management_settings

log = logging.getLogger(__name__)

TICK_S = 1.0
ROUTERS = (ops_routes.router, security_routes.router, services_routes.router, instances_routes.router)
"""Every router of the app (tests walk their routes: a new route cannot ship without a scope)."""


def create_app(
    settings: ManagementSettings | None = None,
    *,
    nats: AegisSettings | None = None,
    security: SecuritySettings | None = None,
) -> FastAPI:
    """The app, configured from the arguments or else the environment. Nothing connects until it starts."""
    settings = settings or load_management_settings()
    security = security or load_security_settings()
    nats = nats or load_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = await connect(nats.model_copy(update={"name": nats.name or "aegis-management"}))
        ticker: asyncio.Task[None] | None = None
        try:
            await ensure_registry(pool)
            await ensure_election_bucket(pool)
            await ensure_quorum_buckets(pool)  # watched by the fleet; the layout is the settings' (rule 9)
            await ensure_leadership_stream(pool)
            hub = EventHub(settings.events_buffer)
            fleet = Fleet(pool, settings, hub.publish)
            guard = Security(security, pool)
            app.state.pool = pool
            app.state.events = hub
            app.state.fleet = fleet
            app.state.security = guard
            app.state.registry = Registry(pool)
            app.state.cluster = ClusterReader(pool, settings.monitor_urls)
            await guard.start()
            await fleet.start()
            ticker = asyncio.create_task(_tick(fleet), name="fleet health")
            yield
        finally:
            if ticker is not None:
                ticker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ticker
            if getattr(app.state, "fleet", None) is not None:
                await app.state.fleet.stop()
            if getattr(app.state, "security", None) is not None:
                await app.state.security.stop()
            await pool.close()

    app = FastAPI(
        title="Aegis management API",
        version=version("aegis"),
        description="Service definitions, live instances and their health, metrics, configuration, "
        "single-active groups and failovers, the NATS cluster, and an audit log. OAuth2 bearer tokens or "
        "API keys; every route but /healthz, /readyz and /api/token needs a scope.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.pool = None
    app.state.fleet = None
    if security.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=security.cors_origins,
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "If-Match", "X-API-Key", "Last-Event-ID"],
            expose_headers=["ETag", "X-Request-Id"],
        )
    http_errors.install(app, settings.max_body_bytes)
    _document_required_if_match(app)
    for router in ROUTERS:
        app.include_router(router, responses=AUTH_RESPONSES if router is not ops_routes.router else None)
    return app


def _document_required_if_match(app: FastAPI) -> None:
    """Mark ``If-Match`` required in the OpenAPI schema. It is declared optional in the routes only so that a
    request without it gets the 428 that RFC 6585 names (FastAPI would answer 422 for a missing required header)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = build()
            for operations in spec.get("paths", {}).values():
                for operation in operations.values():
                    for param in operation.get("parameters", []):
                        if param.get("in") == "header" and param.get("name") == "If-Match":
                            param["required"] = True
                            param["schema"] = {k: v for k, v in param["schema"].items() if k != "anyOf"} | {
                                "type": "string",
                                "pattern": IF_MATCH_PATTERN,
                            }
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


async def _tick(fleet: Fleet) -> None:
    while True:
        await asyncio.sleep(TICK_S)
        try:
            fleet.tick()
        except Exception:
            log.exception("fleet health tick failed")
