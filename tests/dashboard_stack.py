"""The real stack the dashboard tests run on: management API, demo instances, ``aegis dashboard``, Chromium.

Run as a script it starts a 3-node cluster and everything else and prints the URLs (for development and for the
README's screenshot): ``.venv/bin/python tests/dashboard_stack.py``.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import httpx

from aegis.harness.cluster.ports import free_port
from aegis.harness.cluster.processes import spawn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from management_server import ManagementServer  # noqa: E402


class DashboardServer:
    """``aegis dashboard`` as a child process on a free loopback port, fed by the API key it is given."""

    def __init__(self, api_url: str, api_key: str, log_dir: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"dashboard-{self.port}.log"
        self._log = self.log_path.open("wb")
        environ = {
            **os.environ,
            "AEGIS_DASH_API_URL": api_url,
            "AEGIS_DASH_API_KEY": api_key,
            "AEGIS_DASH_PORT": str(self.port),
            **env,
        }
        self.proc = spawn(
            [sys.executable, "-m", "aegis.cli", "dashboard"], env=environ, stdout=self._log, stderr=self._log
        )
        self.wait_ready()

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"aegis dashboard exited {self.proc.returncode}: {self.log()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/login", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"aegis dashboard not ready within {timeout}s: {self.log()[-3000:]}")

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


def feed_key(mgmt: ManagementServer) -> str:
    """An API key with instances:read, made by the admin: what the dashboard's feed reads with."""
    with mgmt.client(mgmt.token()) as admin:
        r = admin.post(
            "/api/keys", json={"name": f"dashboard-{time.time_ns()}", "scopes": ["instances:read"]}
        )
        assert r.status_code in (200, 201), r.text
        return str(r.json()["key"])


def add_user(mgmt: ManagementServer, name: str, password: str, role: str) -> None:
    with mgmt.client(mgmt.token()) as admin:
        r = admin.post("/api/users", json={"name": name, "password": password, "role": role})
        assert r.status_code in (200, 201, 409), r.text


if __name__ == "__main__":
    import secrets
    import tempfile

    from aegis.harness.cluster.local import LocalCluster
    from aegis.harness.demo.up import start_instances, stop_instances

    logs = Path(tempfile.mkdtemp(prefix="aegis-dash-"))
    with LocalCluster(3) as cluster:
        mgmt = ManagementServer(cluster.urls, logs, secrets.token_hex(32))
        procs = start_instances(cluster.urls, 3)
        ledger = start_instances(cluster.urls, 2, command="serve-active", prefix="L")
        add_user(mgmt, "viewer", "viewer-password-1", "viewer")
        dash = DashboardServer(mgmt.url, feed_key(mgmt), logs)
        from management_server import ADMIN_PASSWORD

        print(f"DASH={dash.url} API={mgmt.url} ADMIN_PASSWORD='{ADMIN_PASSWORD}' LOGS={logs}", flush=True)
        try:
            while True:
                time.sleep(1)
        finally:
            dash.stop()
            stop_instances({**procs, **ledger})
            mgmt.stop()
