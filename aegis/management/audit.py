"""The audit log: an append-only, replicated JetStream stream (``AEGIS_AUDIT``) of
:class:`~aegis.sdk.schema.AuditEntry`.

The stream refuses to delete or purge messages (``deny_delete``, ``deny_purge``): nobody with plain publish rights
can remove an entry, only age (``max_age``) or deleting the whole stream, which needs JetStream admin rights on the
NATS account. Entries are read back by stream sequence, which is the paging cursor of ``GET /api/audit``::

    audit = await Audit(pool).open()
    await audit.append("user:admin", "user.create", "user:alice", None, 7, request_id="4f1c...")
    page = await audit.page(cursor=1, limit=50)     # page.next_cursor for the next one
"""

from __future__ import annotations

import time
import uuid

from nats.js import api
from nats.js.errors import NotFoundError
from pydantic import ValidationError
from starlette.requests import Request

from aegis.sdk import wire
from aegis.sdk.connection import ConnectionPool
from aegis.sdk.errors import AegisError, BadRequest
from aegis.sdk.jetstream import default_replicas, ensure_stream, js_publish, retry_transient
from aegis.sdk.nats_errors import jetstream_error
from aegis.sdk.schema import AuditEntry, AuditPage

MAX_PAGE = 500
"""Largest page ``GET /api/audit`` returns: each entry is one leader read."""


def request_id(request: Request) -> str:
    """The id that ties a request to its audit entries: one a middleware put in ``request.state.request_id``,
    else the client's ``X-Request-ID`` (when short and printable), else a fresh one (remembered on the request)."""
    rid = getattr(request.state, "request_id", None)
    if isinstance(rid, str) and rid:
        return rid
    given = request.headers.get(wire.REQUEST_ID_HEADER, "")
    rid = given if 0 < len(given) <= 128 and given.isascii() and given.isprintable() else uuid.uuid4().hex
    request.state.request_id = rid
    return rid


class Audit:
    """Append to and page through the audit stream; see the module docstring.

    ``stream`` and ``subject`` default to ``AEGIS_AUDIT`` / ``aegis.audit``; other names let two deployments (or
    two tests) share a cluster. ``max_age_s`` 0 keeps entries forever.
    """

    def __init__(
        self,
        pool: ConnectionPool,
        *,
        stream: str = wire.AUDIT_STREAM,
        subject: str = wire.AUDIT_SUBJECT,
        replicas: int | None = None,
        max_age_s: float = 0.0,
        timeout: float = 5.0,
    ) -> None:
        self.pool = pool
        self.stream = stream
        self.subject = subject
        self.timeout = timeout
        self._replicas = replicas
        self._max_age_s = max_age_s

    async def open(self) -> Audit:
        """Create the stream (R3 on a 3-node cluster) if needed; returns self."""
        config = api.StreamConfig(
            name=self.stream,
            subjects=[self.subject],
            storage=api.StorageType.FILE,
            retention=api.RetentionPolicy.LIMITS,
            discard=api.DiscardPolicy.OLD,
            max_age=self._max_age_s or None,
            num_replicas=default_replicas(self.pool, self._replicas),
            deny_delete=True,
            deny_purge=True,
            duplicate_window=120.0,
        )
        await ensure_stream(self.pool, config)
        return self

    async def append(
        self,
        actor: str,
        action: str,
        target: str,
        before_revision: int | None = None,
        after_revision: int | None = None,
        request_id: str = "",
        *,
        detail: str = "",
    ) -> int:
        """Append one entry (stamped with the current time) and return its stream sequence.

        Raises the SDK's typed errors when the stream cannot take it within ``timeout`` (a retry inside that time
        reuses one message id, so an entry is stored at most once).
        """
        entry = AuditEntry(
            time=time.time(),
            actor=actor[:200],
            action=action[:100],
            target=target[:300],
            before_revision=before_revision,
            after_revision=after_revision,
            request_id=request_id[:128],
            detail=detail[:1000],
        )
        headers = {wire.MSG_ID_HEADER: uuid.uuid4().hex}
        ack = await js_publish(
            self.pool, self.subject, entry.model_dump_json().encode(), headers, self.timeout, "audit append"
        )
        return ack.seq

    async def page(
        self, *, cursor: int | None = None, since: float | None = None, limit: int = 100
    ) -> AuditPage:
        """Up to ``limit`` entries, oldest first, from sequence ``cursor``, or from the first entry at or after the
        UNIX time ``since``, or from the beginning. ``next_cursor`` is None when the page reached the end: to follow
        new entries, ask again later with ``cursor=last_seq + 1``."""
        if cursor is not None and since is not None:
            raise BadRequest("give either cursor or since, not both")
        if not 1 <= limit <= MAX_PAGE:
            raise BadRequest(f"limit must be between 1 and {MAX_PAGE}")
        if cursor is not None and cursor < 1:
            raise BadRequest("cursor is a stream sequence: 1 or more")
        state = await self._state()
        last_seq = state.last_seq or 0
        if cursor is not None:
            start = max(cursor, state.first_seq or 1)
        elif since is not None:
            start = await self._first_at_or_after(since, state.first_seq or 1, last_seq)
        else:
            start = state.first_seq or 1
        entries: list[AuditEntry] = []
        seq = start
        while len(entries) < limit and seq <= last_seq:
            found = await self._next(seq)
            if found is None:
                break
            entries.append(found)
            seq = found.seq + 1
        more = bool(entries) and entries[-1].seq < last_seq
        return AuditPage(entries=entries, next_cursor=seq if more else None, last_seq=last_seq)

    async def _state(self) -> api.StreamState:
        try:
            info = await retry_transient(lambda: self.pool.js.stream_info(self.stream), "read audit stream")
        except AegisError:
            raise
        except Exception as exc:
            raise jetstream_error(exc, "read audit stream") from exc
        return info.state

    async def _next(self, seq: int) -> AuditEntry | None:
        """The first entry at sequence ``seq`` or after, from the stream leader; None past the end."""
        try:
            msg = await retry_transient(
                lambda: self.pool.js.get_msg(self.stream, seq=seq, subject=self.subject, next=True),
                f"read audit entry {seq}",
            )
        except NotFoundError:
            return None
        except AegisError:
            raise
        except Exception as exc:
            raise jetstream_error(exc, f"read audit entry {seq}") from exc
        try:
            return AuditEntry.model_validate_json(msg.data or b"").model_copy(update={"seq": msg.seq})
        except ValidationError:
            # Someone with publish rights wrote something else on the subject: show that it is there.
            return AuditEntry(seq=msg.seq or seq, time=0.0, actor="?", action="invalid", target="")

    async def _first_at_or_after(self, since: float, first: int, last: int) -> int:
        """The smallest sequence whose next entry has ``time >= since`` (entries are appended in time order):
        a binary search, about log2(entries) leader reads."""
        lo, hi = first, last + 1
        while lo < hi:
            mid = (lo + hi) // 2
            found = await self._next(mid)
            if found is None or found.time >= since:
                hi = mid
            else:
                lo = found.seq + 1
        return lo


__all__ = ["MAX_PAGE", "Audit", "request_id"]
