"""``aegis up``: a local cluster, the demo service instances, the single-active ledger group and clients.

The live status shows the quotes client (rate, ok/failed, p99, which instances answered) and, for the ledger
group, the active instance and epoch as the sticky client last saw them with its ok/failed counts.

With ``secure`` (``aegis up --secure``) the cluster runs with TLS, accounts and least-privilege users
(:mod:`aegis.harness.cluster.security`): the quotes instances as ``svc-quotes``, the ledger as ``svc-ledger``, the
demo clients as ``client-up``; the CA and the credential files are printed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from aegis.harness.cluster.local import LocalCluster, install_signal_cleanup
from aegis.harness.cluster.processes import spawn
from aegis.harness.cluster.security import MANAGEMENT_USER, SecurityConfig, client_user, service_user
from aegis.harness.demo.dashboard import DashboardProcess, dashboard_installed
from aegis.harness.demo.management import ADMIN_USER, ManagementProcess
from aegis.harness.demo.services import ACTIVE_SERVICE, SERVICE, DemoClient, StickyDemoClient
from aegis.sdk.config import load_settings
from aegis.sdk.connection import ConnectionPool

ROOT = Path(__file__).resolve().parents[3]


def start_instances(
    urls: list[str],
    count: int,
    *,
    command: str = "serve",
    prefix: str = "q",
    env: Mapping[str, str] | None = None,
) -> dict[str, subprocess.Popen[str]]:
    """Start ``count`` demo processes (``aegis.harness.demo <command>``, instances ``<prefix>1..``) and wait until
    each says it is ready. ``env`` adds environment variables (``AEGIS_*`` settings: a secure cluster's user)."""
    child_env = None if env is None else {**os.environ, **env}
    procs: dict[str, subprocess.Popen[str]] = {}
    try:
        for n in range(1, count + 1):
            name = f"{prefix}{n}"
            procs[name] = spawn(
                [sys.executable, "-m", "aegis.harness.demo", command, "--instance", name, *urls],
                stdout=subprocess.PIPE,
                text=True,
                cwd=ROOT,
                env=child_env,
            )
        for name, proc in procs.items():
            line = proc.stdout.readline()  # type: ignore[union-attr]
            if line.strip() != "ready":
                raise RuntimeError(
                    f"demo instance {name} failed to start (exit {proc.poll()}, said {line!r})"
                )
    except BaseException:
        stop_instances(procs)
        raise
    return procs


def stop_instances(procs: dict[str, subprocess.Popen[str]]) -> None:
    """SIGTERM every instance (they stop gracefully), SIGKILL what is left after 5 s."""
    for proc in procs.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 5
    for proc in procs.values():
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _alive(procs: dict[str, subprocess.Popen[str]]) -> str:
    return f"{sum(1 for p in procs.values() if p.poll() is None)}/{len(procs)} up"


async def _traffic(
    settings: dict[str, Any],
    rate: float,
    duration: float,
    procs: dict[str, subprocess.Popen[str]],
    active_procs: dict[str, subprocess.Popen[str]],
    active_rate: float,
) -> int:
    pool = await ConnectionPool.connect(load_settings(**settings, name="aegis-up-client"))
    client = DemoClient(pool, rate=rate)
    sticky = StickyDemoClient(pool, rate=active_rate) if active_procs else None
    stop = asyncio.Event()
    tasks = [asyncio.create_task(client.run(stop))]
    if sticky is not None:
        tasks.append(asyncio.create_task(sticky.run(stop)))

    def status() -> Group:
        lines = [f"[bold]{SERVICE}[/] {_alive(procs)}  {client.stats.line()}"]
        if sticky is not None:
            lines.append(f"[bold]{ACTIVE_SERVICE}[/] {_alive(active_procs)}  {sticky.stats.line()}")
        return Group(*lines)

    started = time.monotonic()
    try:
        with Live(status(), refresh_per_second=4, transient=False) as live:
            while not any(t.done() for t in tasks):
                await asyncio.sleep(0.25)
                live.update(status())
                if duration and time.monotonic() - started >= duration:
                    break
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        await pool.close()
    return 0 if client.stats.ok > 0 and (sticky is None or sticky.stats.ok > 0) else 1


def run_up(
    *,
    nodes: int,
    instances: int,
    rate: float,
    duration: float,
    console: Console,
    active_instances: int = 3,
    active_rate: float = 20.0,
    secure: bool = False,
    management_port: int | None = None,
    dashboard: bool = True,
) -> int:
    """Run everything until Ctrl-C (or ``duration`` seconds); stop it all on the way out.

    ``active_instances`` processes of the single-active ``ledger`` group (0: none) get ``active_rate`` sticky
    ``book`` calls per second. ``secure``: TLS, accounts and one NATS user per role (see the module docstring).
    With ``dashboard`` (and the dashboard extra installed) the dashboard runs too, on that management API.
    """
    install_signal_cleanup()
    procs: dict[str, subprocess.Popen[str]] = {}
    active_procs: dict[str, subprocess.Popen[str]] = {}
    security = SecurityConfig(services=(SERVICE, ACTIVE_SERVICE), clients=("up",)) if secure else False
    with LocalCluster(size=nodes, secure=security) as cluster:
        quotes_env = cluster.sdk_env(service_user(SERVICE)) if secure else None
        ledger_env = cluster.sdk_env(service_user(ACTIVE_SERVICE)) if secure else None
        client_settings = cluster.sdk_settings(client_user("up") if secure else None)
        with console.status(f"starting a {nodes}-node NATS cluster"):
            cluster.start()
        table = Table(title="Aegis local cluster", show_lines=False)
        for col in ("what", "address / pid", "monitoring"):
            table.add_column(col)
        for node in cluster.nodes:
            table.add_row(f"nats-server {node.name}", f"{node.url}  (pid {node.pid})", node.monitor_url)
        with console.status(f"starting {instances} instances of the demo service"):
            procs = start_instances(cluster.urls, instances, env=quotes_env)
        if active_instances:
            with console.status(
                f"starting {active_instances} instances of the single-active {ACTIVE_SERVICE}"
            ):
                try:
                    active_procs = start_instances(
                        cluster.urls, active_instances, command="serve-active", prefix="L", env=ledger_env
                    )
                except BaseException:
                    stop_instances(procs)
                    raise
        mgmt_env = cluster.sdk_env(MANAGEMENT_USER) if secure else {"AEGIS_SERVERS": ",".join(cluster.urls)}
        mgmt_env["AEGIS_MGMT_MONITOR_URLS"] = ",".join(cluster.monitor_urls)  # for the JetStream meta leader
        with console.status("starting the management API"):
            try:
                mgmt = ManagementProcess.start(
                    mgmt_env, cluster.base_dir / "management", port=management_port
                )
            except BaseException:
                stop_instances({**active_procs, **procs})
                raise
        table.add_row(
            "management API (aegis manage)", f"{mgmt.url}  (pid {mgmt.proc.pid})", f"{mgmt.url}/docs"
        )
        dash: DashboardProcess | None = None
        if dashboard and dashboard_installed():
            with console.status("starting the dashboard"):
                try:
                    dash = DashboardProcess.start(mgmt, cluster.base_dir / "dashboard")
                except BaseException:
                    mgmt.stop()
                    stop_instances({**active_procs, **procs})
                    raise
            table.add_row("dashboard (aegis dashboard)", f"{dash.url}  (pid {dash.proc.pid})", "")
        for name, proc in procs.items():
            table.add_row(f"{SERVICE} instance {name}", f"pid {proc.pid}", "")
        for name, proc in active_procs.items():
            table.add_row(f"{ACTIVE_SERVICE} instance {name} (single-active)", f"pid {proc.pid}", "")
        table.add_row("demo client", f"{rate:.0f} calls/s to {SERVICE}.price", "")
        if active_procs:
            table.add_row(
                "sticky client", f"{active_rate:.0f} calls/s to the active {ACTIVE_SERVICE}.book", ""
            )
        console.print(table)
        console.print(
            f"servers: {','.join(cluster.urls)}   (export AEGIS_SERVERS=... to point your own code here)"
        )
        if secure:
            _print_secrets(cluster, console)
        console.print(
            f"management API: {mgmt.url}/docs   log in as {ADMIN_USER}, password in {mgmt.password_file}"
            f"   (aegis services list --url {mgmt.url} --user {ADMIN_USER}, with AEGIS_MGMT_PASSWORD set)"
        )
        if dash is not None:
            console.print(f"dashboard: {dash.url}   log in as {ADMIN_USER}, password in {mgmt.password_file}")
        console.print("Ctrl-C stops everything.")
        try:
            return asyncio.run(_traffic(client_settings, rate, duration, procs, active_procs, active_rate))
        except KeyboardInterrupt:
            return 0
        finally:
            with console.status("stopping"):
                if dash is not None:
                    dash.stop()
                mgmt.stop()
                stop_instances({**active_procs, **procs})
            console.print("stopped demo instances and cluster")


def _print_secrets(cluster: LocalCluster, console: Console) -> None:
    """Where a secure cluster's CA and credential files are, and how to connect as the management user."""
    assert cluster.security is not None
    console.print(f"TLS (mutual, clients and routes): CA {cluster.ca_file}")
    table = Table(title="NATS users (passwords, certificates and keys are 0600 files)")
    for col in ("user", "password file", "certificate / key"):
        table.add_column(col)
    for user in cluster.security.users:
        creds = cluster.credentials(user)
        table.add_row(user, str(creds.password_file), f"{creds.cert_file}  {creds.key_file.name}")
    console.print(table)
    env = " ".join(f"{k}={v}" for k, v in cluster.sdk_env(MANAGEMENT_USER).items() if k != "AEGIS_SERVERS")
    console.print(f"connect as {MANAGEMENT_USER}: {env}")
