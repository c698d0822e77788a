"""The ablation patches of reports/rpc-ablation/ still take their change out of today's code."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from aegis.harness.bench.ablation import PATCHES, ROOT

PATCH_FILES = sorted(PATCHES.glob("*.patch"))


def test_there_are_ablation_patches() -> None:
    assert {p.stem for p in PATCH_FILES} >= {"without-request", "without-write-now", "without-both"}


@pytest.mark.parametrize("patch", PATCH_FILES, ids=lambda p: p.stem)
def test_each_ablation_patch_applies_to_the_code_and_says_what_it_takes_out(patch: Path) -> None:
    first = patch.read_text().splitlines()[0]
    assert first.startswith("# ") and len(first) > 10
    done = subprocess.run(["git", "apply", "--check", str(patch)], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
