"""The quorum lease's three election buckets and where their stream leaders sit (issue 18, rule 9 of
docs/quorum-lease.md).

The quorum lease holds a group's lease in a majority of the buckets :data:`aegis.sdk.wire.QUORUM_ELECTION_BUCKETS`.
A crash of one node stalls only the buckets whose stream leader it was, so the benefit exists only while the three
stream leaders sit on three different nodes::

    await ensure_quorum_buckets(pool)             # R3, history 1, no TTL, no markers, no max age
    await ensure_quorum_buckets(pool, tags=["node:n1", "node:n2", "node:n3"])   # or R1, one per tagged server
    await quorum_leaders(pool)                    # {"aegis_election_q0": "n1", "aegis_election_q1": "n1", ...}
    report = await spread_quorum_leaders(pool)    # step-downs with a preferred node until they are distinct
    if not report.distinct:
        log.warning("quorum buckets share a leader: %s", report.reason)

    keeper = QuorumPlacementKeeper()
    await keeper.start(pool, interval_s=5.0)      # the same, periodically (management service, harness)
    ...
    await keeper.stop()

Moves use ``$JS.API.STREAM.LEADER.STEPDOWN.<stream>`` with the body ``{"placement": {"preferred": "<server>"}}``,
which nats-server honours for streams since v2.11.0 (``getStepDownPreferredPlacement`` in
server/jetstream_api.go; older servers ignore the body and pick any peer). The server refuses (err_code 10005) a
preferred server that is not a peer of the stream or already leads it, and falls back silently to another healthy
peer when the preferred one is not healthy: so every move is checked against ``STREAM.INFO`` afterwards.

Durability: the protocol assumes ``sync_interval: always`` for these buckets. That is a server setting (the
``jetstream`` block of every node), not a stream setting: nothing here can set or check it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
import weakref
from collections.abc import Mapping, Sequence

from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import api
from nats.js.errors import NotFoundError
from pydantic import BaseModel, ConfigDict

from . import wire
from .connection import ConnectionPool
from .jetstream import default_replicas, ensure_stream, retry_transient
from .kv import kv_stream_config

log = logging.getLogger(__name__)

BUCKETS: tuple[str, ...] = tuple(wire.QUORUM_ELECTION_BUCKETS)
"""The three buckets, in order."""

MAX_ROUNDS = 4
"""A spread makes at most this many rounds of step-downs (each followed by a bounded wait)."""
_POLL_S = 0.1
_API_TIMEOUT_S = 1.0
"""Bound on one JetStream API request (stream info, step-down) of this module."""

_ready: weakref.WeakSet[ConnectionPool] = weakref.WeakSet()
_ready_lock = asyncio.Lock()


def stream_name(bucket: str) -> str:
    """The stream behind KV bucket ``bucket``."""
    return f"KV_{bucket}"


def quorum_bucket_config(bucket: str, replicas: int, tag: str | None = None) -> api.StreamConfig:
    """The stream of one quorum bucket: the KV stream of :func:`aegis.sdk.kv.kv_stream_config` with history 1,
    no per-key TTL (``allow_msg_ttl`` off), no subject delete marker TTL, no max age, deletes denied; so the last
    value of a key is never erased by the server. ``tag``: placed on a server with that server tag."""
    config = kv_stream_config(bucket, replicas, 1, None)
    if tag is not None:
        config.placement = api.Placement(tags=[tag])
    return config


async def _layout(pool: ConnectionPool, bucket: str) -> tuple[int, api.Placement | None] | None:
    """An existing bucket's replicas and placement; None when its stream does not exist."""
    try:
        info = await retry_transient(
            lambda: pool.js.stream_info(stream_name(bucket)), f"stream info {bucket}"
        )
    except NotFoundError:
        return None
    return info.config.num_replicas or 1, info.config.placement


