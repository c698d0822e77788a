"""Shared pytest fixtures."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from management_server import ManagementServer

from aegis.harness.cluster.local import LocalCluster
from aegis.harness.cluster.processes import spawn
from aegis.sdk.config import load_settings
from aegis.sdk.connection import ConnectionPool

ROOT = Path(__file__).resolve().parent.parent
SPEC_QUICK_TIMEOUT_S = 900.0
"""Bound on ``aegis spec --quick --json`` from its start (about 125 s alone on 2 cores)."""


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster]:
    """A started 3-node JetStream cluster on 127.0.0.1, shared by the whole session.

    Tests that kill, stop or pause a node must bring it back before they end.
    """
    with LocalCluster(3) as c:
        yield c


@pytest.fixture(scope="session")
def nats_urls(cluster: LocalCluster) -> list[str]:
    """Client URLs (``nats://127.0.0.1:<port>``) of every node of :func:`cluster`."""
    return cluster.urls


@pytest.fixture(scope="session")
def management(nats_urls: list[str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ManagementServer]:
    """One real ``aegis manage`` on the session's cluster, shared by the management test modules (a second
    replica, when a test needs one, signs with the same key)."""
    server = ManagementServer(nats_urls, tmp_path_factory.mktemp("manage"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pool_settings() -> dict[str, Any]:
    """Settings, over the defaults, of every pool :func:`connect_pool` opens (and so of :func:`pool`).

    None here. A test module that needs others (a smaller ``max_payload_bytes``, a faster metrics history)
    defines its own ``pool_settings`` fixture: pytest takes the module's over this one.
    """
    return {}


@pytest.fixture
async def connect_pool(
    nats_urls: list[str], pool_settings: dict[str, Any]
) -> AsyncIterator[Callable[..., Awaitable[ConnectionPool]]]:
    """Open a :class:`ConnectionPool` on the session's cluster: ``await connect_pool(**overrides)``, with
    :func:`pool_settings` and then ``overrides`` over the defaults. Every pool it opened is closed when the
    test ends (closing is idempotent: a test may close one earlier, as when an instance "dies")."""
    opened: list[ConnectionPool] = []

    async def connect(**overrides: Any) -> ConnectionPool:
        p = await ConnectionPool.connect(load_settings(servers=nats_urls, **{**pool_settings, **overrides}))
        opened.append(p)
        return p

    yield connect
    for p in reversed(opened):
        await p.close()


@pytest.fixture
async def pool(connect_pool: Callable[..., Awaitable[ConnectionPool]]) -> ConnectionPool:
    """A connection pool on the session's cluster with the module's :func:`pool_settings`; closed at the end."""
    return await connect_pool()


class _SpecQuickRun:
    """``aegis spec --quick --json`` running in the background at the lowest CPU priority (``nice 19``).

    TLC is CPU-bound for about two minutes; most other tests wait on the network, elections and timers.
    Started when the session's tests are collected, TLC takes only the CPU they leave idle (a niced process
    yields to every normal one), and its verdicts are usually ready when tests/test_spec.py asks for them.
    Its output goes to files: a pipe nobody reads would stall it. It dies with the session (``spawn``).
    """

    def __init__(self) -> None:
        self._out: IO[bytes] = tempfile.TemporaryFile()
        self._err: IO[bytes] = tempfile.TemporaryFile()
        self.proc = spawn(
            ["nice", "-n", "19", sys.executable, "-m", "aegis.cli", "spec", "--quick", "--json"],
            stdout=self._out,
            stderr=self._err,
            cwd=ROOT,
        )

    def result(self) -> tuple[int, dict[str, Any]]:
        """Wait (bounded) for the run; its exit code and JSON report."""
        try:
            code = self.proc.wait(timeout=SPEC_QUICK_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"aegis spec --quick did not finish within {SPEC_QUICK_TIMEOUT_S:.0f}s of its start")
        self._out.seek(0)
        self._err.seek(0)
        out, err = self._out.read().decode(), self._err.read().decode()
        assert out.strip(), f"no JSON on stdout; stderr: {err[-2000:]}"
        return code, json.loads(out)


_spec_quick: _SpecQuickRun | None = None


@pytest.hookimpl(trylast=True)  # after -k / -m deselection
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Start the TLC quick suite as soon as it is known that tests/test_spec.py will ask for it."""
    global _spec_quick
    if _spec_quick is None and any(item.path.name == "test_spec.py" for item in items):
        _spec_quick = _SpecQuickRun()


@pytest.fixture(scope="session")
def spec_quick_run() -> tuple[int, dict[str, Any]]:
    """Exit code and JSON report of one ``aegis spec --quick --json`` run (see :class:`_SpecQuickRun`)."""
    global _spec_quick
    if _spec_quick is None:
        _spec_quick = _SpecQuickRun()
    return _spec_quick.result()
