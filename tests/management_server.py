"""A real ``aegis manage`` process for tests (the harness's :class:`ManagementProcess`), and clients of it."""

from __future__ import annotations

import secrets
from pathlib import Path

import httpx

from aegis.harness.demo.management import ManagementProcess

ADMIN_PASSWORD = secrets.token_urlsafe(18)
"""The first admin's password for the whole test session: the session's cluster keeps the admin once created."""
JWT_SECRET = secrets.token_hex(32)
"""The signing key of the session's management processes: replicas accept each other's tokens."""


class ManagementServer:
    """``aegis manage`` on a free loopback port against ``nats_urls``; ``jwt_secret`` is shared by the replicas
    a test starts (so a token from one works on the other)."""

    def __init__(self, nats_urls: list[str], log_dir: Path, jwt_secret: str = JWT_SECRET, **env: str) -> None:
        self.process = ManagementProcess.start(
            {"AEGIS_SERVERS": ",".join(nats_urls)},
            log_dir,
            env=env,
            jwt_secret=jwt_secret,
            admin_password=ADMIN_PASSWORD,
        )
        self.url = self.process.url
        self.proc = self.process.proc

    def log(self) -> str:
        return self.process.log()

    def stop(self) -> None:
        self.process.stop()

    def token(self, scopes: list[str] | None = None, user: str = "admin", password: str | None = None) -> str:
        """Log in (OAuth2 password flow) and return the access token, with ``scopes`` when given."""
        return self.process.token(scopes, user, password)

    def client(self, token: str | None = None, **headers: str) -> httpx.Client:
        """A client of this server; with ``token`` it sends it as a bearer token."""
        h = dict(headers)
        if token:
            h["Authorization"] = f"Bearer {token}"
        return httpx.Client(base_url=self.url, headers=h, timeout=15)

    def async_client(self, token: str | None = None) -> httpx.AsyncClient:
        """An asyncio client of this server (for tests that also run SDK services on their loop)."""
        h = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(base_url=self.url, headers=h, timeout=15)
