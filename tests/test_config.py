"""Settings: sources, precedence, validation messages that name the field and the bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from aegis.sdk.config import AegisSettings, load_settings, setting_sources
from aegis.sdk.errors import ConfigError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("AEGIS_"):
            monkeypatch.delenv(key)


def test_defaults_are_valid() -> None:
    s = load_settings()
    assert s.servers == ["nats://127.0.0.1:4222"]
    assert s.pool_size == 2 and s.max_reconnect_attempts == -1
    assert all(v == "default" for v in setting_sources(s).values())


def test_environment_overrides_file_and_file_overrides_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "aegis.toml"
    cfg.write_text('servers = ["nats://10.0.0.1:4222"]\npool_size = 4\nrpc_timeout_s = 1.5\n')
    monkeypatch.setenv("AEGIS_CONFIG_FILE", str(cfg))
    monkeypatch.setenv("AEGIS_POOL_SIZE", "8")
    s = load_settings()
    assert s.pool_size == 8  # env wins over file
    assert s.rpc_timeout_s == 1.5  # file wins over default
    assert s.servers == ["nats://10.0.0.1:4222"]
    src = setting_sources(s)
    assert src["pool_size"] == "env" and src["rpc_timeout_s"] == "file" and src["user"] == "default"
    assert load_settings(pool_size=3).pool_size == 3  # explicit argument wins over all


def test_servers_and_method_timeouts_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AEGIS_SERVERS", "nats://127.0.0.1:1, nats://127.0.0.1:2")
    monkeypatch.setenv("AEGIS_METHOD_TIMEOUTS", "calc.add=0.25,calc=2")
    s = load_settings()
    assert s.servers == ["nats://127.0.0.1:1", "nats://127.0.0.1:2"]
    assert s.timeout_for("calc", "add") == 0.25
    assert s.timeout_for("calc", "mul") == 2.0
    assert s.timeout_for("other", "x") == s.rpc_timeout_s
    monkeypatch.setenv("AEGIS_METHOD_TIMEOUTS", '{"calc.add": 0.5}')
    assert load_settings().timeout_for("calc", "add") == 0.5
    monkeypatch.setenv("AEGIS_QUORUM_BUCKET_TAGS", "rack:a, rack:b,rack:c")
    assert load_settings().quorum_bucket_tags == ["rack:a", "rack:b", "rack:c"]


@pytest.mark.parametrize(
    ("env", "value", "field", "shown"),
    [
        ("AEGIS_POOL_SIZE", "zero", "pool_size", "'zero'"),
        ("AEGIS_POOL_SIZE", "0", "pool_size", "'0'"),
        ("AEGIS_SERVERS", "http://127.0.0.1:4222", "servers", "http://127.0.0.1:4222"),
        ("AEGIS_RPC_TIMEOUT_S", "-1", "rpc_timeout_s", "'-1'"),
        ("AEGIS_METHOD_TIMEOUTS", "calc.add=0", "method_timeouts", "calc.add"),
        ("AEGIS_METHOD_TIMEOUTS", "calc.add", "method_timeouts", "calc.add"),
        ("AEGIS_METHOD_TIMEOUTS", "{bad json", "method_timeouts", "{bad json"),
        ("AEGIS_MAX_PAYLOAD_BYTES", "10", "max_payload_bytes", "'10'"),
        ("AEGIS_CREDS_FILE", "/nonexistent/x.creds", "creds_file", "/nonexistent/x.creds"),
        ("AEGIS_QUORUM_BUCKET_TAGS", "node:n1,node:n2", "quorum_bucket_tags", "node:n2"),
        ("AEGIS_QUORUM_BUCKET_TAGS", "a,a,b", "quorum_bucket_tags", "'a', 'a', 'b'"),
    ],
)
def test_invalid_value_names_field_and_value(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, field: str, shown: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert field in str(err.value)
    assert shown in str(err.value)


def test_secrets_are_not_echoed_in_errors() -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(password="hunter2")  # password without user
    assert "hunter2" not in str(err.value)
    assert "user" in str(err.value)
    with pytest.raises(ConfigError, match="either user/password or token"):
        load_settings(user="a", token="t")


def test_bad_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("pool_size = = 3\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(bad)
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("pool_sise = 3\n")
    with pytest.raises(ConfigError, match=r"pool_sise: unknown setting .*unknown.toml"):
        load_settings(unknown)
    wrong_type = tmp_path / "wrong.toml"
    wrong_type.write_text('pool_size = "many"\n')
    with pytest.raises(ConfigError, match=r"pool_size.*'many'"):
        load_settings(wrong_type)


def test_settings_model_is_importable_for_docs() -> None:
    assert "servers" in AegisSettings.model_fields
