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

A campaign runs ``repetitions`` times through its fault list; the order of the faults is shuffled by ``seed``
(the same seed gives the same schedule). Errors name the file and the field.
"""

from __future__ import annotations

import random
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from harness.nemesis import PARTITION_KINDS, FaultKind


class CampaignError(ValueError):
    """A campaign file that cannot be used; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Topology(_Strict):
    nodes: int = Field(3, ge=3, le=5, description="nats-server nodes (R3 needs 3)")
    instances: int = Field(3, ge=2, le=5, description="instances of the single-active ledger group")
    rpc_instances: int = Field(0, ge=0, le=4, description="instances of the plain RPC quotes service")
    sync_interval: str | None = Field(None, description="JetStream sync_interval; server default when unset")
    instance_module: str = Field(
        "harness.demo",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$",
        description="module the ledger instances run as (python -m <it> serve-active ...: harness.demo's"
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


class FaultStep(_Strict):
    kind: FaultKind
    target: str = Field(
        "active",
        description='"active", "standby", "random", an instance or node name, "stream-leader:<stream>", or'
        ' "busy" (worker-*: a command worker that holds a command)',
    )
    count: int = Field(1, ge=1, le=1000, description="how many times per repetition")
    duration_s: float = Field(
        0.0, ge=0, le=60, description="how long a pause, partition or node outage lasts"
    )

    @model_validator(mode="after")
    def _duration_fits(self) -> FaultStep:
        needs = PARTITION_KINDS | {
            "instance-pause",
            "node-pause",
            "node-kill",
            "stream-leader-kill",
            "worker-pause",
        }
        if self.kind in needs and self.duration_s <= 0:
            raise ValueError(f"{self.kind} needs duration_s > 0")
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
    faults: list[FaultStep] = Field(min_length=1)
    settle_s: tuple[float, float] = Field(
        (0.3, 0.8), description="random wait before each fault (a random phase of the renewal cycle)"
    )
    recover_timeout_s: float = Field(30, gt=0, le=120)
    expect: Expect = Expect()
    trace: bool = Field(True, description="record election traces; the first fault's is checked with TLC")

    @field_validator("settle_s")
    @classmethod
    def _ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 <= v[0] <= v[1] <= 30:
            raise ValueError("settle_s must be [min, max] with 0 <= min <= max <= 30")
        return v

    def schedule(self) -> list[FaultStep]:
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
