"""Group ids for the processes the harness starts, so that :mod:`aegis.harness.faults.firewall` can cut their traffic.

A process spawned with ``Popen(..., group=gid)`` carries that gid on every socket it opens; nftables matches it
with ``meta skgid`` (see :mod:`aegis.harness.faults.firewall`). The ids need no ``/etc/group`` entry.
"""

from __future__ import annotations

import itertools
import os
import threading

__all__ = ["allocate_gids"]

_GID_BASE = 0x5A000000
"""Our gids: far above any real group, distinct per process (pid) so parallel runs do not share one."""

_gid_lock = threading.Lock()
_gid_counter = itertools.count()


def allocate_gids(n: int) -> list[int]:
    """Return ``n`` group ids not handed out before by this process, for ``Popen(group=...)``.

    They need no ``/etc/group`` entry; they only label sockets so that ``meta skgid`` can match them.
    """
    with _gid_lock:
        base = _GID_BASE + (os.getpid() & 0xFFFF) * 0x1000
        return [base + (next(_gid_counter) % 0x1000) for _ in range(n)]
