"""``aegis up``: a local cluster, the demo service instances, the single-active ledger group and clients.

The live status shows the quotes client (rate, ok/failed, p99, which instances answered) and, for the ledger
group, the active instance and epoch as the sticky client last saw them with its ok/failed counts.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from aegis.harness.cluster.local import LocalCluster, install_signal_cleanup
from aegis.harness.cluster.processes import spawn
from aegis.harness.demo.operators import OperatorStack, operators_installed
from aegis.harness.demo.services import ACTIVE_SERVICE, SERVICE, DemoClient, StickyDemoClient
from aegis.sdk.config import load_settings
from aegis.sdk.connection import ConnectionPool

ROOT = Path(__file__).resolve().parents[3]


def start_instances(
    urls: list[str], count: int, *, command: str = "serve", prefix: str = "q"
) -> dict[str, subprocess.Popen[str]]:
    """Start ``count`` demo processes (``aegis.harness.demo <command>``, instances ``<prefix>1..``) and wait until
    each says it is ready."""
    procs: dict[str, subprocess.Popen[str]] = {}
    try:
        for n in range(1, count + 1):
            name = f"{prefix}{n}"
            procs[name] = spawn(
                [sys.executable, "-m", "aegis.harness.demo", command, "--instance", name, *urls],
                stdout=subprocess.PIPE,
                text=True,
                cwd=ROOT,
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
    urls: list[str],
    rate: float,
    duration: float,
    procs: dict[str, subprocess.Popen[str]],
    active_procs: dict[str, subprocess.Popen[str]],
    active_rate: float,
) -> int:
    pool = await ConnectionPool.connect(load_settings(servers=urls, name="aegis-up-client"))
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
    dashboard: bool = True,
) -> int:
    """Run everything until Ctrl-C (or ``duration`` seconds); stop it all on the way out.

    ``active_instances`` processes of the single-active ``ledger`` group (0: none) get ``active_rate`` sticky
    ``book`` calls per second. With ``dashboard`` (and the dashboard extra installed) the management API and the
    dashboard run too, and their URLs are printed.
    """
    install_signal_cleanup()
    procs: dict[str, subprocess.Popen[str]] = {}
    active_procs: dict[str, subprocess.Popen[str]] = {}
    with LocalCluster(size=nodes) as cluster:
        with console.status(f"starting a {nodes}-node NATS cluster"):
            cluster.start()
        table = Table(title="Aegis local cluster", show_lines=False)
        for col in ("what", "address / pid", "monitoring"):
            table.add_column(col)
        for node in cluster.nodes:
            table.add_row(f"nats-server {node.name}", f"{node.url}  (pid {node.pid})", node.monitor_url)
        with console.status(f"starting {instances} instances of the demo service"):
            procs = start_instances(cluster.urls, instances)
        if active_instances:
            with console.status(
                f"starting {active_instances} instances of the single-active {ACTIVE_SERVICE}"
            ):
                try:
                    active_procs = start_instances(
                        cluster.urls, active_instances, command="serve-active", prefix="L"
                    )
                except BaseException:
                    stop_instances(procs)
                    raise
        operators: OperatorStack | None = None
        if dashboard and operators_installed():
            with console.status("starting the management API and the dashboard"):
                try:
                    operators = OperatorStack(cluster.urls, Path(tempfile.mkdtemp(prefix="aegis-up-")))
                except BaseException:
                    stop_instances({**active_procs, **procs})
                    raise
            for what, url in (("manage", operators.api_url), ("dashboard", operators.dashboard_url)):
                table.add_row(f"aegis {what}", f"{url}  (pid {operators.procs[what].pid})", "")
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
        if operators is not None:
            console.print(
                f"dashboard: {operators.dashboard_url}  (log in as admin, password {operators.admin_password})"
            )
        console.print("Ctrl-C stops everything.")
        try:
            return asyncio.run(_traffic(cluster.urls, rate, duration, procs, active_procs, active_rate))
        except KeyboardInterrupt:
            return 0
        finally:
            with console.status("stopping"):
                if operators is not None:
                    operators.stop()
                stop_instances({**active_procs, **procs})
            console.print("stopped demo instances and cluster")
