"""Generic NATS KV primitives on JetStream: bucket streams, keys, compare-and-set writes with per-key TTLs,
watches, and the kind of an entry.

nats-py's ``kv.update`` cannot carry a TTL (see NATS_NOTES), so writes that need a TTL or a compare-and-set go
through :func:`kv_write`, which publishes with the headers by hand; reads and watches use nats-py's KV. Used by
the registry, heartbeats, commands, the single-active election and the sticky client. This module knows no
bucket in particular: it must not import the registry or any module above it (rpc, registry, events, commands,
discovery, single_active, sticky).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TypeVar

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from nats.js.kv import KeyValue

from . import wire
from .connection import ConnectionPool
from .jetstream import js_publish, retry_transient
from .kv_types import KeyState

T = TypeVar("T")

SNAPSHOT_ROUNDS = 5
"""At most this many rounds of re-reads in :func:`read_at_one_instant`."""


def kv_subject(bucket: str, key: str) -> str:
    """The subject that stores ``key`` of bucket ``bucket``."""
    return f"$KV.{bucket}.{key}"


def kv_stream_config(
    bucket: str, replicas: int, history: int, marker_ttl: float | None, *, per_key_ttl: bool = False
) -> api.StreamConfig:
    """The stream behind KV bucket ``bucket``; ``marker_ttl`` (seconds) allows per-key TTLs, makes an
    expired key leave a removal marker (what a watcher sees) and makes markers age out. ``per_key_ttl``
    without ``marker_ttl``: per-key TTLs whose expiry removes the entry and leaves no marker."""
    # The same stream nats-py's create_key_value makes, so nats-py (and the nats CLI) read it as a bucket.
    return api.StreamConfig(
        name=f"KV_{bucket}",
        subjects=[f"$KV.{bucket}.>"],
        allow_direct=True,
        allow_rollup_hdrs=True,
        allow_msg_ttl=per_key_ttl or marker_ttl is not None,
        subject_delete_marker_ttl=marker_ttl,
        deny_delete=True,
        discard=api.DiscardPolicy.NEW,
        duplicate_window=120.0,
        max_msgs_per_subject=history,
        num_replicas=replicas,
        storage=api.StorageType.FILE,
    )


def bucket(pool: ConnectionPool, name: str, *, direct: bool = True, nc: NatsClient | None = None) -> KeyValue:
    """nats-py's KV handle for bucket ``name`` (reads and watches), through ``nc`` (default: the pool's primary).

    ``direct`` reads may be answered by any replica, even one cut off from a quorum; ``direct=False`` asks
    the stream leader, so a successful read also proves the bucket can take writes right now.
    """
    js = pool.js if nc is None else nc.jetstream()
    return KeyValue(name=name, stream=f"KV_{name}", pre=f"$KV.{name}.", js=js, direct=direct)


# Idle heartbeat of KV watches: after two missed ones nats-py re-creates the ordered consumer from the last
# sequence it saw, so a watch whose consumer lived on a killed node recovers in about 2 s.
WATCH_HEARTBEAT_S = 1.0


async def kv_watch(
    pool: ConnectionPool, bucket_name: str, keys: str, cb: Callable[[Msg], Awaitable[None]]
) -> JetStreamContext.PushSubscription:
    """Watch ``keys`` (a key or a pattern) of a bucket: ``cb`` gets the last entry of each key, then every
    change, markers included (see :func:`key_state` for telling them apart)."""
    return await retry_transient(
        lambda: pool.js.subscribe(
            kv_subject(bucket_name, keys),
            stream=f"KV_{bucket_name}",
            cb=cb,
            ordered_consumer=True,
            idle_heartbeat=WATCH_HEARTBEAT_S,
            deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT,
            inactive_threshold=300.0,
        ),
        f"watch {bucket_name} {keys}",
    )


def key_state(msg_headers: dict[str, str] | None, rev: int, has_data: bool) -> KeyState:
    """Kind of a KV entry from its headers: value, delete marker (DEL/PURGE) or expiry marker."""
    headers = msg_headers or {}
    if wire.MARKER_REASON_HEADER in headers:
        return KeyState(rev, "exp")
    if headers.get(wire.KV_OPERATION_HEADER) in ("DEL", "PURGE"):
        return KeyState(rev, "del")
    return KeyState(rev, "val" if has_data else "exp")


async def kv_write(
    pool: ConnectionPool,
    bucket_name: str,
    key: str,
    data: bytes,
    *,
    revision: int | None,
    ttl_s: int | None = None,
    purge: bool = False,
    delete: bool = False,
    timeout: float = 5.0,
    nc: NatsClient | None = None,
    headers: Mapping[str, str] | None = None,
    msg_id: str | None = None,
) -> int:
    """Write one KV entry and return its revision (through ``nc``, else the pool's connections in turn).

    ``revision`` is the compare-and-set: the write succeeds only if the key's last revision is that
    (``0``: the key must not exist; ``None``: no check). ``ttl_s`` sets the per-key TTL (whole seconds).
    ``purge`` and ``delete`` write a removal marker instead of a value (purge also drops older revisions).
    A lost compare-and-set raises :class:`Conflict` carrying the current revision. Retries inside
    ``timeout`` reuse one message id (``msg_id``, default a fresh one), so the stream stores the write at
    most once. ``headers`` are stored with the entry (the KV's own headers win).
    """
    headers = {**(headers or {}), wire.MSG_ID_HEADER: msg_id or uuid.uuid4().hex}
    if revision is not None:
        headers[wire.EXPECTED_LAST_SUBJECT_SEQ_HEADER] = str(revision)
    if ttl_s is not None:
        headers[wire.MSG_TTL_HEADER] = str(int(ttl_s))
    if purge:
        headers[wire.KV_OPERATION_HEADER] = "PURGE"
        headers[wire.ROLLUP_HEADER] = "sub"
    elif delete:
        headers[wire.KV_OPERATION_HEADER] = "DEL"
    ack = await js_publish(pool, kv_subject(bucket_name, key), data, headers, timeout, f"write {key}", nc)
    return ack.seq


async def read_at_one_instant(
    read_round: Callable[[Sequence[T | None] | None], Awaitable[list[T | None]]],
    revision: Callable[[T], int],
    rounds: int = SNAPSHOT_ROUNDS,
) -> tuple[float, list[T | None]]:
    """Keys as they all were at one instant, and that instant (``time.monotonic``): for a start that the spec
    takes as one atomic read.

    ``read_round(previous)`` reads the keys (``previous``: the round before, None the first time; a key that did
    not answer is None and the caller may leave it unread). A read lands at some moment between its send and its
    answer, and a write may land in between: an instance starting beside another one's first claim read
    "absent" after that claim was acknowledged, and the trace check rejected its start. So the keys are read
    again until a round returns the revisions of the round before. Every read of the earlier round was
    answered before the later round was sent, and every read of the later round landed after it was sent:
    since revisions only grow, at the moment the later round was sent each key held exactly what both rounds
    returned. That moment is returned. After ``rounds`` rounds without agreement (keys moving all the time)
    the last round counts, dated at its answer. (The argument needs linearizable reads; the drivers' start
    reads are direct gets, which a lagging replica may answer: rarer, and not covered here.)"""

    def revs(slots: Sequence[T | None]) -> list[int | None]:
        return [None if s is None else revision(s) for s in slots]

    last = await read_round(None)
    for _ in range(rounds):
        at = time.monotonic()
        again = await read_round(last)
        if revs(again) == revs(last):
            return at, again
        last = again
    return time.monotonic(), last


__all__ = [
    "WATCH_HEARTBEAT_S",
    "bucket",
    "key_state",
    "kv_stream_config",
    "kv_subject",
    "kv_watch",
    "kv_write",
    "read_at_one_instant",
]
