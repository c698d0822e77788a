"""A real ``aegis manage`` process on 127.0.0.1 for tests, and an HTTP client that logs in to it."""

from __future__ import annotations

import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from aegis.harness.cluster.ports import free_port
from aegis.harness.cluster.processes import spawn

ADMIN_PASSWORD = "correct horse battery staple " + secrets.token_hex(4)


class ManagementServer:
    """``aegis manage`` as a child process (it dies with the test run), bound to a free loopback port."""

    def __init__(self, nats_urls: list[str], log_dir: Path, jwt_secret: str, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"manage-{self.port}.log"
        environ = {
            **os.environ,
            "AEGIS_SERVERS": ",".join(nats_urls),
            "AEGIS_MGMT_PORT": str(self.port),
            "AEGIS_MGMT_JWT_SECRET": jwt_secret,
            "AEGIS_MGMT_ADMIN_PASSWORD": ADMIN_PASSWORD,
            **env,
        }
        self._log = self.log_path.open("wb")
        self.proc = spawn(
            [sys.executable, "-m", "aegis.cli", "manage"], env=environ, stdout=self._log, stderr=self._log
        )
        self.wait_ready()

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"aegis manage exited {self.proc.returncode}: {self.log()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"aegis manage not ready within {timeout}s: {self.log()[-3000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except Exception:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()

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

    def token(
        self, scopes: list[str] | None = None, user: str = "admin", password: str = ADMIN_PASSWORD
    ) -> str:
        """Log in (OAuth2 password flow) and return the access token, with ``scopes`` when given."""
        data: dict[str, Any] = {"username": user, "password": password}
        if scopes is not None:
            data["scope"] = " ".join(scopes)
        r = httpx.post(f"{self.url}/api/token", data=data, timeout=15)
        assert r.status_code == 200, r.text
        return str(r.json()["access_token"])
