"""TEST ONLY: a command worker process without cross-worker de-duplication, the negative control of
``tests/test_command_faults.py``.

``UnfencedWorker`` claims nothing and stores nothing in ``aegis_commands``: every delivery runs, and every run
counts as completed (only the per-worker cache of recent results is left, as before issue 12). Run as
``python tests/unfenced_command_worker.py`` with the arguments of ``python -m aegis.harness.campaign.command_worker``; it is
not importable from the shipped packages and no shipped option switches de-duplication off.
"""

from __future__ import annotations

import sys
import uuid
from typing import Any

from aegis.harness.campaign.command_worker import main
from aegis.sdk.commands import Claim, CommandWorker


class UnfencedWorker(CommandWorker):
    async def _acquire(self, reg: Any, key: str, deadline: float) -> Claim:
        return Claim(key, uuid.uuid4().hex, reg.claim_ttl_s)

    async def _renew(self, claim: Claim) -> None:
        return None

    async def _complete(self, reg: Any, claim: Claim, data: bytes, reply_headers: dict[str, str]) -> bool:
        return True

    async def _release(self, claim: Claim) -> None:
        return None


if __name__ == "__main__":
    sys.exit(main(worker_cls=UnfencedWorker))
