"""Users and API keys as the watch of the ``aegis_users`` bucket shows them: credentials checked without a NATS request.

Every authenticated HTTP request needs the caller's user (is it still there, at the token's version?) or API key
(its hash, scopes, revocation). Reading them from the KV per request would make every API call a replicated read,
and would make the whole API fail while the KV has no quorum although the answers come from caches. So one watch
per server process mirrors the bucket (:class:`~aegis.management.kv_mirror.KvMirror`), and the authenticator looks
there first. A deletion, password or role change or key revocation reaches every replica's mirror within the watch's
delivery time (milliseconds), and this replica's own writes at once; a miss (a user created a moment ago on another
replica) falls back to a KV read.
"""

from __future__ import annotations

import logging
import time
from typing import Generic, TypeVar

from pydantic import BaseModel, ValidationError

from aegis.sdk.connection import ConnectionPool
from aegis.sdk.registry import Versioned
from aegis.sdk.schema import ApiKeyRecord, UserRecord

from .kv_mirror import Change, KvMirror

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)


class _Table(Generic[M]):
    def __init__(self, model: type[M]) -> None:
        self.model = model
        self.rows: dict[str, Versioned[M]] = {}
        self.applied: dict[str, int] = {}
        """Revision last applied per name (deletes too): an older one arriving later is ignored."""

    def apply(self, name: str, c: Change) -> None:
        if c.revision <= self.applied.get(name, 0):
            return  # this replica's own write got here first
        self.applied[name] = c.revision
        if c.kind != "val":
            self.rows.pop(name, None)
            return
        try:
            self.rows[name] = Versioned(self.model.model_validate_json(c.data), c.revision)
        except ValidationError as exc:
            log.warning("%s %s is not valid, ignored: %s", self.model.__name__, name, exc)
            self.rows.pop(name, None)


class CredentialCache:
    """The users and keys of one users bucket, kept by a watch; see the module docstring."""

    def __init__(self, pool: ConnectionPool, bucket_name: str) -> None:
        self.users: _Table[UserRecord] = _Table(UserRecord)
        self.keys: _Table[ApiKeyRecord] = _Table(ApiKeyRecord)
        self.mirror = KvMirror(pool, bucket_name, self._apply)

    @property
    def ready(self) -> bool:
        return self.mirror.ready

    async def start(self, timeout: float = 10.0) -> None:
        await self.mirror.start(timeout)

    async def stop(self) -> None:
        await self.mirror.stop()

    def user(self, name: str) -> Versioned[UserRecord] | None:
        """The cached user ``name``, or None when the watch has not shown one."""
        return self.users.rows.get(name)

    def key(self, key_id: str) -> Versioned[ApiKeyRecord] | None:
        """The cached API key ``key_id``, or None when the watch has not shown one."""
        return self.keys.rows.get(key_id)

    def written(self, key: str, data: bytes, revision: int) -> None:
        """A write of this process landed at ``revision`` (empty ``data``: a delete): apply it now."""
        now_mono, now_wall = time.monotonic(), time.time()
        self._apply(Change(key, "val" if data else "del", revision, data, now_mono, now_wall, False))

    def _apply(self, c: Change) -> None:
        kind, _, name = c.key.partition(".")
        if kind == "user":
            self.users.apply(name, c)
        elif kind == "key":
            self.keys.apply(name, c)
