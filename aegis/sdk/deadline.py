"""The deadline rule of outgoing calls: how long a call may take, given the caller's own budget.

A call made while a handler serves a call (the *serving call*, set by :class:`~aegis.sdk.rpc.Service` in
:data:`SERVING_CALL`) must not outlive that call's caller, so every client that sends a request derives its
timeout with :func:`effective_timeout`. This is a bottom module: it imports only :mod:`aegis.sdk.errors` (and the
pool's type for annotations), never nats or a module above it (rpc, registry, events, commands, discovery,
single_active, sticky).
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING, Protocol

from .errors import DeadlineExceeded

if TYPE_CHECKING:
    from .connection import ConnectionPool


class Budget(Protocol):
    """What the deadline rule needs of the serving call (a :class:`~aegis.sdk.rpc.CallContext`)."""

    def remaining(self) -> float:
        """Seconds left before the serving call's caller gives up (negative once it passed)."""
        ...


SERVING_CALL: ContextVar[Budget | None] = ContextVar("aegis_current_call", default=None)
"""The call the current task serves, if any (read it as :func:`aegis.sdk.rpc.current_call`)."""


def effective_timeout(pool: ConnectionPool, service: str, method: str, timeout: float | None = None) -> float:
    """Seconds a call to ``service.method`` may take: ``timeout``, else the configured per-method timeout;
    inside a handler, capped by the handler's own remaining time.

    Raises :class:`DeadlineExceeded` when the handler has no time left (the call is not sent).
    """
    if timeout is None:
        timeout = pool.settings.timeout_for(service, method)
    outer = SERVING_CALL.get()
    if outer is not None:
        timeout = min(timeout, outer.remaining())
        if timeout <= 0:
            raise DeadlineExceeded(f"no time left to call {service}.{method}")
    return timeout


__all__ = ["SERVING_CALL", "Budget", "effective_timeout"]
