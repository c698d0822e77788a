"""An instance's metrics over time, read from the ``AEGIS_METRICS`` stream (one snapshot per history interval).

A chart wants one point per ``step`` seconds, not every stored snapshot: for each step the stream is asked for the
first snapshot of the instance's subject at or after that time (a JetStream message get by ``start_time`` and
``next_by_subj``), so a page of N points costs N small requests whatever the stream holds. Each point is a whole
:class:`~aegis.sdk.schema.MetricsSnapshot`, whose window figures (p50/p99/error rate of its own interval) are what
a latency chart plots; lifetime percentiles would flatten every spike.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

from pydantic import BaseModel, Field

from aegis.sdk import wire
from aegis.sdk.connection import ConnectionPool
from aegis.sdk.errors import BadRequest
from aegis.sdk.nats_errors import request_error
from aegis.sdk.schema import MetricsSnapshot

MAX_POINTS = 1000


class MetricsHistory(BaseModel):
    """A page of an instance's metrics history."""

    service: str
    instance_id: str
    since: float
    until: float
    step: float
    points: list[MetricsSnapshot] = Field(default_factory=list)
    next_since: float | None = Field(
        None, description="Pass as ``since`` for the next page; None on the last."
    )


def _parse_time(text: str) -> float:
    """UNIX seconds of the server's RFC 3339 time (nanoseconds cut to microseconds)."""
    head, dot, frac = text.rstrip("Z").partition(".")
    return datetime.fromisoformat(
        f"{head}.{(frac + '000000')[:6]}+00:00" if dot else f"{head}+00:00"
    ).timestamp()


def _rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


async def read_history(
    pool: ConnectionPool,
    service: str,
    instance_id: str,
    since: float,
    until: float,
    step: float,
    limit: int,
    timeout: float = 2.0,
) -> MetricsHistory:
    """Up to ``limit`` snapshots between ``since`` and ``until`` (UNIX seconds), at most one per ``step`` s."""
    if until < since:
        raise BadRequest(f"until ({until}) is before since ({since})")
    if step <= 0:
        raise BadRequest("step must be > 0 seconds")
    subject = wire.metrics_subject(service, instance_id)
    api = f"$JS.API.STREAM.MSG.GET.{wire.METRICS_STREAM}"
    points: list[MetricsSnapshot] = []
    t = since
    next_since: float | None = None
    while t <= until:
        if len(points) >= min(limit, MAX_POINTS):
            next_since = t
            break
        req = json.dumps({"start_time": _rfc3339(t), "next_by_subj": subject}).encode()
        try:
            msg = await pool.next().request(api, req, timeout=timeout)
        except Exception as exc:
            raise request_error(exc, f"metrics history of {service}.{instance_id}", timeout) from None
        answer = json.loads(msg.data)
        if "error" in answer:
            if answer["error"].get("code") == 404:
                break  # nothing at or after t
            raise BadRequest(f"metrics history: {answer['error'].get('description')}")
        stored = _parse_time(answer["message"]["time"])  # the server's clock, as start_time is
        if stored > until:
            break
        points.append(MetricsSnapshot.model_validate_json(base64.b64decode(answer["message"]["data"])))
        # the next point: a step after this one (a gap in the history skips ahead, not point by point)
        t = max(t + step, stored + step)
    return MetricsHistory(
        service=service,
        instance_id=instance_id,
        since=since,
        until=until,
        step=step,
        points=points,
        next_since=next_since,
    )
