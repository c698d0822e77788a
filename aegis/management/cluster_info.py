"""``GET /api/cluster``: the NATS cluster as seen over NATS by the management service (never via the harness).

Stream and bucket placement comes from JetStream's stream info (leader, replicas, whether each is current, its lag,
offline peers), for every Aegis stream and bucket. JetStream does not tell an application account who the meta
leader is, so it is read from a node's HTTP monitoring ``/jsz`` (``monitor_urls``: in a deployment the local node's,
bound to loopback; the first that answers), else asked of the system account (``$SYS.REQ.SERVER.PING.JSZ``, which
only a system user is answered); each with a short timeout. When neither answers it is None and the answer says why.
Reads are cached for ``ttl_s`` so that a dashboard polling it costs NATS little.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence

import httpx

from aegis.sdk import wire
from aegis.sdk.connection import ConnectionPool
from aegis.sdk.quorum_buckets import leaders_distinct, stream_name

from .api_models import ClusterView, NodeView, StreamReplica, StreamView

AEGIS_STREAM_PREFIXES = ("AEGIS_", "KV_aegis_")
_NS = 1e-9
QUORUM_STREAMS = tuple(stream_name(b) for b in wire.QUORUM_ELECTION_BUCKETS)


async def read_cluster(
    pool: ConnectionPool, monitor_urls: Sequence[str] = (), timeout: float = 2.0
) -> ClusterView:
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
    meta_leader, source, note = await _meta_leader(pool, monitor_urls, min(timeout, 0.5))
    distinct, quorum_note = _quorum_placement(streams)
    return ClusterView(
        connected_url=next((u for u in pool.connected_urls if u), None),
        meta_leader=meta_leader,
        meta_leader_note=note,
        meta_leader_from=source,
        nodes=sorted(nodes.values(), key=lambda n: n.name),
        streams=streams,
        quorum_leaders_distinct=distinct,
        quorum_leaders_note=quorum_note,
    )


def _quorum_placement(streams: Sequence[StreamView]) -> tuple[bool | None, str]:
    """Whether the quorum buckets' stream leaders sit on three nodes, and if not, why (from the streams read)."""
    leaders = {s.stream: s.leader for s in streams if s.stream in QUORUM_STREAMS}
    if len(leaders) < len(QUORUM_STREAMS):
        return None, ""
    if leaders_distinct(leaders):
        return True, ""
    by_node: dict[str, list[str]] = {}
    for stream, leader in sorted(leaders.items()):
        by_node.setdefault(leader or "no leader", []).append(stream)
    shared = [
        f"{node}: {', '.join(names)}"
        for node, names in by_node.items()
        if len(names) > 1 or node == "no leader"
    ]
    return False, "; ".join(shared)


async def _meta_leader(
    pool: ConnectionPool, monitor_urls: Sequence[str], timeout: float
) -> tuple[str | None, str | None, str]:
    """(leader, where it was read, why there is none)."""
    unanswered: list[str] = []
    # trust_env=False: a loopback monitoring port is never reached through an http_proxy from the environment
    async with httpx.AsyncClient(timeout=timeout, trust_env=False) as http:
        for url in monitor_urls:
            try:
                r = await http.get(f"{url}/jsz")
                r.raise_for_status()
                leader = (r.json().get("meta_cluster") or {}).get("leader")
            except (httpx.HTTPError, ValueError) as exc:
                unanswered.append(f"{url}/jsz: {type(exc).__name__}")
                continue
            if leader:
                return leader, url, ""
            unanswered.append(f"{url}/jsz: no meta leader")
    try:
        msg = await pool.primary.request("$SYS.REQ.SERVER.PING.JSZ", b"{}", timeout=timeout)
        data = json.loads(msg.data)
        leader = ((data.get("data") or {}).get("meta_cluster") or {}).get("leader")
        if leader:
            return leader, "system account", ""
        unanswered.append("the system account answered without a meta leader")
    except Exception:  # not a system user: nobody answers (or a timeout)
        unanswered.append(
            "the system account did not answer (visible to system users only; set AEGIS_MGMT_MONITOR_URLS "
            "to a node's monitoring URL)"
        )
    return None, None, "; ".join(unanswered)


class ClusterReader:
    """:func:`read_cluster` with a short-lived cache, one reading at a time."""

    def __init__(self, pool: ConnectionPool, monitor_urls: Sequence[str] = (), ttl_s: float = 1.0) -> None:
        self.pool = pool
        self.monitor_urls = list(monitor_urls)
        self.ttl_s = ttl_s
        self._last: tuple[float, ClusterView] | None = None
        self._lock = asyncio.Lock()

    async def read(self) -> ClusterView:
        async with self._lock:
            now = time.monotonic()
            if self._last is not None and now - self._last[0] < self.ttl_s:
                return self._last[1]
            view = await read_cluster(self.pool, self.monitor_urls)
            self._last = (time.monotonic(), view)
            return view
