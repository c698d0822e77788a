"""The simulator and the SDK drive one election core, so the same scripted inputs give the same trace.

The script: instance ``a`` starts on an empty key, ``b`` starts 1 s later, ``a`` stops gracefully 2 s after
that. It runs once with the real SDK (two :class:`SingleActiveService` on the real 3-node cluster, writing the
NDJSON trace the campaigns check with TLC) and once in the simulator (two ``SimInstance`` on the simulated
KV). Timing differs (real delays against drawn ones), so the number of renewals, and of the standby's
observations of them, differs too: each run of them is collapsed to one. Everything else must be the same
sequence of spec steps per instance. Before the machine traced its own steps, the two drivers disagreed here
(the simulator logged an active's watch deliveries, the SDK only what the machine took).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable
from pathlib import Path

from aegis.sdk.config import load_settings
from aegis.sdk.connection import ConnectionPool
from aegis.sdk.election import ElectionParams
from aegis.sdk.single_active import SingleActiveService
from aegis.sdk.trace_events import Action, TraceWriter, read_trace
from aegis.sim.faults import MIXES
from aegis.sim.run import RunConfig, Simulation

PARAMS = ElectionParams(lease_s=3.0, renew_s=0.5, drift=0.05, write_timeout_s=1.0)
"""Slow enough that a loaded CI machine does not time a write out (which would add a line to one side)."""
START_B_S, STOP_A_S, END_S = 1.0, 3.0, 5.0


def _shape(steps: Iterable[tuple[str, str | None, str | None]]) -> list[str]:
    """One token per step (``action[:op or kind]``), with each run of renewals (request + renew) and each run
    of the same observation collapsed to one. Two orders that timing alone decides are made one:

    * a campaign's own write may come back through the watch before its acknowledgement (the machine, still a
      standby, takes it) or after (an active ignores its watch): an observation right between a campaign and
      its success is dropped;
    * a request still in flight when the script ends is dropped.
    """
    tokens = [":".join(x for x in step if x) for step in steps]
    tokens = [
        t
        for i, t in enumerate(tokens)
        if not (
            t == "observe:value"
            and 0 < i < len(tokens) - 1
            and tokens[i - 1 : i + 2 : 2] == ["request:acquire", "acquire"]
        )
    ]
    if tokens and tokens[-1].startswith("request:"):
        tokens.pop()
    out: list[str] = []
    i = 0
    while i < len(tokens):
        t = tokens[i]
        if t == "request:renew" and i + 1 < len(tokens) and tokens[i + 1] == "renew":
            if out[-2:] != ["request:renew", "renew"]:
                out += ["request:renew", "renew"]
            i += 2
            continue
        if not (t.startswith("observe") and out and out[-1] == t):
            out.append(t)
        i += 1
    return out


def _by_instance(events: Iterable[tuple[str, Action, str | None, str | None]]) -> dict[str, list[str]]:
    steps: dict[str, list[tuple[str, str | None, str | None]]] = {}
    for instance, action, op, kind in events:
        if action is not Action.SERVE:
            steps.setdefault(instance, []).append((action.value, op, kind))
    return {name: _shape(s) for name, s in steps.items()}


async def _sdk_trace(nats_urls: list[str], path: Path) -> dict[str, list[str]]:
    pool = await ConnectionPool.connect(load_settings(servers=nats_urls))
    name = f"equiv-{uuid.uuid4().hex[:8]}"
    writer = TraceWriter(path)
    a = SingleActiveService(name, instance_id="a", params=PARAMS, trace=writer)
    b = SingleActiveService(name, instance_id="b", params=PARAMS, trace=writer)
    try:
        await a.start(pool)
        await asyncio.sleep(START_B_S)
        await b.start(pool)
        await asyncio.sleep(STOP_A_S - START_B_S)
        await a.stop()
        await asyncio.sleep(END_S - STOP_A_S)
        b.trace = None  # the script ends here; b's own stop is not part of it
    finally:
        await b.stop()
        await a.stop()
        writer.close()
        await pool.close()
    trace = read_trace(path)
    return _by_instance(
        (e.instance, e.action, e.op.value if e.op else None, e.kind.value if e.kind else None)
        for e in trace.events
    )


def _sim_trace() -> dict[str, list[str]]:
    cfg = RunConfig(
        seed=1,
        params=PARAMS,
        mix=MIXES["calm"],
        instances=2,
        clients=0,
        faults=(),
        trace=True,
        duration_s=END_S,
    )
    sim = Simulation(cfg)
    first, second = sim.instances
    sim.later(0.0, first.start)
    sim.later(START_B_S, second.start)
    sim.later(STOP_A_S, first.stop)
    sim.env.run(until=END_S)
    names = {first.name: "a", second.name: "b"}
    return _by_instance(
        (names[e.instance], e.action, e.op.value if e.op else None, e.kind.value if e.kind else None)
        for e in sim.log.events
        if isinstance(e.action, Action)
    )


async def test_the_sdk_and_the_simulator_write_the_same_trace_for_one_script(
    nats_urls: list[str], tmp_path: Path
) -> None:
    sdk = await _sdk_trace(nats_urls, tmp_path / "sdk.ndjson")
    sim = _sim_trace()
    expected_a = ["start:absent", "request:acquire", "acquire", "request:renew", "renew"]
    expected_a += ["request:release", "release"]
    expected_b = ["start:value", "observe:value", "observe:deleted", "request:acquire", "acquire"]
    expected_b += ["request:renew", "renew"]
    assert sdk == {"a": expected_a, "b": expected_b}, f"the SDK's trace: {sdk}"
    assert sim == sdk
