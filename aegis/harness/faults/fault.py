"""The one description of a fault: :class:`Fault`, used by the nemesis (which applies it), the campaign files
(``faults:`` of ``harness/campaigns/*.yaml`` are a list of them), the campaign runner and ``aegis failover``
(a built-in campaign whose faults are built in code).

A fault says *what* (``kind``), *to whom* (``target``), for *how long* (``duration_s``), and, for a few kinds,
*towards whom* (``peer``) or *which stream* (``stream``). ``count`` is how many times a campaign's schedule runs
it per repetition (the nemesis applies one at a time and ignores it). Targets are resolved when the fault is
applied (:mod:`aegis.harness.faults.nemesis` lists them with the kinds).

Example::

    Fault("instance-kill", "active")
    Fault("partition-node", "n2", duration_s=5)
    Fault.from_dict({"kind": "node-kill", "target": "random", "duration_s": 3, "count": 2})  # a YAML entry

It is a frozen pydantic dataclass: positional or keyword construction, validated (an unknown kind or a
negative duration raise a :class:`ValueError` naming the field), hashable. Its JSON form
(:meth:`Fault.to_dict`, and the ``faults`` of a campaign report's ``campaign`` object) is
``{kind, target, count, duration_s}`` plus ``peer`` / ``stream`` when they are set.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, get_args

from pydantic import ConfigDict, Field, TypeAdapter, field_validator, model_serializer
from pydantic.dataclasses import dataclass
from pydantic_core.core_schema import SerializerFunctionWrapHandler

__all__ = [
    "FAULT_KINDS",
    "INSTANCE_KINDS",
    "NODE_KINDS",
    "PARTITION_KINDS",
    "TIMED_KINDS",
    "WORKER_KINDS",
    "Fault",
    "FaultKind",
]

FaultKind = Literal[
    "instance-kill",
    "instance-pause",
    "instance-stop",
    "node-kill",
    "node-pause",
    "node-lame-duck",
    "stream-leader-kill",
    "stream-leader-stepdown",
    "partition-node",
    "partition-minority",
    "partition-instance",
    "partition-one-way",
    "worker-kill",
    "worker-pause",
]
FAULT_KINDS: tuple[str, ...] = get_args(FaultKind)
INSTANCE_KINDS = frozenset({"instance-kill", "instance-pause", "instance-stop"})
NODE_KINDS = frozenset({"node-kill", "node-pause", "node-lame-duck", "stream-leader-kill"})
PARTITION_KINDS = frozenset(
    {"partition-node", "partition-minority", "partition-instance", "partition-one-way"}
)
WORKER_KINDS = frozenset({"worker-kill", "worker-pause"})
TIMED_KINDS = PARTITION_KINDS | {
    "instance-pause",
    "node-pause",
    "node-kill",
    "stream-leader-kill",
    "worker-pause",
}
"""Kinds whose heal waits out ``duration_s`` (a pause, an outage, a cut): a campaign needs ``duration_s > 0`` for
them, as its runner heals them on that clock. The others (kills, stops, a step-down) are healed when the client
is steady again."""

_JSON_ORDER = ("kind", "target", "count", "duration_s")


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class Fault:
    """One fault, as data; see the module docstring. ``target`` and ``peer`` are resolved when it is applied.

    ``peer``: the receiving side of ``partition-one-way`` (default: a random other node), or the server(s) of
    ``partition-instance`` (a node name, ``"all"``; default: those it is connected to). ``stream``: for
    ``stream-leader-*`` (default: the nemesis' ``stream``).
    """

    kind: FaultKind
    target: str = "random"
    duration_s: float = Field(
        0.0, ge=0, le=60, description="how long a pause, partition or node outage lasts"
    )
    peer: str | None = None
    stream: str | None = None
    count: int = Field(1, ge=1, le=1000, description="how many times a campaign runs it per repetition")

    @field_validator("kind", mode="before")
    @classmethod
    def _known_kind(cls, v: object) -> object:
        if v not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {v!r}; known: {', '.join(FAULT_KINDS)}")
        return v

    @model_serializer(mode="wrap")
    def _json(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """``kind, target, count, duration_s`` (the campaign file's order), then ``peer``/``stream`` when set."""
        d = handler(self)
        out = {k: d[k] for k in _JSON_ORDER}
        out.update({k: d[k] for k in ("peer", "stream") if d[k] is not None})
        return out

    @property
    def timed(self) -> bool:
        """Healed after ``duration_s`` (:data:`TIMED_KINDS`), not when the client is steady again."""
        return self.kind in TIMED_KINDS

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (``peer``/``stream`` left out when unset)."""
        return _ADAPTER.dump_python(self, mode="json")  # type: ignore[no-any-return]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Fault:
        """Inverse of :meth:`to_dict` (e.g. an entry of a campaign file); :class:`ValueError` names the field."""
        return _ADAPTER.validate_python(dict(data))

    def __str__(self) -> str:
        extra = f" -> {self.peer}" if self.peer else ""
        return f"{self.kind}({self.target}{extra}, {self.duration_s:g}s)"


_ADAPTER: TypeAdapter[Fault] = TypeAdapter(Fault)
