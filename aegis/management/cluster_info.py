"""``GET /api/cluster``: the NATS cluster as seen over NATS by the management service (never via the harness).

Stream and bucket placement comes from JetStream's stream info (leader, replicas, whether each is current, its lag,
offline peers), for every Aegis stream and bucket. The JetStream meta leader is only visible to the system account
(``$SYS.REQ.SERVER.PING.JSZ``): asked once per read with a short timeout; without system-account rights it is None
and the answer says why. Reads are cached for ``ttl_s`` so that a dashboard polling it costs NATS little.
"""

from __future__ import annotations

import asyncio
import json
import time

from aegis.sdk.connection import ConnectionPool

from .api_models import ClusterView, NodeView, StreamReplica, StreamView

AEGIS_STREAM_PREFIXES = ("AEGIS_", "KV_aegis_")
_NS = 1e-9


async def read_cluster(pool: ConnectionPool, timeout: float = 2.0) -> ClusterView:
    """One fresh reading of the cluster (see the module docstring)."""
    streams: list[StreamView] = []
    infos = await asyncio.wait_for(pool.js.streams_info(), timeout)
    for info in sorted(infos, key=lambda i: i.config.name or ""):
        name = info.config.name or ""
        if not name.startswith(AEGIS_STREAM_PREFIXES):
            continue
        cluster = info.cluster
        replicas = [
            StreamReplica(
                name=p.name or "?",
                current=bool(p.current),
                offline=bool(p.offline),
                lag=int(p.lag or 0),
                active_s=None if p.active is None else round(p.active * _NS, 3),
            )
            for p in ((cluster.replicas or []) if cluster else [])
        ]
        streams.append(
            StreamView(
                stream=name,
                leader=cluster.leader if cluster else None,
                replicas=replicas,
                messages=int(info.state.messages or 0),
            )
        )
    nodes: dict[str, NodeView] = {}
    for s in streams:
        if s.leader:
            node = nodes.setdefault(s.leader, NodeView(name=s.leader, up=True))
            node.leads.append(s.stream)
        for r in s.replicas:
            node = nodes.setdefault(r.name, NodeView(name=r.name, up=not r.offline))
            node.up = node.up and not r.offline
            if not r.current:
                node.behind.append(s.stream)
    meta_leader, note = await _meta_leader(pool, min(timeout, 0.5))
    return ClusterView(
        connected_url=next((u for u in pool.connected_urls if u), None),
        meta_leader=meta_leader,
        meta_leader_note=note,
        nodes=sorted(nodes.values(), key=lambda n: n.name),
        streams=streams,
    )


async def _meta_leader(pool: ConnectionPool, timeout: float) -> tuple[str | None, str]:
    try:
        msg = await pool.primary.request("$SYS.REQ.SERVER.PING.JSZ", b"{}", timeout=timeout)
        data = json.loads(msg.data)
        leader = ((data.get("data") or {}).get("meta_cluster") or {}).get("leader")
        return leader, "" if leader else "the system account answered without a meta leader"
    except Exception:  # no system-account rights: nobody answers (or a timeout)
        return None, "the JetStream meta leader is visible to the system account only"


class ClusterReader:
    """:func:`read_cluster` with a short-lived cache, one reading at a time."""

    def __init__(self, pool: ConnectionPool, ttl_s: float = 1.0) -> None:
        self.pool = pool
        self.ttl_s = ttl_s
        self._last: tuple[float, ClusterView] | None = None
        self._lock = asyncio.Lock()

    async def read(self) -> ClusterView:
        async with self._lock:
            now = time.monotonic()
            if self._last is not None and now - self._last[0] < self.ttl_s:
                return self._last[1]
            view = await read_cluster(self.pool)
            self._last = (time.monotonic(), view)
            return view
