"""Cluster-aware NATS connections (NFR8): a pool of N connections tuned to fail over fast.

All connections get the whole server list, each rotated one further from a random start, so the connections of
one pool sit on different servers (as far as there are servers) and pools spread over the cluster: a server cut
off from the rest by a partition (alive, answering pings) then holds at most one of a pool's connections, and the
sticky client's retries and re-reads go through the others in turn. Reconnect
waits are short and pings frequent, so a dead server is left within tens of milliseconds when its socket
closes and within ``ping_interval_s * max_outstanding_pings`` when it hangs.

When a connection drops, nats-py leaves the requests that were in flight on it waiting for their full
timeout, although their replies can no longer arrive. :class:`ConnectionPool` fails them at once with
:class:`ConnectionLost`, so killing the node a client is connected to costs only the calls in flight at
that moment, not a timeout's worth of silence. nats-py has no public hook for this; we use its response
map (``_resp_map``).

The pool's connections are nats-py's client with a cheaper hot path (:class:`_Client`: header encoding and
parsing, requests, writing a lone message at once), and the RPC service reads its subscriptions' pending queue
(:class:`aegis.sdk.rpc._Inbox`). Both use nats-py internals, which is why ``pyproject.toml`` pins nats-py's minor
version; ``tests/test_rpc.py`` checks the wire bytes and the request contract against nats-py's own.

Secure clusters: with ``tls_ca`` (and ``tls_cert``/``tls_key`` for mutual TLS) the pool builds one
:class:`ssl.SSLContext` for all its connections; ``password_file`` is read once when the pool connects. nats-py
retries a refused first connect as if it were a reconnect, so a wrong password or a failed TLS handshake would
only show as a timeout: the pool stops at the first "Authorization Violation" (or once every server failed the
TLS handshake) and raises :class:`ConnectionRefused` naming the cause.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import re
import ssl
from dataclasses import dataclass, field
from typing import Any

from nats.aio.client import _HEADER_KEY_RE, _HEADER_VALUE_NEWLINES, NO_RESPONDERS_STATUS
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import AuthorizationError, BadHeaderError, ConnectionDrainingError, NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import Header
from nats.protocol.command import hpub_cmd

from .config import AegisSettings
from .errors import AegisError, ConfigError, ConnectionRefused, ServiceUnavailable

log = logging.getLogger(__name__)

STATUS_HEADER = Header.STATUS.value


class ConnectionLost(ServiceUnavailable):
    """The connection carrying a call dropped before the reply came; the call's outcome is unknown."""


@dataclass
class PoolStats:
    """Counters of connection events since the pool was opened."""

    disconnects: int = 0
    reconnects: int = 0
    failed_in_flight: int = 0
    errors: list[str] = field(default_factory=list)


class ConnectionPool:
    """``size`` NATS connections to one cluster; requests round-robin over them.

    The first connection (``primary``) carries subscriptions and JetStream; requests use all of them::

        pool = await ConnectionPool.connect(load_settings())
        msg = await pool.next().request("subject", b"x", timeout=1)
        await pool.close()
    """

    def __init__(self, settings: AegisSettings, clients: list[NatsClient], stats: PoolStats) -> None:
        self.settings = settings
        self.clients = clients
        self.stats = stats
        self._cycle = itertools.cycle(clients)
        self._js: JetStreamContext | None = None
        # Every server of a cluster announces the same limit; read it once.
        server = clients[0].max_payload or settings.max_payload_bytes
        self.max_payload = min(server, settings.max_payload_bytes)
        """The smaller of the configured limit and what the server announced."""

    @classmethod
    async def connect(cls, settings: AegisSettings, *, size: int | None = None) -> ConnectionPool:
        """Open ``size`` (default ``settings.pool_size``) connections, or raise ServiceUnavailable."""
        stats = PoolStats()
        n = size or settings.pool_size
        auth = connect_options(settings)  # once: one SSL context and one read of the password file
        clients: list[NatsClient] = []
        start = random.randrange(len(settings.servers))
        try:
            for i in range(n):
                clients.append(
                    await _connect_one(settings, stats, i, auth, first=(start + i) % len(settings.servers))
                )
        except Exception as exc:
            for nc in clients:
                await nc.close()
            if isinstance(exc, AegisError):
                raise
            raise ServiceUnavailable(f"cannot connect to NATS at {settings.servers}: {exc!r}") from exc
        return cls(settings, clients, stats)

    @property
    def primary(self) -> NatsClient:
        """The connection that carries subscriptions and JetStream."""
        return self.clients[0]

    def next(self) -> NatsClient:
        """The next connection for a request (round-robin)."""
        return next(self._cycle)

    @property
    def js(self) -> JetStreamContext:
        """JetStream context on the primary connection."""
        if self._js is None:
            self._js = self.primary.jetstream()
        return self._js

    @property
    def connected_urls(self) -> list[str]:
        """Server each connection is attached to right now ("" while reconnecting)."""
        out = []
        for nc in self.clients:
            url = nc.connected_url
            out.append(f"{url.scheme}://{url.hostname}:{url.port}" if url and nc.is_connected else "")
        return out

    async def close(self) -> None:
        """Drain nothing, close everything; idempotent."""
        for nc in self.clients:
            if not nc.is_closed:
                try:
                    await nc.close()
                except Exception:  # a close that fails leaves nothing to clean
                    log.debug("close failed", exc_info=True)


