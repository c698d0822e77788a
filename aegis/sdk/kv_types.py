"""What a KV key holds, as the election and the KV code see it: :class:`KeyState` (revision and kind).

The election state machine (:mod:`aegis.sdk.election`) is pure: no asyncio, no NATS. The type it shares with the
KV code (:mod:`aegis.sdk.kv`) therefore lives here, in a module that imports neither nats nor asyncio nor any
other SDK module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["val", "del", "exp", "none"]
"""A value, a delete marker (DEL/PURGE), an expiry marker, or no entry at all."""


@dataclass(frozen=True, slots=True)
class KeyState:
    """What a KV key (the election key, an instance record) holds: its revision and kind (value, delete or
    expiry marker, absent)."""

    rev: int
    kind: Kind


__all__ = ["Kind", "KeyState"]
