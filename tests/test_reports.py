"""HTML reports work offline: BokehJS is embedded (``bokeh.resources.INLINE``), never loaded from a CDN."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _assert_offline_page(page: str) -> None:
    assert "cdn.bokeh.org" not in page
    assert not re.search(r"<script[^>]*\bsrc=", page), "a script is loaded from elsewhere"
    assert "/* BEGIN bokeh.min.js */" in page  # BokehJS itself, inline
    assert "Bokeh.embed" in page or "embed_items" in page  # and the plots it renders


def test_campaign_report_html_embeds_bokehjs(tmp_path: Path) -> None:
    # A recorded campaign report (reports/partition.json) rendered again by today's code, in a process of its own as
    # `aegis campaign` and `aegis render` do: Bokeh adds the external scripts of every model class loaded in the
    # process (Panel's, once the dashboard is imported), which this suite's process may have loaded.
    report = json.loads((ROOT / "reports" / "partition.json").read_text())
    report["campaign"]["name"] = "offline-check"
    (tmp_path / "offline-check.json").write_text(json.dumps(report))
    shutil.copy(ROOT / "reports" / "sim-predicted-failover.json", tmp_path / "sim-predicted-failover.json")
    proc = subprocess.run(
        [sys.executable, "-m", "aegis.cli", "render", str(tmp_path / "offline-check.json")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    page = (tmp_path / "offline-check.html").read_text()
    assert page.startswith("<!DOCTYPE html>")
    _assert_offline_page(page)


def test_recorded_reports_are_offline_pages_and_aegis_render_rebuilds_them(tmp_path: Path) -> None:
    """Every HTML page in reports/ is one that opens offline, and `aegis render` rebuilds a page (and a campaign's
    markdown) from the recorded JSON alone."""
    for page in sorted((ROOT / "reports").glob("*.html")):
        _assert_offline_page(page.read_text())
    for name in ("rolling-restart.json", "sim-default.json", "sim-predicted-failover.json"):
        shutil.copy(ROOT / "reports" / name, tmp_path / name)
    for name in ("rolling-restart.json", "sim-default.json"):
        proc = subprocess.run(
            [sys.executable, "-m", "aegis.cli", "render", str(tmp_path / name)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        _assert_offline_page((tmp_path / name).with_suffix(".html").read_text())
    assert (tmp_path / "rolling-restart.md").read_text() == (
        ROOT / "reports" / "rolling-restart.md"
    ).read_text()
    bad = subprocess.run(
        [sys.executable, "-m", "aegis.cli", "render", str(tmp_path / "sim-predicted-failover.json")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "neither a campaign report" in bad.stderr
