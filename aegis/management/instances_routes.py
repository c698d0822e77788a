"""``/api/instances``, ``/api/metrics``, ``/api/groups``, ``/api/cluster``: what runs, how it does, who is active.

Lists come from the fleet's watch caches (:class:`~aegis.management.fleet.Fleet`): no KV read per request. The
metrics history, an instance's configuration, a group's failovers and the cluster view are read over NATS when
asked, each bounded by a timeout.
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import TypeAdapter

from aegis.sdk.effective_config import fetch_effective_config
from aegis.sdk.errors import NoResponders, RpcTimeout
from aegis.sdk.leadership import leadership_history
from aegis.sdk.schema import EffectiveConfig, LeadershipChange, ServiceInstance

from .api_models import NAME_PATTERN, ClusterView, ErrorBody, GroupView, Health, InstanceView
from .auth import Principal, requires
from .fleet import Fleet
from .http_errors import error
from .metrics_history import MAX_POINTS, MetricsHistory, read_history

router = APIRouter(prefix="/api", tags=["instances"])

Token = Annotated[str, Path(min_length=1, max_length=128, pattern=NAME_PATTERN)]
OptionalToken = Annotated[str | None, Query(min_length=1, max_length=128, pattern=NAME_PATTERN)]
MAX_TIME = 4_102_444_800.0
"""2100-01-01 in UNIX seconds: later times are typing errors (and overflow the server's time format)."""
_VIEWS = TypeAdapter(list[InstanceView])
_NOT_FOUND: dict[int | str, dict[str, object]] = {404: {"model": ErrorBody}}


def _fleet(request: Request) -> Fleet:
    return request.app.state.fleet  # type: ignore[no-any-return]


@router.get("/instances", response_model=list[InstanceView], summary="Instances with their derived health")
async def list_instances(
    request: Request,
    _: Annotated[Principal, requires("instances:read")],
    service: OptionalToken = None,
    status: Annotated[Health | None, Query(description="Only instances in this health state.")] = None,
) -> Response:
    # serialized by pydantic-core in one call: FastAPI's generic path costs ~20x more for a few hundred rows
    return Response(
        _VIEWS.dump_json(_fleet(request).instances(service, status)), media_type="application/json"
    )


@router.get(
    "/instances/{service}/{instance_id}",
    response_model=InstanceView,
    responses=_NOT_FOUND,
    summary="One instance",
)
async def get_instance(
    service: Token,
    instance_id: Token,
    request: Request,
    _: Annotated[Principal, requires("instances:read")],
) -> InstanceView | JSONResponse:
    view = _fleet(request).instance(service, instance_id)
    if view is None:
        return error(404, f"no instance {instance_id!r} of {service!r} is known")
    return view


@router.get(
    "/metrics",
    response_model=list[ServiceInstance],
    summary="Live instance records with their metrics (Story 4.1)",
)
async def live_metrics(
    request: Request,
    _: Annotated[Principal, requires("metrics:read")],
    service: OptionalToken = None,
) -> Response:
    return Response(_fleet(request).live_records_json(service), media_type="application/json")


@router.get(
    "/instances/{service}/{instance_id}/metrics",
    response_model=MetricsHistory,
    responses={400: {"model": ErrorBody}, 503: {"model": ErrorBody}},
    summary="Metrics history of one instance, one snapshot per step, paged",
)
async def metrics_history(
    service: Token,
    instance_id: Token,
    request: Request,
    _: Annotated[Principal, requires("metrics:read")],
    since: Annotated[
        float | None, Query(ge=0, le=MAX_TIME, description="UNIX seconds; default: until - 15 min.")
    ] = None,
    until: Annotated[
        float | None, Query(ge=0, le=MAX_TIME, description="UNIX seconds; default: now.")
    ] = None,
    step: Annotated[float, Query(gt=0, le=86400, description="Seconds between points.")] = 5.0,
    limit: Annotated[int, Query(ge=1, le=MAX_POINTS)] = 200,
) -> MetricsHistory:
    end = time.time() if until is None else until
    start = end - 900 if since is None else since
    return await read_history(request.app.state.pool, service, instance_id, start, end, step, limit)


@router.get(
    "/instances/{service}/{instance_id}/config",
    response_model=EffectiveConfig,
    responses={404: {"model": ErrorBody}, 504: {"model": ErrorBody}},
    summary="The instance's live effective configuration, secrets redacted",
)
async def instance_config(
    service: Token,
    instance_id: Token,
    request: Request,
    _: Annotated[Principal, requires("config:read")],
) -> EffectiveConfig | JSONResponse:
    view = _fleet(request).instance(service, instance_id)
    if view is None or view.health == Health.DOWN:
        return error(404, f"no running instance {instance_id!r} of {service!r} is known")
    timeout = request.app.state.settings.config_timeout_s
    try:
        return await fetch_effective_config(request.app.state.pool, service, instance_id, timeout=timeout)
    except (RpcTimeout, NoResponders) as exc:
        return error(
            504, f"instance {service}.{instance_id} did not answer within {timeout:g} s ({exc.message})"
        )


@router.get(
    "/groups", response_model=list[GroupView], summary="Single-active groups: active, epoch, standbys"
)
async def list_groups(
    request: Request, _: Annotated[Principal, requires("instances:read")]
) -> list[GroupView]:
    return _fleet(request).groups()


@router.get(
    "/groups/{service}/{group}/failovers",
    response_model=list[LeadershipChange],
    summary="Leadership changes of one group, oldest first",
)
async def group_failovers(
    service: Token,
    group: Token,
    request: Request,
    _: Annotated[Principal, requires("instances:read")],
    since: Annotated[float | None, Query(ge=0, le=MAX_TIME, description="UNIX seconds.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[LeadershipChange]:
    return await leadership_history(request.app.state.pool, service, group, since=since, limit=limit)


@router.get("/cluster", response_model=ClusterView, summary="NATS nodes, meta leader, Aegis stream placement")
async def cluster(request: Request, _: Annotated[Principal, requires("instances:read")]) -> ClusterView:
    return await request.app.state.cluster.read()
