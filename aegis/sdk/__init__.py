"""Aegis SDK: RPC, events and commands on NATS, with typed errors, deadlines and per-method metrics.

The pieces::

    from aegis.sdk import Service, RpcClient, EventBus, load_settings, ConnectionPool

    pool = await ConnectionPool.connect(load_settings())      # AEGIS_* env and optional TOML file
    svc = Service("quotes")

    @svc.rpc("price")
    async def price(req: QuoteRequest, ctx: CallContext) -> Quote: ...

    await svc.start(pool)
    quote = await RpcClient(pool).call("quotes", "price", QuoteRequest(...), response_model=Quote)
"""

from .config import AegisSettings, load_settings, setting_sources
from .connection import ConnectionLost, ConnectionPool
from .errors import (
    AegisError,
    BadRequest,
    CommandFailed,
    ConfigError,
    ConnectionRefused,
    DeadlineExceeded,
    LeaseLost,
    NotActive,
    PayloadTooLarge,
    RemoteError,
    RpcTimeout,
    ServiceUnavailable,
    UnknownMethod,
)
from .metrics import InstanceMetrics
from .rpc import CallContext, RpcClient, Service, current_call
from .schema import MethodStats, MetricsSnapshot

__all__ = [
    "AegisError",
    "AegisSettings",
    "BadRequest",
    "CallContext",
    "CommandFailed",
    "ConfigError",
    "ConnectionLost",
    "ConnectionRefused",
    "ConnectionPool",
    "DeadlineExceeded",
    "InstanceMetrics",
    "LeaseLost",
    "MethodStats",
    "MetricsSnapshot",
    "NotActive",
    "PayloadTooLarge",
    "RemoteError",
    "RpcClient",
    "RpcTimeout",
    "Service",
    "ServiceUnavailable",
    "UnknownMethod",
    "current_call",
    "load_settings",
    "setting_sources",
]
