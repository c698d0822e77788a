"""aegis.spec.tlc runs java as a child that cannot outlive us, and kills it on a timeout."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from waiting import wait_until

from aegis.spec.tlc import run_tlc

ROOT = Path(__file__).resolve().parent.parent
UNDER_WAY_S = 1.0
"""Past the JVM's start: TLC is checking the model (which takes minutes) when the parent is killed."""

# A model TLC needs minutes for (10^8 states in a row): it is still running when we look.
_LONG_SPEC = """---- MODULE Long ----
EXTENDS Naturals
VARIABLE x
Init == x = 0
Next == x < 100000000 /\\ x' = x + 1
====
"""

_PARENT = r"""
import sys
from pathlib import Path
from aegis.spec.tlc import run_tlc
run_tlc(Path(sys.argv[1]), Path(sys.argv[2]), deadlock=False, heap="256m")
"""


def _long_model(tmp_path: Path) -> tuple[Path, Path]:
    spec = tmp_path / "Long.tla"
    spec.write_text(_LONG_SPEC)
    cfg = tmp_path / "Long.cfg"
    cfg.write_text("INIT Init\nNEXT Next\n")
    return spec, cfg


def _stat(pid: int) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` after the command name (state first), None when gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _java_children(ppid: int) -> dict[int, str]:
    """``{pid: start time}`` of the live java processes whose parent is ``ppid``."""
    out: dict[int, str] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            comm = (d / "comm").read_text().strip()
        except OSError:
            continue
        st = _stat(int(d.name))
        if comm == "java" and st is not None and st[0] != "Z" and int(st[1]) == ppid:
            out[int(d.name)] = st[19]  # starttime: tells a reused pid apart
    return out


def _alive(pid: int, start: str) -> bool:
    st = _stat(pid)
    return st is not None and st[0] != "Z" and st[19] == start


def test_java_dies_with_a_kill_9_parent(tmp_path: Path) -> None:
    spec, cfg = _long_model(tmp_path)
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT, str(spec), str(cfg)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    java: dict[int, str] = {}
    try:
        wait_until(
            lambda: bool(java.update(_java_children(parent.pid)) or java), 30, "a java child of the parent"
        )
        (pid, start), *_ = java.items()
        # A precondition, not a wait for an event: java still runs UNDER_WAY_S after it appeared, so
        # it dies below because its parent was killed, not because the model ended.
        time.sleep(UNDER_WAY_S)
        assert _alive(pid, start), "TLC ended before the parent was killed: the model is too short"
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
        wait_until(lambda: not _alive(pid, start), 5, f"java {pid} to die with its kill -9'd parent")
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(timeout=10)
        for pid, start in java.items():  # only if the test failed: do not leave it running
            if _alive(pid, start):
                os.kill(pid, signal.SIGKILL)


def test_timeout_kills_and_reaps_java_and_keeps_the_output(tmp_path: Path) -> None:
    spec, cfg = _long_model(tmp_path)
    t0 = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired) as info:
        run_tlc(spec, cfg, deadlock=False, heap="256m", timeout=4)
    assert time.monotonic() - t0 < 4 + 10  # the kill is not a wait for TLC to finish (minutes)
    assert _java_children(os.getpid()) == {}  # killed and reaped: no java child, not even a zombie
    out = info.value.output or ""
    assert "TLC2 Version" in out, out[-500:]  # what TLC printed before the timeout is kept
