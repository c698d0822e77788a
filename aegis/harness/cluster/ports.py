"""Free TCP ports on the loopback interface (127.0.0.1 only).

A port is "free" when it can be bound right now. Nothing reserves it afterwards, so a
caller must bind it soon. Two precautions lower the chance of a clash:

* ports already handed out by this process are never handed out again;
* by default ports come from *below* the kernel's ephemeral range
  (``/proc/sys/net/ipv4/ip_local_port_range``). A bind-to-port-0 port lies inside that range,
  and while a server that owned it is down (killed in a fault test) any outgoing connection on
  the machine may take it as its source port, so the server cannot be restarted on it.
  Ports below the range are only taken by explicit binds.

``AEGIS_PORT_RANGE=low-high`` (environment) narrows the random choice to that band, for processes that run side
by side (the test suite's workers take one band each): two of them then never pick the same port, even one that
a stopped server of the other is about to bind again.
"""

from __future__ import annotations

import os
import random
import socket
import threading

__all__ = ["free_port", "free_ports"]

HOST = "127.0.0.1"

_lock = threading.Lock()
_handed_out: set[int] = set()


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _can_bind(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # No SO_REUSEADDR: a port in TIME_WAIT counts as taken, which is what we want.
        try:
            s.bind((HOST, port))
        except OSError:
            return False
        return True


def _bind_zero() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _band() -> tuple[int, int]:
    """Where random ports come from: ``AEGIS_PORT_RANGE`` if set, else ``[10000, ephemeral_low)``."""
    given = os.environ.get("AEGIS_PORT_RANGE")
    if not given:
        return 10000, _ephemeral_low()
    try:
        low, high = (int(x) for x in given.split("-"))
    except ValueError:
        raise ValueError(f"AEGIS_PORT_RANGE={given!r}: expected low-high, e.g. 10000-20999") from None
    if not 1024 <= low < high <= 65535:
        raise ValueError(f"AEGIS_PORT_RANGE={given!r}: expected 1024 <= low < high <= 65535")
    return low, high + 1


def free_port(*, below_ephemeral: bool = True) -> int:
    """Return a TCP port on 127.0.0.1 that could be bound just now.

    With ``below_ephemeral`` (default) a random port in ``[10000, ephemeral_low)`` (or ``AEGIS_PORT_RANGE``) is tried
    first (checked by binding it); otherwise, or when none is found, the kernel picks one
    (bind to port 0).
    """
    with _lock:
        if below_ephemeral:
            low, high = _band()
            if high - low > 1000:
                for _ in range(200):
                    port = random.randrange(low, high)
                    if port not in _handed_out and _can_bind(port):
                        _handed_out.add(port)
                        return port
        for _ in range(100):
            port = _bind_zero()
            if port not in _handed_out:
                _handed_out.add(port)
                return port
    raise RuntimeError("could not find a free TCP port on 127.0.0.1")


def free_ports(n: int, *, below_ephemeral: bool = True) -> list[int]:
    """Return ``n`` distinct free ports on 127.0.0.1 (see :func:`free_port`)."""
    return [free_port(below_ephemeral=below_ephemeral) for _ in range(n)]
