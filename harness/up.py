"""``aegis up``: a local cluster, the demo service instances and a client with a live status line."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table

from harness.cluster import LocalCluster, install_signal_cleanup
from harness.demo import SERVICE, DemoClient
from harness.processes import spawn
from sdk.config import load_settings
from sdk.connection import ConnectionPool

ROOT = Path(__file__).resolve().parent.parent


def start_instances(urls: list[str], count: int) -> dict[str, subprocess.Popen[str]]:
    """Start ``count`` demo service processes and wait until each says it is ready."""
    procs: dict[str, subprocess.Popen[str]] = {}
    try:
        for n in range(1, count + 1):
            name = f"q{n}"
            procs[name] = spawn(
                [sys.executable, "-m", "harness.demo", "serve", "--instance", name, *urls],
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


async def _traffic(
    urls: list[str], rate: float, duration: float, procs: dict[str, subprocess.Popen[str]]
) -> int:
    pool = await ConnectionPool.connect(load_settings(servers=urls, name="aegis-up-client"))
    client = DemoClient(pool, rate=rate)
    stop = asyncio.Event()
    task = asyncio.create_task(client.run(stop))
    started = time.monotonic()
    try:
        with Live(client.stats.line(), refresh_per_second=4, transient=False) as live:
            while not task.done():
                await asyncio.sleep(0.25)
                alive = sum(1 for p in procs.values() if p.poll() is None)
                live.update(f"[bold]{SERVICE}[/] {alive}/{len(procs)} up  {client.stats.line()}")
                if duration and time.monotonic() - started >= duration:
                    break
    finally:
        stop.set()
        await task
        await pool.close()
    return 0 if client.stats.ok > 0 else 1


def run_up(*, nodes: int, instances: int, rate: float, duration: float, console: Console) -> int:
    """Run everything until Ctrl-C (or ``duration`` seconds); stop it all on the way out."""
    install_signal_cleanup()
    procs: dict[str, subprocess.Popen[str]] = {}
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
        for name, proc in procs.items():
            table.add_row(f"{SERVICE} instance {name}", f"pid {proc.pid}", "")
        table.add_row("demo client", f"{rate:.0f} calls/s to {SERVICE}.price", "")
        console.print(table)
        console.print(
            f"servers: {','.join(cluster.urls)}   (export AEGIS_SERVERS=... to point your own code here)"
        )
        console.print("Ctrl-C stops everything.")
        try:
            return asyncio.run(_traffic(cluster.urls, rate, duration, procs))
        except KeyboardInterrupt:
            return 0
        finally:
            with console.status("stopping"):
                stop_instances(procs)
            console.print("stopped demo instances and cluster")
