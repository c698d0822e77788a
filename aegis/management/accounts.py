"""Users and API keys of the management service, stored in a replicated KV bucket (``aegis_users``).

Keys: ``user.<name>`` holds a :class:`~aegis.sdk.schema.UserRecord` (an Argon2 hash, never a password) and
``key.<id>`` an :class:`~aegis.sdk.schema.ApiKeyRecord` (a SHA-256 of the key, never the key). Every write is a
compare-and-set on the revision that was read, so two replicas (or two admins) cannot overwrite each other's change;
single keys are read from the stream leader, so a replica reads its own writes and a revoked key is refused at once.

An API key is ``aegis_<id>_<secret>``: ``id`` (16 hex digits) finds the record, the 256-bit ``secret`` makes it
unguessable, so a fast hash is enough (no Argon2 per request) and the stored hash is compared in constant time::

    accounts = await Accounts(pool).open()
    user = await accounts.create_user(UserRecord(name="ops", role=Role.OPERATOR, password_hash=await passwords.hash(pw)))
    key, record = new_api_key("ci deploys", ["services:read"], created_by="user:admin")
    await accounts.create_key(record)          # show ``key`` once; only its hash is stored
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable
from typing import TypeVar

from nats.js.errors import KeyDeletedError, NotFoundError
from pydantic import BaseModel, ValidationError

from aegis.sdk import wire
from aegis.sdk.connection import ConnectionPool
from aegis.sdk.errors import AegisError, BadRequest, Conflict, NotFound
from aegis.sdk.jetstream import default_replicas, ensure_stream, retry_transient
from aegis.sdk.kv import bucket, kv_stream_config, kv_subject, kv_write
from aegis.sdk.nats_errors import jetstream_error
from aegis.sdk.registry import Versioned
from aegis.sdk.schema import ApiKeyRecord, Scope, UserRecord

M = TypeVar("M", bound=BaseModel)

USERS_HISTORY = 5
"""Revisions kept per user or key: enough to see what the last few changes were."""

_API_KEY = re.compile(r"^aegis_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")
_CAS_ATTEMPTS = 5


class Passwords:
    """Argon2 hashing (pwdlib's recommended parameters) off the event loop, a few hashes at a time.

    A hash costs tens of milliseconds of CPU and 64 MiB: it runs in a worker thread so the loop keeps serving, and
    at most ``concurrency`` run at once so a burst of logins cannot exhaust memory. :meth:`verify_user` checks an
    unknown user against a dummy hash, so a login takes as long whether or not the user exists.
    """

    def __init__(self, concurrency: int = 2) -> None:
        from pwdlib import PasswordHash  # imported here: the SDK alone does not install pwdlib

        self._hasher = PasswordHash.recommended()
        self._slots = asyncio.Semaphore(concurrency)
        self._dummy = self._hasher.hash(secrets.token_urlsafe(32))

    async def hash(self, password: str) -> str:
        """The Argon2 hash of ``password``."""
        async with self._slots:
            return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, password: str, password_hash: str) -> bool:
        """Whether ``password`` matches ``password_hash``; False for a malformed hash rather than an error."""
        async with self._slots:
            try:
                return await asyncio.to_thread(self._hasher.verify, password, password_hash)
            except Exception:  # pwdlib raises UnknownHashError for a hash no hasher recognises
                return False

    async def verify_user(self, password: str, user: UserRecord | None) -> bool:
        """Whether ``password`` is ``user``'s; for no user, the same work against a dummy hash, then False."""
        ok = await self.verify(password, user.password_hash if user else self._dummy)
        return ok and user is not None


def api_key_hash(key: str) -> str:
    """Hex SHA-256 of a whole API key: what is stored instead of the key."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_api_key(name: str, scopes: list[Scope], created_by: str) -> tuple[str, ApiKeyRecord]:
    """A fresh key (``aegis_<id>_<secret>``, to be shown once) and the record that stores only its hash."""
    key_id = secrets.token_hex(8)
    key = f"aegis_{key_id}_{secrets.token_urlsafe(32)}"
    record = ApiKeyRecord(
        id=key_id,
        name=name,
        scopes=sorted(set(scopes)),
        key_hash=api_key_hash(key),
        created_at=time.time(),
        created_by=created_by,
    )
    return key, record


def api_key_id(key: str) -> str | None:
    """The id part of a well-formed key, else None (a malformed key never reaches the bucket)."""
    found = _API_KEY.match(key)
    return found.group(1) if found else None


def api_key_matches(key: str, record: ApiKeyRecord) -> bool:
    """Whether ``key`` is the key ``record`` stores the hash of (constant-time comparison)."""
    return hmac.compare_digest(api_key_hash(key), record.key_hash)


def _user_key(name: str) -> str:
    return f"user.{wire.check_token('user name', name)}"


def _api_key_key(key_id: str) -> str:
    if not re.fullmatch(r"[0-9a-f]{16}", key_id):
        raise NotFound(f"no API key {key_id!r}")
    return f"key.{key_id}"


class Accounts:
    """Users and API keys in the ``aegis_users`` bucket (or ``bucket_name``); see the module docstring."""

    def __init__(
        self,
        pool: ConnectionPool,
        *,
        bucket_name: str = wire.USERS_BUCKET,
        replicas: int | None = None,
        timeout: float = 5.0,
        on_write: Callable[[str, bytes, int], None] | None = None,
    ) -> None:
        self.pool = pool
        self.bucket_name = bucket_name
        self.timeout = timeout
        self._on_write = on_write
        """Told (key, value, revision) of every write that landed; an empty value is a delete."""
        self._replicas = replicas
        self._kv = bucket(pool, bucket_name, direct=False)

    async def open(self) -> Accounts:
        """Create the bucket (R3 on a 3-node cluster, a few revisions of history) if needed; returns self."""
        n = default_replicas(self.pool, self._replicas)
        await ensure_stream(self.pool, kv_stream_config(self.bucket_name, n, USERS_HISTORY, None))
        return self

    # -- users --------------------------------------------------------------------------------------

    async def get_user(self, name: str) -> Versioned[UserRecord]:
        """The user ``name``; NotFound if there is none (also for a name that is not a valid token)."""
        try:
            key = _user_key(name)
        except BadRequest:
            raise NotFound(f"no user {name!r}") from None
        return await self._get(key, UserRecord, f"user {name!r}")

    async def list_users(self) -> list[Versioned[UserRecord]]:
        """Every user, sorted by name."""
        return await self._list("user", UserRecord)

    async def has_users(self) -> bool:
        """Whether the bucket holds at least one user."""
        return bool(await self.list_users())

    async def create_user(self, record: UserRecord) -> Versioned[UserRecord]:
        """Store a new user; Conflict if the name is taken."""
        now = time.time()
        record = record.model_copy(update={"created_at": now, "updated_at": now})
        return await self._create(_user_key(record.name), record, f"user {record.name!r}")

    async def update_user(
        self, name: str, change: Callable[[UserRecord], UserRecord]
    ) -> tuple[int, Versioned[UserRecord]]:
        """Apply ``change`` to the current record by compare-and-set (re-read and retried if it moved);
        returns (revision before, new version). NotFound if the user does not exist."""

        def stamped(rec: UserRecord) -> UserRecord:
            return change(rec).model_copy(update={"updated_at": time.time()})

        return await self._update(_user_key(name), UserRecord, stamped, f"user {name!r}")

    async def delete_user(self, name: str, revision: int) -> int:
        """Delete the user read at ``revision`` and return the delete marker's revision; Conflict if it changed."""
        return await self._delete(_user_key(name), revision, f"user {name!r}")

    # -- API keys -----------------------------------------------------------------------------------

    async def get_key(self, key_id: str) -> Versioned[ApiKeyRecord]:
        """The key record ``key_id``; NotFound if there is none."""
        return await self._get(_api_key_key(key_id), ApiKeyRecord, f"API key {key_id!r}")

    async def list_keys(self) -> list[Versioned[ApiKeyRecord]]:
        """Every key record, revoked ones included, sorted by id."""
        return await self._list("key", ApiKeyRecord)

    async def create_key(self, record: ApiKeyRecord) -> Versioned[ApiKeyRecord]:
        """Store a new key record (see :func:`new_api_key`)."""
        return await self._create(_api_key_key(record.id), record, f"API key {record.id!r}")

    async def update_key(
        self, key_id: str, change: Callable[[ApiKeyRecord], ApiKeyRecord], *, revision: int | None = None
    ) -> tuple[int, Versioned[ApiKeyRecord]]:
        """Apply ``change`` by compare-and-set; with ``revision``, only to that revision (no retry: Conflict)."""
        return await self._update(
            _api_key_key(key_id), ApiKeyRecord, change, f"API key {key_id!r}", revision=revision
        )

    # -- KV plumbing ----------------------------------------------------------------------------------

    async def _get(self, key: str, model: type[M], what: str) -> Versioned[M]:
        try:
            entry = await retry_transient(lambda: self._kv.get(key), f"read {what}")
        except (NotFoundError, KeyDeletedError):
            raise NotFound(f"no {what}") from None
        except AegisError:
            raise
        except Exception as exc:
            raise jetstream_error(exc, f"read {what}") from exc
        if not entry.value:
            raise NotFound(f"no {what}")
        try:
            return Versioned(model.model_validate_json(entry.value), entry.revision or 0)
        except ValidationError as exc:
            raise AegisError(f"{what} holds data that is not a valid {model.__name__}: {exc}") from None

    async def _list(self, prefix: str, model: type[M]) -> list[Versioned[M]]:
        # The stream's per-subject index names every key ever written (deleted ones too); the users and keys of a
        # management service are few, so reading each from the leader is cheap and reads the latest writes.
        subjects_filter = kv_subject(self.bucket_name, f"{prefix}.>")
        try:
            info = await retry_transient(
                lambda: self.pool.js.stream_info(f"KV_{self.bucket_name}", subjects_filter=subjects_filter),
                f"list {prefix}s",
            )
        except AegisError:
            raise
        except Exception as exc:
            raise jetstream_error(exc, f"list {prefix}s") from exc
        out = []
        lead = len(kv_subject(self.bucket_name, ""))
        for subject in sorted(info.state.subjects or {}):
            try:
                out.append(await self._get(subject[lead:], model, subject[lead:]))
            except NotFound:
                continue
        return out

    async def _write(self, key: str, record: BaseModel, revision: int) -> int:
        data = record.model_dump_json().encode()
        rev = await kv_write(self.pool, self.bucket_name, key, data, revision=revision, timeout=self.timeout)
        if self._on_write is not None:
            self._on_write(key, data, rev)
        return rev

    async def _create(self, key: str, record: M, what: str) -> Versioned[M]:
        expected = 0
        for _ in range(_CAS_ATTEMPTS):  # a deleted entry leaves a marker: create over it by compare-and-set
            try:
                return Versioned(record, await self._write(key, record, expected))
            except Conflict as exc:
                try:
                    await self._get(key, type(record), what)
                except NotFound:
                    if exc.revision is None:
                        await asyncio.sleep(0.05)  # another write of the key is still being replicated
                    else:
                        expected = exc.revision
                    continue
                raise Conflict(f"{what} exists already", revision=exc.revision) from None
        raise Conflict(f"{what} changed concurrently; retry", revision=expected)

    async def _update(
        self, key: str, model: type[M], change: Callable[[M], M], what: str, *, revision: int | None = None
    ) -> tuple[int, Versioned[M]]:
        for _ in range(_CAS_ATTEMPTS):
            current = await self._get(key, model, what)
            if revision is not None and current.revision != revision:
                raise Conflict(
                    f"{what} is at revision {current.revision}, not {revision}", revision=current.revision
                )
            new = change(current.value)
            try:
                return current.revision, Versioned(new, await self._write(key, new, current.revision))
            except Conflict:
                if revision is not None:
                    raise
                continue  # changed between the read and the write: apply the change to the new value
        raise Conflict(f"{what} keeps changing concurrently; retry")

    async def _delete(self, key: str, revision: int, what: str) -> int:
        try:
            rev = await kv_write(
                self.pool, self.bucket_name, key, b"", revision=revision, delete=True, timeout=self.timeout
            )
        except Conflict as exc:
            raise Conflict(
                f"{what} changed since revision {revision}; re-read it", revision=exc.revision
            ) from None
        if self._on_write is not None:
            self._on_write(key, b"", rev)
        return rev


__all__ = [
    "Accounts",
    "api_key_hash",
    "api_key_id",
    "api_key_matches",
    "Passwords",
    "new_api_key",
]
