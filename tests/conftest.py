"""Shared pytest fixtures."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

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
def management(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ManagementServer]:
    """One real ``aegis manage`` on the session's cluster, shared by the management test modules (a second
    replica, when a test needs one, signs with the same key). It reads the meta leader from the nodes'
    monitoring endpoints, as ``aegis up`` runs it."""
    server = ManagementServer(
        cluster.urls,
        tmp_path_factory.mktemp("manage"),
        AEGIS_MGMT_MONITOR_URLS=",".join(cluster.monitor_urls),
    )
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

    TLC is CPU-bound for minutes; most other tests wait on the network, elections and timers. Started as the
    session begins, TLC takes only the CPU the tests leave idle (a niced process yields to every normal one), and
    its verdicts are usually ready when tests/test_spec.py asks for them.

    One run per session. With pytest-xdist the controller starts it (it knows no item, so it goes by the paths
    given) and tells the workers where its files are: whichever worker runs tests/test_spec.py reads them. Output,
    error and exit code go to files in ``out_dir`` (``rc`` last): a pipe nobody reads would stall TLC. The
    wrapper and TLC die with the process that started them (``spawn``).
    """

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        out_dir.mkdir(parents=True, exist_ok=True)
        self.proc = spawn(
            [
                sys.executable,
                "-c",
                _RUN_TO_FILES,
                str(out_dir),
                "nice",
                "-n",
                "19",
                sys.executable,
                "-m",
                "aegis.cli",
                "spec",
                "--quick",
                "--json",
            ],
            cwd=ROOT,
        )

    @staticmethod
    def result(out_dir: Path) -> tuple[int, dict[str, Any]]:
        """Wait (bounded) for the run whose files are in ``out_dir``; its exit code and JSON report."""
        deadline = time.monotonic() + SPEC_QUICK_TIMEOUT_S
        while not (out_dir / "rc").exists():
            if time.monotonic() > deadline:
                pytest.fail(f"aegis spec --quick did not finish within {SPEC_QUICK_TIMEOUT_S:.0f}s")
            time.sleep(0.5)
        code = int((out_dir / "rc").read_text())
        out, err = (out_dir / "out").read_text(), (out_dir / "err").read_text()
        assert out.strip(), f"no JSON on stdout (exit {code}); stderr: {err[-2000:]}"
        return code, json.loads(out)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


_RUN_TO_FILES = """
import pathlib, sys
from aegis.harness.cluster.processes import spawn
d = pathlib.Path(sys.argv[1])
with open(d / "out", "wb") as out, open(d / "err", "wb") as err:
    code = spawn(sys.argv[2:], stdout=out, stderr=err).wait()
(d / "rc.tmp").write_text(str(code))
(d / "rc.tmp").rename(d / "rc")
"""
"""Run argv[2:] with stdout, stderr and then the exit code in files of the directory argv[1] (``rc`` appears
complete or not at all), the child dying with us."""

_SPEC_DIR_KEY = "aegis_spec_quick_dir"
_spec_quick: _SpecQuickRun | None = None
_spec_dir: Path | None = None


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def _start_spec_quick() -> Path:
    global _spec_quick, _spec_dir
    if _spec_dir is None:
        _spec_quick = _SpecQuickRun(Path(tempfile.mkdtemp(prefix="aegis-spec-quick-")))
        _spec_dir = _spec_quick.out_dir
    return _spec_dir


def pytest_configure(config: pytest.Config) -> None:
    """xdist controller: start the TLC quick suite when the paths given include tests/test_spec.py; a worker
    remembers where the controller's run writes. Each worker takes its own band of ports (AEGIS_PORT_RANGE, read
    by the harness and inherited by the commands the tests start), so that a worker never picks a port the other
    one's stopped node is about to take again."""
    global _spec_dir
    if _is_worker(config):
        worker = int(config.workerinput["workerid"].removeprefix("gw"))  # type: ignore[attr-defined]
        count = int(config.workerinput["workercount"])  # type: ignore[attr-defined]
        low, high = 10000, 32000
        band = (high - low) // count
        os.environ["AEGIS_PORT_RANGE"] = f"{low + worker * band}-{low + (worker + 1) * band - 1}"
        given = config.workerinput.get(_SPEC_DIR_KEY)  # type: ignore[attr-defined]
        _spec_dir = Path(given) if given else None
    elif config.getoption("numprocesses", None) and _spec_in_paths(config):
        _start_spec_quick()


def _spec_in_paths(config: pytest.Config) -> bool:
    spec = (ROOT / "tests" / "test_spec.py").resolve()
    for arg in config.args:
        path = Path(arg.split("::")[0]).resolve()
        if path == spec or (path.is_dir() and spec.is_relative_to(path)):
            return True
    return False


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist controller: tell each worker where the TLC quick suite writes (if it runs)."""
    if _spec_dir is not None:
        node.workerinput[_SPEC_DIR_KEY] = str(_spec_dir)


@pytest.hookimpl(trylast=True)  # after -k / -m deselection
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without xdist: start the TLC quick suite as soon as it is known that tests/test_spec.py will ask for it.

    tests/test_spec.py goes last (every worker collects the same order, so xdist hands it out last): by then the
    background TLC run has had the whole session, and no worker sits waiting for it while other files are left."""
    items.sort(key=lambda item: item.path.name == "test_spec.py")
    if not _is_worker(config) and any(item.path.name == "test_spec.py" for item in items):
        _start_spec_quick()


def pytest_unconfigure(config: pytest.Config) -> None:
    if _spec_quick is not None:
        _spec_quick.stop()


@pytest.fixture(scope="session")
def spec_quick_run() -> tuple[int, dict[str, Any]]:
    """Exit code and JSON report of the session's one ``aegis spec --quick --json`` run (see :class:`_SpecQuickRun`)."""
    return _SpecQuickRun.result(_spec_dir or _start_spec_quick())
