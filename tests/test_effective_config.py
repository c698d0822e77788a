"""Effective configuration: every setting with its source, secrets redacted, fetched from a running instance."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from aegis.sdk.config import load_settings
from aegis.sdk.connection import ConnectionPool
from aegis.sdk.effective_config import REDACTED, effective_config, fetch_effective_config
from aegis.sdk.errors import BadRequest, NoResponders
from aegis.sdk.registry import Registry
from aegis.sdk.rpc import Service


async def test_running_instance_reports_values_sources_and_hash(
    nats_urls: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "svc.toml"
    config.write_text('pool_size = 3\nuser = "trader"\npassword = "s3cret-pw"\n')
    monkeypatch.setenv("AEGIS_RPC_TIMEOUT_S", "7.5")
    settings = load_settings(config, servers=nats_urls)
    pool = await ConnectionPool.connect(settings)
    svc = Service(f"cfg-{uuid.uuid4().hex[:8]}")
    await svc.start(pool)
    try:
        got = await fetch_effective_config(pool, svc.name, svc.instance_id)
        s = got.settings
        assert (s["rpc_timeout_s"].value, s["rpc_timeout_s"].source) == (7.5, "env")
        assert (s["pool_size"].value, s["pool_size"].source) == (3, "file")
        assert (s["user"].value, s["user"].source) == ("trader", "file")
        assert s["password"].value == REDACTED and s["password"].secret and s["password"].source == "file"
        assert (s["servers"].value, s["servers"].source) == (nats_urls, "override")
        assert (s["heartbeat_interval_s"].value, s["heartbeat_interval_s"].source) == (1.0, "default")
        assert set(s) == set(type(settings).model_fields)  # every setting, none left out
        assert "s3cret-pw" not in got.model_dump_json()
        record = await Registry(pool).get_instance(svc.name, svc.instance_id)
        assert got.config_hash == record.config_hash == svc.config.config_hash
    finally:
        await svc.stop()
        await pool.close()


def test_hash_follows_settings_but_not_secrets(nats_urls: list[str]) -> None:
    base = effective_config(load_settings(servers=nats_urls), "s", "i")
    assert base.config_hash == effective_config(load_settings(servers=nats_urls), "s", "i").config_hash
    other = effective_config(load_settings(servers=nats_urls, rpc_timeout_s=9), "s", "i")
    assert other.config_hash != base.config_hash
    a = effective_config(load_settings(servers=nats_urls, user="u", password="one"), "s", "i")
    b = effective_config(load_settings(servers=nats_urls, user="u", password="two"), "s", "i")
    assert a.config_hash == b.config_hash  # the hash must not let anyone test guesses of a password


def test_hash_leaves_out_what_names_the_instance_or_its_host(nats_urls: list[str], tmp_path: Path) -> None:
    """Two instances of one service on two hosts: their own connection name, user, certificate, and the servers
    in their own order; the same hash. One setting that configures the service differs: another hash."""
    files = {}
    for host in ("h1", "h2"):
        for kind in ("cert", "key", "password"):
            files[host, kind] = tmp_path / f"{host}.{kind}"
            files[host, kind].write_text("x")

    def host_config(host: str, servers: list[str], **more: object) -> str:
        settings = load_settings(
            servers=servers,
            name=f"quotes-{host}",
            user=f"svc-{host}",
            password_file=files[host, "password"],
            tls_cert=files[host, "cert"],
            tls_key=files[host, "key"],
            **more,
        )
        return effective_config(settings, "quotes", host).config_hash

    assert host_config("h1", nats_urls) == host_config("h2", list(reversed(nats_urls)))
    assert host_config("h1", nats_urls) != host_config("h2", nats_urls, rpc_timeout_s=9)
    assert host_config("h1", nats_urls) != host_config("h2", nats_urls[:2])


def test_credentials_inside_server_urls_are_redacted() -> None:
    cfg = effective_config(load_settings(servers=["nats://bob:hunter2@127.0.0.1:4222"]), "s", "i")
    assert cfg.settings["servers"].value == [f"nats://bob:{REDACTED}@127.0.0.1:4222"]
    assert cfg.settings["servers"].secret and "hunter2" not in cfg.model_dump_json()


async def test_fetching_an_unknown_instance_says_so(nats_urls: list[str]) -> None:
    pool = await ConnectionPool.connect(load_settings(servers=nats_urls))
    try:
        with pytest.raises(NoResponders, match="'nobody' of 'cfg' is not running"):
            await fetch_effective_config(pool, "cfg", "nobody", timeout=1)
        with pytest.raises(BadRequest, match="invalid instance id"):
            await fetch_effective_config(pool, "cfg", "no.body")
    finally:
        await pool.close()