async def ensure_quorum_buckets(
    pool: ConnectionPool, replicas: int | None = None, *, tags: Sequence[str] | None = None
) -> None:
    """Create the three quorum buckets' streams, or bring them to :func:`quorum_bucket_config`; once per pool.

    The layout is the deployment's choice (docs/quorum-lease.md, rule 9):

    - ``tags`` (default: the settings' ``quorum_bucket_tags``): three server tags; bucket k gets one replica, on
      the server tagged ``tags[k]``. No Raft group per bucket, so a healed node cannot depose its leader; the
      bucket is down while its server is, and a bucket whose server lost its store comes back empty (a reset).
    - otherwise ``replicas`` (default min(3, cluster size), :func:`aegis.sdk.jetstream.default_replicas`; a
      server without clustering gets one replica); a bucket that exists keeps its replicas and placement unless
      ``replicas`` is given, so an instance without the tags setting never undoes a pinned layout.

    Idempotent and safe to race (two pools, two processes). Raises ValueError for tags that are not three
    different ones, and :class:`aegis.sdk.errors.AegisError` when the servers refuse the layout (e.g. no
    server has a tag).
    """
    if pool in _ready:
        return
    chosen = list(pool.settings.quorum_bucket_tags if tags is None else tags)
    if chosen and (len(chosen) != len(BUCKETS) or len(set(chosen)) != len(BUCKETS)):
        raise ValueError(f"give {len(BUCKETS)} different server tags, one per quorum bucket (got {chosen})")
    async with _ready_lock:
        if pool in _ready:
            return
        for k, b in enumerate(BUCKETS):
            if chosen:
                config = quorum_bucket_config(b, 1, chosen[k])
            elif replicas is None and (found := await _layout(pool, b)) is not None:
                config = quorum_bucket_config(b, found[0])
                config.placement = found[1]
            else:
                config = quorum_bucket_config(b, default_replicas(pool, replicas))
            await ensure_stream(pool, config)
        _ready.add(pool)


# --------------------------------------------------------------------------------------------------
# Reading placements
# --------------------------------------------------------------------------------------------------


class Placement(BaseModel):
    """Where one bucket's stream lives, as its ``STREAM.INFO`` says: its leader (None while it has none, or when
    the info could not be read) and its peers."""

    model_config = ConfigDict(frozen=True)

    bucket: str
    leader: str | None
    peers: frozenset[str] = frozenset()
    """The servers that hold a replica and are not offline, the leader included."""
    current: frozenset[str] = frozenset()
    """Those of :attr:`peers` that are caught up (the leader, and replicas it reports ``current``). Right after a
    leader change the new leader reports its followers not current for a moment."""
    replicas: int = 0
    """The stream's configured replica count."""
    error: str | None = None
    """Why the info could not be read (then ``leader`` is None)."""

    @property
    def settled(self) -> bool:
        """It has a leader, and every configured replica is online and caught up."""
        return self.leader is not None and self.current == self.peers and len(self.peers) >= self.replicas


async def _api(pool: ConnectionPool, subject: str, body: bytes, timeout: float) -> dict[str, object]:
    """One JetStream API request through the pool; its JSON answer. Raises TimeoutError / NoRespondersError."""
    msg = await pool.next().request(subject, body, timeout=max(0.05, timeout))
    answer = json.loads(msg.data)
    if not isinstance(answer, dict):
        raise ValueError(f"{subject}: unexpected answer {msg.data[:200]!r}")
    return answer


async def placement(pool: ConnectionPool, bucket: str, timeout: float = _API_TIMEOUT_S) -> Placement:
    """Read one bucket's :class:`Placement` (one ``STREAM.INFO``, answered by the stream leader); failures are
    reported in :attr:`Placement.error`, never raised."""
    subject = f"$JS.API.STREAM.INFO.{stream_name(bucket)}"
    try:
        answer = await _api(pool, subject, b"", timeout)
    except (TimeoutError, NatsTimeoutError, NoRespondersError) as exc:
        return Placement(bucket=bucket, leader=None, error=f"no stream info: {type(exc).__name__}")
    err = answer.get("error")
    if isinstance(err, dict):
        text = f"{err.get('description')} (err_code {err.get('err_code')})"
        return Placement(bucket=bucket, leader=None, error=text)
    info = api.StreamInfo.from_response(answer)
    cluster, replicas = info.cluster, info.config.num_replicas or 1
    if cluster is None or not cluster.leader:
        return Placement(bucket=bucket, leader=None, replicas=replicas)
    online = [r for r in cluster.replicas or () if r.name and not r.offline]
    return Placement(
        bucket=bucket,
        leader=cluster.leader,
        peers=frozenset({cluster.leader, *(r.name for r in online)}),
        current=frozenset({cluster.leader, *(r.name for r in online if r.current)}),
        replicas=replicas,
    )


