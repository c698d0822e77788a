"""The dashboard under a fleet: ``python -m aegis.harness.bench.dashboard [--instances 200] [--seconds 10]``.

On a local 3-node cluster with N heartbeating instances (:mod:`aegis.harness.bench.instances`), ``aegis manage``
and ``aegis dashboard`` (:class:`~aegis.harness.demo.management.ManagementProcess`,
:class:`~aegis.harness.demo.dashboard.DashboardProcess`), headless Chromium measures:

* **first render**: from navigating to the overview (logged in) until the table shows its first row and the
  counts say N instances (goal: under 2 s);
* **browser main thread busy**: Chrome's ``TaskDuration`` (CDP ``Performance.getMetrics``) over a window of
  updates every second, divided by the window (goal: under 20 %);
* **server CPU per session**: the dashboard process's CPU seconds per wall second with S sessions open, less
  the same with none (only the shared feed), divided by S.

Writes ``reports/dashboard-bench.json`` and ``.md``. Everything runs on one host: the browser, the dashboard, the
API, the instances and the cluster share its cores, which the report's load average shows.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any

from aegis.harness.bench.management import registered_instances
from aegis.harness.bench.runner import process_cpu_s
from aegis.harness.cluster.local import LocalCluster
from aegis.harness.demo.dashboard import DashboardProcess
from aegis.harness.demo.management import ADMIN_USER, ManagementProcess

GOALS = {"first_render_s": 2.0, "main_thread_busy": 0.20}
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]


def _task_s(cdp: Any) -> float:
    metrics = cdp.send("Performance.getMetrics")["metrics"]
    return float(next(m["value"] for m in metrics if m["name"] == "TaskDuration"))


def _login(browser: Any, dash: DashboardProcess, password: str) -> Any:
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.set_default_timeout(30_000)
    page.goto(f"{dash.url}/login")
    page.fill("#username", ADMIN_USER)
    page.fill("#password", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{dash.url}/")
    return page


def _server_cpu(pid: int, seconds: float) -> float:
    """CPU seconds per wall second of ``pid`` over ``seconds``."""
    before, t0 = process_cpu_s(pid), time.monotonic()
    time.sleep(seconds)
    return (process_cpu_s(pid) - before) / (time.monotonic() - t0)


def measure(
    dash: DashboardProcess, password: str, count: int, seconds: float, sessions: int
) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    dash_pid = dash.proc.pid
    result: dict[str, Any] = {"server_cpu_idle": _server_cpu(dash_pid, seconds)}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS)
        try:
            page = _login(browser, dash, password)
            renders = []
            for _ in range(3):
                t0 = time.monotonic()
                page.goto(f"{dash.url}/")
                page.locator(".tabulator-row").first.wait_for()
                page.locator(f"text={count} instances").first.wait_for()
                renders.append(time.monotonic() - t0)
            result["first_render_s"] = renders
            cdp = page.context.new_cdp_session(page)
            cdp.send("Performance.enable")
            page.wait_for_timeout(2000)
            busy0, t0 = _task_s(cdp), time.monotonic()
            page.wait_for_timeout(seconds * 1000)
            result["main_thread_busy"] = (_task_s(cdp) - busy0) / (time.monotonic() - t0)
            pages = [page, *(_login(browser, dash, password) for _ in range(sessions - 1))]
            for extra in pages[1:]:
                extra.goto(f"{dash.url}/")
                extra.locator(".tabulator-row").first.wait_for()
            result["server_cpu_with_sessions"] = _server_cpu(dash_pid, seconds)
            result["sessions"] = sessions
            result["server_cpu_per_session"] = (
                result["server_cpu_with_sessions"] - result["server_cpu_idle"]
            ) / sessions
        finally:
            browser.close()
    return result


def run(count: int, seconds: float, sessions: int, out: Path) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    with LocalCluster(3) as cluster, registered_instances(count, cluster.urls):
        state = cluster.base_dir / "operators"
        mgmt = ManagementProcess.start({"AEGIS_SERVERS": ",".join(cluster.urls)}, state)
        try:
            dash = DashboardProcess.start(mgmt, state)
            try:
                figures = measure(dash, mgmt.admin_password, count, seconds, sessions)
            finally:
                dash.stop()
        finally:
            mgmt.stop()
    report = {
        "instances": count,
        "window_s": seconds,
        "figures": figures,
        "goals": GOALS,
        "met": {
            "first_render_s": max(figures["first_render_s"]) < GOALS["first_render_s"],
            "main_thread_busy": figures["main_thread_busy"] < GOALS["main_thread_busy"],
        },
        "host": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_avg_before": load_before},
        "recorded": time.strftime("%Y-%m-%d", time.gmtime()),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "dashboard-bench.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "dashboard-bench.md").write_text(markdown(report))
    return report


def markdown(report: dict[str, Any]) -> str:
    f = report["figures"]
    yes = {True: "yes", False: "**no**"}
    renders = " / ".join(f"{s * 1000:.0f}" for s in f["first_render_s"])
    return (
        f"# Dashboard with {report['instances']} instances\n\n"
        f"Reproduce: `python -m aegis.harness.bench.dashboard` (writes `reports/dashboard-bench.json` and `.md`). Recorded "
        f"{report['recorded']} on a {report['host']['cpus']}-CPU host (Python {report['host']['python']}; "
        f"cluster, instances, API, dashboard and Chromium on one host, load average "
        f"{report['host']['load_avg_before']:.2f} before).\n\n"
        "| figure | measured | goal | met |\n|---|---|---|---|\n"
        f"| first render (3 loads), ms | {renders} | < 2000 | {yes[report['met']['first_render_s']]} |\n"
        f"| browser main thread busy, updates every second ({report['window_s']:.0f} s) | "
        f"{f['main_thread_busy'] * 100:.1f} % | < 20 % | {yes[report['met']['main_thread_busy']]} |\n"
        f"| dashboard server CPU, no session (the feed alone) | {f['server_cpu_idle'] * 100:.1f} % of a core | | |\n"
        f"| dashboard server CPU per connected session ({f['sessions']} open) | "
        f"{f['server_cpu_per_session'] * 100:.1f} % of a core | | |\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--instances", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path("reports"))
    args = parser.parse_args()
    report = run(args.instances, args.seconds, args.sessions, args.out)
    print(markdown(report))


if __name__ == "__main__":
    main()
