"""``GET /metrics``: the fleet in Prometheus text format, from the fleet cache at scrape time.

A custom collector (``prometheus_client``'s documented way to export figures owned elsewhere) reads the
:class:`~aegis.management.fleet.Fleet` on each scrape, so nothing is kept twice. Labels are stable: ``service``,
``instance``, and ``method``/``kind`` for per-method figures; health is a one-hot gauge per state. Latency figures
are the instance's *windowed* ones (its last snapshot interval); counters are the instance's lifetime totals.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .api_models import Health
from .fleet import Fleet

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class FleetCollector(Collector):
    """Exports the fleet's instances, methods and groups."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet

    def collect(self) -> Iterator[Metric]:
        inst = ["service", "instance"]
        meth = [*inst, "method", "kind"]
        health = GaugeMetricFamily(
            "aegis_instance_health", "1 for the instance's current health state", labels=[*inst, "health"]
        )
        age = GaugeMetricFamily(
            "aegis_instance_heartbeat_age_seconds", "Seconds since the record arrived", labels=inst
        )
        queue = GaugeMetricFamily(
            "aegis_instance_queue_depth", "Messages waiting in the instance", labels=inst
        )
        in_flight = GaugeMetricFamily("aegis_instance_in_flight", "Calls being handled", labels=inst)
        requests = CounterMetricFamily("aegis_method_requests", "Calls handled (lifetime)", labels=meth)
        errors = CounterMetricFamily("aegis_method_errors", "Calls that failed (lifetime)", labels=meth)
        p50 = GaugeMetricFamily("aegis_method_window_p50_ms", "p50 latency over the last window", labels=meth)
        p99 = GaugeMetricFamily("aegis_method_window_p99_ms", "p99 latency over the last window", labels=meth)
        rate = GaugeMetricFamily(
            "aegis_method_window_rate_per_second", "Calls per second over the last window", labels=meth
        )
        epoch = GaugeMetricFamily(
            "aegis_group_epoch", "Lease epoch of the group's active instance", labels=["service", "group"]
        )
        for view in self.fleet.instances():
            r = view.instance
            labels = [r.service, r.instance_id]
            for state in Health:
                health.add_metric([*labels, state.value], 1.0 if view.health == state else 0.0)
            age.add_metric(labels, view.heartbeat_age_s)
            if view.health == Health.DOWN or r.metrics is None:
                continue
            queue.add_metric(labels, r.metrics.queue_depth)
            in_flight.add_metric(labels, r.metrics.in_flight)
            for name, stats in sorted(r.metrics.methods.items()):
                ml = [*labels, name, stats.kind]
                requests.add_metric(ml, stats.requests)
                errors.add_metric(ml, stats.errors)
                if stats.window is not None:
                    p50.add_metric(ml, stats.window.p50_ms)
                    p99.add_metric(ml, stats.window.p99_ms)
                    rate.add_metric(ml, stats.window.rate_per_s)
        for g in self.fleet.groups():
            if g.epoch is not None:
                epoch.add_metric([g.service, g.group], g.epoch)
        yield from (health, age, queue, in_flight, requests, errors, p50, p99, rate, epoch)


def render(fleet: Fleet) -> bytes:
    """The text exposition of ``fleet`` right now."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(fleet))
    return generate_latest(registry)
