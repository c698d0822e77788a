"""``aegis instances`` and ``aegis config`` as an operator runs them, against a live service."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid

from waiting import wait_until_async

from aegis.sdk.connection import ConnectionPool
from aegis.sdk.rpc import Service

ENV = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}


async def _aegis(*args: str) -> tuple[int, str, str]:
    # A child process, awaited without blocking the loop: the service under test must keep answering.
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aegis.cli", *args, env=ENV, stdout=-1, stderr=-1
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_instances_and_config_show_a_running_service(
    pool: ConnectionPool, nats_urls: list[str]
) -> None:
    svc = Service(f"ops-{uuid.uuid4().hex[:8]}", version="3.4.5")

    @svc.rpc("ping")
    async def ping(req: None) -> str:
        return "pong"

    await svc.start(pool)
    # The first heartbeat may have failed on a loaded machine; the record appears once one lands.
    hb = svc.heartbeat
    assert hb is not None
    await wait_until_async(lambda: hb.writes, 5, "the first heartbeat to land")
    servers = ",".join(nats_urls)
    try:
        code, out, err = await _aegis("instances", svc.name, "--json", "--servers", servers)
        assert code == 0, err
        (record,) = json.loads(out)
        assert (record["instance_id"], record["status"], record["version"]) == (
            svc.instance_id,
            "ACTIVE",
            "3.4.5",
        )

        code, out, _ = await _aegis("instances", svc.name, "--servers", servers)
        assert code == 0 and svc.instance_id in out and "ACTIVE" in out and "3.4.5" in out

        code, out, err = await _aegis("config", svc.name, svc.instance_id, "--json", "--servers", servers)
        assert code == 0, err
        cfg = json.loads(out)
        assert cfg["config_hash"] == svc.config.config_hash
        assert cfg["settings"]["servers"] == {"value": nats_urls, "source": "override", "secret": False}
    finally:
        await svc.stop()


async def test_unknown_instance_and_unreachable_servers_fail_clearly(nats_urls: list[str]) -> None:
    code, _, err = await _aegis("config", "nosuch", "nobody", "--servers", ",".join(nats_urls))
    assert code == 2 and "'nobody' of 'nosuch' is not running" in err
    code, _, err = await _aegis("config", "bad.name", "x", "--servers", ",".join(nats_urls))
    assert code == 2 and "invalid service name" in err
    code, _, err = await _aegis("instances", "--servers", "nats://127.0.0.1:1")
    assert code == 2 and "no NATS server reachable at nats://127.0.0.1:1" in err
