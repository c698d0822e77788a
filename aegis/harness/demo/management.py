"""A local ``aegis manage`` child process: the management API of ``aegis up``, of the management benchmark and of
the tests, started one way.

It gets a fresh JWT secret and first-admin password, written to 0600 files in ``state_dir`` (``*_FILE`` settings,
so neither shows in ``ps`` or the environment of other processes), listens on a free loopback port, and dies with
us (:func:`~aegis.harness.cluster.processes.spawn`).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import httpx

from aegis.harness.cluster.ports import free_port
from aegis.harness.demo.http_child import HttpChild

ADMIN_USER = "admin"


@dataclass
class ManagementProcess(HttpChild):
    """A running ``aegis manage``: its URL, process and log, and where the admin password is."""

    password_file: Path

    COMMAND: ClassVar[str] = "manage"
    READY_PATH: ClassVar[str] = "/readyz"
    STOP_TIMEOUT_S: ClassVar[float] = 15.0  # uvicorn's graceful shutdown

    @property
    def admin_password(self) -> str:
        return self.password_file.read_text().strip()

    @classmethod
    def start(
        cls,
        nats_env: Mapping[str, str],
        state_dir: Path,
        *,
        port: int | None = None,
        env: Mapping[str, str] | None = None,
        jwt_secret: str | None = None,
        admin_password: str | None = None,
        ready_timeout: float = 30.0,
    ) -> ManagementProcess:
        """Start it with ``nats_env`` (``AEGIS_SERVERS`` and, on a secure cluster, the management user's
        ``AEGIS_*`` settings) and ``env`` (more ``AEGIS_MGMT_*`` settings); return once ``/readyz`` says ready.
        Replicas that must accept each other's tokens are given one ``jwt_secret`` (else a fresh one). The first
        admin is created only once per cluster (the users bucket keeps it): processes that come after the first
        on one cluster are given its ``admin_password`` (else a fresh one)."""
        port = port or free_port()
        state_dir.mkdir(parents=True, exist_ok=True)
        secret_file = write_secret(
            state_dir / f"manage-{port}-jwt-secret", jwt_secret or secrets.token_urlsafe(48)
        )
        password_file = write_secret(
            state_dir / f"manage-{port}-admin-password", admin_password or secrets.token_urlsafe(18)
        )
        environ = {
            **os.environ,
            **nats_env,
            "AEGIS_MGMT_HOST": "127.0.0.1",
            "AEGIS_MGMT_PORT": str(port),
            "AEGIS_MGMT_JWT_SECRET_FILE": str(secret_file),
            "AEGIS_MGMT_ADMIN_PASSWORD_FILE": str(password_file),
            **(env or {}),
        }
        log_path = state_dir / f"manage-{port}.log"
        return cls._spawn(port, environ, log_path, ready_timeout, password_file=password_file)

    def token(
        self, scopes: list[str] | None = None, user: str = ADMIN_USER, password: str | None = None
    ) -> str:
        """A bearer token (OAuth2 password flow) of ``user`` (the first admin by default), with ``scopes`` if given."""
        data = {"username": user, "password": password if password is not None else self.admin_password}
        if scopes is not None:
            data["scope"] = " ".join(scopes)
        r = httpx.post(f"{self.url}/api/token", data=data, timeout=30, trust_env=False)
        if r.status_code != 200:
            raise RuntimeError(f"login as {user} failed: {r.status_code} {r.text}")
        return str(r.json()["access_token"])


def write_secret(path: Path, value: str) -> Path:
    """Write ``value`` to ``path``, readable by this user only (0600); return ``path``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value)
    return path
