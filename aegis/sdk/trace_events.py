"""The trace event vocabulary of the single-active election: the one definition of what an instance logs.

Every election step the SDK takes is one NDJSON line, and each line names the step of the TLA+ spec
(``aegis/spec/tla/Lease.tla``) it performs, so a trace can be checked against the spec with TLC
(``aegis trace-check FILE``, :mod:`aegis.spec.trace_check`). A trace may start with one header line
``{"params": {...}}`` (:class:`TraceParams`): the lease settings the instances ran with.

The quorum lease (``election="quorum"``, ``aegis/spec/tla/QuorumLease.tla``) writes the same lines, with the header
saying ``"election": "quorum"``, a ``bucket`` (0, 1, 2) on the steps about one bucket, the record read or written
(``ballot``, ``floor``, ``holder``, ``released``), and its own steps (``ack``, ``refuse``, ``campaign``, ``win``,
``giveup``, ``stepdown``, ``stop``, ``exit``; op ``claim``); ``TraceQuorumLease.tla`` checks them. Single-bucket
traces never carry these fields: they are written exactly as before.

Example::

    from aegis.sdk.trace_events import Action, KeyKind, Op, TraceParams, TraceWriter

    with TraceWriter("trace.ndjson", params=TraceParams(lease=1.5)) as trace:
        trace.emit("api-1", Action.START, rev=0, kind=KeyKind.ABSENT)
        trace.emit("api-1", Action.REQUEST, op=Op.ACQUIRE, rev=0)
        trace.emit("api-1", Action.ACQUIRE, rev=7, epoch=7)
        trace.emit("api-1", Action.SERVE, epoch=7)

No asyncio and no NATS here: the sans-IO election state machine, the simulator and the checkers all
import it.
"""

from __future__ import annotations

import gzip
import json
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
    model_validator,
)


class Action(StrEnum):
    """An election step; each is one action of the spec (the names match ``TraceLease.tla``)."""

    START = "start"  # the process started and read the key (rev, kind: what it found)
    REQUEST = "request"  # it published a compare-and-set (op; rev: the revision it expects, 0 = create)
    ACQUIRE = "acquire"  # its campaign succeeded: it is active (rev = epoch = the new revision)
    RENEW = "renew"  # its renewal succeeded (rev: the new revision; epoch unchanged)
    ADOPT = "adopt"  # a renewal failed on a revision its own lost renewal wrote: it continues from rev
    LOSE = "lose"  # a renewal failed (someone else wrote, or the key is gone): it stops serving at once
    OUTBID = "outbid"  # a campaign failed: the key has moved on to rev (kind); it stays standby
    TIMEOUT = "timeout"  # a request (op, if given) got no answer; outcome unknown (a release: it exits)
    RELEASE = "release"  # graceful stop finished (rev: the delete marker, 0 if the delete failed)
    SERVE = "serve"  # it answered a client with epoch
    OBSERVE = "observe"  # its watch delivered rev (kind)
    CRASH = "crash"  # the harness killed it (kill -9)
    PAUSE = "pause"  # the harness stopped it (SIGSTOP)
    RESUME = "resume"  # the harness continued it (SIGCONT)
    # The quorum lease's steps (``QuorumLease.tla``, checked by ``TraceQuorumLease.tla``); start, request,
    # timeout, observe, serve, crash, pause and resume above serve both elections, with ``bucket`` set where
    # the step is about one of the three buckets (0, 1, 2).
    ACK = "ack"  # a compare-and-set to bucket was stored (rev: its revision there)
    REFUSE = "refuse"  # a compare-and-set to bucket was refused (rev: the key's revision there afterwards)
    CAMPAIGN = "campaign"  # a standby campaigns with ballot (rule 2; its claims follow as request lines)
    WIN = "win"  # a candidate's claims were acknowledged in a majority: active, epoch = its ballot (rule 3)
    GIVEUP = "giveup"  # a candidate that can no longer reach a majority gives up (rule 4)
    STEPDOWN = "stepdown"  # an active that holds fewer than two buckets stops serving (rule 6)
    STOP = "stop"  # graceful stop asked (rule 7): it stops serving and releases what it holds
    EXIT = "exit"  # after a graceful stop: every release answered, the election is over


