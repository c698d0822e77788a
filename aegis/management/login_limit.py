"""Login rate limiting: after too many failed logins for one user name or from one client address within a
window, further attempts are refused (HTTP 429 with ``Retry-After``) until the oldest failure leaves the window.

Refused attempts are not checked at all, so a password-guessing client gets no answer and costs no Argon2 hash.
Both counts matter: per user, against guessing one account from many addresses; per address, against trying
many accounts from one. A successful login clears its user's count, not its address's (else an attacker with one
valid account could reset the count of the address it guesses from).

The counts live in this process. Several replicas of the management service each keep their own, so across
``n`` replicas a client gets at most ``n`` times the limit; a load balancer with sticky sessions, or a limit
divided by ``n``, tightens that. Memory is bounded: the least recently failed names and addresses are
forgotten beyond ``max_tracked``.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Throttled:
    """A refused attempt: which count refused it, and in how many seconds the next attempt may be made."""

    reason: str
    retry_after_s: int


class LoginLimiter:
    """Sliding-window failure counts per user name and per client address.

    ::

        limiter = LoginLimiter(max_failures=5, window_s=60)
        if (refused := limiter.check("alice", "10.0.0.7")) is not None:
            ...  # answer 429, Retry-After: refused.retry_after_s
        limiter.failed("alice", "10.0.0.7")   # or limiter.succeeded("alice")
    """

    def __init__(
        self,
        max_failures: int = 5,
        window_s: float = 60.0,
        *,
        max_tracked: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_failures < 1 or window_s <= 0:
            raise ValueError("max_failures must be >= 1 and window_s > 0")
        self.max_failures = max_failures
        self.window_s = window_s
        self.max_tracked = max_tracked
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def check(self, user: str, address: str) -> Throttled | None:
        """None if an attempt for ``user`` from ``address`` may be made now, else why not and for how long."""
        now = self._clock()
        for key, reason in ((f"u:{user}", "user"), (f"a:{address}", "address")):
            times = self._recent(key, now)
            if times is not None and len(times) >= self.max_failures:
                wait = times[0] + self.window_s - now
                return Throttled(f"too many failed logins for this {reason}", max(1, math.ceil(wait)))
        return None

    def failed(self, user: str, address: str) -> None:
        """Count a failed attempt against both the user name and the address."""
        now = self._clock()
        for key in (f"u:{user}", f"a:{address}"):
            times = self._recent(key, now)
            if times is None:
                times = self._failures[key] = deque(maxlen=self.max_failures)
            times.append(now)
            self._failures.move_to_end(key)
        while len(self._failures) > self.max_tracked:
            self._failures.popitem(last=False)

    def succeeded(self, user: str) -> None:
        """A correct password: forget the user's failures (the address's stay)."""
        self._failures.pop(f"u:{user}", None)

    def _recent(self, key: str, now: float) -> deque[float] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        while times and times[0] <= now - self.window_s:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times


__all__ = ["LoginLimiter", "Throttled"]
