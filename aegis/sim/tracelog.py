"""The run's event log: the spec's trace events (``aegis/sdk/trace_events.py``) plus the simulator's own notes.

Every election step an instance takes is recorded exactly as ``aegis/sdk/single_active.py`` would log it, stamped
with the instance's local clock and the simulated real time (as ``wall``), so a simulated run can be written
as an NDJSON trace and checked against the spec (``aegis trace-check``). Notes (faults, client outcomes,
violations) are kept beside them for the human-readable tail shown with a violation; they are not part of the
NDJSON trace.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from pathlib import Path

from aegis.sdk.trace_events import Action as TA
from aegis.sdk.trace_events import KeyKind, TraceParams, TraceWriter
from aegis.sdk.trace_events import Op as TOp


@dataclass(frozen=True, slots=True)
class LogEvent:
    """One logged step: a spec action (``action`` is a :class:`~aegis.sdk.trace_events.Action`) or a note."""

    t: float
    instance: str
    action: TA | str
    local: float = 0.0
    rev: int = 0
    epoch: int = 0
    op: TOp | None = None
    kind: KeyKind | None = None
    note: str = ""

    def describe(self) -> str:
        """One line for humans."""
        parts = [f"t={self.t:9.4f}", f"{self.instance:>6}", str(getattr(self.action, "value", self.action))]
        if self.op is not None:
            parts.append(f"op={self.op.value}")
        if self.rev:
            parts.append(f"rev={self.rev}")
        if self.epoch:
            parts.append(f"epoch={self.epoch}")
        if self.kind is not None:
            parts.append(f"kind={self.kind.value}")
        if self.note:
            parts.append(self.note)
        return " ".join(parts)


class EventLog:
    """Keeps the last ``tail_size`` events always, and every event when ``full`` (for ``--trace``)."""

    def __init__(self, *, full: bool = False, tail_size: int = 40) -> None:
        self.full = full
        self.events: list[LogEvent] = []
        self.tail: deque[LogEvent] = deque(maxlen=tail_size)

    def add(self, event: LogEvent) -> None:
        """Record one event."""
        self.tail.append(event)
        if self.full:
            self.events.append(event)

    def emit(
        self,
        t: float,
        instance: str,
        action: TA,
        local: float,
        *,
        rev: int = 0,
        epoch: int = 0,
        op: TOp | None = None,
        kind: KeyKind | None = None,
    ) -> None:
        """Record a spec trace event (the same fields ``TraceWriter.emit`` takes)."""
        self.add(LogEvent(t, instance, action, local, rev, epoch, op, kind))

    def note(self, t: float, instance: str, what: str, note: str = "") -> None:
        """Record a simulator note (not a spec action)."""
        self.add(LogEvent(t, instance, what, note=note))

    def last(self, n: int = 20) -> list[str]:
        """The last ``n`` events, one line each."""
        return [e.describe() for e in list(self.tail)[-n:]]

    def write_ndjson(self, path: Path, params: TraceParams) -> int:
        """Write the spec events (``full`` log) as an NDJSON trace with a params header; returns the count."""
        path = Path(path)
        path.unlink(missing_ok=True)
        n = 0
        with TraceWriter(path, params=params) as writer:
            for e in self.events:
                if not isinstance(e.action, TA):
                    continue
                writer.emit(
                    e.instance,
                    e.action,
                    rev=e.rev,
                    epoch=e.epoch,
                    op=e.op,
                    kind=e.kind,
                    local=e.local,
                    wall=e.t,
                )
                n += 1
        return n
