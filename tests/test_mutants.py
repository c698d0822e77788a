"""The quick subset of ``aegis mutants`` (issue 21): every mutant still fits the code, a mutant that no longer fits
fails loudly, the unmutated tree passes the quick layers, and the CI mutants (``Mutant.quick``: safety-relevant)
are caught by the tests of their module and, where the simulator models the bug, by a short simulator run.

Each mutant runs in a scratch copy of the package (never the working tree). About a minute of CPU (five minutes of wall time on a loaded two-core machine).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from aegis.verify import mutants as mv
from aegis.verify.mutants import MUTANTS, Edit, Mutant, MutantRot, apply, scratch

QUICK = [m for m in MUTANTS if m.quick]
SIM_RUNS = 70
"""Ten runs of each of the default campaign's seven mixes."""
QUICK_TESTS = {
    # the election's unit tests and its hypothesis property (the full layer adds the rest of test_sim.py and
    # the driver equivalence on a real NATS server)
    "sdk/election.py": (
        "tests/test_election.py",
        "tests/test_sim.py::test_no_violation_under_any_fault_schedule",
    ),
    "sdk/sticky_core.py": ("tests/test_sticky_core.py",),
}
SIM_MODELS = {"sdk/election.py"}
"""Mutated files whose bug the simulator's default run must find (it drives the SDK's election machine and asks it
how to stamp each reply). A quick mutant elsewhere must say why the simulator cannot show it (``argued``: the
sticky client's epoch check, which its one-call-at-a-time client never needs while the instances fence
themselves)."""


def _file(m: Mutant) -> str:
    (edit,) = {e.file for e in m.edits}
    return edit


def test_the_quick_subset_is_safety_relevant_and_small() -> None:
    assert 3 <= len(QUICK) <= 4
    assert all(m.safety_relevant and m.equivalent_because is None for m in QUICK)
    assert all(_file(m) in QUICK_TESTS for m in QUICK)
    assert all(_file(m) in SIM_MODELS or m.argument("sim") for m in QUICK)


def test_arguments_name_real_layers_and_only_for_safety_relevant_mutants() -> None:
    for m in MUTANTS:
        assert all(layer in mv.LAYERS and len(why) > 80 for layer, why in m.argued), m.name
        assert not m.argued or (m.safety_relevant and m.equivalent_because is None), m.name


def test_every_mutant_fits_the_code() -> None:
    names = [m.name for m in MUTANTS]
    assert len(names) == len(set(names))
    for m in MUTANTS:
        assert m.safety_relevant or m.equivalent_because, m.name
        with scratch(m) as root:
            for e in m.edits:
                assert e.new in (root / "aegis" / e.file).read_text()


def test_a_mutant_whose_text_is_gone_fails_loudly(tmp_path: Path) -> None:
    (tmp_path / "sdk").mkdir()
    (tmp_path / "sdk" / "election.py").write_text("x = 1\nx = 1\n")
    gone = Mutant("gone", "", (Edit("sdk/election.py", "y = 2", "y = 3"),), True, ())
    twice = Mutant("twice", "", (Edit("sdk/election.py", "x = 1", "x = 2"),), True, ())
    for m in (gone, twice):
        with pytest.raises(MutantRot, match=m.name):
            apply(m, tmp_path)


def test_the_unmutated_tree_passes_the_quick_layers() -> None:
    tests = tuple(sorted({t for ts in QUICK_TESTS.values() for t in ts}))
    with scratch(None) as root:
        result = mv.tests_layer(root, tests)
        assert not result["caught"], result["detail"]
        sim = mv.sim_layer(root, SIM_RUNS)
        assert not sim["caught"], sim["detail"]


@pytest.mark.parametrize("mutant", QUICK, ids=[m.name for m in QUICK])
def test_quick_mutant_is_caught(mutant: Mutant) -> None:
    with scratch(mutant) as root:
        result = mv.tests_layer(root, QUICK_TESTS[_file(mutant)])
        assert result["caught"], f"{mutant.name} passes its tests: {result['detail']}"
        if _file(mutant) in SIM_MODELS:
            sim = mv.sim_layer(root, SIM_RUNS)
            assert sim["caught"], f"{mutant.name} passes {SIM_RUNS} simulator runs"