_SSL_EOF_NOISE = "returning true from eof_received() has no effect when using ssl"


class _DropSslEofNoise(logging.Filter):
    """nats-py upgrades its socket to TLS under an ``asyncio.StreamReaderProtocol`` made before the upgrade, so
    every TLS connection that the server closes makes asyncio warn that its ``eof_received`` answer is ignored.
    The warning is harmless (the connection is gone either way) and would print on every close: drop that one."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != _SSL_EOF_NOISE


_ssl_noise_filter = _DropSslEofNoise()


def tls_context(settings: AegisSettings) -> ssl.SSLContext | None:
    """The client TLS context of ``settings`` (None without ``tls_ca`` and client certificate: nats-py then uses
    the system's CAs for a server that requires TLS). Raises ConfigError for a file that is not valid PEM."""
    if settings.tls_ca is None and settings.tls_cert is None:
        return None
    logging.getLogger("asyncio").addFilter(_ssl_noise_filter)  # the same object: added once
    try:
        ctx = ssl.create_default_context(cafile=str(settings.tls_ca) if settings.tls_ca else None)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"tls_ca: cannot load CA certificates from {str(settings.tls_ca)!r}: {exc}"
        ) from None
    if settings.tls_cert is not None and settings.tls_key is not None:
        try:
            ctx.load_cert_chain(str(settings.tls_cert), str(settings.tls_key))
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(
                f"tls_cert/tls_key: cannot load the client certificate {str(settings.tls_cert)!r} with key"
                f" {str(settings.tls_key)!r}: {exc}"
            ) from None
    return ctx


def _password(settings: AegisSettings) -> str | None:
    if settings.password is not None:
        return settings.password.get_secret_value()
    if settings.password_file is None:
        return None
    try:
        text = settings.password_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"password_file: cannot read {str(settings.password_file)!r}: {exc}") from None
    password = text.strip("\r\n")
    if not password:
        raise ConfigError(f"password_file: {str(settings.password_file)!r} is empty")
    return password


def connect_options(settings: AegisSettings) -> dict[str, Any]:
    """The authentication and TLS keyword arguments of ``nats.connect`` for ``settings`` (user, password,
    token, credentials file, TLS context, inbox prefix): for code that must open a raw nats-py connection
    with the same identity as the pool. Holds secrets: never log it."""
    out: dict[str, Any] = {}
    if settings.user is not None:
        out["user"] = settings.user
        out["password"] = _password(settings)
    if settings.token is not None:
        out["token"] = settings.token.get_secret_value()
    if settings.creds_file is not None:
        out["user_credentials"] = str(settings.creds_file)
    ctx = tls_context(settings)
    if ctx is not None:
        out["tls"] = ctx
    if settings.inbox_prefix != "_INBOX":
        out["inbox_prefix"] = settings.inbox_prefix
    return out


