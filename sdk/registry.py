"""The service registry on NATS KV: which services may run (definitions) and which instances run (records).

Two replicated buckets (R3 on a 3-node cluster, ``min(3, cluster size)`` otherwise):

* ``aegis_definitions`` -- key ``<service>``, value :class:`~sdk.schema.ServiceDefinition`, no TTL, a few
  revisions of history so an operator can see what changed.
* ``aegis_instances`` -- key ``<service>.<instance_id>``, value :class:`~sdk.schema.ServiceInstance`,
  history 1, a per-key TTL written with every heartbeat (see :mod:`sdk.heartbeat`): the server removes the
  record of an instance that stopped heartbeating, leaving an expiry marker that watchers see.

Writes that need a TTL or a compare-and-set go through :func:`kv_write`, which publishes with the headers
by hand: nats-py's ``kv.update`` cannot carry a TTL (see NATS_NOTES). Reads and watches use nats-py's KV.

Definitions use optimistic concurrency: every read returns the revision, and an update or delete names the
revision it read, so two operators cannot overwrite each other::

    registry = Registry(pool)
    current = await registry.create_definition(ServiceDefinition(name="quotes", owner="fx-desk"))
    await registry.update_definition(current.value.model_copy(update={"owner": "rates"}), current.revision)
"""

from __future__ import annotations

import asyncio
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from nats.js.errors import KeyDeletedError, NotFoundError
from nats.js.kv import KeyValue
from pydantic import BaseModel, ValidationError

from . import wire
from .connection import ConnectionPool
from .election import KeyState
from .errors import AegisError, BadRequest, Conflict, NotFound
from .jetstream import default_replicas, ensure_stream, jetstream_error, js_publish, retry_transient
from .schema import ServiceDefinition, ServiceInstance

M = TypeVar("M", bound=BaseModel)

DEFINITIONS_HISTORY = 5
# Removal markers (expiry or deregistration) of the instances bucket age out after this long. The server
# raises a message's TTL to at least this value, so it must stay <= the smallest instance TTL (1 s).
MARKER_TTL_S = 1
METRICS_MAX_MSGS_PER_INSTANCE = 10_000
METRICS_MAX_BYTES = 256 * 1024 * 1024

_ready: weakref.WeakSet[ConnectionPool] = weakref.WeakSet()
_ready_lock = asyncio.Lock()


@dataclass(frozen=True, slots=True)
class Versioned(Generic[M]):
    """A registry value and the KV revision it was read at (pass it back to update or delete)."""

    value: M
    revision: int


def instance_key(service: str, instance_id: str) -> str:
    """The instances-bucket key of one instance; raises BadRequest for names that are not KV tokens."""
    return f"{wire.check_token('service name', service)}.{wire.check_token('instance id', instance_id)}"


def kv_subject(bucket: str, key: str) -> str:
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


async def ensure_registry(pool: ConnectionPool, replicas: int | None = None) -> None:
    """Create (or bring up to date) both buckets and the ``AEGIS_METRICS`` stream; once per pool."""
    if pool in _ready:
        return
    async with _ready_lock:
        if pool in _ready:
            return
        n = default_replicas(pool, replicas)
        await ensure_stream(pool, kv_stream_config(wire.DEFINITIONS_BUCKET, n, DEFINITIONS_HISTORY, None))
        await ensure_stream(pool, kv_stream_config(wire.INSTANCES_BUCKET, n, 1, MARKER_TTL_S))
        await ensure_stream(
            pool,
            api.StreamConfig(
                name=wire.METRICS_STREAM,
                subjects=[f"{wire.METRICS_PREFIX}.>"],
                storage=api.StorageType.FILE,
                retention=api.RetentionPolicy.LIMITS,
                discard=api.DiscardPolicy.OLD,
                max_age=pool.settings.metrics_history_max_age_s,
                max_msgs_per_subject=METRICS_MAX_MSGS_PER_INSTANCE,
                max_bytes=METRICS_MAX_BYTES,
                num_replicas=n,
            ),
        )
        _ready.add(pool)


