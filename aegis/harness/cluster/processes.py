"""Child processes that cannot outlive us: ``spawn`` sets ``PR_SET_PDEATHSIG`` on every child.

PDEATHSIG fires when the *thread* that forked the child exits, not only the process. Children must
therefore be forked from a thread that lives as long as the process. Calls made on the main thread
fork directly; calls made on any other thread (``asyncio.to_thread``, a worker pool) are handed to one
long-lived daemon "spawner" thread that does the fork.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import ctypes.util
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


_PR_SET_PDEATHSIG = 1


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl  # type: ignore[no-any-return]
    except (OSError, AttributeError):  # pragma: no cover - exotic libc
        return None


# Resolved once here, never inside the forked child (no dlopen between fork and exec).
_prctl = _load_prctl()


def _make_preexec(parent_pid: int) -> Callable[[], None]:
    def preexec() -> None:  # runs in the child between fork and exec: keep it tiny
        if _prctl is not None:
            _prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        # The parent may have died between fork() and prctl(): then nobody will ever signal us.
        if os.getppid() != parent_pid:
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


class _Spawner:
    """One daemon thread that lives as long as the process and forks children for other threads."""

    def __init__(self) -> None:
        self.pid = os.getpid()  # a fork()ed copy of this process has no spawner thread
        self._q: queue.SimpleQueue[tuple[Callable[[], subprocess.Popen[Any]], concurrent.futures.Future]]
        self._q = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="aegis-spawner", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            fn, fut = self._q.get()
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn())
            except BaseException as e:  # noqa: BLE001 - handed back to the caller
                fut.set_exception(e)

    def submit(self, fn: Callable[[], subprocess.Popen[Any]]) -> subprocess.Popen[Any]:
        fut: concurrent.futures.Future[subprocess.Popen[Any]] = concurrent.futures.Future()
        self._q.put((fn, fut))
        return fut.result()


_spawner: _Spawner | None = None
_spawner_lock = threading.Lock()


def wait_stopped(pid: int, timeout: float = 1.0) -> bool:
    """Wait (bounded by ``timeout``) until the kernel reports every thread of ``pid`` stopped (state T, after
    SIGSTOP) or the process gone: from then on it writes and answers nothing (its last trace or journal line is on
    disk). Returns False when the bound passed first.

    ``kill(SIGSTOP)`` returns before the process stops: the kernel hands the signal to one thread, which then
    stops the others, and on a loaded machine the rest may run (and answer a request) in between.
    """
    end = time.monotonic() + timeout
    while True:
        try:
            tasks = list(Path(f"/proc/{pid}/task").iterdir())
            states = [(t / "stat").read_text().rpartition(")")[2].split()[0] for t in tasks]
        except OSError:
            if not Path(f"/proc/{pid}").exists():
                return True  # gone
            states = ["?"]  # a thread exited while we looked: look again
        if all(s in ("T", "t", "Z", "X") for s in states):
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(0.0005)


def spawn(
    args: Sequence[str],
    *,
    stdin: Any = subprocess.DEVNULL,
    stdout: Any = None,
    stderr: Any = None,
    new_session: bool = True,
    **popen_kwargs: Any,
) -> subprocess.Popen[Any]:
    """Start ``args`` as a child that the kernel kills when this process dies (even by ``kill -9``).

    ``new_session`` (default) keeps a terminal's Ctrl-C away from the child, so the parent can stop
    it in order. Other keyword arguments go to :class:`subprocess.Popen`.
    """

    def popen() -> subprocess.Popen[Any]:
        return subprocess.Popen(
            list(args),
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            close_fds=True,
            start_new_session=new_session,
            preexec_fn=_make_preexec(os.getpid()),  # noqa: PLW1509 - needed for PDEATHSIG
            **popen_kwargs,
        )

    if threading.current_thread() is threading.main_thread():
        return popen()
    global _spawner
    with _spawner_lock:
        if _spawner is None or _spawner.pid != os.getpid():
            _spawner = _Spawner()
    log.debug("forking %s from the spawner thread (caller is not the main thread)", args[0])
    return _spawner.submit(popen)
