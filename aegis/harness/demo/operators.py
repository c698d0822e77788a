"""The operators' half of ``aegis up``: an ``aegis manage`` and an ``aegis dashboard`` on the demo's cluster.

Both run as child processes that die with us (:func:`~aegis.harness.cluster.processes.spawn`) on free loopback
ports. The management API gets a fresh JWT secret and an admin whose password is ``AEGIS_MGMT_ADMIN_PASSWORD`` when
set, else generated and printed (a local demo, nothing else reaches it); the dashboard's feed gets an API key with
``instances:read`` that the admin creates. Only plain HTTP from the standard library here: the harness must not
import the management service or the dashboard.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from aegis.harness.cluster.ports import free_port
from aegis.harness.cluster.processes import spawn


def operators_installed() -> bool:
    """True when the management and dashboard extras are installed (``pip install -e '.[dashboard]'``)."""
    return all(importlib.util.find_spec(m) is not None for m in ("fastapi", "uvicorn", "panel"))


def _http(
    method: str, url: str, data: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _wait_http(url: str, proc: subprocess.Popen[bytes], what: str, log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited {proc.returncode}: {log.read_text(errors='replace')[-2000:]}")
        try:
            if _http("GET", url)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what} not ready within {timeout:.0f} s (log: {log})")


class OperatorStack:
    """``aegis manage`` + ``aegis dashboard`` for the cluster at ``urls``; :meth:`stop` ends both."""

    def __init__(self, urls: list[str], log_dir: Path) -> None:
        self.admin_password = os.environ.get("AEGIS_MGMT_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
        self.api_url = f"http://127.0.0.1:{free_port()}"
        self.dashboard_url = f"http://127.0.0.1:{free_port()}"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logs = log_dir
        try:
            self._start(urls)
        except BaseException:
            self.stop()
            raise

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> Path:
        log = self._logs / f"{name}.log"
        with log.open("wb") as out:
            self.procs[name] = spawn(
                [sys.executable, "-m", "aegis.cli", *args], env={**os.environ, **env}, stdout=out, stderr=out
            )
        return log

    def _start(self, urls: list[str]) -> None:
        api_port = urllib.parse.urlsplit(self.api_url).port
        log = self._spawn(
            "manage",
            ["manage"],
            {
                "AEGIS_SERVERS": ",".join(urls),
                "AEGIS_MGMT_PORT": str(api_port),
                "AEGIS_MGMT_JWT_SECRET": secrets.token_hex(32),
                "AEGIS_MGMT_ADMIN_PASSWORD": self.admin_password,
            },
        )
        _wait_http(f"{self.api_url}/readyz", self.procs["manage"], "aegis manage", log)
        form = urllib.parse.urlencode({"username": "admin", "password": self.admin_password}).encode()
        status, body = _http(
            "POST", f"{self.api_url}/api/token", form, {"Content-Type": "application/x-www-form-urlencoded"}
        )
        if status != 200:
            raise RuntimeError(f"cannot log in to the management API as admin ({status}): {body[:300]!r}")
        token = json.loads(body)["access_token"]
        key_body = json.dumps(
            {"name": f"aegis-up-dashboard-{os.getpid()}", "scopes": ["instances:read"]}
        ).encode()
        status, body = _http(
            "POST",
            f"{self.api_url}/api/keys",
            key_body,
            {"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        if status not in (200, 201):
            raise RuntimeError(f"cannot create the dashboard's API key ({status}): {body[:300]!r}")
        log = self._spawn(
            "dashboard",
            ["dashboard"],
            {
                "AEGIS_DASH_API_URL": self.api_url,
                "AEGIS_DASH_API_KEY": json.loads(body)["key"],
                "AEGIS_DASH_PORT": str(urllib.parse.urlsplit(self.dashboard_url).port),
            },
        )
        _wait_http(f"{self.dashboard_url}/login", self.procs["dashboard"], "aegis dashboard", log)

    def stop(self) -> None:
        """SIGTERM both (they stop gracefully), SIGKILL what is left after 5 s."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
