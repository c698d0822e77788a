"""An instance's effective configuration (FR6): every setting, where its value came from, secrets redacted.

Each running :class:`~aegis.sdk.rpc.Service` answers ``aegis.ctl.<service>.<instance_id>.config`` with an
:class:`~aegis.sdk.schema.EffectiveConfig`; :func:`fetch_effective_config` asks for it by instance id::

    cfg = await fetch_effective_config(pool, "quotes", "quotes-1")
    cfg.settings["rpc_timeout_s"]        # SettingValue(value=5.0, source='env', secret=False)

The same document, hashed, is the ``config_hash`` of the instance's registry record, so instances of one
service that run with different settings stand out (the dashboard marks them as drift). Secret values (passwords,
tokens, credentials in server URLs) are neither shown nor hashed: the hash changes with every other setting, not
with a rotated password. Nor are the settings that name one instance or its host (:data:`PER_INSTANCE`: its
connection name, its NATS user and certificate), and the server list is hashed as a set (each host lists its own
node first): instances of one service that agree on everything else have one hash.
"""

from __future__ import annotations

import hashlib
import json
from urllib.parse import urlsplit, urlunsplit

from nats.errors import NoRespondersError
from pydantic import SecretStr

from . import wire
from .config import AegisSettings, setting_sources
from .connection import ConnectionPool
from .errors import NoResponders
from .nats_errors import request_error
from .schema import EffectiveConfig, SettingValue

REDACTED = "***"
PER_INSTANCE: frozenset[str] = frozenset(
    {"name", "user", "creds_file", "password_file", "tls_cert", "tls_key"}
)
"""Settings that identify an instance or its host rather than configure the service: shown, but not hashed."""


def _redact_url(url: str) -> tuple[str, bool]:
    parts = urlsplit(url)
    if parts.password is None:
        return url, False
    host = parts.hostname or ""
    netloc = f"{parts.username}:{REDACTED}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc)), True


def effective_config(settings: AegisSettings, service: str, instance_id: str) -> EffectiveConfig:
    """The redacted settings of one instance with their sources and hash."""
    sources = setting_sources(settings)
    values: dict[str, SettingValue] = {}
    for name, raw in settings.model_dump(mode="json").items():
        secret = isinstance(getattr(settings, name), SecretStr)
        if secret:
            raw = REDACTED
        elif name == "servers":
            redacted = [_redact_url(url) for url in raw]
            raw, secret = [url for url, _ in redacted], any(hidden for _, hidden in redacted)
        values[name] = SettingValue(value=raw, source=sources[name], secret=secret)
    hashed = {k: v.value for k, v in values.items() if k not in PER_INSTANCE}
    hashed["servers"] = sorted(hashed["servers"])
    canonical = json.dumps(hashed, sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    return EffectiveConfig(service=service, instance_id=instance_id, config_hash=digest, settings=values)


async def fetch_effective_config(
    pool: ConnectionPool, service: str, instance_id: str, *, timeout: float = 2.0
) -> EffectiveConfig:
    """Ask one running instance for its effective configuration; NoResponders if it is not running."""
    subject = wire.control_subject(
        wire.check_token("service name", service), wire.check_token("instance id", instance_id), "config"
    )
    try:
        msg = await pool.next().request(subject, b"", timeout=timeout)
    except NoRespondersError:
        raise NoResponders(f"instance {instance_id!r} of {service!r} is not running") from None
    except Exception as exc:
        raise request_error(exc, f"configuration of {service}.{instance_id}", timeout) from None
    return EffectiveConfig.model_validate_json(msg.data)
