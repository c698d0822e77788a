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


def _json_validator(model: Any) -> Callable[[bytes], Any]:
    """pydantic-core's compiled ``validate_json`` for ``model``, called on the bytes as they are (no dict in
    between, no Python wrapper per call): a model's own validator once it is complete, else (forward references
    not resolved yet) its ``model_validate_json``, which resolves them on use."""
    if isinstance(model, type) and issubclass(model, BaseModel):
        if model.__pydantic_complete__ and model.model_validate_json.__func__ is _MODEL_VALIDATE_JSON:  # type: ignore[attr-defined]
            return model.__pydantic_validator__.validate_json  # type: ignore[return-value]
        return model.model_validate_json
    adapter = TypeAdapter(model)
    return adapter.validator.validate_json if adapter.pydantic_complete else adapter.validate_json  # type: ignore[return-value]


_MODEL_VALIDATE_JSON = BaseModel.model_validate_json.__func__  # type: ignore[attr-defined]
_DECODERS: dict[Any, Callable[[bytes], Any]] = {}
_DECODERS_MAX = 1024


def _from_json(data: bytes) -> Any:
    return pydantic_core.from_json(data) if data else None


def _raw(data: bytes) -> bytes:
    return data


def decoder(model: Any = None) -> Callable[[bytes], Any]:
    """The function :func:`decode` applies for ``model``: built once per model and kept (up to 1024 models;
    unhashable ones are built per call). It validates ``b"null"`` for an empty payload."""
    try:
        found = _DECODERS.get(model)
    except TypeError:  # an unhashable type expression
        return _build_decoder(model)
    if found is None:
        found = _build_decoder(model)
        if len(_DECODERS) < _DECODERS_MAX:
            _DECODERS[model] = found
    return found


def _build_decoder(model: Any) -> Callable[[bytes], Any]:
    if model is None:
        return _from_json
    if model is bytes:
        return _raw
    validate = _json_validator(model)
    return lambda data: validate(data or b"null")


def decode(data: bytes, model: Any = None) -> Any:
    """Parse a payload into ``model`` (a type pydantic understands) or plain JSON data."""
    return decoder(model)(data)


def _parser(req_type: Any) -> Callable[[bytes], Any]:
    if req_type is None:
        return decode
    if req_type is bytes:
        return bytes
    return _build_decoder(req_type)


def payload_renderer(ret: Any) -> Callable[[Any], bytes]:
    """How to serialise a handler's return value of type ``ret`` (its return annotation; none: as
    :func:`encode` does). A ``bytes`` value always goes out as it is."""
    if ret is None or ret is type(None) or ret is bytes:
        return encode
    adapter = TypeAdapter(ret)
    # pydantic-core's serializer itself (TypeAdapter.dump_json adds a Python call with every default spelt out)
    dump = adapter.serializer.to_json if adapter.pydantic_complete else adapter.dump_json
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


__all__ = ["decode", "decoder", "encode", "payload_parser", "payload_renderer"]
