"""The SDK's error hierarchy and the codes that carry each error over the wire.

Errors travel as NATS micro (ADR-32) error headers: ``Nats-Service-Error`` holds the message and
``Nats-Service-Error-Code`` a numeric code. The codes follow HTTP where one fits, so standard
``nats micro`` tooling shows something familiar. :func:`error_from_wire` turns a header pair back into
the typed exception, so a caller can ``except NotActive`` whether the error was raised locally or remotely.
"""

from __future__ import annotations

from typing import ClassVar


class AegisError(Exception):
    """Base class of every error the SDK raises. ``code`` is the wire code."""

    code: ClassVar[int] = 500

    def __init__(self, message: str = "") -> None:
        super().__init__(message or self.__class__.__name__)
        self.message = message or self.__class__.__name__


class ConfigError(AegisError):
    """A setting is invalid. The message names the field and the bad value."""

    code = 400


class BadRequest(AegisError, ValueError):
    """The input is invalid: a request payload that does not validate, a name that is not a valid token."""

    code = 400


class NotFound(AegisError):
    """The named service definition, instance or key does not exist."""

    code = 404


class Conflict(AegisError):
    """A compare-and-set lost: the entry exists already, or changed since the revision the caller read.

    ``revision`` is the entry's current revision (0 when it does not exist), so a caller can re-read and retry;
    None when the server did not say (a clustered stream refuses a compare-and-set while another write of the
    same key is still being replicated).
    """

    code = 409

    def __init__(self, message: str = "", revision: int | None = 0) -> None:
        super().__init__(message)
        self.revision = revision


class UnknownMethod(AegisError):
    """The service has no handler for the method that was called."""

    code = 404


class RpcTimeout(AegisError):
    """No reply arrived before the call's deadline."""

    code = 408


class PayloadTooLarge(AegisError):
    """A request, reply or event is larger than the configured (or server) max payload."""

    code = 413


class ServiceUnavailable(AegisError):
    """Nobody can serve the call (no responders, or every attempt failed until the deadline)."""

    code = 503


class ConnectionRefused(ServiceUnavailable):
    """The NATS servers would not let this client in: wrong credentials (the server's "Authorization Violation")
    or no TLS session (the server's certificate not signed by ``tls_ca``, a client certificate missing or
    refused). Retrying does not help: the settings must change."""

    code = 401


class NoResponders(ServiceUnavailable):
    """No subscriber received the request, so nothing ran: retrying it elsewhere is always safe."""


class DeadlineExceeded(AegisError):
    """The handler's deadline passed before it finished; the caller has already given up."""

    code = 504


class NotActive(AegisError):
    """Sent by a standby of a single-active group: only the active instance serves this method."""

    code = 421

    def __init__(self, message: str = "", epoch: int = 0) -> None:
        super().__init__(message or f"not active (known epoch {epoch})")
        self.epoch = epoch


class LeaseLost(AegisError):
    """An exclusive call ran on an instance that lost its lease before the call finished: its outcome is
    withheld (no success goes out under a lease the instance no longer holds).

    ``epoch`` is the epoch the call was admitted under, ``known_epoch`` the newest epoch the instance knew
    when it withheld the outcome. The handler may have had effects: retry with the same call id on the new
    active (the sticky client does), whose handler must be idempotent by that key.
    """

    code = 410

    def __init__(self, message: str = "", epoch: int = 0, known_epoch: int = 0) -> None:
        super().__init__(message or f"lease of epoch {epoch} lost before the call finished")
        self.epoch = epoch
        self.known_epoch = known_epoch


class RemoteError(AegisError):
    """The handler failed on the remote side; ``code`` and ``message`` are what the service sent."""

    def __init__(self, message: str, code: int = 500) -> None:
        super().__init__(message)
        self.code = code  # type: ignore[misc]  # instance value shadows the class default

    def __repr__(self) -> str:
        return f"RemoteError(code={self.code}, message={self.message!r})"


class CommandFailed(RemoteError):
    """A command's handler reported failure."""


# Codes the client maps back to a specific type; anything else becomes RemoteError(code).
_BY_CODE: dict[int, type[AegisError]] = {
    BadRequest.code: BadRequest,
    UnknownMethod.code: UnknownMethod,
    Conflict.code: Conflict,
    PayloadTooLarge.code: PayloadTooLarge,
    DeadlineExceeded.code: DeadlineExceeded,
    NotActive.code: NotActive,
    LeaseLost.code: LeaseLost,
    ServiceUnavailable.code: ServiceUnavailable,
}


def error_from_wire(code: int, message: str, epoch: int = 0, known_epoch: int = 0) -> AegisError:
    """Rebuild the typed error from the micro error headers of a reply (``epoch``: its ``Aegis-Epoch``,
    ``known_epoch``: its ``Aegis-Known-Epoch``)."""
    cls = _BY_CODE.get(code)
    if cls is NotActive:
        return NotActive(message, epoch=epoch)
    if cls is LeaseLost:
        return LeaseLost(message, epoch=epoch, known_epoch=known_epoch)
    if cls is not None:
        return cls(message)
    return RemoteError(message, code)
