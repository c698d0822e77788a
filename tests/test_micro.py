"""NATS micro (ADR-32) discovery of Aegis RPC services on the real 3-node cluster.

Replies are parsed with nats-py's own micro types (``ServicePing``/``ServiceInfo``/``ServiceStats``), which
is what proves standard tooling can read them.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.micro.service import (
    INFO_RESPONSE_TYPE,
    PING_RESPONSE_TYPE,
    STATS_RESPONSE_TYPE,
    ServiceInfo,
    ServicePing,
    ServiceStats,
)

from aegis.sdk import wire
from aegis.sdk.connection import ConnectionPool
from aegis.sdk.errors import BadRequest
from aegis.sdk.micro import MICRO_PREFIX, micro_subject, rfc3339_utc
from aegis.sdk.rpc import RpcClient, Service

VERBS = ("PING", "INFO", "STATS")
TYPES = {"PING": PING_RESPONSE_TYPE, "INFO": INFO_RESPONSE_TYPE, "STATS": STATS_RESPONSE_TYPE}
PARSERS: dict[str, Callable[[dict], object]] = {
    "PING": ServicePing.from_dict,
    "INFO": ServiceInfo.from_dict,
    "STATS": ServiceStats.from_dict,
}


def _name() -> str:
    return f"micro-{uuid.uuid4().hex[:8]}"


class Running:
    """A started service and the micro responder that ``Service.start`` started for it."""

    def __init__(self, svc: Service) -> None:
        self.svc = svc
        self.micro = svc._micro

    async def stop(self) -> None:
        await self.svc.stop(grace_s=1.0)


async def started_service(pool: ConnectionPool, svc: Service) -> Running:
    await svc.start(pool)
    assert svc._micro.running  # every Aegis service answers $SRV requests
    return Running(svc)


def _calc(name: str | None = None, **kwargs: object) -> Service:
    svc = Service(name or _name(), version="1.2.3", **kwargs)  # type: ignore[arg-type]

    @svc.rpc("add")
    async def add(req: dict) -> int:
        await asyncio.sleep(0.002)  # so processing time is clearly above the 1 us floor
        return req["a"] + req["b"]

    @svc.rpc("fail")
    async def fail(req: dict) -> int:
        raise BadRequest(f"no good: {req['n']}")

    return svc


async def collect(
    nc: NatsClient,
    subject: str,
    *,
    window: float = 0.3,
    until: Callable[[list[dict]], bool] | None = None,
) -> list[dict]:
    """Publish a request on ``subject`` and gather every JSON reply for ``window`` seconds.

    Stops early once ``until(replies)`` holds. Discovery is scatter-gather: one request, many answers.
    """
    replies: list[dict] = []
    got = asyncio.Event()

    async def on_reply(msg: Msg) -> None:
        replies.append(json.loads(msg.data))
        if until is not None and until(replies):
            got.set()

    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox, cb=on_reply)
    try:
        await nc.publish(subject, b"", reply=inbox)
        try:
            await asyncio.wait_for(got.wait(), window)
        except TimeoutError:
            pass
    finally:
        await sub.unsubscribe()
    return replies


def _has_id(instance_id: str) -> Callable[[list[dict]], bool]:
    return lambda replies: any(r.get("id") == instance_id for r in replies)


# --- Pure helpers -------------------------------------------------------------------------------------------


def test_control_subjects_and_time_format() -> None:
    assert MICRO_PREFIX == "$SRV"
    assert micro_subject("PING") == "$SRV.PING"
    assert micro_subject("INFO", "calc") == "$SRV.INFO.calc"
    assert micro_subject("STATS", "calc", "abc") == "$SRV.STATS.calc.abc"
    with pytest.raises(ValueError):
        micro_subject("PING", None, "abc")
    assert rfc3339_utc(0) == "1970-01-01T00:00:00.000000Z"
    assert rfc3339_utc(1_700_000_000.25) == "2023-11-14T22:13:20.250000Z"


# --- On the cluster -------------------------------------------------------------------------------------


async def test_all_verbs_answer_on_all_three_subject_forms(pool: ConnectionPool) -> None:
    run = await started_service(pool, _calc())
    svc = run.svc
    try:
        nc = pool.primary
        checks = []
        for verb in VERBS:
            for subject in (
                f"$SRV.{verb}",
                f"$SRV.{verb}.{svc.name}",
                f"$SRV.{verb}.{svc.name}.{svc.instance_id}",
            ):
                checks.append((verb, subject))
        # The plain subject reaches every micro service on the shared cluster: wait for ours among them.
        results = await asyncio.gather(
            *(collect(nc, subject, window=2.0, until=_has_id(svc.instance_id)) for _, subject in checks)
        )
        for (verb, subject), replies in zip(checks, results, strict=True):
            mine = [r for r in replies if r.get("id") == svc.instance_id]
            assert len(mine) == 1, (subject, replies)
            body = mine[0]
            assert body["type"] == TYPES[verb], subject
            assert body["name"] == svc.name
            assert body["version"] == "1.2.3"
            assert body["metadata"]["aegis.instance_subject_prefix"] == (
                f"{wire.DIRECT_PREFIX}.{svc.name}.{svc.instance_id}"
            )
            PARSERS[verb](body)  # nats-py's micro types accept it
    finally:
        await run.stop()


async def test_replies_parse_as_nats_py_micro_types(pool: ConnectionPool) -> None:
    svc = _calc()
    svc.description = "adds numbers"  # type: ignore[attr-defined]
    before = datetime.now(UTC).replace(tzinfo=None)
    run = await started_service(pool, svc)
    try:
        nc = pool.primary
        base = f"{svc.name}.{svc.instance_id}"

        ping_body = json.loads((await nc.request(f"$SRV.PING.{base}", b"", timeout=2)).data)
        ping = ServicePing.from_dict(ping_body)
        assert (ping.id, ping.name, ping.version) == (svc.instance_id, svc.name, "1.2.3")
        assert ping.metadata["aegis.sdk"] == "python"
        assert ping.to_dict() == ping_body  # nothing nats-py doesn't know, nothing missing

        info_body = json.loads((await nc.request(f"$SRV.INFO.{base}", b"", timeout=2)).data)
        info = ServiceInfo.from_dict(info_body)
        assert info.type == INFO_RESPONSE_TYPE
        assert info.description == "adds numbers"
        assert info.to_dict() == info_body
        by_name = {e.name: e for e in info.endpoints}
        assert set(by_name) == {"add", "fail"}
        add = by_name["add"]
        assert add.subject == wire.rpc_subject(svc.name, "add")
        assert add.queue_group == svc.name
        assert add.metadata["aegis.instance_subject"] == wire.instance_rpc_subject(
            svc.name, svc.instance_id, "add"
        )
        for ep in info.endpoints:
            assert all(isinstance(k, str) and isinstance(v, str) for k, v in ep.metadata.items())
        assert all(isinstance(v, str) for v in info.metadata.values())

        stats_body = json.loads((await nc.request(f"$SRV.STATS.{base}", b"", timeout=2)).data)
        stats = ServiceStats.from_dict(stats_body)
        assert stats.type == STATS_RESPONSE_TYPE
        # nats-py parses "started" as naive UTC; the metrics were created just before start.
        assert before.timestamp() - 5 <= stats.started.timestamp() <= time.time() + 5
        assert abs((stats.started - before).total_seconds()) < 5
        assert {e.name for e in stats.endpoints} == {"add", "fail"}
        for e in stats.endpoints:
            assert (e.num_requests, e.num_errors, e.processing_time, e.average_processing_time) == (
                0,
                0,
                0,
                0,
            )
            assert e.last_error == ""
            assert e.queue_group == svc.name
            assert isinstance(e.data, dict)
    finally:
        await run.stop()


async def test_stats_follow_real_calls(pool: ConnectionPool) -> None:
    run = await started_service(pool, _calc())
    svc = run.svc
    try:
        client = RpcClient(pool)
        for i in range(5):
            assert await client.call(svc.name, "add", {"a": i, "b": 1}, timeout=2) == i + 1
        for n in range(2):
            with pytest.raises(BadRequest):
                await client.call(svc.name, "fail", {"n": n}, timeout=2)

        msg = await pool.primary.request(f"$SRV.STATS.{svc.name}.{svc.instance_id}", b"", timeout=2)
        stats = ServiceStats.from_dict(json.loads(msg.data))
        by_name = {e.name: e for e in stats.endpoints}
        add, fail = by_name["add"], by_name["fail"]

        assert (add.num_requests, add.num_errors, add.last_error) == (5, 0, "")
        # Nanoseconds: each call sleeps 2 ms, so the total is at least 10 ms and well under a minute.
        assert 10_000_000 <= add.processing_time < 60_000_000_000
        assert add.average_processing_time == add.processing_time // add.num_requests
        assert add.average_processing_time >= 2_000_000
        assert add.data["p99_ms"] >= 2.0

        assert (fail.num_requests, fail.num_errors) == (2, 2)
        assert fail.last_error == "no good: 1"
        assert fail.processing_time > 0
        assert fail.average_processing_time == fail.processing_time // 2

        # Started does not move between requests.
        again = await pool.primary.request(f"$SRV.STATS.{svc.name}.{svc.instance_id}", b"", timeout=2)
        assert json.loads(again.data)["started"] == json.loads(msg.data)["started"]
    finally:
        await run.stop()


async def test_every_instance_answers_its_name_and_only_one_its_id(pool: ConnectionPool) -> None:
    name = _name()
    first = await started_service(pool, _calc(name))
    second = await started_service(pool, _calc(name))
    other = await started_service(pool, _calc())
    try:
        nc = pool.primary
        ids = {first.svc.instance_id, second.svc.instance_id}
        assert len(ids) == 2

        replies = await collect(nc, f"$SRV.PING.{name}")
        assert sorted(r["id"] for r in replies) == sorted(ids)
        assert {r["name"] for r in replies} == {name}

        one = await collect(nc, f"$SRV.PING.{name}.{first.svc.instance_id}")
        assert [r["id"] for r in one] == [first.svc.instance_id]

        stats = await collect(nc, f"$SRV.STATS.{name}")
        assert sorted(r["id"] for r in stats) == sorted(ids)

        # Another service answers its own name, not ours, and ours not its.
        theirs = await collect(nc, f"$SRV.PING.{other.svc.name}")
        assert [r["id"] for r in theirs] == [other.svc.instance_id]
        assert await collect(nc, f"$SRV.PING.{name}.{other.svc.instance_id}") == []

        # The all-services subject reaches all three.
        everyone = await collect(
            nc,
            "$SRV.PING",
            window=2.0,
            until=lambda rs: ids | {other.svc.instance_id} <= {r["id"] for r in rs},
        )
        assert ids | {other.svc.instance_id} <= {r["id"] for r in everyone}
    finally:
        for run in (first, second, other):
            await run.stop()


async def test_answers_through_every_node(pool: ConnectionPool, nats_urls: list[str]) -> None:
    """Tooling may connect to any node of the cluster; interest propagates over the routes."""
    run = await started_service(pool, _calc())
    svc = run.svc
    clients = [await nats.connect(url) for url in nats_urls]
    try:
        subject = f"$SRV.INFO.{svc.name}.{svc.instance_id}"
        for nc in clients:
            deadline = time.monotonic() + 5
            while True:
                try:
                    msg = await nc.request(subject, b"", timeout=1)
                    break
                except NoRespondersError:  # route interest not there yet
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.02)
            assert ServiceInfo.from_dict(json.loads(msg.data)).id == svc.instance_id
    finally:
        for nc in clients:
            await nc.close()
        await run.stop()


async def test_stop_silences_the_responder(pool: ConnectionPool) -> None:
    run = await started_service(pool, _calc())
    svc = run.svc
    nc = pool.primary
    try:
        await nc.request(f"$SRV.PING.{svc.name}.{svc.instance_id}", b"", timeout=2)
        await run.micro.stop()
        assert not run.micro.running
        await run.micro.stop()  # twice is fine
        for verb in VERBS:
            for subject in (f"$SRV.{verb}.{svc.name}", f"$SRV.{verb}.{svc.name}.{svc.instance_id}"):
                with pytest.raises(NoRespondersError):
                    await nc.request(subject, b"", timeout=2)
        # RPC itself keeps working: the responder is only the discovery side.
        assert await RpcClient(pool).call(svc.name, "add", {"a": 1, "b": 2}, timeout=2) == 3
    finally:
        await run.stop()
