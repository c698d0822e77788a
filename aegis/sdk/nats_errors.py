"""The one translation of nats-py's exceptions (and JetStream API error answers) into the SDK's typed errors.

What an exception means depends on what the call was for, so :func:`nats_error` takes the ``target``: for a
request to a service (``"service"``), no responders means no instance listens (:class:`NoResponders`, safe to
retry elsewhere); for a JetStream API call or publish (``"jetstream"``), it means the stream is missing or has
no leader (:class:`ServiceUnavailable`). :func:`request_error` and :func:`jetstream_error` name the two targets.
This module sits just above :mod:`aegis.sdk.errors`: it imports nats-py's error classes and no other SDK module.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from nats.errors import ConnectionClosedError, NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.errors import APIError

from .errors import (
    AegisError,
    Conflict,
    NoResponders,
    PayloadTooLarge,
    RemoteError,
    RpcTimeout,
    ServiceUnavailable,
)

Target = Literal["service", "jetstream"]
"""What a failed call was for: a request to a service, or a JetStream API call (publish, stream, consumer, KV)."""

# A compare-and-set (Nats-Expected-Last-Subject-Sequence) that lost; the description ends with the current one.
_WRONG_LAST_SEQUENCE = 10071
# The same, refused while another write of the subject is still being replicated (no current sequence given).
_WRONG_LAST_SEQUENCE_IN_FLIGHT = 10164


def api_error(err: dict[str, Any], what: str) -> AegisError:
    """The typed error for a JetStream API error answer (its ``error`` object: ``code``, ``err_code``,
    ``description``)."""
    code = int(err.get("code") or 500)
    desc = str(err.get("description") or "JetStream error")
    text = f"{what}: {desc} (err_code {err.get('err_code')})"
    if code == 503:
        return ServiceUnavailable(text)
    if err.get("err_code") == _WRONG_LAST_SEQUENCE:
        found = re.search(r"(\d+)\s*$", desc)
        return Conflict(text, revision=int(found.group(1)) if found else 0)
    if err.get("err_code") == _WRONG_LAST_SEQUENCE_IN_FLIGHT:
        return Conflict(text, revision=None)
    if "size" in desc and "exceeds" in desc:
        return PayloadTooLarge(text)
    return RemoteError(text, code)


def nats_error(exc: BaseException, what: str, *, target: Target, timeout: float | None = None) -> AegisError:
    """Translate a nats-py failure of ``what`` into the SDK's typed error; SDK errors pass through.

    ``target`` says what the call was for (see the module docstring); ``timeout`` (seconds) is the budget a
    service request's timeout message names. The mapping:

    * ``NoRespondersError``: :class:`NoResponders` for a service (nobody listens, nothing ran),
      :class:`ServiceUnavailable` for JetStream (stream missing or without leader);
    * a timeout (asyncio's or nats-py's): :class:`RpcTimeout`;
    * ``ConnectionClosedError``: :class:`ServiceUnavailable`;
    * a JetStream ``APIError`` (JetStream only): as :func:`api_error`;
    * anything else: :class:`ServiceUnavailable`.
    """
    if isinstance(exc, AegisError):
        return exc
    service = target == "service"
    if isinstance(exc, NoRespondersError):
        if service:
            return NoResponders(f"no instance of {what} is listening")
        return ServiceUnavailable(f"{what}: no JetStream responder (stream missing or without leader)")
    if isinstance(exc, TimeoutError | NatsTimeoutError):
        if not service:
            return RpcTimeout(f"{what}: JetStream did not answer in time")
        if timeout is None:
            return RpcTimeout(f"{what} did not answer in time")
        return RpcTimeout(f"{what} did not answer within {timeout:.3f}s")
    if isinstance(exc, ConnectionClosedError):
        return ServiceUnavailable(
            f"connection closed; cannot call {what}" if service else f"{what}: connection closed"
        )
    if isinstance(exc, APIError) and not service:
        return api_error({"code": exc.code, "description": exc.description, "err_code": exc.err_code}, what)
    return ServiceUnavailable(f"cannot call {what}: {exc!r}" if service else f"{what}: {exc!r}")


def request_error(exc: BaseException, what: str, timeout: float) -> AegisError:
    """:func:`nats_error` for a request to a service (``what`` names the call, ``timeout`` its budget)."""
    return nats_error(exc, what, target="service", timeout=timeout)


def jetstream_error(exc: BaseException, what: str) -> AegisError:
    """:func:`nats_error` for a JetStream API call or publish (``what`` names it)."""
    return nats_error(exc, what, target="jetstream")


__all__ = ["Target", "api_error", "jetstream_error", "nats_error", "request_error"]
