"""How the management service judges an instance: healthy, degraded, stale or down.

Pure functions over a record and this server's clock, so the rules can be read (and tested) in one place:

* **stale**: the record arrived more than ``heartbeat_interval_s x stale_factor`` ago, measured on the management
  server's monotonic clock from when the record *arrived here* (an instance's wall clock may be wrong);
* **degraded**: the instance says it is ``UNHEALTHY``, or a method's *windowed* error rate or p99 (the figures of
  the last snapshot interval, not the lifetime ones) is over the thresholds of the service's definition, else of the
  settings; a window with no calls says nothing;
* **down** is decided by the cache (the record was deleted or expired), not here.
"""

from __future__ import annotations

from dataclasses import dataclass

from aegis.sdk.schema import InstanceStatus, ServiceDefinition, ServiceInstance

from .api_models import Health


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Above either figure an instance is degraded."""

    error_rate: float
    p99_ms: float

    @classmethod
    def of(cls, definition: ServiceDefinition | None, default: Thresholds) -> Thresholds:
        """The definition's thresholds where it sets them, ``default`` elsewhere."""
        if definition is None:
            return default
        return cls(
            error_rate=default.error_rate if definition.max_error_rate is None else definition.max_error_rate,
            p99_ms=default.p99_ms if definition.max_p99_ms is None else definition.max_p99_ms,
        )


def judge(
    record: ServiceInstance, age_s: float, thresholds: Thresholds, stale_factor: float
) -> tuple[Health, list[str]]:
    """Health of a live record that arrived ``age_s`` seconds ago, with the reasons when it is not healthy."""
    stale_after = record.heartbeat_interval_s * stale_factor
    if age_s > stale_after:
        return Health.STALE, [
            f"no heartbeat for {age_s:.1f} s (interval {record.heartbeat_interval_s:g} s, stale after {stale_after:g} s)"
        ]
    reasons: list[str] = []
    if record.status == InstanceStatus.UNHEALTHY:
        reasons.append("the instance reports UNHEALTHY")
    metrics = record.metrics
    for name, stats in sorted((metrics.methods if metrics else {}).items()):
        w = stats.window
        if w is None or w.requests == 0:
            continue
        span = f"last {w.window_s:.0f} s, {w.requests} calls"
        if w.error_rate > thresholds.error_rate:
            reasons.append(f"{name}: error rate {w.error_rate:.1%} > {thresholds.error_rate:.1%} ({span})")
        if w.p99_ms > thresholds.p99_ms:
            reasons.append(f"{name}: p99 {w.p99_ms:.1f} ms > {thresholds.p99_ms:g} ms ({span})")
    return (Health.DEGRADED if reasons else Health.HEALTHY), reasons
