"""The one way a benchmark writes its report: ``<name>.json`` and ``<name>.md`` (and a plot, where it has one)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


def write_json_and_markdown(
    report: dict[str, Any],
    directory: Path,
    name: str,
    markdown: Callable[[dict[str, Any]], str],
    plot: Callable[[dict[str, Any], Path], Path] | None = None,
) -> tuple[Path, Path]:
    """Write ``<name>.json`` and ``<name>.md`` under ``directory``; with ``plot``, also ``<name>.html`` (skipped
    when Bokeh, the sim extra's, is missing: the figures do not need it)."""
    directory.mkdir(parents=True, exist_ok=True)
    jpath, mpath = directory / f"{name}.json", directory / f"{name}.md"
    jpath.write_text(json.dumps(report, indent=2) + "\n")
    mpath.write_text(markdown(report))
    if plot is not None:
        try:
            plot(report, directory / f"{name}.html")
        except ImportError:
            pass
    return jpath, mpath
