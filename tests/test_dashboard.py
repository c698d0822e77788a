"""The dashboard in headless Chromium on the real stack: 3-node cluster, demo instances, ``aegis manage``,
``aegis dashboard``. Screenshots of each page and the axe-core findings go to reports/dashboard/.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from management_server import ADMIN_PASSWORD, ManagementServer
from playwright import sync_api as playwright_api
from waiting import wait_until

from aegis.harness.cluster.local import LocalCluster
from aegis.harness.demo.dashboard import DashboardProcess
from aegis.harness.demo.up import start_instances, stop_instances

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "reports" / "dashboard"
AXE = ROOT / ".venv" / "node" / "node_modules" / "axe-core" / "axe.min.js"
CHROMIUM = shutil.which("chromium")
VIEWER, OPERATOR = ("viewer1", "viewer password 1"), ("operator1", "operator password 1")


def add_user(mgmt: ManagementServer, name: str, password: str, role: str) -> None:
    """Create the user (an existing one from an earlier module's run of this session is fine)."""
    with mgmt.client(mgmt.token()) as admin:
        r = admin.post("/api/users", json={"name": name, "password": password, "role": role})
        assert r.status_code in (200, 201, 409), r.text


@pytest.fixture(scope="module")
def mgmt(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ManagementServer]:
    server = ManagementServer(
        cluster.urls,
        tmp_path_factory.mktemp("dash-mgmt"),
        secrets.token_hex(32),
        AEGIS_MGMT_MONITOR_URLS=",".join(cluster.monitor_urls),
    )
    try:
        add_user(server, *VIEWER, "viewer")
        add_user(server, *OPERATOR, "operator")
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def demo(nats_urls: list[str]) -> Iterator[dict[str, subprocess.Popen[str]]]:
    procs = start_instances(nats_urls, 2, prefix="dq")
    procs |= start_instances(nats_urls, 2, command="serve-active", prefix="DL")
    try:
        yield procs
    finally:
        stop_instances(procs)


@pytest.fixture(scope="module")
def dash(
    mgmt: ManagementServer, demo: dict, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DashboardProcess]:
    server = DashboardProcess.start(mgmt.process, tmp_path_factory.mktemp("dash"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def chromium_browser() -> Iterator[object]:
    assert CHROMIUM is not None, "no chromium on PATH: make setup installs Debian's"
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        )
        try:
            yield b
        finally:
            b.close()


def _login(
    chromium_browser: object, dash: DashboardProcess, user: str = "admin", password: str = ADMIN_PASSWORD
):  # type: ignore[no-untyped-def]
    page = chromium_browser.new_page(viewport={"width": 1400, "height": 900})  # type: ignore[attr-defined]
    page.set_default_timeout(15_000)
    page.goto(f"{dash.url}/login")
    page.fill("#username", user)
    page.fill("#password", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{dash.url}/")
    return page


def _shot(page: object, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)  # type: ignore[attr-defined]


def _rows(page: object) -> list[dict[str, str]]:
    """The overview table's rows as the browser shows them, in display order."""
    rows = page.eval_on_selector_all(  # type: ignore[attr-defined]
        ".tabulator-row",
        """rows => rows.map(r => Object.fromEntries([...r.querySelectorAll('.tabulator-cell')]
               .map(c => [c.getAttribute('tabulator-field'), c.innerText.trim()])))""",
    )
    # a row being re-rendered by a data update can be caught without its cells: not a row of data
    return [r for r in rows if "instance" in r and "service" in r]


def _row(page: object, instance: str) -> dict[str, str] | None:
    return next((r for r in _rows(page) if r.get("instance") == instance), None)


def test_login_redirects_only_to_paths_of_this_server() -> None:
    from aegis.dashboard.login import safe_next

    assert safe_next("/instance?service=a&id=b") == "/instance?service=a&id=b"
    for bad in ("//evil.example/", "https://evil.example/", "/\\evil.example", "", None):
        assert safe_next(bad) == "/"


def test_rows_put_the_worst_first_say_health_in_words_and_mark_config_drift() -> None:
    from aegis.dashboard.overview import filter_rows, instance_rows
    from aegis.management.api_models import Health, InstanceView
    from aegis.sdk.schema import ServiceInstance

    def view(iid: str, health: Health, config: str) -> InstanceView:
        inst = ServiceInstance(service="quotes", instance_id=iid, config_hash=config)
        return InstanceView(instance=inst, revision=1, health=health, heartbeat_age_s=0.5)

    df = instance_rows(
        [view("a", Health.HEALTHY, "h1"), view("b", Health.STALE, "h1"), view("c", Health.HEALTHY, "h2")]
    )
    assert list(df["instance"]) == ["b", "a", "c"]
    assert list(df["health"]) == ["◐ stale", "✔ healthy", "✔ healthy"]
    assert df.loc["quotes/c", "config"].endswith("drift") and "drift" not in df.loc["quotes/a", "config"]
    assert list(filter_rows(df, True, "")["instance"]) == ["b"]
    assert list(filter_rows(df, False, "C")["instance"]) == ["c"]


def test_the_cluster_strip_warns_when_the_quorum_buckets_leaders_share_a_node() -> None:
    from aegis.dashboard.frame import cluster_strip_html
    from aegis.management.api_models import ClusterView

    base = {"connected_url": None, "meta_leader": "n1", "nodes": [], "streams": []}
    assert "quorum buckets" not in cluster_strip_html(ClusterView(**base))  # no quorum group ever ran
    spread = cluster_strip_html(ClusterView(**base, quorum_leaders_distinct=True))
    assert "quorum buckets</b> leaders on 3 nodes" in spread and "share" not in spread
    shared = cluster_strip_html(
        ClusterView(**base, quorum_leaders_distinct=False, quorum_leaders_note="n2: KV_q0, KV_q1")
    )
    assert "leaders share a node" in shared and "n2: KV_q0, KV_q1" in shared


def test_a_logged_out_browser_sees_only_the_login_page(
    chromium_browser: object, dash: DashboardProcess
) -> None:
    page = chromium_browser.new_page()  # type: ignore[attr-defined]
    for path in ("/", "/services", "/groups", "/instance?service=ledger&id=DL1"):
        page.goto(dash.url + path)
        assert re.search(r"/login", page.url), page.url
        text = page.inner_text("body")  # the login page is plain HTML (no shadow DOM): this is all of it
        assert "Log in" in text and "DL1" not in text and "dq1" not in text
    page.fill("#username", "admin")
    page.fill("#password", "not the password at all")
    page.click("button[type=submit]")
    assert "Wrong user name or password" in page.inner_text("[role=alert]")
    assert "aegis_session" not in {c["name"] for c in page.context.cookies()}
    _shot(page, "login")
    # a deep link survives the login (the form carries the path; never another host)
    page.goto(f"{dash.url}/instance?service=quotes&id=dq1")
    page.fill("#username", "admin")
    page.fill("#password", ADMIN_PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{dash.url}/instance?service=quotes&id=dq1")
    page.close()
    # the Bokeh session endpoints refuse too: no page, no websocket without a session
    assert httpx.get(f"{dash.url}/", follow_redirects=False).status_code in (302, 303)


def test_overview_lists_the_demo_instances_with_health_in_words(
    chromium_browser: object, dash: DashboardProcess, cluster: LocalCluster
) -> None:
    page = _login(chromium_browser, dash)
    took = wait_until(
        lambda: {"dq1", "dq2", "DL1", "DL2"} <= {r.get("instance") for r in _rows(page)}, 10, "demo rows"
    )
    print(f"demo instances listed {took:.1f} s after login")
    row = _row(page, "dq1")
    assert row is not None and row["health"] == "✔ healthy" and row["service"] == "quotes"
    roles = {r["instance"]: r["role"] for r in _rows(page) if r["service"] == "ledger"}
    assert sorted(v.split()[0] for k, v in roles.items() if k in ("DL1", "DL2")) == ["ACTIVE", "STANDBY"]
    counts = page.inner_text("[aria-label='Instances per health']")
    assert "✔ healthy:" in counts and "◐ stale:" in counts and "✖ down:" in counts
    strip = page.inner_text("[aria-label='NATS cluster']")
    leader = cluster.meta_leader()
    assert leader and f"meta leader {leader}" in strip, strip
    # the token never appears in a URL or in what the browser can read
    assert "token" not in page.url and all(c["httpOnly"] for c in page.context.cookies())
    _shot(page, "overview")
    page.close()


def test_the_table_keeps_the_persons_sort_selection_and_search_across_updates(
    chromium_browser: object, dash: DashboardProcess, nats_urls: list[str]
) -> None:
    page = _login(chromium_browser, dash)
    wait_until(lambda: len(_rows(page)) >= 4, 10, "rows")
    header = page.locator(".tabulator-col[tabulator-field='instance'] .tabulator-col-title")
    header.click()
    header.click()  # descending
    wait_until(
        lambda: page.locator(".tabulator-col[tabulator-field='instance'][aria-sort='descending']").count(),
        5,
        "sorted",
    )
    order = [r["instance"] for r in _rows(page)]
    assert order == sorted(order, reverse=True), order
    page.locator(".tabulator-row").nth(1).locator(".tabulator-cell[tabulator-field='service']").click()
    selected = page.locator(".tabulator-row.tabulator-selected .tabulator-cell[tabulator-field='instance']")
    wait_until(lambda: selected.count() == 1, 5, "a selected row")
    chosen = selected.inner_text()
    # the data changes under the person: a new instance arrives (the hardest update: the row set changes)
    extra = start_instances(nats_urls, 1, prefix="dz")
    try:
        wait_until(lambda: "dz1" in [r["instance"] for r in _rows(page)], 10, "the new instance's row")
        page.wait_for_timeout(1500)  # and a few ordinary updates after it
        now = [r["instance"] for r in _rows(page)]
        assert now == sorted(now, reverse=True) and now[0] == "dz1", now
        assert selected.all_inner_texts() == [chosen]
    finally:
        stop_instances(extra)
    # search filters, and keeps filtering while data arrives
    page.fill("input[placeholder^='service, instance']", "ledger")
    wait_until(lambda: {r["service"] for r in _rows(page)} == {"ledger"}, 5, "search applied")
    page.wait_for_timeout(1200)
    assert {r["service"] for r in _rows(page)} == {"ledger"}
    page.close()


def test_a_viewer_sees_no_edit_controls(
    chromium_browser: object, dash: DashboardProcess, mgmt: ManagementServer
) -> None:
    page = _login(chromium_browser, dash, *VIEWER)
    page.goto(f"{dash.url}/services")
    page.wait_for_selector("text=Read-only: your role cannot change definitions.")
    for label in ("New definition", "Edit", "Delete", "Save"):
        assert page.get_by_role("button", name=label, exact=True).count() == 0, label
    page.close()
    # and the API refuses a viewer's write anyway
    token = mgmt.token(user=VIEWER[0], password=VIEWER[1])
    with mgmt.client(token) as viewer:
        assert viewer.post("/api/services", json={"name": "viewer-was-here"}).status_code == 403


def _click(page: object, label: str) -> None:
    page.get_by_role("button", name=label, exact=True).click()  # type: ignore[attr-defined]


def _message(page: object, text: str) -> str:
    loc = page.locator("[role=alert], [role=status]").filter(has_text=text)  # type: ignore[attr-defined]
    loc.first.wait_for()
    return loc.first.inner_text()


def test_a_definition_is_created_edited_with_a_conflict_and_deleted_through_the_forms(
    chromium_browser: object, dash: DashboardProcess, mgmt: ManagementServer
) -> None:
    name = f"dash-{secrets.token_hex(3)}"
    page = _login(chromium_browser, dash, *OPERATOR)
    page.goto(f"{dash.url}/services")
    _click(page, "New definition")
    page.get_by_label("Name").fill(name)
    page.get_by_label("Owner").fill("team-a")
    page.get_by_label("Max error rate (0-1, empty: default)").fill(
        "7"
    )  # out of range: the API's message shows
    _click(page, "Save")
    assert "max_error_rate" in _message(page, "Not saved")
    page.get_by_label("Max error rate (0-1, empty: default)").fill("0.1")
    _click(page, "Save")
    _message(page, f"Created {name}: revision")
    with mgmt.client(mgmt.token()) as admin:
        first = admin.get(f"/api/services/{name}").json()
        assert first["definition"]["owner"] == "team-a" and first["definition"]["max_error_rate"] == 0.1
        # the form is read-only until Edit
        assert page.get_by_label("Owner").is_disabled()
        _click(page, "Edit")
        page.get_by_label("Owner").fill("team-b")
        # someone else saves first
        body = {
            **{k: v for k, v in first["definition"].items() if k not in ("name", "created_at", "updated_at")}
        }
        r = admin.put(
            f"/api/services/{name}",
            json={**body, "owner": "team-z"},
            headers={"If-Match": str(first["revision"])},
        )
        assert r.status_code == 200, r.text
        _click(page, "Save")
        text = _message(page, "Conflict: not saved")
        assert "team-z" in text and f"revision {r.json()['revision']}" in text
        assert admin.get(f"/api/services/{name}").json()["definition"]["owner"] == "team-z"  # not overwritten
        _shot(page, "services-conflict")
        _click(page, "Load the current version")
        _click(page, "Edit")
        page.get_by_label("Owner").fill("team-b")
        _click(page, "Save")
        _message(page, f"Saved {name}")
        assert admin.get(f"/api/services/{name}").json()["definition"]["owner"] == "team-b"
        _click(page, "Delete")
        _message(page, f"Delete the definition {name}")
        assert admin.get(f"/api/services/{name}").status_code == 200  # nothing gone before confirmation
        _click(page, "Yes, delete it")
        _message(page, f"Deleted {name}")
        assert admin.get(f"/api/services/{name}").status_code == 404
    _shot(page, "services")
    assert page.locator("a[href='/audit']").count() == 0  # an operator has no audit:read
    page.close()
    # the admin's audit page shows what the operator did, newest first
    page = _login(chromium_browser, dash)
    page.goto(f"{dash.url}/audit")
    actions = page.locator(".tabulator-row", has_text=name).locator(
        ".tabulator-cell[tabulator-field='action']"
    )
    wait_until(lambda: actions.count() >= 4, 10, "the audit entries")
    assert actions.all_inner_texts()[:2] == ["service.delete", "service.update"]
    _shot(page, "audit")
    page.close()


def test_groups_and_instance_pages_show_the_active_its_history_and_config(
    chromium_browser: object, dash: DashboardProcess
) -> None:
    page = _login(chromium_browser, dash)
    page.goto(f"{dash.url}/groups")
    page.locator(".tabulator-cell[tabulator-field='active']", has_text="✔ DL").first.wait_for()
    page.locator("text=acquire").first.wait_for()
    _shot(page, "groups")
    page.goto(f"{dash.url}/instance?service=quotes&id=dq1")
    page.locator("text=points of history, then live").wait_for()
    page.locator(".tabulator-cell[tabulator-field='setting']", has_text="rpc_timeout_s").wait_for()
    page.locator("td", has_text="✔ healthy").first.wait_for()
    _shot(page, "instance")
    page.close()


def test_killing_the_active_moves_the_active_badge_and_its_row_goes_stale(
    chromium_browser: object, dash: DashboardProcess, demo: dict
) -> None:
    page = _login(chromium_browser, dash)
    found: dict[str, dict[str, str]] = {}

    def healthy_active(instance: str | None = None) -> dict[str, str] | None:
        """The ledger row that is ACTIVE and healthy (read in one look at the table), and remember it."""
        row = next(
            (
                r
                for r in _rows(page)
                if r["service"] == "ledger"
                and r["role"].startswith("ACTIVE")
                and r["health"] == "✔ healthy"
                and instance in (None, r["instance"])
            ),
            None,
        )
        if row:
            found["row"] = row
        return row

    def epoch_of(row: dict[str, str]) -> int:
        return int(re.search(r"e(\d+)", row["role"]).group(1))  # type: ignore[union-attr]

    wait_until(healthy_active, 10, "a healthy active")
    active = found["row"]
    standby = "DL2" if active["instance"] == "DL1" else "DL1"
    demo[active["instance"]].send_signal(signal.SIGKILL)
    wait_until(lambda: healthy_active(standby), 10, "the standby ACTIVE")
    assert epoch_of(found["row"]) > epoch_of(active)
    wait_until(
        lambda: (_row(page, active["instance"]) or {}).get("health") in ("◐ stale", "✖ down"),
        10,
        "stale row",
    )
    _shot(page, "overview-after-kill")
    page.close()


def test_axe_finds_no_serious_or_critical_violation_on_any_page(
    chromium_browser: object, dash: DashboardProcess
) -> None:
    page = _login(chromium_browser, dash)
    assert AXE.is_file(), f"no axe-core at {AXE}: make setup installs it (npm)"
    findings: dict[str, list[dict]] = {}
    for name, path in (
        ("login", "/login"),
        ("overview", "/"),
        ("services", "/services"),
        ("groups", "/groups"),
        ("instance", "/instance?service=quotes&id=dq2"),
        ("audit", "/audit"),
    ):
        page.goto(dash.url + path)
        page.wait_for_timeout(1000)  # the first feed tick and the template's quarter-second Tabulator fix
        page.add_script_tag(path=str(AXE))
        result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
        findings[name] = [
            {
                "id": v["id"],
                "impact": v["impact"],
                "help": v["help"],
                "nodes": len(v["nodes"]),
                "targets": [n["target"] for n in v["nodes"][:3]],
            }
            for v in result["violations"]
        ]
    SHOTS.mkdir(parents=True, exist_ok=True)
    (SHOTS / "axe.json").write_text(json.dumps(findings, indent=1))
    serious = {p: [f for f in fs if f["impact"] in ("serious", "critical")] for p, fs in findings.items()}
    assert not any(serious.values()), json.dumps(serious, indent=1)
    page.close()


def test_when_the_api_goes_away_the_page_says_so_and_keeps_the_last_data_marked_stale(
    chromium_browser: object, dash: DashboardProcess, mgmt: ManagementServer
) -> None:
    page = _login(chromium_browser, dash)
    # one look, kept: a second look can fall on a data update that is re-rendering the rows
    seen: list[int] = []
    wait_until(lambda: seen.append(len(_rows(page))) or seen[-1] >= 3, 10, "rows")
    before = seen[-1]
    mgmt.stop()  # the module's last test: the API is gone for good
    banner = page.locator("[role=alert]", has_text="unreachable")
    banner.wait_for(timeout=10_000)
    assert "STALE" in banner.inner_text()
    assert "STALE" in page.inner_text("[aria-label='Instances per health']")

    def all_kept_and_stale() -> bool:
        rows = _rows(page)  # one look: both conditions on the same rows (an empty look is not "all stale")
        return len(rows) == before and all(r["health"].endswith("(stale data)") for r in rows)

    wait_until(all_kept_and_stale, 5, f"all {before} rows kept and marked stale")
    _shot(page, "overview-api-unreachable")
    page.close()


def test_logout_and_token_expiry_send_the_browser_back_to_login(
    chromium_browser: object, nats_urls: list[str], tmp_path: Path
) -> None:
    # a token of 14 s: the dashboard ends its session 5 s before the token, so after about 9 s (with 7 s, a
    # login page that took over 2 s to load on a busy machine never showed "Log out": clean-clone flake)
    short = ManagementServer(nats_urls, tmp_path, secrets.token_hex(32), AEGIS_MGMT_TOKEN_TTL_S="14")
    dash = None
    try:
        dash = DashboardProcess.start(short.process, tmp_path)
        page = _login(chromium_browser, dash)
        page.locator("a", has_text="Log out").wait_for()
        page.locator("[role=alert]", has_text="Your session has ended").wait_for(timeout=20_000)
        page.goto(f"{dash.url}/services")
        page.wait_for_url(re.compile(r".*/login.*"))
        page.close()
        page = _login(chromium_browser, dash)
        page.locator("a", has_text="Log out").click()
        page.wait_for_url(f"{dash.url}/logout")
        page.goto(f"{dash.url}/")
        page.wait_for_url(re.compile(r".*/login.*"))
        page.close()
    finally:
        if dash is not None:
            dash.stop()
        short.stop()
