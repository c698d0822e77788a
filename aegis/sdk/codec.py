"""Payload codec: turning payloads into bytes and back, and a handler's argument and return types into a parser
and a renderer.

The bottom of the SDK, shared by RPC (:mod:`aegis.sdk.rpc`), events (:mod:`aegis.sdk.events`) and commands
(:mod:`aegis.sdk.commands`): pydantic models and any type pydantic validates travel as JSON, ``bytes`` as they are.
It depends on pydantic only: it must not import nats or any SDK module above it (rpc, registry, events,
commands, discovery, single_active).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, get_type_hints

import pydantic_core
from pydantic import BaseModel, TypeAdapter


def encode(payload: Any) -> bytes:
    """Serialise a payload: bytes as they are, pydantic models and plain data as JSON."""
    if payload is None:
        return b""
    if isinstance(payload, bytes | bytearray | memoryview):
        return bytes(payload)
    if isinstance(payload, BaseModel):
        return payload.__pydantic_serializer__.to_json(payload)
    return pydantic_core.to_json(payload)


def decode(data: bytes, model: Any = None) -> Any:
    """Parse a payload into ``model`` (a type pydantic understands) or plain JSON data."""
    if model is None:
        return pydantic_core.from_json(data) if data else None
    if model is bytes:
        return data
    if isinstance(model, type) and issubclass(model, BaseModel):
        return model.model_validate_json(data or b"null")
    return TypeAdapter(model).validate_json(data or b"null")


def _parser(req_type: Any) -> Callable[[bytes], Any]:
    if req_type is None:
        return decode
    if req_type is bytes:
        return bytes
    validate = (
        req_type.model_validate_json
        if isinstance(req_type, type) and issubclass(req_type, BaseModel)
        else TypeAdapter(req_type).validate_json
    )
    return lambda data: validate(data or b"null")


def payload_renderer(ret: Any) -> Callable[[Any], bytes]:
    """How to serialise a handler's return value of type ``ret`` (its return annotation; none: as
    :func:`encode` does). A ``bytes`` value always goes out as it is."""
    if ret is None or ret is type(None) or ret is bytes:
        return encode
    dump = TypeAdapter(ret).dump_json
    return lambda value: value if isinstance(value, bytes) else dump(value)


def payload_parser(
    handler: Callable[..., Awaitable[Any]], model: Any = None, *, kind: str = "a handler"
) -> tuple[Callable[[bytes], Any], bool]:
    """How to turn a payload into ``handler``'s first argument, and whether the handler takes a context.

    ``model`` (or else the first parameter's annotation) picks the type: a pydantic model, any type pydantic
    validates, ``bytes`` for the raw payload, or nothing for plain JSON. Shared by RPC, events and commands.
    """
    if not inspect.iscoroutinefunction(handler):
        raise TypeError(f"{kind} must be an async function")
    params = list(inspect.signature(handler).parameters.values())
    if model is None and params:
        model = get_type_hints(handler).get(params[0].name)
    return _parser(model), len(params) >= 2


__all__ = ["decode", "encode", "payload_parser", "payload_renderer"]
