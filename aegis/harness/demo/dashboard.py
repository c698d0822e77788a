"""A local ``aegis dashboard`` child process, fed by an API key of a local ``aegis manage``: the dashboard of
``aegis up``, of the dashboard benchmark and of the tests, started one way.

The admin of the :class:`~aegis.harness.demo.management.ManagementProcess` creates the feed's API key (scope
``instances:read``); the key goes to the dashboard in a 0600 file (``AEGIS_DASH_API_KEY_FILE``), never in the
environment. The dashboard listens on a free loopback port and dies with us
(:func:`~aegis.harness.cluster.processes.spawn`).
"""

from __future__ import annotations

import importlib.util
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import httpx

from aegis.harness.cluster.ports import free_port
from aegis.harness.demo.http_child import HttpChild
from aegis.harness.demo.management import ManagementProcess, write_secret

FEED_SCOPES = ["instances:read"]
"""What the dashboard's shared feed reads with: people log in with their own accounts for anything else."""


def dashboard_installed() -> bool:
    """True when the ``dashboard`` extra is installed (``pip install -e '.[dashboard]'``)."""
    return all(importlib.util.find_spec(m) is not None for m in ("panel", "bokeh"))


def create_feed_key(mgmt: ManagementProcess, name: str) -> str:
    """A new API key with :data:`FEED_SCOPES`, created by ``mgmt``'s first admin."""
    r = httpx.post(
        f"{mgmt.url}/api/keys",
        json={"name": name, "scopes": FEED_SCOPES},
        headers={"Authorization": f"Bearer {mgmt.token()}"},
        timeout=30,
        trust_env=False,
    )
    if r.status_code not in (200, 201):
        raise RuntimeError(f"cannot create the dashboard's API key: {r.status_code} {r.text[:300]}")
    return str(r.json()["key"])


@dataclass
class DashboardProcess(HttpChild):
    """A running ``aegis dashboard``: its URL, process and log."""

    COMMAND: ClassVar[str] = "dashboard"
    READY_PATH: ClassVar[str] = "/login"
    STOP_TIMEOUT_S: ClassVar[float] = 10.0

    @classmethod
    def start(
        cls,
        mgmt: ManagementProcess,
        state_dir: Path,
        *,
        port: int | None = None,
        env: Mapping[str, str] | None = None,
        ready_timeout: float = 30.0,
    ) -> DashboardProcess:
        """Start it against ``mgmt`` with a fresh feed key and ``env`` (more ``AEGIS_DASH_*`` settings); return once
        its login page answers."""
        port = port or free_port()
        state_dir.mkdir(parents=True, exist_ok=True)
        key_file = write_secret(
            state_dir / f"dashboard-{port}-api-key",
            create_feed_key(mgmt, f"dashboard-{port}-{time.time_ns()}"),
        )
        environ = {
            **os.environ,
            "AEGIS_DASH_API_URL": mgmt.url,
            "AEGIS_DASH_API_KEY_FILE": str(key_file),
            "AEGIS_DASH_HOST": "127.0.0.1",
            "AEGIS_DASH_PORT": str(port),
            **(env or {}),
        }
        log_path = state_dir / f"dashboard-{port}.log"
        return cls._spawn(port, environ, log_path, ready_timeout)
