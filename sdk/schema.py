"""Wire schemas shared by the SDK, the management API and the dashboard. Nothing else redefines them."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class MethodStats(BaseModel):
    """Latency and counts of one RPC method, command or event handler on one instance."""

    model_config = ConfigDict(frozen=True)

    kind: str = Field(description='"rpc", "event" or "command"')
    requests: int = 0
    errors: int = 0
    error_rate: float = 0.0
    in_flight: int = 0
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    mean_ms: float = 0.0
    last_error: str = ""


class MetricsSnapshot(BaseModel):
    """Metrics of one instance at one moment (FR2)."""

    model_config = ConfigDict(frozen=True)

    service: str
    instance_id: str
    taken_at: float = Field(description="Wall-clock UNIX time of the snapshot.")
    uptime_s: float
    methods: dict[str, MethodStats] = Field(default_factory=dict)
    in_flight: int = 0
    queue_depth: int = Field(0, description="Messages waiting in the instance's subscriptions/consumers.")
