"""A command worker process for the campaign's command workload (:class:`aegis.harness.campaign.workload.CommandWorkload`).

``python -m aegis.harness.campaign.command_worker --instance W1 --service S --journal FILE URL [URL ...]`` runs a
:class:`~aegis.sdk.commands.CommandWorker` for ``S.apply`` until SIGTERM (or SIGINT). Its handler takes a random
``--work-ms MIN MAX`` milliseconds (default 20-100), so a kill or a pause lands mid-command. It prints
``ready`` once it takes commands.

Every handler start and every end of a run is appended to the journal as one NDJSON line, flushed at once
(a kill -9 loses nothing written before it)::

    {"ev": "start", "call_id": "...", "worker": "W1", "pid": 123, "mono": 5.1, "wall": 1.7e9,
     "delivered": 1, "token": 42}

``ev`` is ``start`` (the handler began), ``complete`` (this run's outcome was stored as the call's: the
compare-and-set won) or ``discard`` (another worker took the call id over; the result was dropped). ``mono``
is ``time.monotonic()`` (one clock for every process of the host), ``wall`` ``time.time()``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import time
from pathlib import Path
from typing import IO, Any

from aegis.sdk.commands import Claim, CommandContext, CommandWorker
from aegis.sdk.config import load_settings
from aegis.sdk.connection import ConnectionPool

COMMAND = "apply"


class Journal:
    """Appends NDJSON lines to a file, one write and flush per line."""

    def __init__(self, path: Path, worker: str) -> None:
        self.path = path
        self.worker = worker
        self.pid = os.getpid()
        self._file: IO[str] = path.open("a", encoding="utf-8")

    def write(self, ev: str, call_id: str, **extra: Any) -> None:
        line = {
            "ev": ev,
            "call_id": call_id,
            "worker": self.worker,
            "pid": self.pid,
            "mono": time.monotonic(),
            "wall": time.time(),
            **extra,
        }
        self._file.write(json.dumps(line) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def journaled(base: type[CommandWorker]) -> type[CommandWorker]:
    """``base`` with every run's end (``complete`` / ``discard``) written to its ``journal``."""

    class JournaledWorker(base):  # type: ignore[misc, valid-type]
        journal: Journal | None = None

        async def _settled(self, reg: Any, call_id: str, claim: Claim, won: bool) -> None:
            await super()._settled(reg, call_id, claim, won)
            if self.journal is not None:
                self.journal.write("complete" if won else "discard", call_id, token=claim.token)

    JournaledWorker.__name__ = f"Journaled{base.__name__}"
    return JournaledWorker


async def serve(args: argparse.Namespace, worker_cls: type[CommandWorker]) -> None:
    journal = Journal(Path(args.journal), args.instance)
    pool = await ConnectionPool.connect(
        load_settings(servers=args.urls, name=f"command-worker-{args.instance}")
    )
    worker = journaled(worker_cls)(pool, instance_id=args.instance)
    worker.journal = journal  # type: ignore[attr-defined]
    lo, hi = args.work_ms

    async def apply(req: dict[str, Any], ctx: CommandContext) -> dict[str, Any]:
        journal.write("start", ctx.call_id, delivered=ctx.delivered, token=ctx.token)
        await asyncio.sleep(random.uniform(lo, hi) / 1000)
        return {"n": req.get("n"), "worker": ctx.instance_id}

    await worker.handle(args.service, COMMAND, apply, ack_wait=args.ack_wait, concurrency=args.concurrency)
    print("ready", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await worker.close(grace=2.0)
        await pool.close()
        journal.close()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m aegis.harness.campaign.command_worker",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--instance", required=True, help="worker instance id (a subject token)")
    p.add_argument("--service", required=True, help="service whose 'apply' commands this worker runs")
    p.add_argument("--journal", required=True, help="NDJSON file the starts and completions go to")
    p.add_argument(
        "--ack-wait", type=float, default=2.0, help="seconds before a silent worker's command moves"
    )
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument(
        "--work-ms", type=float, nargs=2, default=(20.0, 100.0), metavar=("MIN", "MAX"), help="handler time"
    )
    p.add_argument("urls", nargs="+", help="NATS server URLs")
    return p


def main(argv: list[str] | None = None, worker_cls: type[CommandWorker] = CommandWorker) -> int:
    """Run one worker process; ``worker_cls`` lets a test run a different :class:`CommandWorker`."""
    args = parser().parse_args(argv)
    asyncio.run(serve(args, worker_cls))
    return 0


if __name__ == "__main__":
    sys.exit(main())