class Op(StrEnum):
    """What a compare-and-set request is for."""

    ACQUIRE = "acquire"
    RENEW = "renew"
    RELEASE = "release"
    CLAIM = "claim"  # the quorum lease: a claim of one bucket (a campaign's, or an active's of a free bucket)


class KeyKind(StrEnum):
    """What the election key holds."""

    VALUE = "value"  # a leader record
    DELETED = "deleted"  # a delete marker (graceful stop)
    EXPIRED = "expired"  # a TTL expiry marker (Nats-Marker-Reason: MaxAge)
    ABSENT = "absent"  # nothing (never written, or the marker aged out)


ELECTION_KINDS = {
    "val": KeyKind.VALUE,
    "del": KeyKind.DELETED,
    "exp": KeyKind.EXPIRED,
    "none": KeyKind.ABSENT,
}
"""The election machine's key kinds (``aegis.sdk.election.KeyState.kind``) as the trace names them."""

# Which steps must say which extra field.
_NEEDS_KIND = {Action.START, Action.OBSERVE}
_NEEDS_EPOCH = {Action.ACQUIRE, Action.RENEW, Action.SERVE, Action.WIN}
_NEEDS_BUCKET = {Action.ACK, Action.REFUSE}
_NEEDS_BALLOT = {Action.CAMPAIGN}


