"""A watch-fed mirror of one KV bucket: the management service reads its caches, never the KV, per request.

One ordered JetStream consumer per bucket (the SDK's :func:`~aegis.sdk.kv.kv_watch`) delivers the last entry of
every key and then every change, markers included; nats-py re-creates the consumer from the last sequence it saw
when its node dies, so the mirror heals itself. Each change reaches ``on_change`` with what the key now holds
(value, delete marker, expiry marker), its revision, and the time it arrived *on this process's clocks*: health is
judged on the management server's clock, never on an instance's wall clock.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nats.aio.msg import Msg

from aegis.sdk.connection import ConnectionPool
from aegis.sdk.errors import AegisError, RpcTimeout
from aegis.sdk.jetstream import retry_transient
from aegis.sdk.kv import key_state, kv_watch
from aegis.sdk.kv_types import Kind
from aegis.sdk.nats_errors import jetstream_error

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Change:
    """One entry of a watched bucket as it arrived."""

    key: str
    kind: Kind
    """"val" (a value), "del" (deleted or purged) or "exp" (the server's TTL expiry marker)."""
    revision: int
    data: bytes
    arrived_mono: float
    """``time.monotonic()`` of this process when the entry arrived."""
    arrived_wall: float
    """``time.time()`` of this process when the entry arrived."""
    initial: bool
    """True while the mirror loads the bucket's current state (before :attr:`KvMirror.ready`)."""


class KvMirror:
    """Follow ``keys`` (a key pattern) of ``bucket``; call ``on_change`` for every entry, in order."""

    def __init__(
        self, pool: ConnectionPool, bucket: str, on_change: Callable[[Change], None], keys: str = ">"
    ) -> None:
        self.pool = pool
        self.bucket = bucket
        self.keys = keys
        self._on_change = on_change
        self._prefix = f"$KV.{bucket}."
        self._sub: Any = None
        self._ready = asyncio.Event()
        self.updates = 0
        """Entries applied so far."""

    @property
    def ready(self) -> bool:
        """True once the bucket's state at start-up has been loaded."""
        return self._ready.is_set()

    async def start(self, timeout: float = 10.0) -> None:
        """Start watching and wait until the current entries are loaded; RpcTimeout when they are not in time."""
        if self._sub is not None:
            return
        self._sub = await kv_watch(self.pool, self.bucket, self.keys, self._on_msg)
        try:
            info = await retry_transient(self._sub.consumer_info, f"watch {self.bucket}")
            if info.num_pending == 0 and self._sub.delivered == 0:
                self._ready.set()
            await asyncio.wait_for(self._ready.wait(), timeout)
        except TimeoutError:
            raise RpcTimeout(f"{self.bucket}: current entries not loaded within {timeout}s") from None
        except AegisError:
            raise
        except Exception as exc:
            raise jetstream_error(exc, f"watch {self.bucket}") from exc

    async def stop(self) -> None:
        """Stop watching (idempotent)."""
        sub, self._sub = self._sub, None
        if sub is not None:
            try:
                await sub.unsubscribe()
            except Exception:  # the connection is already closed
                log.debug("unsubscribe of the %s watch failed", self.bucket, exc_info=True)

    async def _on_msg(self, msg: Msg) -> None:
        meta = msg.metadata
        rev = meta.sequence.stream
        change = Change(
            key=msg.subject[len(self._prefix) :],
            kind=key_state(msg.headers, rev, bool(msg.data)).kind,
            revision=rev,
            data=msg.data,
            arrived_mono=time.monotonic(),
            arrived_wall=time.time(),
            initial=not self._ready.is_set(),
        )
        self.updates += 1
        try:
            self._on_change(change)
        except Exception:
            log.exception("%s: applying %s failed", self.bucket, change.key)
        if meta.num_pending == 0:
            self._ready.set()
