"""The live event stream behind ``GET /api/events``: one feed per server process, fanned out to every subscriber.

The fleet's watches announce each change once (:meth:`EventHub.publish`); every SSE subscriber gets its own bounded
queue. Events are numbered per process and the last ``size`` are kept, so a client that reconnects with
``Last-Event-ID`` gets what it missed. A client whose id is older than the buffer (or from another replica's
numbering, which starts at a different boot id) gets a ``reset`` event first: reload, then follow. A subscriber
that cannot keep up (its queue is full) is dropped rather than slowing the others; its client reconnects and
resumes.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

_QUEUE = 1000


@dataclass(frozen=True, slots=True)
class Event:
    """One announced change. ``id`` is ``<boot>-<seq>``: ``seq`` counts up from 1 in this process."""

    seq: int
    type: str
    data: dict[str, Any]
    boot: str

    @property
    def id(self) -> str:
        return f"{self.boot}-{self.seq}"

    def json(self) -> str:
        return json.dumps(self.data, separators=(",", ":"), sort_keys=True)


class EventHub:
    """Numbered, buffered fan-out of events to subscribers; see the module docstring."""

    def __init__(self, size: int = 1000) -> None:
        self.boot = secrets.token_hex(4)
        self._seq = 0
        self._buffer: deque[Event] = deque(maxlen=size)
        self._subscribers: set[asyncio.Queue[Event | None]] = set()

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def publish(self, type_: str, data: dict[str, Any]) -> None:
        """Number, keep and hand ``data`` to every subscriber (never blocks)."""
        self._seq += 1
        event = Event(self._seq, type_, data, self.boot)
        self._buffer.append(event)
        for q in list(self._subscribers):
            try:
                q.put_nowait(event)
            except asyncio.QueueFull:  # too slow: end its stream; it reconnects and resumes from its last id
                self._subscribers.discard(q)
                while not q.empty():
                    q.get_nowait()
                q.put_nowait(None)

    def _missed(self, last_event_id: str | None) -> tuple[list[Event], bool]:
        """Events after ``last_event_id`` still in the buffer, and whether the client must reload first."""
        if not last_event_id:
            return [], False
        boot, _, seq_text = last_event_id.partition("-")
        if boot != self.boot or not seq_text.isdigit():
            return [], True
        seq = int(seq_text)
        oldest = self._buffer[0].seq if self._buffer else self._seq + 1
        if seq + 1 < oldest:
            return [], True
        return [e for e in self._buffer if e.seq > seq], False

    async def subscribe(
        self,
        last_event_id: str | None = None,
        *,
        max_events: int | None = None,
        max_seconds: float | None = None,
    ) -> AsyncIterator[Event]:
        """Events from now on (after the missed ones when ``last_event_id`` is given); bounded when asked."""
        q: asyncio.Queue[Event | None] = asyncio.Queue(_QUEUE)
        self._subscribers.add(q)
        missed, reset = self._missed(last_event_id)
        sent = 0
        loop = asyncio.get_running_loop()
        deadline = None if max_seconds is None else loop.time() + max_seconds
        try:
            if reset:
                yield Event(
                    0, "reset", {"reason": "events since Last-Event-ID are no longer kept: reload"}, self.boot
                )
                sent += 1
            for event in missed:
                if max_events is not None and sent >= max_events:
                    return
                yield event
                sent += 1
            last = missed[-1].seq if missed else 0
            while max_events is None or sent < max_events:
                timeout = None if deadline is None else deadline - loop.time()
                if timeout is not None and timeout <= 0:
                    return
                try:
                    event = await asyncio.wait_for(q.get(), timeout)
                except TimeoutError:
                    return
                if event is None:
                    return
                if event.seq <= last:
                    continue  # already sent from the buffer
                yield event
                sent += 1
        finally:
            self._subscribers.discard(q)