def _refusal(exc: BaseException) -> str | None:
    """Why the server refused a first connect, when retrying cannot help; None for anything else."""
    text = str(exc)
    if isinstance(exc, AuthorizationError) or "authorization violation" in text.lower():
        return (
            "the server answered 'Authorization Violation': wrong user/password, token or credentials"
            " (check user and password/password_file)"
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS: the server's certificate was not accepted ({exc.verify_message}); set tls_ca to its CA"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed ({exc}); check tls_ca, tls_cert and tls_key"
    return None


_NOT_A_HEADER_NAME = re.compile(r"\s")
"""Whitespace inside a header name (``str.isspace``'s characters): such a line is skipped, as nats-py does."""


_GOOD_NAMES: set[str] = set()
"""Header names already checked against nats-py's rule (bounded: names are few)."""


def header_block(headers: dict[str, Any]) -> bytes:
    """The NATS header block of ``headers``, byte for byte what nats-py 2.16 sends: names and values stripped,
    empty names skipped, a name outside the token characters refused (``BadHeaderError``), CR and LF in values
    turned into spaces."""
    parts = ["NATS/1.0\r\n"]
    for k, v in headers.items():
        name = k.strip()
        if not name:
            continue
        if name not in _GOOD_NAMES:
            if not _HEADER_KEY_RE.fullmatch(name):
                raise BadHeaderError(name)
            if len(_GOOD_NAMES) < 1024:
                _GOOD_NAMES.add(name)
        parts.append(f"{name}: {v.strip().translate(_HEADER_VALUE_NEWLINES)}\r\n")
    parts.append("\r\n")
    return "".join(parts).encode()


class _Client(NatsClient):
    """nats-py's client with a cheaper hot path (the SDK's connections only): header encoding
    (:func:`header_block`) and parsing, :meth:`request`, and :meth:`write_now` for the last message of a burst.

    nats-py 2.16 checks every header name for whitespace with a Python generator over its characters, about
    1 us of the responder's CPU per call for the one deadline header an RPC carries; one compiled regex search
    does the same check. Everything else is nats-py's: the same dict, the same lines skipped
    (``tests/test_rpc.py`` parses the same blocks with both).
    """

    _request_seq = 0
    _resp_prefix = ""

    async def request(
        self,
        subject: str,
        payload: bytes = b"",
        timeout: float | None = 0.5,
        old_style: bool = False,
        headers: dict[str, Any] | None = None,
    ) -> Msg:
        """nats-py's request (new style: one wildcard inbox subscription per connection), for less CPU per call.

        Same contract: the reply :class:`~nats.aio.msg.Msg`; ``nats.errors.TimeoutError`` after ``timeout``,
        ``NoRespondersError`` on the server's 503. What differs is inside: the reply token is a counter
        (nats-py draws a NUID and two random bytes from ``os.urandom`` per request; the connection's inbox
        prefix is already a random NUID, and a counter is unique among its requests), the timeout is a loop
        timer instead of ``asyncio.wait_for``, and the response-map entry is removed in ``finally`` instead of
        by a done-callback (what that buys: ``reports/rpc-overhead.md``, measured by taking it out). The
        response map (``_resp_map``) and nats-py's reply callback are nats-py's own, so a lost connection fails
        these requests like nats-py's (see :class:`ConnectionPool`).
        """
        if old_style:
            return await super().request(subject, payload, timeout=timeout, old_style=True, headers=headers)
        if self.is_draining_pubs:
            raise ConnectionDrainingError
        if not self._resp_prefix:
            if not self._resp_sub_prefix:
                await self._init_request_sub()
            self._resp_prefix = self._resp_sub_prefix.decode()
        self._request_seq += 1
        token = f"{self._request_seq:x}"
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Msg] = loop.create_future()
        resp_map = self._resp_map
        resp_map[token] = future
        timer = None if timeout is None else loop.call_later(timeout, _time_out, future)
        try:
            await self.publish(subject, payload, reply=self._resp_prefix + token, headers=headers)
            msg = await future
        finally:
            if timer is not None:
                timer.cancel()
            resp_map.pop(token, None)
        if msg.headers and msg.headers.get(STATUS_HEADER) == NO_RESPONDERS_STATUS:
            raise NoRespondersError
        return msg

    def write_now(self) -> None:
        """Hand the buffered outgoing bytes to the socket now instead of on the flusher task's next turn.

        For the last message of a burst: a lone request or reply then goes out without waiting for a task
        switch (the flusher's wake-up) and the rest of its sender's step. Messages sent back to back are still
        batched: callers call this only after the last of them. Only while connected (while reconnecting,
        nats-py keeps the buffer for the new connection) and while the socket has taken everything written
        before (an empty transport buffer): otherwise the bytes wait for the flusher, whose ``drain`` is
        nats-py's back-pressure.
        """
        if not self._pending_data_size or self._status != NatsClient.CONNECTED:
            return
        writer = getattr(self._transport, "_io_writer", None)  # nats-py's TCP/TLS transport; not websocket
        if writer is None or writer.transport.get_write_buffer_size():
            return
        writer.writelines(self._pending)
        self._pending = []
        self._pending_data_size = 0

    async def _send_publish(
        self, subject: str, reply: str, payload: bytes, payload_size: int, headers: dict[str, Any] | None
    ) -> None:
        if not headers or not subject:  # nats-py's own path: no headers, or its errors
            await super()._send_publish(subject, reply, payload, payload_size, headers)
        else:
            # nats-py's HPUB, with the header block built in one string (about 1 us less per call than nats-py's
            # bytearray loop with a regex match per name; tests/test_rpc.py checks the bytes are the same).
            cmd = hpub_cmd(subject, reply, header_block(headers), payload)
            self.stats["out_msgs"] += 1
            self.stats["out_bytes"] += payload_size
            await self._send_command(cmd)
            if self._flush_queue is not None and self._flush_queue.empty():
                await self._flush_pending()
        if reply and len(self._resp_map or ()) <= 1:  # a request with no other in flight goes out at once
            self.write_now()

    @staticmethod
    def _parse_header_lines(raw: bytes) -> dict[str, str]:
        out: dict[str, str] = {}
        for line in raw.split(b"\r\n"):
            name, sep, value = line.partition(b":")
            if not sep:
                continue
            try:
                key = name.strip().decode("ascii")
            except UnicodeDecodeError:
                continue
            if _NOT_A_HEADER_NAME.search(key):
                continue
            out[key] = value.strip().decode("utf-8", "replace")
        return out


