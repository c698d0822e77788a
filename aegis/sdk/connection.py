"""Cluster-aware NATS connections (NFR8): a pool of N connections tuned to fail over fast.

All connections get the whole server list and shuffle it, so a pool spreads over the cluster. Reconnect
waits are short and pings frequent, so a dead server is left within tens of milliseconds when its socket
closes and within ``ping_interval_s * max_outstanding_pings`` when it hangs.

When a connection drops, nats-py leaves the requests that were in flight on it waiting for their full
timeout, although their replies can no longer arrive. :class:`ConnectionPool` fails them at once with
:class:`ConnectionLost`, so killing the node a client is connected to costs only the calls in flight at
that moment, not a timeout's worth of silence. nats-py has no public hook for this; we use its response
map (``_resp_map``), the single private attribute the SDK touches.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from dataclasses import dataclass, field

from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from .config import AegisSettings
from .errors import AegisError, ServiceUnavailable

log = logging.getLogger(__name__)


class ConnectionLost(ServiceUnavailable):
    """The connection carrying a call dropped before the reply came; the call's outcome is unknown."""


@dataclass
class PoolStats:
    """Counters of connection events since the pool was opened."""

    disconnects: int = 0
    reconnects: int = 0
    failed_in_flight: int = 0
    errors: list[str] = field(default_factory=list)


class ConnectionPool:
    """``size`` NATS connections to one cluster; requests round-robin over them.

    The first connection (``primary``) carries subscriptions and JetStream; requests use all of them::

        pool = await ConnectionPool.connect(load_settings())
        msg = await pool.next().request("subject", b"x", timeout=1)
        await pool.close()
    """

    def __init__(self, settings: AegisSettings, clients: list[NatsClient], stats: PoolStats) -> None:
        self.settings = settings
        self.clients = clients
        self.stats = stats
        self._cycle = itertools.cycle(clients)
        self._js: JetStreamContext | None = None
        # Every server of a cluster announces the same limit; read it once.
        server = clients[0].max_payload or settings.max_payload_bytes
        self.max_payload = min(server, settings.max_payload_bytes)
        """The smaller of the configured limit and what the server announced."""

    @classmethod
    async def connect(cls, settings: AegisSettings, *, size: int | None = None) -> ConnectionPool:
        """Open ``size`` (default ``settings.pool_size``) connections, or raise ServiceUnavailable."""
        stats = PoolStats()
        n = size or settings.pool_size
        clients: list[NatsClient] = []
        try:
            for i in range(n):
                clients.append(await _connect_one(settings, stats, i))
        except Exception as exc:
            for nc in clients:
                await nc.close()
            if isinstance(exc, AegisError):
                raise
            raise ServiceUnavailable(f"cannot connect to NATS at {settings.servers}: {exc!r}") from exc
        return cls(settings, clients, stats)

    @property
    def primary(self) -> NatsClient:
        """The connection that carries subscriptions and JetStream."""
        return self.clients[0]

    def next(self) -> NatsClient:
        """The next connection for a request (round-robin)."""
        return next(self._cycle)

    @property
    def js(self) -> JetStreamContext:
        """JetStream context on the primary connection."""
        if self._js is None:
            self._js = self.primary.jetstream()
        return self._js

    @property
    def connected_urls(self) -> list[str]:
        """Server each connection is attached to right now ("" while reconnecting)."""
        out = []
        for nc in self.clients:
            url = nc.connected_url
            out.append(f"{url.scheme}://{url.hostname}:{url.port}" if url and nc.is_connected else "")
        return out

    async def close(self) -> None:
        """Drain nothing, close everything; idempotent."""
        for nc in self.clients:
            if not nc.is_closed:
                try:
                    await nc.close()
                except Exception:  # a close that fails leaves nothing to clean
                    log.debug("close failed", exc_info=True)


async def _connect_one(settings: AegisSettings, stats: PoolStats, index: int) -> NatsClient:
    nc = NatsClient()

    async def disconnected() -> None:
        stats.disconnects += 1
        # Replies to requests sent on this connection can no longer arrive: fail them now.
        lost = ConnectionLost("connection to NATS lost while the call was in flight; outcome unknown")
        for fut in list(nc._resp_map.values()):
            if not fut.done():
                fut.set_exception(lost)
                stats.failed_in_flight += 1

    async def reconnected() -> None:
        stats.reconnects += 1

    async def error(exc: Exception) -> None:
        if len(stats.errors) < 100:
            stats.errors.append(repr(exc))
        log.debug("nats error on connection %d: %r", index, exc)

    kwargs = dict(
        servers=settings.servers,
        name=f"{settings.name or 'aegis'}#{index}",
        connect_timeout=settings.connect_timeout_s,
        reconnect_time_wait=settings.reconnect_time_wait_s,
        max_reconnect_attempts=settings.max_reconnect_attempts,
        ping_interval=settings.ping_interval_s,
        max_outstanding_pings=settings.max_outstanding_pings,
        disconnected_cb=disconnected,
        reconnected_cb=reconnected,
        error_cb=error,
    )
    if settings.user is not None:
        kwargs["user"] = settings.user
        kwargs["password"] = settings.password.get_secret_value() if settings.password else None
    if settings.token is not None:
        kwargs["token"] = settings.token.get_secret_value()
    if settings.creds_file is not None:
        kwargs["user_credentials"] = str(settings.creds_file)
    # nats-py treats the first connect like a reconnect: with max_reconnect_attempts=-1 it would retry
    # unreachable servers forever. Give every server one connect timeout (twice over), then fail.
    first_connect = settings.connect_timeout_s * 2 * len(settings.servers) + settings.reconnect_time_wait_s
    try:
        await asyncio.wait_for(nc.connect(**kwargs), first_connect)
    except TimeoutError:
        await nc.close()
        raise ServiceUnavailable(
            f"no NATS server reachable at {', '.join(settings.servers)} within {first_connect:.1f}s"
        ) from None
    return nc


async def connect(settings: AegisSettings | None = None, **overrides: object) -> ConnectionPool:
    """Shortcut: load settings (env/file + overrides) and open a pool."""
    from .config import load_settings

    return await ConnectionPool.connect(settings or load_settings(**overrides))


__all__ = ["ConnectionLost", "ConnectionPool", "PoolStats", "connect"]
