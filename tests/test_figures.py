"""The figure tables of README.md, docs/ and reports/rpc-overhead.md agree with the JSON they cite (no cluster).

``aegis/figures.py`` renders every ``<!-- figures:NAME source=... -->`` block from its JSON; these tests fail
when a committed file disagrees with its JSON (fix: ``make reports``), and show that they can fail.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aegis.cli import app
from aegis.figures import REPO, FiguresError, blocks, check, p99_or_max, render, targets, write

EXPECTED = {
    "README.md": {
        "failover",
        "sim",
        "campaign-classes",
        "campaign-totals",
        "bench",
        "management-bench",
        "soak",
        "election-scale",
    },
    "docs/election-defaults.md": {"failover", "sim-sweep"},
    "reports/rpc-overhead.md": {"bench-goals", "bench-cpu"},
}


def test_committed_figures_agree_with_their_json() -> None:
    stale = [f"{p.relative_to(REPO)}:{b.line} figures:{b.name}" for p in targets() for b in check(p)]
    assert not stale, f"stale figures (run `make reports`): {stale}"


def test_every_figure_table_is_in_a_block_with_its_reproduce_command() -> None:
    found = {str(p.relative_to(REPO)): {b.name for b in blocks(p)} for p in targets()}
    for name, names in EXPECTED.items():
        assert names <= found.get(name, set()), (name, found.get(name))
    for p in targets():
        for b in blocks(p):
            assert b.rendered.startswith("Reproduce: `"), (p, b.name)
            assert all((REPO / s).is_file() for s in b.sources), (p, b.name, b.sources)


def test_no_p99_below_20_samples() -> None:
    assert p99_or_max(0.9, 0.95, 19) == "max 950 ms (19)"
    assert p99_or_max(0.9, 0.95, 20) == "900 ms (20)"
    assert p99_or_max(None, None, 0) == "- (0)"
    readme = render(REPO / "README.md")
    # 10 kills in reports/failover.json: the max, never a p99
    kills = json.loads((REPO / "reports/failover.json").read_text())
    n = kills.get("failover_samples", len(kills["failover_gaps_s"]))
    if n < 20:
        assert f"max {kills['failover_max_s'] * 1000:.0f} ms ({n})" in readme


def _copy_tree(tmp_path: Path) -> Path:
    for rel in ("README.md", "docs", "reports"):
        src = REPO / rel
        if src.is_dir():
            shutil.copytree(src, tmp_path / rel, ignore=shutil.ignore_patterns("*.html", "*.ndjson", "*.xml"))
        else:
            shutil.copy(src, tmp_path / rel)
    return tmp_path


def _edit(path: Path, change: callable) -> None:  # type: ignore[valid-type]
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_a_changed_json_value_makes_its_table_stale(tmp_path: Path) -> None:
    root = _copy_tree(tmp_path)
    readme, docs = root / "README.md", root / "docs/election-defaults.md"
    assert check(readme, root) == [] and check(docs, root) == []

    _edit(root / "reports/sim-default.json", lambda d: d.update(speedup=1234.5))
    assert [b.name for b in check(readme, root)] == ["sim"]
    assert "| 1234.5 (" in render(readme, root)

    def slower(d: dict) -> None:
        d["by_class"]["instance-kill"]["gap_p99_s"] = 1.4567

    top = json.loads((root / "reports/instance-crash.json").read_text())["by_class"]["instance-kill"][
        "gap_max_s"
    ]
    _edit(root / "reports/instance-crash.json", slower)
    assert {b.name for b in check(readme, root)} == {"sim", "campaign-classes"}
    assert f"| 1457 ms / {top * 1000:.0f} ms (100) |" in render(readme, root)

    _edit(root / "reports/failover.json", lambda d: d.update(failover_max_s=1.2346))
    assert {b.name for b in check(docs, root)} == {"failover"}
    assert "max 1235 ms (10)" in render(docs, root)
    assert "goal p99 ≤ 1.0 s: **not met**" in render(docs, root)

    assert set(write([readme, docs], root)) == {readme, docs}
    assert check(readme, root) == [] and check(docs, root) == []


def test_sample_counts_from_newer_reports_are_used(tmp_path: Path) -> None:
    root = _copy_tree(tmp_path)

    def newer(d: dict) -> None:
        row = d["by_class"]["instance-pause"]
        row.update(new_epoch_failover_samples=21, new_epoch_failover_p99_s=0.8, new_epoch_failover_max_s=0.95)

    _edit(root / "reports/instance-pause.json", newer)
    row = json.loads((root / "reports/instance-pause.json").read_text())["by_class"]["instance-pause"]
    gaps = f"{row['gap_p99_s'] * 1000:.0f} ms / {row['gap_max_s'] * 1000:.0f} ms (25)"
    assert (
        f"| instance-pause | instance-pause | 25 | {row['gap_p50_s'] * 1000:.0f} ms (25) | {gaps} | 800 ms (21) |"
        in (render(root / "README.md", root))
    )


def test_bad_blocks_are_named(tmp_path: Path) -> None:
    doc = tmp_path / "x.md"
    doc.write_text("<!-- figures:nope source=reports/failover.json -->\n<!-- /figures:nope -->\n")
    with pytest.raises(FiguresError, match="no renderer named 'nope'"):
        check(doc)
    doc.write_text("<!-- figures:failover source=reports/failover.json -->\nno end\n")
    with pytest.raises(FiguresError, match=r"x.md:1: .*closing"):
        check(doc)
    doc.write_text("<!-- figures:failover source=reports/missing.json -->\n<!-- /figures:failover -->\n")
    with pytest.raises(FiguresError, match="cannot read reports/missing.json"):
        check(doc)


def test_cli_check_lists_stale_blocks_and_rewrite_fixes_them(tmp_path: Path) -> None:
    doc = tmp_path / "x.md"
    doc.write_text(
        "# x\n\n<!-- figures:failover source=reports/failover.json -->\n| old |\n<!-- /figures:failover -->\n"
    )
    runner = CliRunner()
    stale = runner.invoke(app, ["figures", "--check", str(doc)])
    assert stale.exit_code == 1
    assert "figures:failover disagrees with reports/failover.json" in stale.output
    assert doc.read_text().count("| old |") == 1  # --check writes nothing
    assert runner.invoke(app, ["figures", str(doc)]).exit_code == 0
    assert "| old |" not in doc.read_text() and doc.read_text().startswith("# x\n")
    assert runner.invoke(app, ["figures", "--check", str(doc)]).exit_code == 0


def test_the_spec_readme_is_a_figures_target() -> None:
    """Its spec-quick block is held to reports/spec-quick.json only while the file is in the list (a move of the
    file once dropped it silently)."""
    assert REPO / "aegis" / "spec" / "README.md" in targets()
