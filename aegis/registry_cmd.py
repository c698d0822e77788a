"""``aegis instances`` and ``aegis config``: what the registry knows, for an operator at a terminal.

Both connect with the SDK settings (``AEGIS_SERVERS`` etc., or ``--servers``) and print a table, or one JSON
document with ``--json`` (the schema models of ``aegis/sdk/schema.py``, so scripts read the same fields the SDK writes).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import typer
from rich.console import Console
from rich.table import Table

from aegis.sdk.config import load_settings
from aegis.sdk.connection import ConnectionPool
from aegis.sdk.effective_config import fetch_effective_config
from aegis.sdk.registry import Registry
from aegis.sdk.schema import EffectiveConfig, ServiceInstance

T = TypeVar("T")

err = Console(stderr=True)


def _run(servers: list[str] | None, job: Callable[[ConnectionPool], Awaitable[T]]) -> T:
    async def main() -> T:
        overrides = {"servers": servers} if servers else {}
        pool = await ConnectionPool.connect(load_settings(pool_size=1, **overrides))
        try:
            return await job(pool)
        finally:
            await pool.close()

    return asyncio.run(main())


def list_instances(servers: list[str] | None, service: str | None) -> list[ServiceInstance]:
    """The registered instances (of ``service``, or all)."""
    return _run(servers, lambda pool: Registry(pool).list_instances(service))


def instance_config(servers: list[str] | None, service: str, instance_id: str) -> EffectiveConfig:
    """One running instance's effective configuration."""
    return _run(servers, lambda pool: fetch_effective_config(pool, service, instance_id))


def instances_table(instances: list[ServiceInstance]) -> Table:
    """One row per instance: status, where it runs, heartbeat age and its busiest numbers."""
    table = Table(title=f"{len(instances)} registered instance(s)")
    for col in (
        "service",
        "instance",
        "status",
        "epoch",
        "host:pid",
        "version",
        "heartbeat",
        "calls",
        "errors",
    ):
        table.add_column(col)
    table.add_column("p99 ms", justify="right")
    now = time.time()
    for rec in instances:
        methods = rec.metrics.methods.values() if rec.metrics else []
        calls = sum(m.requests for m in methods)
        errors = sum(m.errors for m in methods)
        p99 = max((m.p99_ms for m in methods), default=0.0)
        table.add_row(
            rec.service,
            rec.instance_id,
            rec.status.value + (f" ({rec.role})" if rec.role else ""),
            "" if rec.epoch is None else str(rec.epoch),
            f"{rec.host}:{rec.pid}",
            rec.version,
            f"{now - rec.last_heartbeat:.1f}s ago",
            str(calls),
            str(errors),
            f"{p99:.3f}",
        )
    return table


def config_table(cfg: EffectiveConfig) -> Table:
    table = Table(title=f"{cfg.service}.{cfg.instance_id}  config_hash {cfg.config_hash[:16]}")
    for col in ("setting", "value", "source"):
        table.add_column(col)
    for name, item in cfg.settings.items():
        table.add_row(name, json.dumps(item.value), item.source)
    return table


def server_list(servers: str | None) -> list[str] | None:
    """``--servers``: comma-separated NATS URLs, or None (the SDK settings decide)."""
    return [u.strip() for u in servers.split(",") if u.strip()] if servers else None


def instances_command(service: str | None = None, servers: str | None = None, as_json: bool = False) -> None:
    """``aegis instances``: the table, or the records as one JSON list; exit 2 when the registry is unreachable."""
    from aegis.sdk.errors import AegisError

    try:
        found = list_instances(server_list(servers), service)
    except AegisError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    if as_json:
        sys.stdout.write(json.dumps([r.model_dump(mode="json") for r in found]) + "\n")
        return
    Console().print(instances_table(found))


def config_command(service: str, instance: str, servers: str | None = None, as_json: bool = False) -> None:
    """``aegis config``: the table, or the EffectiveConfig as JSON; exit 2 when it cannot be fetched."""
    from aegis.sdk.errors import AegisError

    try:
        cfg = instance_config(server_list(servers), service, instance)
    except AegisError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    if as_json:
        sys.stdout.write(cfg.model_dump_json() + "\n")
        return
    Console().print(config_table(cfg))
