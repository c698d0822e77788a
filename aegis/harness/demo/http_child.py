"""A local ``aegis`` command that serves HTTP, run as a child process: started, waited for, stopped one way.

:class:`~aegis.harness.demo.management.ManagementProcess` (``aegis manage``) and
:class:`~aegis.harness.demo.dashboard.DashboardProcess` (``aegis dashboard``) are its two kinds. The child listens
on 127.0.0.1, writes its output to a log file and dies with us (:func:`~aegis.harness.cluster.processes.spawn`).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

import httpx

from aegis.harness.cluster.processes import spawn


@dataclass
class HttpChild:
    """A running ``aegis <COMMAND>``: its URL, process and log. Subclasses name the command, the path that
    answers 200 once it is ready, and how long a graceful stop may take."""

    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    COMMAND: ClassVar[str]
    READY_PATH: ClassVar[str]
    STOP_TIMEOUT_S: ClassVar[float]

    @classmethod
    def _spawn(
        cls, port: int, environ: Mapping[str, str], log_path: Path, ready_timeout: float, **fields: Any
    ) -> Self:
        """Start ``aegis COMMAND`` with ``environ`` on ``port``; return once it is ready (stopped again if not)."""
        with log_path.open("wb") as log:
            proc = spawn(
                [sys.executable, "-m", "aegis.cli", cls.COMMAND], env=dict(environ), stdout=log, stderr=log
            )
        child = cls(url=f"http://127.0.0.1:{port}", proc=proc, log_path=log_path, **fields)
        try:
            child.wait_ready(ready_timeout)
        except BaseException:
            child.stop()
            raise
        return child

    def wait_ready(self, timeout: float) -> None:
        """Until ``READY_PATH`` answers 200; RuntimeError with the log's tail if it exits or takes longer."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if httpx.get(f"{self.url}{self.READY_PATH}", timeout=1, trust_env=False).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(
            f"aegis {self.COMMAND} not ready within {timeout:.0f} s (exit {self.proc.poll()}):\n"
            f"{self.log()[-3000:]}"
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float | None = None) -> None:
        """SIGTERM (it stops gracefully), SIGKILL after ``timeout`` s (``STOP_TIMEOUT_S`` by default). Idempotent."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(self.STOP_TIMEOUT_S if timeout is None else timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
