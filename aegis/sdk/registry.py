"""The service registry on NATS KV: which services may run (definitions) and which instances run (records).

Two replicated buckets (R3 on a 3-node cluster, ``min(3, cluster size)`` otherwise):

* ``aegis_definitions`` -- key ``<service>``, value :class:`~aegis.sdk.schema.ServiceDefinition`, no TTL, a few
  revisions of history so an operator can see what changed (:meth:`Registry.definition_history`).
* ``aegis_instances`` -- key ``<service>.<instance_id>``, value :class:`~aegis.sdk.schema.ServiceInstance`,
  history 1, a per-key TTL written with every heartbeat (see :mod:`aegis.sdk.heartbeat`): the server removes the
  record of an instance that stopped heartbeating, leaving an expiry marker that watchers see.

Writes that need a TTL or a compare-and-set go through :func:`~aegis.sdk.kv.kv_write`, which publishes with the
headers by hand: nats-py's ``kv.update`` cannot carry a TTL (see NATS_NOTES). Reads and watches use nats-py's
KV.

Definitions use optimistic concurrency: every read returns the revision, and an update or delete names the
revision it read, so two operators cannot overwrite each other::

    registry = Registry(pool)
    current = await registry.create_definition(ServiceDefinition(name="quotes", owner="fx-desk"))
    await registry.update_definition(current.value.model_copy(update={"owner": "rates"}), current.revision)
"""

from __future__ import annotations

import asyncio
import time
import weakref
from dataclasses import dataclass
from typing import Generic, TypeVar

from nats.js import api
from nats.js.errors import KeyDeletedError, NotFoundError
from nats.js.kv import KeyValue
from pydantic import BaseModel, ValidationError

from . import wire
from .connection import ConnectionPool
from .errors import AegisError, BadRequest, Conflict, NotFound
from .jetstream import default_replicas, ensure_stream, retry_transient
from .kv import bucket, kv_stream_config, kv_subject, kv_write
from .nats_errors import jetstream_error
from .schema import DefinitionRevision, ServiceDefinition, ServiceInstance

M = TypeVar("M", bound=BaseModel)

DEFINITIONS_HISTORY = 5
# Bound on the reads of one definition_history call: the kept revisions, plus writes that land while it reads.
_HISTORY_READS = 4 * DEFINITIONS_HISTORY
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


def _parse(model: type[M], data: bytes, what: str) -> M:
    try:
        return model.model_validate_json(data)
    except ValidationError as exc:
        raise AegisError(f"{what} holds data that is not a valid {model.__name__}: {exc}") from None


def _revision(name: str, msg: api.RawStreamMsg) -> DefinitionRevision:
    """A stored entry of the definitions bucket as a :class:`DefinitionRevision`."""
    marker = (msg.headers or {}).get(wire.KV_OPERATION_HEADER)
    operation = marker if marker in ("DEL", "PURGE") else "PUT"
    value = None
    if operation == "PUT" and msg.data:
        value = _parse(ServiceDefinition, msg.data, f"definition {name!r} at revision {msg.seq}")
    return DefinitionRevision(
        revision=msg.seq or 0,
        operation=operation,  # type: ignore[arg-type]
        time=msg.time.timestamp() if msg.time is not None else 0.0,
        value=value,
    )


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

    async def definition_history(self, name: str) -> list[DefinitionRevision]:
        """Every kept revision of ``name``'s definition, oldest first, deletes and purges included (the bucket
        keeps the last 5; a purge drops the ones before it). BadRequest for an invalid name, NotFound when the
        bucket holds nothing at all for it.

        Each revision is read through the stream leader (the JetStream ``STREAM.MSG.GET`` API, "next message of
        this subject from sequence n"), like :meth:`get_definition` and for the same reason: a revision this
        process (or any writer whose write was acknowledged) has just written is included, which a direct get
        answered by a lagging replica would not promise. One request per kept revision, at most a handful::

            for rev in await registry.definition_history("quotes"):
                print(rev.revision, rev.operation, rev.time, rev.value and rev.value.owner)
        """
        wire.check_token("service name", name)
        subject = kv_subject(wire.DEFINITIONS_BUCKET, name)
        stream = f"KV_{wire.DEFINITIONS_BUCKET}"
        js = self.pool.js
        out: list[DefinitionRevision] = []
        seq = 1
        for _ in range(_HISTORY_READS):

            async def read(start: int = seq) -> api.RawStreamMsg:
                return await js.get_msg(stream, seq=start, subject=subject, next=True, direct=False)

            try:
                msg = await retry_transient(read, f"read history of definition {name}")
            except NotFoundError:  # no revision at or after seq (or no bucket yet)
                break
            except AegisError:
                raise
            except Exception as exc:
                raise jetstream_error(exc, f"read history of definition {name}") from exc
            out.append(_revision(name, msg))
            seq = (msg.seq or seq) + 1
        if not out:
            raise NotFound(f"service {name!r} has no definition history")
        return out

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
        clients that route calls use :class:`~aegis.sdk.discovery.InstanceWatch` instead."""
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
