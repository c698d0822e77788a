"""What each change of the RPC hot path buys, measured by taking it out: ``python -m aegis.harness.bench.ablation``.

A variant is the committed tree (``git archive HEAD``) with one patch of ``reports/rpc-ablation/`` applied that takes
one change out (``as-is``: no patch). Every variant runs ``aegis bench --quick --json`` from its own copy, one variant
after another and in reversed order on every other pass, ``--runs`` times; the ratios of each run are kept. Writes
``reports/rpc-ablation.json`` (``--out``), which ``make reports`` renders into ``reports/rpc-overhead.md``.

Uncommitted changes are not measured, and a patch that no longer applies to HEAD stops the run with git's message.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aegis.harness.bench.runner import RATIO_SOURCES, load_avg

ROOT = Path(__file__).resolve().parents[3]
PATCHES = ROOT / "reports" / "rpc-ablation"
KEPT = [*RATIO_SOURCES, "ratio_method"]


def _variant_tree(base: Path, name: str, patch: Path | None) -> Path:
    tree = base / name
    tree.mkdir()
    archive = subprocess.run(["git", "archive", "HEAD"], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    if patch is not None:
        done = subprocess.run(["git", "apply", str(patch)], cwd=tree, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"{patch.name} does not apply to HEAD: {done.stderr.strip()}")
    return tree


def _quick_bench(tree: Path) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    before = load_avg()
    done = subprocess.run(
        [sys.executable, "-m", "aegis.cli", "bench", "--quick", "--json"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode:
        raise SystemExit(f"aegis bench --quick failed in {tree.name}: {done.stderr.strip()[-2000:]}")
    report = json.loads(done.stdout)
    return {k: report[k] for k in KEPT} | {"load_avg": {"before": before, "after": load_avg()}}


def run(runs: int) -> dict[str, Any]:
    """Measure every variant ``runs`` times; the report's ``variants`` keep each run's ratios."""
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    patches: dict[str, Path | None] = {"as-is": None}
    patches |= {p.stem: p for p in sorted(PATCHES.glob("*.patch"))}
    measured: dict[str, list[dict[str, Any]]] = {name: [] for name in patches}
    with tempfile.TemporaryDirectory(prefix="aegis-ablation-") as tmp:
        trees = {name: _variant_tree(Path(tmp), name, p) for name, p in patches.items()}
        order = list(trees)
        for i in range(runs):
            for name in order if i % 2 == 0 else order[::-1]:
                print(f"run {i + 1}/{runs}: {name}", file=sys.stderr, flush=True)
                measured[name].append(_quick_bench(trees[name]))
    return {
        "command": f"python -m aegis.harness.bench.ablation --runs {runs}",
        "commit": commit.stdout.strip(),
        "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count()},
        "variants": [
            {
                "name": name,
                "patch": None if p is None else str(p.relative_to(ROOT)),
                "takes_out": "nothing" if p is None else p.read_text().splitlines()[0].removeprefix("# "),
                "runs": measured[name],
            }
            for name, p in patches.items()
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2, help="quick benches per variant (default 2)")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "rpc-ablation.json")
    args = parser.parse_args()
    if not 1 <= args.runs <= 20:
        parser.error("--runs must be 1..20")
    report = run(args.runs)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(args.out)


if __name__ == "__main__":
    main()
