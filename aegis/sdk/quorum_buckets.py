"""The quorum lease's three election buckets (placeholder until the placement module lands)."""

from __future__ import annotations

from . import wire
from .connection import ConnectionPool
from .jetstream import default_replicas, ensure_stream
from .kv import kv_stream_config


async def ensure_quorum_buckets(pool: ConnectionPool, replicas: int | None = None) -> None:
    """The three buckets: history 1, no TTL, no markers."""
    for name in wire.QUORUM_ELECTION_BUCKETS:
        await ensure_stream(pool, kv_stream_config(name, default_replicas(pool, replicas), 1, None))
