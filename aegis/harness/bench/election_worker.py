"""A process of ``aegis bench --groups`` (:mod:`aegis.harness.bench.election_scale`): many single-active instances.

Run as ``python -m aegis.harness.bench.election_worker URL SPEC`` where ``SPEC`` lists the instances it hosts as
``<group index><letter>`` separated by commas (``0a,0b,17c``: instance ``g0017c`` of group ``g0017``, service
:data:`SERVICE`). Every instance is the SDK's own :class:`~aegis.sdk.single_active.SingleActiveService` (its
election machine and NATS driver, unchanged), all on one connection pool, started in batches; with
``max_concurrency=1`` and no registry record, since what is measured is the election.

What the process tells the bench, as JSON lines on stdout:

* ``{"ready": n}`` once every instance started (``failed`` lists those that did not);
* ``{"acquire": group, "instance": id, "t": mono, "epoch": e}`` each time one of its instances becomes active
  (the campaign's write acknowledged), at once: the bench reads failovers off these. ``t`` is the driver's
  ``time.monotonic()``, which on Linux is one clock for every process of the machine (``CLOCK_MONOTONIC``), so
  the bench compares it with the moment it killed a process;
* ``{"lose": ...}`` the same for a renewal refused (an active deposed while alive);
* on the stdin line ``mark``: counters and the renewal histogram restart (``{"marked": true}``); on ``report``:
  ``{"report": {...}}`` with the renewal ack latencies since the mark (an encoded HDR histogram, microseconds),
  renewal timeouts, losses, campaigns and how many of its instances serve now.

The renewal ack latency is read off the machine's own trace steps (which the driver hands to
:meth:`SingleActiveService._emit` whether or not a trace file is written): from the ``request`` step of a
renewal to its ``renew`` step, both stamped with the driver's clock when it took the step, so it is the
latency the election itself lives with (event loop delays included). Stdin EOF stops every instance gracefully
(each releases its key) and ends the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from typing import Any

from hdrh.histogram import HdrHistogram

from aegis.sdk.config import load_settings
from aegis.sdk.connection import ConnectionPool
from aegis.sdk.election import ElectionParams
from aegis.sdk.leadership import LeadershipLog
from aegis.sdk.single_active import SingleActiveService, ensure_election_bucket
from aegis.sdk.trace_events import Action, Op

SERVICE = "escale"
START_BATCH = 25
"""Instances started at once (bounds the burst of JetStream API requests: stream checks, watch consumers)."""
STOP_TIMEOUT_S = 20.0
START_ATTEMPTS = 3


def group_name(index: int) -> str:
    return f"g{index:04d}"


def parse_spec(spec: str) -> list[tuple[int, str]]:
    """``"0a,0b,17c"`` -> ``[(0, "a"), (0, "b"), (17, "c")]``."""
    return [(int(item[:-1]), item[-1]) for item in spec.split(",") if item]


def emit(line: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


class Recorder:
    """What the instances' trace steps say, summed over the process."""

    def __init__(self) -> None:
        self.mark()

    def mark(self) -> None:
        self.renew_us = HdrHistogram(1, 60_000_000, 3)
        self.pending: dict[str, float] = {}
        self.timeouts = self.lost = self.campaigns = self.acquired = self.adopted = 0
        self.since = time.monotonic()

    def step(self, svc: SingleActiveService, action: Action, fields: dict[str, Any]) -> None:
        local = fields.get("local", time.monotonic())
        op = fields.get("op")
        iid = svc.instance_id
        if action is Action.REQUEST:
            if op == Op.RENEW:
                self.pending[iid] = local
            elif op == Op.ACQUIRE:
                self.campaigns += 1
        elif action is Action.RENEW:
            sent = self.pending.pop(iid, None)
            if sent is not None:
                self.renew_us.record_value(max(1, int((local - sent) * 1e6)))
        elif action is Action.TIMEOUT and op == Op.RENEW:
            self.timeouts += 1
            self.pending.pop(iid, None)
        elif action is Action.ADOPT:
            self.adopted += 1
            self.pending.pop(iid, None)
        elif action is Action.LOSE:
            self.lost += 1
            self.pending.pop(iid, None)
            emit({"lose": svc.group, "instance": iid, "t": local})
        elif action is Action.ACQUIRE:
            self.acquired += 1
            emit({"acquire": svc.group, "instance": iid, "t": local, "epoch": fields.get("epoch", 0)})


class MeasuredInstance(SingleActiveService):
    """The SDK's single-active service, with its trace steps also handed to a :class:`Recorder`."""

    recorder: Recorder

    def _emit(self, action: Action, **fields: Any) -> None:
        super()._emit(action, **fields)
        self.recorder.step(self, action, fields)


async def run(url: str, spec: str) -> None:
    pool = await ConnectionPool.connect(load_settings(servers=[url], pool_size=1))
    await ensure_election_bucket(pool)
    recorder = Recorder()
    leadership = LeadershipLog(pool)
    instances = []
    for index, letter in parse_spec(spec):
        svc = MeasuredInstance(
            SERVICE,
            group=group_name(index),
            instance_id=f"{group_name(index)}{letter}",
            params=ElectionParams(),
            max_concurrency=1,
        )
        svc.recorder = recorder
        svc.leadership = leadership
        instances.append(svc)
    pending: list[MeasuredInstance] = instances
    errors: dict[str, int] = {}
    for _attempt in range(START_ATTEMPTS):  # a start that failed (an API request timed out) is retried
        failed = []
        for i in range(0, len(pending), START_BATCH):
            batch = pending[i : i + START_BATCH]
            results = await asyncio.gather(
                *(s.start(pool, register=False) for s in batch), return_exceptions=True
            )
            for s, r in zip(batch, results, strict=True):
                if isinstance(r, BaseException):
                    failed.append(s)
                    text = f"{type(r).__name__}: {r}"[:200]
                    errors[text] = errors.get(text, 0) + 1
                    with contextlib.suppress(Exception):
                        await s.stop(grace_s=0.1)
        pending = failed
        if not pending:
            break
    emit(
        {"ready": len(instances) - len(pending), "failed": [s.instance_id for s in pending], "errors": errors}
    )
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        command = line.strip()
        if command == "mark":
            recorder.mark()
            emit({"marked": True})
        elif command == "report":
            r = recorder
            h = r.renew_us
            emit(
                {
                    "report": {
                        "seconds": round(time.monotonic() - r.since, 3),
                        "renew_hdr": h.encode().decode() if h.get_total_count() else "",
                        "renews": h.get_total_count(),
                        "renew_timeouts": r.timeouts,
                        "lost": r.lost,
                        "adopted": r.adopted,
                        "campaigns": r.campaigns,
                        "acquired": r.acquired,
                        "serving": sum(1 for s in instances if s.is_active),
                        "instances": len(instances),
                    }
                }
            )
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(
            asyncio.gather(*(s.stop(grace_s=1.0) for s in instances), return_exceptions=True), STOP_TIMEOUT_S
        )
    await pool.close()


if __name__ == "__main__":
    import uvloop

    uvloop.run(run(sys.argv[1], sys.argv[2]))