def bucket(pool: ConnectionPool, name: str, *, direct: bool = True) -> KeyValue:
    """nats-py's KV handle for one of the registry buckets (reads and watches).

    ``direct`` reads may be answered by any replica, even one cut off from a quorum; ``direct=False`` asks
    the stream leader, so a successful read also proves the bucket can take writes right now.
    """
    return KeyValue(name=name, stream=f"KV_{name}", pre=f"$KV.{name}.", js=pool.js, direct=direct)


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


def _parse(model: type[M], data: bytes, what: str) -> M:
    try:
        return model.model_validate_json(data)
    except ValidationError as exc:
        raise AegisError(f"{what} holds data that is not a valid {model.__name__}: {exc}") from None


class Registry:
    """Read and change service definitions; read instance records. See the module docstring."""

    def __init__(self, pool: ConnectionPool, *, timeout: float = 5.0) -> None:
        self.pool = pool
        self.timeout = timeout
        # Single keys are read through the stream leader: a direct get may be answered by a replica that has
        # not applied the last write yet (a definition just created read as missing, a stale revision passing
        # the check before an update, an instance that has just registered read as unknown: seen once in CI).
        # Operators read single keys rarely; they must read their own writes and the instances' last ones.
        self._defs = bucket(pool, wire.DEFINITIONS_BUCKET, direct=False)
        self._instances = bucket(pool, wire.INSTANCES_BUCKET, direct=False)

    async def open(self) -> Registry:
        """Make sure the buckets exist; returns self."""
        await ensure_registry(self.pool)
        return self

    # -- definitions --------------------------------------------------------------------------------

    async def get_definition(self, name: str) -> Versioned[ServiceDefinition]:
        """The definition of ``name``; NotFound if there is none."""
        wire.check_token("service name", name)
        try:
            entry = await retry_transient(lambda: self._defs.get(name), f"read definition {name}")
        except (NotFoundError, KeyDeletedError):
            raise NotFound(f"service {name!r} has no definition") from None
        except AegisError:
            raise
        except Exception as exc:
            raise jetstream_error(exc, f"read definition {name}") from exc
        if not entry.value:
            raise NotFound(f"service {name!r} has no definition")
        return Versioned(_parse(ServiceDefinition, entry.value, f"definition {name!r}"), entry.revision or 0)

    async def create_definition(self, definition: ServiceDefinition) -> Versioned[ServiceDefinition]:
        """Store a new definition; Conflict if one exists. Sets created_at/updated_at."""
        now = time.time()
        value = definition.model_copy(update={"created_at": now, "updated_at": now})
        expected = 0
        for _ in range(3):  # a deleted definition leaves a marker: create over it by compare-and-set
            try:
                rev = await self._write_definition(value, expected)
                return Versioned(value, rev)
            except Conflict as exc:
                try:
                    current = await self.get_definition(definition.name)
                except NotFound:
                    expected = expected if exc.revision is None else exc.revision
                    continue
                raise Conflict(
                    f"service {definition.name!r} is already defined (revision {current.revision})",
                    revision=current.revision,
                ) from None
        raise Conflict(f"service {definition.name!r} changed concurrently; retry", revision=expected)

    async def update_definition(
        self, definition: ServiceDefinition, revision: int
    ) -> Versioned[ServiceDefinition]:
        """Replace the definition read at ``revision``; Conflict if it changed since, NotFound if gone."""
        current = await self.get_definition(definition.name)
        if current.revision != revision:
            raise Conflict(
                f"definition of {definition.name!r} is at revision {current.revision}, not {revision}:"
                " re-read it and apply the change again",
                revision=current.revision,
            )
        value = definition.model_copy(
            update={"created_at": current.value.created_at or time.time(), "updated_at": time.time()}
        )
        return Versioned(value, await self._write_definition(value, revision))

    async def delete_definition(self, name: str, revision: int | None = None) -> None:
        """Delete the definition of ``name`` (only if still at ``revision`` when given); NotFound if none."""
        current = await self.get_definition(name)
        if revision is not None and current.revision != revision:
            raise Conflict(
                f"definition of {name!r} is at revision {current.revision}, not {revision}",
                revision=current.revision,
            )
        await kv_write(
            self.pool,
            wire.DEFINITIONS_BUCKET,
            name,
            b"",
            revision=current.revision,
            delete=True,
            timeout=self.timeout,
        )

    async def list_definitions(self) -> list[Versioned[ServiceDefinition]]:
        """Every current definition, sorted by name."""
        entries = await self._snapshot(self._defs, ">")
        out = [Versioned(_parse(ServiceDefinition, v, f"definition {k!r}"), r) for k, v, r in entries]
        return sorted(out, key=lambda d: d.value.name)

    async def _write_definition(self, value: ServiceDefinition, revision: int) -> int:
        data = value.model_dump_json().encode()
        if len(data) > self.pool.max_payload:
            raise BadRequest(f"definition of {value.name!r} is {len(data)} bytes; too large")
        try:
            return await kv_write(
                self.pool, wire.DEFINITIONS_BUCKET, value.name, data, revision=revision, timeout=self.timeout
            )
        except Conflict as exc:
            # The compare-and-set is the real check: another update can land between the read that checked
            # the revision and this write.
            if revision == 0:
                raise
            raise Conflict(
                f"definition of {value.name!r} changed since revision {revision}"
                f"{'' if exc.revision is None else f' (now at {exc.revision})'}: re-read it and apply the change again",
                revision=exc.revision,
            ) from None

    # -- instances ----------------------------------------------------------------------------------

    async def list_instances(self, service: str | None = None) -> list[ServiceInstance]:
        """Current instance records (of ``service``, or all), sorted by key. One KV read, not a watch:
        clients that route calls use :class:`~sdk.discovery.InstanceWatch` instead."""
        pattern = f"{wire.check_token('service name', service)}.*" if service else ">"
        entries = await self._snapshot(self._instances, pattern)
        return [_parse(ServiceInstance, v, f"instance record {k!r}") for k, v, _ in entries]

    async def get_instance(self, service: str, instance_id: str) -> ServiceInstance:
        """The record of one instance; NotFound if it is not registered."""
        key = instance_key(service, instance_id)
        try:
            entry = await retry_transient(lambda: self._instances.get(key), f"read instance {key}")
        except (NotFoundError, KeyDeletedError):
            entry = None
        except AegisError:
            raise
        except Exception as exc:
            raise jetstream_error(exc, f"read instance {key}") from exc
        if entry is None or not entry.value:  # an expiry marker reads as an empty value
            raise NotFound(f"no instance {key!r} is registered")
        return _parse(ServiceInstance, entry.value, f"instance record {key!r}")

    async def _snapshot(self, kv: KeyValue, pattern: str) -> list[tuple[str, bytes, int]]:
        """(key, value, revision) of every live key matching ``pattern``: markers and deletes skipped.

        Reads until the entry the server says is the last one (``delta`` 0), markers included. nats-py's own
        end-of-snapshot signal can come *before* the entries: it is sent when the consumer reports nothing
        pending and nothing handled yet, which is also the case while the only message is still on its way
        (seen as "0 registered instances" for a live instance). It is trusted only when the stream holds no
        message for the pattern.
        """
        await ensure_registry(self.pool)

        async def read() -> list[tuple[str, bytes, int]]:
            watcher = await kv.watch(pattern)
            try:
                out = []
                while True:
                    entry = await watcher.updates(timeout=self.timeout)
                    if entry is None:
                        if await self._holds_messages(kv, pattern):
                            continue  # the entries are on their way; the last one ends the read
                        return out
                    # an expiry marker reads as an empty value; deletes and purges carry an operation
                    if entry.value and entry.operation is None:
                        out.append((entry.key, entry.value, entry.revision or 0))
                    if not entry.delta:
                        return out
            finally:
                await watcher.stop()

        return await retry_transient(read, f"read {kv._name}")

    async def _holds_messages(self, kv: KeyValue, pattern: str) -> bool:
        info = await self.pool.js.stream_info(kv._stream, subjects_filter=f"{kv._pre}{pattern}")
        return bool(info.state.subjects)
