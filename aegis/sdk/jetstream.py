"""JetStream plumbing shared by events, commands and the registry: retried publishes and stream management
that ride out leader elections (errors are typed by :mod:`aegis.sdk.nats_errors`)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from nats.aio.client import Client as NatsClient
from nats.errors import ConnectionClosedError, NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import api
from nats.js.errors import APIError
from nats.js.errors import ServiceUnavailableError as JsServiceUnavailableError

from .connection import ConnectionPool
from .errors import RpcTimeout, ServiceUnavailable
from .nats_errors import api_error, jetstream_error

log = logging.getLogger(__name__)

T = TypeVar("T")

# One attempt of a JetStream publish gets at most this long; a retry (same Nats-Msg-Id, so the stream
# stores the event once) then rides out a stream-leader election, which takes 4-9 s in nats-server.
_ATTEMPT_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class PublishAck:
    """The stream's acknowledgement of a stored message."""

    stream: str
    seq: int
    duplicate: bool = False
    """True when the stream already had a message with this id (``Nats-Msg-Id``) and stored nothing."""


_MSG_ID_IN_PROCESS = 10158
"""JetStream error code of a publish whose ``Nats-Msg-Id`` belongs to a write the stream has proposed but not
stored yet (an earlier attempt waiting for its quorum, e.g. a leader cut off from its followers)."""


async def js_publish(
    pool: ConnectionPool,
    subject: str,
    data: bytes,
    headers: dict[str, str],
    timeout: float,
    what: str,
    nc: NatsClient | None = None,
) -> PublishAck:
    """Store one message in JetStream and wait for the stream's ack, as a typed-error call.

    ``headers`` must carry ``Nats-Msg-Id``: failed attempts are retried with it until ``timeout``,
    and the stream's de-duplication makes the retries safe (a retry while the first attempt still waits
    for its quorum is answered "in process" and asked again; once stored, the stream acknowledges it as a
    duplicate with its sequence). Uses ``nc``, else the pool's connections
    round-robin.
    """
    deadline = time.monotonic() + timeout
    attempt = 0
    while True:
        remaining = deadline - time.monotonic()
        failure: BaseException
        try:
            msg = await (nc or pool.next()).request(
                subject, data, timeout=min(remaining, _ATTEMPT_TIMEOUT_S), headers=headers
            )
        except (NoRespondersError, TimeoutError, NatsTimeoutError, ServiceUnavailable) as exc:
            # ServiceUnavailable covers ConnectionLost: the connection dropped with the request in flight.
            failure = exc
        except ConnectionClosedError as exc:
            raise jetstream_error(exc, f"publish to {subject}") from None
        else:
            resp = json.loads(msg.data)
            err = resp.get("error")
            if err is None:
                return PublishAck(resp["stream"], resp["seq"], resp.get("duplicate", False))
            failure = api_error(err, what)
            if err.get("err_code") == _MSG_ID_IN_PROCESS:
                failure = TimeoutError()  # an earlier attempt waits for its quorum: ask again for its ack
            elif not isinstance(failure, ServiceUnavailable):  # 503: JetStream briefly unavailable
                raise failure
        attempt += 1
        pause = min(0.5, 0.02 * 2**attempt)
        if deadline - time.monotonic() <= pause:
            error = jetstream_error(failure, f"publish to {subject}")
            if isinstance(error, RpcTimeout):
                error = RpcTimeout(
                    f"publish to {subject} not acknowledged within {timeout:.3f}s; it may or may not be"
                    " stored: publish again with the same event id to be sure"
                )
            raise error from None
        await asyncio.sleep(pause)


_TRANSIENT = (NoRespondersError, TimeoutError, NatsTimeoutError, JsServiceUnavailableError)
_TRANSIENT_CODES = frozenset({10005})
"""JetStream API error codes that pass by themselves: 10005, no suitable peers for placement, which a cluster
answers for several seconds after a node came back while its meta state still lists it offline."""
STREAM_NOT_FOUND = 10059


async def retry_transient(op: Callable[[], Awaitable[T]], what: str, budget: float = 10.0) -> T:
    """Run a JetStream API call, retrying while JetStream is briefly unavailable.

    During a meta- or stream-leader election (seconds, see NATS_NOTES) the API answers 503 "JetStream
    system temporarily unavailable", times out or has no responders, and right after a node restart it may
    refuse a replicated stream's placement (10005); management calls are idempotent, so they are retried for
    up to ``budget`` seconds, then raise the typed error. Other errors pass as they are.
    """
    deadline = time.monotonic() + budget
    pause = 0.05
    while True:
        try:
            return await op()
        except (*_TRANSIENT, APIError) as exc:
            transient = isinstance(exc, _TRANSIENT) or getattr(exc, "err_code", None) in _TRANSIENT_CODES
            if not transient:  # e.g. KeyNotFoundError, which nats-py raises without an err_code
                raise
            if time.monotonic() + pause >= deadline:
                raise jetstream_error(exc, what) from exc
            log.debug("%s: %r; retrying", what, exc)
            await asyncio.sleep(pause)
            pause = min(1.0, pause * 2)


def default_replicas(pool: ConnectionPool, wanted: int | None = None) -> int:
    """Replicas for a stream: ``wanted``, else min(3, cluster size) read from the server's INFO."""
    if wanted is not None:
        return wanted
    info = getattr(pool.primary, "_server_info", None) or {}
    if not info.get("cluster"):
        return 1
    return max(1, min(3, len(info.get("connect_urls") or [])))


async def ensure_stream(pool: ConnectionPool, config: api.StreamConfig) -> api.StreamInfo:
    """Create the stream, or bring an existing one to ``config``; idempotent and safe to race.

    A server without clustering refuses replicas > 1: the stream is then created with one replica.
    """
    js = pool.js
    what = f"create stream {config.name}"
    try:
        try:
            info = await retry_transient(lambda: js.add_stream(config), what)
        except APIError as exc:
            if exc.err_code == 10074 and (config.num_replicas or 1) > 1:  # replicas > 1 need a cluster
                config.num_replicas = 1
                info = await retry_transient(lambda: js.add_stream(config), what)
            elif exc.err_code != 10058:  # 10058: name in use with a different configuration
                raise
            else:
                info = await retry_transient(lambda: js.update_stream(config), what)
        return await _wait_stream_leader(pool, info)
    except Exception as exc:
        raise jetstream_error(exc, what) from exc


async def _wait_stream_leader(
    pool: ConnectionPool, info: api.StreamInfo, budget: float = 10.0
) -> api.StreamInfo:
    """Wait until a replicated stream has elected its leader: before that, publishes get no answer. Right after
    the create, a server that has not applied the assignment yet answers "stream not found" (10059): that too
    is waited out, within ``budget``."""
    deadline = time.monotonic() + budget
    name = info.config.name
    while info.cluster is not None and not info.cluster.leader and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        try:
            info = await retry_transient(lambda: pool.js.stream_info(name), f"stream info {name}")
        except APIError as exc:
            if exc.err_code != STREAM_NOT_FOUND or time.monotonic() >= deadline:
                raise
    return info