class TraceEvent(BaseModel):
    """One election step of one instance, as one NDJSON line."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    instance: str = Field(min_length=1, description="instance id")
    action: Action
    rev: int = Field(0, ge=0, description="KV revision the step is about (0: none / absent)")
    epoch: int = Field(0, ge=0, description="the instance's epoch (fencing token) at this step, 0: none")
    local: float = Field(ge=0, description="the instance's monotonic clock, seconds")
    wall: float = Field(ge=0, description="wall clock, seconds since the epoch")
    op: Op | None = Field(None, description="for request (and timeout): what the compare-and-set is for")
    kind: KeyKind | None = Field(None, description="for start/observe/lose/outbid: what the key holds")
    # The quorum lease only (absent from single-bucket traces):
    bucket: int | None = Field(None, ge=0, le=2, description="the quorum bucket (0, 1, 2) the step is about")
    ballot: int | None = Field(
        None, ge=0, description="the record's ballot (start/observe: as read; request: as written; campaign)"
    )
    floor: int | None = Field(None, ge=0, description="the record's floor (its bucket's ballot register)")
    holder: str | None = Field(None, description="the record's holder (start/observe/request)")
    released: bool | None = Field(None, description="the record says released (start/observe/request)")

    @model_validator(mode="after")
    def _fields_fit_action(self) -> Self:
        if self.action in _NEEDS_BUCKET and self.bucket is None:
            raise ValueError(f"bucket is required for action {self.action.value!r}")
        if self.action in _NEEDS_BALLOT and not self.ballot:
            raise ValueError(f"ballot is required for action {self.action.value!r}")
        if self.bucket is not None and self.action == Action.REQUEST and self.ballot is None:
            raise ValueError("a quorum request says the ballot it writes")
        if self.op == Op.CLAIM and self.bucket is None:
            raise ValueError("op 'claim' belongs to the quorum lease: bucket is required")
        if self.action == Action.REQUEST and self.op is None:
            raise ValueError("op is required for action 'request'")
        if self.op is not None and self.action not in (Action.REQUEST, Action.TIMEOUT):
            raise ValueError("op belongs to 'request' and 'timeout' only")
        if self.action in _NEEDS_KIND and self.kind is None:
            raise ValueError(f"kind is required for action {self.action.value!r}")
        if self.action in _NEEDS_EPOCH and self.epoch == 0:
            raise ValueError(f"epoch is required for action {self.action.value!r}")
        if self.action == Action.ACQUIRE and self.epoch != self.rev:
            raise ValueError("an acquire's epoch is the revision it wrote")
        return self


class TraceParams(BaseModel):
    """The election settings a trace was recorded with. The defaults are the reference settings of
    ``aegis/spec/README.md`` (lease 1.5 s, ρ 1 %, TTL 2 s) that a trace without a header is read with; the SDK
    always writes the header with its own settings."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    lease: float = Field(1.5, gt=0, description="lease duration, seconds")
    drift: float = Field(0.01, ge=0, lt=0.5, description="clock drift bound (fraction of real time)")
    ttl: int = Field(2, ge=1, description="key TTL, whole seconds")
    renew: float | None = Field(
        None,
        gt=0,
        description="renewal period, seconds: an active renews, and a standby in probe mode probes, this long"
        " after its last one (on its own clock); None: unknown, the checker allows any schedule",
    )
    election: Literal["lease", "quorum"] = Field(
        "lease",
        description="the election the trace is of: 'lease' (Lease.tla, TraceLease.tla) or 'quorum' (QuorumLease.tla,"
        " TraceQuorumLease.tla); written only when 'quorum', so single-bucket headers stay as they were",
    )

    @model_serializer(mode="wrap")
    def _lease_is_not_written(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        out: dict[str, Any] = handler(self)
        if out.get("election") == "lease":
            del out["election"]
        return out


class TraceError(ValueError):
    """A trace line that is not valid; ``line`` is 1-based."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line


@dataclass(frozen=True)
class Trace:
    """A parsed trace: settings, events, and the 1-based file line of each event."""

    params: TraceParams
    events: tuple[TraceEvent, ...]
    lines: tuple[int, ...]


def parse_trace(lines: Iterable[str]) -> Trace:
    """Parse NDJSON lines; raise :class:`TraceError` naming the first bad line.

    Blank lines are skipped. A ``{"params": ...}`` header is allowed as the first non-blank line only.
    """
    params = TraceParams()
    events: list[TraceEvent] = []
    numbers: list[int] = []
    seen_any = False
    for number, raw in enumerate(lines, start=1):
        text = raw.strip()
        if not text:
            continue
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TraceError(number, f"not JSON: {exc.msg}") from None
        if not isinstance(data, dict):
            raise TraceError(number, "not a JSON object")
        try:
            if "params" in data:
                if seen_any:
                    raise TraceError(number, "a params header must be the first line")
                if set(data) != {"params"}:
                    raise TraceError(number, "a params header has no other fields")
                params = TraceParams.model_validate(data["params"])
            else:
                events.append(TraceEvent.model_validate(data))
                numbers.append(number)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "event"
            raise TraceError(number, f"{where}: {first['msg']}") from None
        seen_any = True
    return Trace(params=params, events=tuple(events), lines=tuple(numbers))


def _open_text(path: str | Path, mode: str) -> IO[str]:
    """A trace file opened as text; gzip-compressed when its name ends in ``.gz`` (campaign traces are kept
    compressed: a 100-fault campaign's trace is 2.6 MB of NDJSON, a tenth of that compressed)."""
    if str(path).endswith(".gz"):
        return gzip.open(path, mode + "t", encoding="utf-8")
    return open(path, mode, encoding="utf-8", buffering=1 if mode == "a" else -1)


def read_trace(path: str | Path) -> Trace:
    """Read and parse an NDJSON trace file, plain or ``.gz`` (see :func:`parse_trace`)."""
    with _open_text(path, "r") as f:
        return parse_trace(f)


def merge_traces(paths: Iterable[str | Path], out: str | Path) -> Trace:
    """Merge the traces of several processes into one file in wall-clock order (ties keep file order) and
    return it (``out`` is replaced). All inputs must carry the same settings; raises :class:`TraceError`
    otherwise."""
    traces = [(Path(p), read_trace(p)) for p in paths]
    headers = {t.params for _, t in traces if t.events}
    if len(headers) > 1:
        raise TraceError(1, f"the traces were recorded with different settings: {sorted(map(str, headers))}")
    params = headers.pop() if headers else TraceParams()
    events = sorted((e for _, t in traces for e in t.events), key=lambda e: e.wall)
    Path(out).unlink(missing_ok=True)
    with TraceWriter(out, params=params) as writer:
        for event in events:
            writer.write(event)
    return read_trace(out)


CLOCK_PAIR_SPREAD_S = 50e-6
"""How close together :func:`clock_pair` wants its two monotonic readings around the wall clock's."""


def clock_pair(tries: int = 5) -> tuple[float, float]:
    """The monotonic and the wall clock read at one moment: ``(monotonic, wall)``.

    The wall clock is read between two monotonic readings, retried until these are within
    :data:`CLOCK_PAIR_SPREAD_S` (at most ``tries`` times; the closest pair wins). Two plain consecutive reads can
    be a millisecond apart when the process is preempted between them on a busy machine, and a trace line whose
    two clocks disagree by more than a tick looks to the trace checker like a clock beyond the drift bound (a
    whole-campaign trace of the quorum lease was rejected for that after 24,540 lines)."""
    best: tuple[float, float, float] | None = None
    for _ in range(tries):
        before = time.monotonic()
        wall = time.time()
        spread = time.monotonic() - before
        if best is None or spread < best[0]:
            best = (spread, before + spread / 2, wall)
        if spread <= CLOCK_PAIR_SPREAD_S:
            break
    assert best is not None
    return best[1], best[2]


class TraceWriter:
    """Appends trace events to an NDJSON file, one line each, flushed per line (a ``.gz`` file is compressed
    and flushed on close: for writing a finished trace, as :func:`merge_traces` does).

    Cheap enough for every election step (a few microseconds); ``serve`` events are the caller's to
    sample. Writes the ``params`` header when it creates the file.
    """

    def __init__(self, path: str | Path, params: TraceParams | None = None) -> None:
        self.path = Path(path)
        fresh = not self.path.exists() or self.path.stat().st_size == 0
        self._file: IO[str] = _open_text(self.path, "a")
        self._last_wall = -math.inf
        if fresh and params is not None:
            self._file.write(json.dumps({"params": params.model_dump()}) + "\n")

    def write(self, event: TraceEvent) -> None:
        """Append one event."""
        self._file.write(event.model_dump_json(exclude_none=True) + "\n")

    def emit(
        self,
        instance: str,
        action: Action,
        *,
        rev: int = 0,
        epoch: int = 0,
        op: Op | None = None,
        kind: KeyKind | None = None,
        local: float | None = None,
        wall: float | None = None,
        bucket: int | None = None,
        ballot: int | None = None,
        floor: int | None = None,
        holder: str | None = None,
        released: bool | None = None,
    ) -> TraceEvent:
        """Build an event stamped with the clocks now (unless given), append it, and return it.

        Given only ``local`` (the monotonic reading at which the step happened), ``wall`` is the wall clock at
        that same moment, not when the line is written: a line written a few milliseconds late (a busy event
        loop) would otherwise look like a clock that jumped, and the trace checker would reject it."""
        mono, now = clock_pair()
        if wall is None:
            # never before this writer's previous line: float rounding (a few 1e-7 s) must not reorder two
            # steps taken at the same instant when the traces are merged by wall time
            wall = max(now if local is None else now - (mono - local), self._last_wall)
            self._last_wall = wall
        event = TraceEvent(
            instance=instance,
            action=action,
            rev=rev,
            epoch=epoch,
            op=op,
            kind=kind,
            local=mono if local is None else local,
            wall=wall,
            bucket=bucket,
            ballot=ballot,
            floor=floor,
            holder=holder,
            released=released,
        )
        self.write(event)
        return event

    def close(self) -> None:
        """Close the file."""
        self._file.close()

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
