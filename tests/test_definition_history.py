"""Registry.definition_history on the real 3-node cluster: every kept revision of a definition, oldest first,
deletes included, read through the stream leader so a write just acknowledged is in it."""

from __future__ import annotations

import time
import uuid

import pytest

from aegis.sdk.connection import ConnectionPool
from aegis.sdk.errors import BadRequest, NotFound
from aegis.sdk.registry import DEFINITIONS_HISTORY, Registry
from aegis.sdk.schema import ServiceDefinition


def _name() -> str:
    return f"hist-{uuid.uuid4().hex[:8]}"


async def test_create_two_updates_and_a_delete_give_four_revisions_in_order(pool: ConnectionPool) -> None:
    reg = await Registry(pool).open()
    name = _name()
    before = time.time()
    created = await reg.create_definition(ServiceDefinition(name=name, owner="fx"))
    first = await reg.update_definition(created.value.model_copy(update={"owner": "rates"}), created.revision)
    second = await reg.update_definition(first.value.model_copy(update={"owner": "equities"}), first.revision)
    await reg.delete_definition(name, revision=second.revision)

    # read at once after the acknowledged delete: no wait, the delete must already be there
    history = await reg.definition_history(name)

    assert [h.operation for h in history] == ["PUT", "PUT", "PUT", "DEL"]
    revisions = [h.revision for h in history]
    assert revisions[:3] == [created.revision, first.revision, second.revision]
    assert revisions == sorted(revisions) and len(set(revisions)) == 4
    assert [h.value.owner if h.value else None for h in history] == ["fx", "rates", "equities", None]
    # the server's stored time: within the test's span (loopback servers share this machine's clock)
    assert all(before - 5 <= h.time <= time.time() + 5 for h in history)
    assert [h.time for h in history] == sorted(h.time for h in history)


async def test_only_the_last_kept_revisions_are_returned(pool: ConnectionPool) -> None:
    reg = await Registry(pool).open()
    name = _name()
    current = await reg.create_definition(ServiceDefinition(name=name, owner="o0"))
    for i in range(1, DEFINITIONS_HISTORY + 2):
        current = await reg.update_definition(
            current.value.model_copy(update={"owner": f"o{i}"}), current.revision
        )
    history = await reg.definition_history(name)
    assert len(history) == DEFINITIONS_HISTORY
    assert history[-1].revision == current.revision and history[-1].value == current.value
    assert [h.value.owner for h in history if h.value] == [f"o{i}" for i in range(2, DEFINITIONS_HISTORY + 2)]


async def test_unknown_name_is_not_found(pool: ConnectionPool) -> None:
    reg = await Registry(pool).open()
    with pytest.raises(NotFound, match="no definition history"):
        await reg.definition_history(_name())


async def test_invalid_name_is_a_bad_request(pool: ConnectionPool) -> None:
    reg = Registry(pool)
    for bad in ("has.dot", "has space", "star*", ">", ""):
        with pytest.raises(BadRequest, match="invalid service name"):
            await reg.definition_history(bad)