def _time_out(future: asyncio.Future[Msg]) -> None:
    if not future.done():
        future.set_exception(NatsTimeoutError())


async def _connect_one(
    settings: AegisSettings, stats: PoolStats, index: int, auth: dict[str, Any] | None = None, first: int = 0
) -> NatsClient:
    """Connection ``index`` of a pool, trying ``settings.servers`` from the ``first`` on, in order."""
    nc = _Client()
    connecting = True
    # The first refusal that retrying cannot cure; set while the first connect runs.
    refused: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    tls_failures = 0

    async def disconnected() -> None:
        stats.disconnects += 1
        # Replies to requests sent on this connection can no longer arrive: fail them now.
        lost = ConnectionLost("connection to NATS lost while the call was in flight; outcome unknown")
        for fut in list(nc._resp_map.values()):
            if not fut.done():
                fut.set_exception(lost)
                stats.failed_in_flight += 1

    async def reconnected() -> None:
        stats.reconnects += 1

    async def error(exc: Exception) -> None:
        nonlocal tls_failures
        if len(stats.errors) < 100:
            stats.errors.append(repr(exc))
        log.debug("nats error on connection %d: %r", index, exc)
        reason = _refusal(exc) if connecting else None
        if reason is None or refused.done():
            return
        if isinstance(exc, ssl.SSLError) and not isinstance(exc, ssl.SSLCertVerificationError):
            # A handshake cut short can be a node going down: refuse only once every server failed it.
            tls_failures += 1
            if tls_failures < len(settings.servers):
                return
        refused.set_result(reason)

    kwargs = dict(
        servers=[*settings.servers[first:], *settings.servers[:first]],
        dont_randomize=True,
        name=f"{settings.name or 'aegis'}#{index}",
        connect_timeout=settings.connect_timeout_s,
        reconnect_time_wait=settings.reconnect_time_wait_s,
        max_reconnect_attempts=settings.max_reconnect_attempts,
        ping_interval=settings.ping_interval_s,
        max_outstanding_pings=settings.max_outstanding_pings,
        disconnected_cb=disconnected,
        reconnected_cb=reconnected,
        error_cb=error,
    )
    kwargs.update(connect_options(settings) if auth is None else auth)
    # nats-py treats the first connect like a reconnect: with max_reconnect_attempts=-1 it would retry
    # unreachable servers forever. Give every server one connect timeout (twice over), then fail.
    first_connect = settings.connect_timeout_s * 2 * len(settings.servers) + settings.reconnect_time_wait_s
    task = asyncio.ensure_future(nc.connect(**kwargs))
    try:
        done, _ = await asyncio.wait(
            {task, refused}, timeout=first_connect, return_when=asyncio.FIRST_COMPLETED
        )
    except BaseException:
        task.cancel()
        await nc.close()
        raise
    finally:
        connecting = False
    if task in done:
        task.result()  # what nats-py raised, if it gave up by itself
        if not refused.done():
            refused.cancel()
        return nc
    task.cancel()
    try:
        await task
    except BaseException:  # noqa: BLE001 - cancelled on purpose; its outcome is the refusal or the timeout
        pass
    try:
        await nc.close()
    except Exception:  # a connect cut short may leave nothing to close
        log.debug("close after a failed connect failed", exc_info=True)
    where = ", ".join(settings.servers)
    if refused.done() and not refused.cancelled():
        raise ConnectionRefused(f"NATS at {where} refused the connection: {refused.result()}")
    raise ServiceUnavailable(f"no NATS server reachable at {where} within {first_connect:.1f}s")


async def connect(settings: AegisSettings | None = None, **overrides: object) -> ConnectionPool:
    """Shortcut: load settings (env/file + overrides) and open a pool."""
    from .config import load_settings

    return await ConnectionPool.connect(settings or load_settings(**overrides))


__all__ = ["ConnectionLost", "ConnectionPool", "PoolStats", "connect", "connect_options", "tls_context"]