async def placements(pool: ConnectionPool, timeout: float = _API_TIMEOUT_S) -> dict[str, Placement]:
    """Every quorum bucket's :class:`Placement`, read concurrently."""
    found = await asyncio.gather(*(placement(pool, b, timeout) for b in BUCKETS))
    return {p.bucket: p for p in found}


async def quorum_leaders(pool: ConnectionPool) -> dict[str, str | None]:
    """Bucket name -> the server name of its stream's current leader (``STREAM.INFO`` ``cluster.leader``), None
    while a stream has no leader or its info cannot be read."""
    return {b: p.leader for b, p in (await placements(pool)).items()}


def leaders_distinct(leaders: Mapping[str, str | None]) -> bool:
    """True when every bucket has a leader and no two share one."""
    named = [n for n in leaders.values() if n is not None]
    return len(named) == len(leaders) and len(set(named)) == len(named)


# --------------------------------------------------------------------------------------------------
# Planning
# --------------------------------------------------------------------------------------------------


def plan_moves(current: Mapping[str, Placement]) -> tuple[dict[str, str], str | None]:
    """The step-downs that make the leaders distinct while moving as few as possible: bucket -> preferred server
    (a peer of that bucket's stream that will lead none of the others), and None; or ``{}`` and the reason no
    such placement exists. Pure. Ties go to caught-up peers, then to servers that lead nothing now, then by
    name."""
    leaderless = [
        f"{b} ({p.error})" if p.error else b for b, p in sorted(current.items()) if p.leader is None
    ]
    if leaderless:
        return {}, f"no stream leader for {', '.join(leaderless)}"
    buckets = sorted(current)
    nodes = set().union(*(current[b].peers for b in buckets))
    if len(nodes) < len(buckets):
        return {}, (
            f"fewer than {len(buckets)} nodes hold online replicas of the buckets ({', '.join(sorted(nodes)) or 'none'})"
        )
    leading = {p.leader for p in current.values()}
    best: tuple[tuple[int, int, int, tuple[str, ...]], tuple[str, ...]] | None = None
    for choice in itertools.product(*(sorted(current[b].peers) for b in buckets)):
        if len(set(choice)) != len(choice):
            continue
        moved = [(b, n) for b, n in zip(buckets, choice, strict=True) if n != current[b].leader]
        lagging = sum(n not in current[b].current for b, n in moved)
        key = (len(moved), lagging, sum(n in leading for _, n in moved), choice)
        if best is None or key < best[0]:
            best = (key, choice)
    if best is None:
        peers = "; ".join(f"{b}: {', '.join(sorted(current[b].peers))}" for b in buckets)
        return {}, f"no placement puts the leaders on distinct online peers ({peers})"
    return {b: n for b, n in zip(buckets, best[1], strict=True) if n != current[b].leader}, None


# --------------------------------------------------------------------------------------------------
# Moving
# --------------------------------------------------------------------------------------------------


class LeaderMove(BaseModel):
    """One step-down asked of a bucket's stream leader."""

    model_config = ConfigDict(frozen=True)

    bucket: str
    from_node: str
    preferred: str
    accepted: bool
    """The stream leader answered success (it handed over; where to is read back from ``STREAM.INFO``)."""
    error: str | None = None
    """The server's refusal (``description (err_code N)``) or why no answer came."""


class PlacementReport(BaseModel):
    """What :func:`spread_quorum_leaders` found and did."""

    model_config = ConfigDict(frozen=True)

    leaders_before: dict[str, str | None]
    leaders_after: dict[str, str | None]
    moves: tuple[LeaderMove, ...] = ()
    distinct: bool
    """The three stream leaders sit on three different nodes (``leaders_after``)."""
    reason: str | None = None
    """Why they do not (None when ``distinct``)."""
    rounds: int = 0
    """Rounds of step-downs made."""


