"""HTML reports work offline: BokehJS is embedded (``bokeh.resources.INLINE``), never loaded from a CDN."""

from __future__ import annotations

import json
import re
from pathlib import Path

from harness.campaign_report import write_report

ROOT = Path(__file__).resolve().parent.parent


def _assert_offline_page(page: str) -> None:
    assert "cdn.bokeh.org" not in page
    assert not re.search(r"<script[^>]*\bsrc=", page), "a script is loaded from elsewhere"
    assert "/* BEGIN bokeh.min.js */" in page  # BokehJS itself, inline
    assert "Bokeh.embed" in page or "embed_items" in page  # and the plots it renders


def test_campaign_report_html_embeds_bokehjs(tmp_path: Path) -> None:
    # A recorded campaign report (reports/partition.json) rendered again by today's code.
    report = json.loads((ROOT / "reports" / "partition.json").read_text())
    report["campaign"]["name"] = "offline-check"
    paths = write_report(report, tmp_path)
    page = next(p for p in paths if p.suffix == ".html").read_text()
    assert page.startswith("<!DOCTYPE html>")
    _assert_offline_page(page)
