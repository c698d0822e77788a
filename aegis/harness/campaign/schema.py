"""A fault campaign as data: the YAML schema of ``harness/campaigns/*.yaml`` (one definition, validated).

Example (``harness/campaigns/smoke.yaml``)::

    name: smoke
    description: one of each fault class, quickly
    seed: 1
    topology: {nodes: 3, instances: 3, rpc_instances: 1}
    workload: {rpc_rate: 50, event_rate: 20, command_rate: 5}
    faults:
      - {kind: instance-kill, target: active, count: 3}
      - {kind: node-kill, target: "stream-leader:KV_aegis_election", duration_s: 3}
    budgets:
      instance-kill: {gap_p99_s: 2.0, gap_max_s: 2.0}
      node-kill: {gap_p99_s: 10.0, gap_max_s: 10.0, reason: "NATS Raft election 4-9 s + lease"}

Budgets are the campaign's latency promise per fault class: the client-visible gap (the longest stretch
without a successful sticky call, from the fault until the client is steady again) at p99 and at most.
:data:`DEFAULT_BUDGET_S` (2 s) for every class not listed; a bound above it needs its ``reason`` in the file.
A run that breaks a budget breaks a promise (``aegis campaign`` exits 1, the report lists it first).

Each entry of ``faults`` is a :class:`~aegis.harness.faults.fault.Fault`, the type the nemesis applies (here ``target``
defaults to ``active`` and timed kinds need a ``duration_s``: :data:`CampaignFault`). A campaign runs
``repetitions`` times through its fault list; the order of the faults is shuffled by ``seed``
(the same seed gives the same schedule). Errors name the file and the field.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from aegis.harness.faults.fault import FAULT_KINDS, Fault

DEFAULT_BUDGET_S = 2.0
"""The client-visible gap every fault class is held to (p99 and max) unless its budget says more, with a
reason."""


class CampaignError(ValueError):
    """A campaign file that cannot be used; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Topology(_Strict):
    nodes: int = Field(3, ge=3, le=5, description="nats-server nodes (R3 needs 3)")
    instances: int = Field(3, ge=2, le=5, description="instances of the single-active ledger group")
    rpc_instances: int = Field(0, ge=0, le=4, description="instances of the plain RPC quotes service")
    sync_interval: str | None = Field(None, description="JetStream sync_interval; server default when unset")
    quorum_buckets: Literal["replicated", "pinned"] = Field(
        "replicated",
        description="the quorum lease's buckets: R3 with their leaders kept apart, or R1 pinned one to each of the"
        " first three nodes by server tags (docs/quorum-lease.md, rule 9)",
        # (left out of dumps when "replicated": reports recorded before the field existed dump back unchanged)
        exclude_if=lambda v: v == "replicated",
    )
    instance_module: str = Field(
        "aegis.harness.demo",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$",
        description="module the ledger instances run as (python -m <it> serve-active ...: aegis.harness.demo's"
        " command line); tests swap in an unfenced one as the split-brain checker's negative control",
    )


class Workload(_Strict):
    sticky: bool = Field(True, description="a sticky client calling the ledger group back to back")
    rpc_rate: float = Field(0, ge=0, le=2000, description="plain RPCs per second to the quotes service")
    event_rate: float = Field(0, ge=0, le=2000, description="events per second (published and consumed)")
    command_rate: float = Field(0, ge=0, le=500, description="commands per second")
    command_workers: int = Field(
        2, ge=2, le=8, description="command worker processes (worker-* faults hit them)"
    )
    command_ack_wait_s: float = Field(
        2.0,
        ge=1,
        le=30,
        description="the workers' ack_wait: a worker-pause longer than this moves the command",
    )


def _target_defaults_to_active(data: object) -> object:
    """A campaign's fault without a ``target`` hits the active (the nemesis' own default is ``random``)."""
    if isinstance(data, dict) and "target" not in data:
        return {**data, "target": "active"}
    return data


def _timed_needs_a_duration(fault: Fault) -> Fault:
    """The runner heals a timed fault (a pause, an outage, a cut) after its ``duration_s``: it needs one."""
    if fault.timed and fault.duration_s <= 0:
        raise ValueError(f"{fault.kind} needs duration_s > 0")
    return fault


CampaignFault = Annotated[
    Fault, BeforeValidator(_target_defaults_to_active), AfterValidator(_timed_needs_a_duration)
]
"""A :class:`~aegis.harness.faults.fault.Fault` as a campaign file gives it: ``target`` defaults to ``"active"`` (an
instance name, a node name, ``"standby"``, ``"random"``, ``"stream-leader:<stream>"``, or ``"busy"`` for
``worker-*``: a command worker that holds a command), timed kinds need ``duration_s > 0``, ``count`` (1-1000)
runs it that many times per repetition."""