async def step_down(
    pool: ConnectionPool, bucket: str, preferred: str | None, timeout: float, *, from_node: str | None = None
) -> LeaderMove:
    """Ask ``bucket``'s stream leader to hand over, to ``preferred`` (a server name) when given; ``from_node`` is
    the leader it is asked of, as the caller knows it (read from ``STREAM.INFO`` when None). The answer only says
    the leader handed over: where the leadership went must be read back."""
    if from_node is None:
        from_node = (await placement(pool, bucket, min(timeout, _API_TIMEOUT_S))).leader
    body = json.dumps({"placement": {"preferred": preferred}}).encode() if preferred else b""
    subject = f"$JS.API.STREAM.LEADER.STEPDOWN.{stream_name(bucket)}"
    move = {"bucket": bucket, "from_node": from_node or "?", "preferred": preferred or ""}
    try:
        answer = await _api(pool, subject, body, timeout)
    except (TimeoutError, NatsTimeoutError, NoRespondersError) as exc:
        return LeaderMove(**move, accepted=False, error=f"no answer ({type(exc).__name__})")
    err = answer.get("error")
    if isinstance(err, dict):
        return LeaderMove(
            **move, accepted=False, error=f"{err.get('description')} (err_code {err.get('err_code')})"
        )
    return LeaderMove(**move, accepted=bool(answer.get("success")))


async def _settle(pool: ConnectionPool, moved: Mapping[str, str], deadline: float) -> dict[str, Placement]:
    """Poll the placements until the leaders are distinct, or every bucket of ``moved`` (bucket -> its old
    leader) has a leader other than its old one (wherever the server put it), or ``deadline``; the last read."""
    while True:
        remaining = deadline - time.monotonic()
        now = await placements(pool, max(0.05, min(_API_TIMEOUT_S, remaining)))
        if leaders_distinct({b: p.leader for b, p in now.items()}):
            return now
        if all(now[b].leader not in (None, old) for b, old in moved.items()):
            return now
        if time.monotonic() + _POLL_S >= deadline:
            return now
        await asyncio.sleep(_POLL_S)


def _leaders(current: Mapping[str, Placement]) -> dict[str, str | None]:
    return {b: p.leader for b, p in current.items()}


async def spread_quorum_leaders(pool: ConnectionPool, *, timeout: float = 10.0) -> PlacementReport:
    """Move the quorum buckets' stream leaders onto three different nodes, if they are not.

    While two or more buckets share a leader node, each bucket that must move (as few as possible, see
    :func:`plan_moves`) is asked to step down in favour of an online peer of its stream that leads none of the
    others; then the leaders are read back until they are distinct. When no such placement exists while a stream
    is not :attr:`Placement.settled` (electing, a replica offline or catching up), it looks again until the
    deadline before it gives up. At most :data:`MAX_ROUNDS` rounds, all within
    ``timeout`` seconds (plus at most one API request's bound); never raises for a placement problem, the report
    says it (``distinct`` False and a ``reason``: fewer than three nodes with online replicas, a leaderless
    stream, a refused step-down, the rounds or the time used up). The buckets must exist
    (:func:`ensure_quorum_buckets`).
    """
    deadline = time.monotonic() + timeout
    current = await placements(pool)
    before = _leaders(current)
    moves: list[LeaderMove] = []
    refusals: list[str] = []
    reason: str | None = None
    rounds = 0
    while not leaders_distinct(_leaders(current)):
        if time.monotonic() >= deadline:
            reason = f"timed out after {timeout:g}s"
            break
        targets, why = plan_moves(current)
        if why is not None:
            reason = why
            if not all(p.settled for p in current.values()) and time.monotonic() + _POLL_S < deadline:
                # a stream is electing, its info was lost, or its new leader has not heard from its followers yet:
                # look again, bounded by the deadline
                await asyncio.sleep(_POLL_S)
                current = await placements(pool)
                continue
            break
        if rounds >= MAX_ROUNDS:
            reason = f"leaders still shared after {rounds} rounds of step-downs"
            break
        rounds += 1
        bound = max(0.05, min(_API_TIMEOUT_S, deadline - time.monotonic()))
        made = await asyncio.gather(
            *(step_down(pool, b, n, bound, from_node=current[b].leader) for b, n in sorted(targets.items()))
        )
        moves.extend(made)
        refusals += [f"{m.bucket} -> {m.preferred}: {m.error}" for m in made if not m.accepted]
        current = await _settle(pool, {m.bucket: m.from_node for m in made if m.accepted}, deadline)
    after = _leaders(current)
    distinct = leaders_distinct(after)
    if not distinct and refusals:
        reason = f"{reason}; step-down refused: {'; '.join(refusals)}"
    return PlacementReport(
        leaders_before=before,
        leaders_after=after,
        moves=tuple(moves),
        distinct=distinct,
        reason=None if distinct else (reason or "leaders not distinct"),
        rounds=rounds,
    )


