"""A local ``aegis manage`` child process: the management API of ``aegis up``, of the management benchmark and of
the tests, started one way.

It gets a fresh JWT secret and first-admin password, written to 0600 files in ``state_dir`` (``*_FILE`` settings,
so neither shows in ``ps`` or the environment of other processes), listens on a free loopback port, and dies with
us (:func:`~aegis.harness.cluster.processes.spawn`).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from aegis.harness.cluster.ports import free_port
from aegis.harness.cluster.processes import spawn

ADMIN_USER = "admin"


@dataclass
class ManagementProcess:
    """A running ``aegis manage``: its URL, where the admin password is, its process and log."""

    url: str
    password_file: Path
    proc: subprocess.Popen[bytes]
    log_path: Path

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
        with log_path.open("wb") as log:
            proc = spawn([sys.executable, "-m", "aegis.cli", "manage"], env=environ, stdout=log, stderr=log)
        mgmt = cls(f"http://127.0.0.1:{port}", password_file, proc, log_path)
        try:
            mgmt.wait_ready(ready_timeout)
        except BaseException:
            mgmt.stop()
            raise
        return mgmt

    def wait_ready(self, timeout: float) -> None:
        """Until ``/readyz`` answers 200; RuntimeError with the log's tail if it exits or takes longer."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1, trust_env=False).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(
            f"aegis manage not ready within {timeout:.0f} s (exit {self.proc.poll()}):\n{self.log()[-3000:]}"
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

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

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (uvicorn shuts down gracefully), SIGKILL after ``timeout`` s. Idempotent."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def write_secret(path: Path, value: str) -> Path:
    """Write ``value`` to ``path``, readable by this user only (0600); return ``path``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value)
    return path