class Budget(_Strict):
    """The latency promise for one fault class: client-visible gap p99 and max, seconds. Above
    :data:`DEFAULT_BUDGET_S` only with a ``reason``. The p99 is held only with enough samples to have one
    (:data:`aegis.stats.MIN_P99_SAMPLES`); the max always."""

    gap_p99_s: float = Field(DEFAULT_BUDGET_S, gt=0, le=120, description="client-visible gap p99, seconds")
    gap_max_s: float = Field(
        DEFAULT_BUDGET_S, gt=0, le=120, description="longest client-visible gap, seconds"
    )
    reason: str = Field("", description="why this class needs more than the default (required above it)")

    @model_validator(mode="before")
    @classmethod
    def _one_bound_given(cls, data: object) -> object:
        """Only one bound given: the other follows it where the default would contradict it (``{gap_max_s: 1}``
        also holds the p99 to 1 s; ``{gap_p99_s: 5, reason: ...}`` allows a max of 5 s)."""
        if isinstance(data, dict):
            p99, top = data.get("gap_p99_s"), data.get("gap_max_s")
            if p99 is None and isinstance(top, int | float) and top > 0:
                data = {**data, "gap_p99_s": min(DEFAULT_BUDGET_S, top)}
            elif top is None and isinstance(p99, int | float):
                data = {**data, "gap_max_s": max(DEFAULT_BUDGET_S, p99)}
        return data

    @model_validator(mode="after")
    def _more_needs_a_reason(self) -> Budget:
        if self.gap_p99_s > self.gap_max_s:
            raise ValueError(f"gap_p99_s ({self.gap_p99_s:g}) must not exceed gap_max_s ({self.gap_max_s:g})")
        if self.gap_max_s > DEFAULT_BUDGET_S and not self.reason.strip():
            raise ValueError(
                f"a budget above {DEFAULT_BUDGET_S:g} s (gap_max_s {self.gap_max_s:g}) needs a non-empty reason"
            )
        return self


class Expect(_Strict):
    """What a campaign promises; a run that breaks a promise is reported as such (and exits non-zero)."""

    split_brain: int = 0
    lost_events: int = 0
    duplicate_commands: int = 0
    failed_calls: int | None = Field(None, description="at most this many failed sticky calls (None: any)")


class Campaign(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    description: str = ""
    seed: int = 1
    repetitions: int = Field(1, ge=1, le=100)
    topology: Topology = Topology()
    workload: Workload = Workload()
    faults: list[CampaignFault] = Field(min_length=1)
    settle_s: tuple[float, float] = Field(
        (0.3, 0.8), description="random wait before each fault (a random phase of the renewal cycle)"
    )
    recover_timeout_s: float = Field(30, gt=0, le=120)
    expect: Expect = Expect()
    budgets: dict[str, Budget] = Field(
        default_factory=dict,
        description="per fault class: the client-visible gap promised (DEFAULT_BUDGET_S when not listed)",
    )
    election: Literal["lease", "quorum"] = Field(
        "lease",
        description="the election the ledger instances run: the single-bucket lease or the quorum lease",
    )
    trace: bool = Field(True, description="record election traces and check the whole merged trace with TLC")
    trace_budget_s: float = Field(
        300,
        gt=0,
        le=7200,
        description="TLC's time for the whole trace; past it the report says `incomplete` and how far it got",
    )

    @field_validator("settle_s")
    @classmethod
    def _ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 <= v[0] <= v[1] <= 30:
            raise ValueError("settle_s must be [min, max] with 0 <= min <= max <= 30")
        return v

    @field_validator("budgets", mode="before")
    @classmethod
    def _known_classes(cls, v: object) -> object:
        if isinstance(v, dict):
            unknown = [k for k in v if k not in FAULT_KINDS]
            if unknown:
                raise ValueError(f"unknown fault class {unknown[0]!r} (known: {', '.join(FAULT_KINDS)})")
        return v

    @model_validator(mode="after")
    def _budgets_for_classes_that_run(self) -> Campaign:
        kinds = {f.kind for f in self.faults}
        for kind in self.budgets:
            if kind not in kinds:
                raise ValueError(f"budgets.{kind}: no fault of this class in the campaign")
        return self

    @model_serializer(mode="wrap")
    def _lease_is_not_written(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """``election`` is written only when it is not the default: reports recorded before the quorum lease
        existed stay what the model dumps."""
        out: dict[str, Any] = handler(self)
        if out.get("election") == "lease":
            del out["election"]
        return out

    def budget(self, kind: str) -> Budget:
        """The budget of fault class ``kind``: the campaign's, else :data:`DEFAULT_BUDGET_S` for p99 and max."""
        return self.budgets.get(kind) or Budget()

    def schedule(self) -> list[Fault]:
        """Every fault of the campaign in the order it runs (seeded shuffle: replayable)."""
        steps = [f for _ in range(self.repetitions) for f in self.faults for _ in range(f.count)]
        random.Random(self.seed).shuffle(steps)
        return steps

    @property
    def runs(self) -> int:
        return self.repetitions * sum(f.count for f in self.faults)


def load_campaign(path: str | Path) -> Campaign:
    """Read and validate a campaign file; :class:`CampaignError` names the file and what is wrong."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise CampaignError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise CampaignError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise CampaignError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return Campaign.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "campaign"
        raise CampaignError(f"{path}: {where}: {first['msg']}") from None