# --------------------------------------------------------------------------------------------------
# The keeper
# --------------------------------------------------------------------------------------------------


class QuorumPlacementKeeper:
    """Keeps the quorum buckets' stream leaders on three different nodes: every ``interval_s`` it checks the
    leaders and, when two share a node, runs :func:`spread_quorum_leaders` (for the management service or a
    harness to run; one keeper per cluster is enough, more are harmless).

    It logs a warning when the leaders cannot be spread (once per distinct reason, until they are distinct
    again) and never stops on an error. :attr:`last_report` is the last spread's report.
    """

    def __init__(self, *, spread_timeout_s: float = 10.0) -> None:
        self.spread_timeout_s = spread_timeout_s
        self.last_report: PlacementReport | None = None
        self.checks = 0
        """Checks made so far."""
        self._task: asyncio.Task[None] | None = None
        self._warned: str | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self, pool: ConnectionPool, interval_s: float = 5.0) -> None:
        """Make sure the buckets exist (:func:`ensure_quorum_buckets`), then check every ``interval_s`` seconds
        (the first check at once) in a background task until :meth:`stop`."""
        if interval_s <= 0:
            raise ValueError("interval_s must be > 0")
        if self.running:
            raise RuntimeError("QuorumPlacementKeeper already started")
        await ensure_quorum_buckets(pool)
        self._task = asyncio.create_task(self._run(pool, interval_s), name="aegis-quorum-placement")

    async def stop(self) -> None:
        """Stop checking (a spread in progress is cancelled); idempotent."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def check(self, pool: ConnectionPool) -> PlacementReport | None:
        """One check: spread the leaders when they are not distinct; the spread's report (None when they were)."""
        self.checks += 1
        leaders = await quorum_leaders(pool)
        if leaders_distinct(leaders):
            self._warned = None
            return None
        report = await spread_quorum_leaders(pool, timeout=self.spread_timeout_s)
        self.last_report = report
        if report.distinct:
            self._warned = None
            log.info("quorum bucket leaders spread: %s -> %s", report.leaders_before, report.leaders_after)
        elif report.reason != self._warned:
            self._warned = report.reason
            log.warning("quorum bucket leaders share a node (%s): %s", report.leaders_after, report.reason)
        else:
            log.debug("quorum bucket leaders still share a node: %s", report.reason)
        return report

    async def _run(self, pool: ConnectionPool, interval_s: float) -> None:
        while True:
            try:
                await self.check(pool)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the keeper outlives a failed check
                log.warning("quorum bucket placement check failed", exc_info=True)
            await asyncio.sleep(interval_s)


__all__ = [
    "BUCKETS",
    "MAX_ROUNDS",
    "LeaderMove",
    "Placement",
    "PlacementReport",
    "QuorumPlacementKeeper",
    "ensure_quorum_buckets",
    "leaders_distinct",
    "placement",
    "placements",
    "plan_moves",
    "quorum_bucket_config",
    "quorum_leaders",
    "spread_quorum_leaders",
    "step_down",
    "stream_name",
]
