"""Logged-in people, kept server-side: the browser holds only a signed random session id, never the token."""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field

COOKIE_NAME = "aegis_session"


@dataclass(frozen=True)
class UserSession:
    """One login: who, the management API token issued to them, its scopes and when it expires (our clock)."""

    user: str
    token: str
    scopes: frozenset[str]
    expires_at: float = field(compare=False)

    @property
    def can_write_services(self) -> bool:
        return "services:write" in self.scopes

    @property
    def role(self) -> str:
        if "admin" in self.scopes:
            return "admin"
        return "operator" if self.can_write_services else "viewer"

    def expired(self, now: float | None = None) -> bool:
        return (time.monotonic() if now is None else now) >= self.expires_at


class SessionStore:
    """Session id -> :class:`UserSession`. Expired sessions read as absent, so expiry sends the browser to login.

    Thread-safe: Tornado handlers and Bokeh session callbacks may run on different threads.
    """

    def __init__(self) -> None:
        self._sessions: dict[str, UserSession] = {}
        self._lock = threading.Lock()

    def add(self, session: UserSession) -> str:
        sid = secrets.token_urlsafe(32)
        with self._lock:
            self._drop_expired()
            self._sessions[sid] = session
        return sid

    def get(self, sid: str | None) -> UserSession | None:
        if not sid:
            return None
        with self._lock:
            session = self._sessions.get(sid)
            if session is not None and session.expired():
                del self._sessions[sid]
                return None
            return session

    def remove(self, sid: str | None) -> None:
        with self._lock:
            self._sessions.pop(sid or "", None)

    def _drop_expired(self) -> None:
        now = time.monotonic()
        for sid in [s for s, v in self._sessions.items() if v.expired(now)]:
            del self._sessions[sid]

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)
