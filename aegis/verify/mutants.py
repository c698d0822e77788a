"""Protocol mutants: one-line bugs of the election core, the sticky client core and the reply fencing, and which
layer of verification catches each (issue 21).

:data:`MUTANTS` is the fixed list, as data. Each mutant is applied to a **scratch copy** of the package (a
temporary directory holding ``aegis/``, ``tests/`` and ``pyproject.toml``; the working tree is never touched)
and run through the layers, cheapest first:

* ``tests``: the unit and hypothesis tests of the mutated module (pytest in the scratch copy, ``-x``);
* ``sim``: the fault-mix runs of the simulator's default campaign (``aegis sim``: run ``k`` has seed ``1 + k`` and
  mix ``DEFAULT_MIXES[k % 7]``, :class:`aegis.sim.campaign.CampaignConfig`'s defaults), stopping at the first
  violation; ``--sim-runs`` bounds the run count (2000, the default campaign's, in a full run);
* ``tlc``: the spec's negative control that switches off the same safeguard (``aegis/spec/tla/Neg_*.cfg``), when
  one exists: it must fail with its invariant. (The spec is a model of the protocol, not of this code: the layer
  says the model's counterpart of the bug is caught, and its seconds are TLC's.)

The smoke campaign on a real cluster is not a layer per mutant (:data:`SMOKE_NOT_A_LAYER` says why).

A layer that cannot show a safety-relevant mutant by the nature of its model says why in ``argued`` (the
layer still runs; its miss is reported, argued, and not counted as a problem).

A mutant whose ``old`` text does not occur exactly once in its file fails the run loudly (:class:`MutantRot`):
the list must follow the code or be fixed, never silently test nothing. A mutant that is not caught is expected
to say why in ``equivalent_because``; one that is safety-relevant and slips past a layer is reported as such.
The protocol's rules live once, in the SDK's sans-IO cores (``sdk/election.py``, ``sdk/sticky_core.py``), which
the asyncio drivers and the simulator both call: a mutant of a rule there is one edit, and mutates the SDK and
the simulator alike (the reply fencing too: ``Election.reply_epoch``, asked by ``Service`` and by the
simulator's instances). Only the mutants of what the asyncio driver itself does with NATS (the compare-and-set
of a renewal or a release, the TTL check in ``sdk/single_active.py``) carry a twin edit of the simulator's model
of it (``sim/kv.py``, ``sim/campaign.py``), since the simulator has no NATS; the twin is part of the mutant's data.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PACKAGE_DIR = Path(__file__).resolve().parent.parent
"""The ``aegis`` package the mutants are copied from."""
ROOT = PACKAGE_DIR.parent

ELECTION_TESTS = ("tests/test_election.py", "tests/test_driver_equivalence.py", "tests/test_sim.py")
"""The election's unit tests, the driver equivalence and its hypothesis properties (``test_sim.py`` drives the
machine through the simulator under hypothesis-chosen fault schedules)."""
STICKY_TESTS = ("tests/test_sticky_core.py",)
DRIVER_TESTS = ("tests/test_single_active.py", "tests/test_late_reply.py")

LAYERS = ("tests", "sim", "tlc")
SMOKE_NOT_A_LAYER = (
    "a smoke campaign (harness/campaigns/smoke.yaml) is one schedule of nine real faults on a local three-node"
    " cluster, about three minutes of wall time and up to 150 s of TLC on its trace, with real (unrepeatable)"
    " timings: a run that misses a mutant says nothing, since each of these bugs needs one interleaving (a reply"
    " in flight across a failover, a late ack followed by a pause, a stop taken after a deposition) that one real"
    " schedule hits by chance, and the deterministic layers above find every one in seconds. The campaign's job is"
    " another: that the real system behaves as the model does; CI runs it on the unmutated tree (make campaign)"
    " and checks its whole trace against the spec (tests/test_failover.py shows a tampered trace is rejected)"
)
"""Why ``aegis mutants`` has no smoke-campaign layer (in the report)."""
FULL_SIM_RUNS = 2000
QUICK_SIM_RUNS = 140


class MutantRot(Exception):
    """A mutant's text is not in its file exactly once: the list no longer matches the code."""


@dataclass(frozen=True, slots=True)
class Edit:
    """Replace ``old`` (must occur exactly once) by ``new`` in ``file`` (relative to the ``aegis`` package)."""

    file: str
    old: str
    new: str


@dataclass(frozen=True, slots=True)
class Mutant:
    name: str
    what: str
    edits: tuple[Edit, ...]
    safety_relevant: bool
    tests: tuple[str, ...]
    tlc: str | None = None
    """The spec's negative control for the same bug (a config name in ``aegis/spec/tla``), if any."""
    equivalent_because: str | None = None
    """Why a layer cannot (and need not) catch it: an equivalent mutant, or a property outside the layer."""
    quick: bool = False
    """In the CI subset (``tests/test_mutants.py``)."""
    argued: tuple[tuple[str, str], ...] = ()
    """(layer, why): a layer that cannot show this safety-relevant bug, and the argument (the mutant is
    equivalent under that layer's model). The layer still runs and reports; its miss is not a problem."""

    def argument(self, layer: str) -> str | None:
        """Why ``layer`` cannot show the bug, if argued."""
        return dict(self.argued).get(layer)


CLIENT_EPOCH_SIM = (
    "with servers that fence themselves, a client that makes one call at a time never receives an older"
    " epoch's success: each attempt of a call is admitted after the previous call accepted its reply, by an"
    " instance that serves then, and whoever serves holds the newest epoch that ever served"
    " (ServingHoldsNewestEpoch, checked after every event), so the reply's epoch is at least every epoch the"
    " client accepted before; within a call the first success ends it, and the reply of an abandoned or timed-out"
    " attempt is dropped by the driver. An older success reaches the check only across concurrent calls of one"
    " client, over an A-B-A of the leader that its watch hands over in one burst (the driver, the SDK's and the"
    " simulator's alike, abandons an attempt as soon as the watch names another leader), or from servers that"
    " break fencing: the simulator's no-epoch-check control shows ClientNeverGoesBack then. The simulator's"
    " client makes one call at a time, so its default run cannot show this mutant; the unit tests and TLC"
    " (Neg_NoEpochCheck, whose client takes replies in any order) do"
)

_READY = 'return self.seen.kind != "val" or now - self.seen_at >= self.params.lease_s'
_TIMER = "times.append(self.seen_at + p.lease_s)"

MUTANTS: tuple[Mutant, ...] = (
    Mutant(
        "window_from_ack",
        "the serving window is counted from the ack of the write instead of its send",
        (
            Edit(
                "sdk/election.py",
                "self.deadline = request.sent_at + self.params.window_s",
                "self.deadline = now + self.params.window_s",
            ),
        ),
        True,
        ELECTION_TESTS,
        "Neg_WindowFromAck",
        quick=True,
    ),
    Mutant(
        "no_drift_margin",
        "no drift margin: the window is the whole lease",
        (
            Edit(
                "sdk/election.py",
                "return self.lease_s * (1 - self.drift) / (1 + self.drift)",
                "return self.lease_s",
            ),
        ),
        True,
        ELECTION_TESTS,
        "Neg_DesignWindow",
        quick=True,
    ),
    Mutant(
        "early_takeover",
        "a standby takes over after 0.6 lease of silence (readiness and timer)",
        (
            Edit(
                "sdk/election.py",
                _READY,
                _READY.replace(">= self.params.lease_s", ">= 0.6 * self.params.lease_s"),
            ),
            Edit("sdk/election.py", _TIMER, "times.append(self.seen_at + 0.6 * p.lease_s)"),
        ),
        True,
        ELECTION_TESTS,
        "Neg_DriftBeyondBound",
    ),
    Mutant(
        "early_readiness_only",
        "a standby's readiness says 0.6 lease, its timer still a whole lease",
        (
            Edit(
                "sdk/election.py",
                _READY,
                _READY.replace(">= self.params.lease_s", ">= 0.6 * self.params.lease_s"),
            ),
        ),
        False,
        ELECTION_TESTS,
        None,
        equivalent_because=(
            "a standby's machine looks at ready() only inside an event: its timer (at seen_at + lease, unchanged),"
            " a watch delivery (a new revision restarts seen_at, so ready() is false again), or the answer to its"
            " own probe (sent when it was ready anyway); between 0.6 and 1 lease of silence no event reaches it,"
            " so the early readiness is never observed (equivalent as long as no driver ticks the machine between"
            " timers)"
        ),
    ),
    Mutant(
        "lost_cas_keeps_role",
        "an active that loses a compare-and-set keeps its role until its window ends",
        (
            Edit(
                "sdk/election.py",
                '        self.role = "standby"\n        return [traced, *self._step(now)]\n',
                '        if not self.serving(now):\n            self.role = "standby"\n'
                "        return [traced, *self._step(now)]\n",
            ),
        ),
        False,
        ELECTION_TESTS,
        None,
        equivalent_because=(
            "safe by the timing argument: a successor's write was sent at least a lease (on its clock) after it"
            " saw our last stored revision, and our window, counted from that write's send, is shorter than a"
            " lease on any clock within 1 +/- rho, so it ends before the successor serves whether or not we step"
            " down on the lost compare-and-set. Stepping down at once (the spec's rule) is kept as defence in"
            " depth and for the NotActive answers; it is not needed for NoOverlap"
        ),
    ),
    Mutant(
        "reply_current_knowledge",
        "a reply is stamped with the newest epoch the instance knows, not its admission epoch, and not checked"
        " at completion (the SDK before issue 12)",
        (
            Edit(
                "sdk/election.py",
                "        if not self.may_reply(now, admitted):\n            return None\n        return admitted\n",
                "        return max(self.epoch, known)\n",
            ),
        ),
        True,
        ("tests/test_election.py", *DRIVER_TESTS),
        "Neg_ReplyCurrentEpoch",
        quick=True,
    ),
    Mutant(
        "client_accepts_older_epoch",
        "the sticky client accepts a reply from an epoch older than one it accepted",
        (
            Edit(
                "sdk/sticky_core.py",
                "        if epoch < self.accepted and self.epoch_check:\n            return False\n",
                "        if False:\n            return False\n",
            ),
        ),
        True,
        STICKY_TESTS,
        "Neg_NoEpochCheck",
        quick=True,
        argued=(("sim", CLIENT_EPOCH_SIM),),
    ),
    Mutant(
        "no_probe",
        "a standby sends a campaign wherever it sent a probe: before campaigning, and in probe mode (after a KV"
        " outage: one every renew_s) too, so it no longer waits a lease once the KV answers",
        (
            Edit(
                "sdk/election.py",
                '                self.request = _Request("read", self.seen.rev, now, self._next_id())\n'
                "                out.append(Probe(self.request.id))\n",
                '                out.extend(self._send(now, "acquire", self.seen.rev))\n',
            ),
        ),
        True,
        ELECTION_TESTS,
        "Neg_OutageAboutALease",
    ),
    Mutant(
        "ttl_below_window",
        "the key's TTL below lease / (1 + rho): the key expires while its holder still serves",
        (
            Edit(
                "sdk/single_active.py",
                "        if ttl_s < self.params.lease_s:\n",
                "        if ttl_s < 0:\n",
            ),
            Edit(
                "sim/campaign.py", "    ttl_s: float = 10.0\n    sweep:", "    ttl_s: float = 0.5\n    sweep:"
            ),
        ),
        True,
        DRIVER_TESTS,
        "Neg_ShortTTL",
    ),
    Mutant(
        "renew_without_cas",
        "the active renews by a plain put instead of a compare-and-set on its revision",
        (
            Edit(
                "sdk/single_active.py",
                "                revision=w.expected,\n",
                '                revision=None if w.op == "renew" else w.expected,\n',
            ),
            Edit(
                "sim/kv.py",
                "        if expected != key.state.rev:\n",
                '        if op != "renew" and expected != key.state.rev:\n',
            ),
        ),
        True,
        DRIVER_TESTS,
        "Neg_NoCAS",
    ),
    Mutant(
        "release_without_cas",
        "a graceful stop deletes the key without a compare-and-set",
        (
            Edit(
                "sdk/single_active.py",
                "                revision=w.expected,\n",
                '                revision=None if w.op == "release" else w.expected,\n',
            ),
            Edit(
                "sim/kv.py",
                "        if expected != key.state.rev:\n",
                '        if op != "release" and expected != key.state.rev:\n',
            ),
        ),
        True,
        DRIVER_TESTS,
        "Neg_NoCAS",
    ),
)
"""The mutants, in the order of the report."""


# -- the scratch copy ---------------------------------------------------------------------------------------


def apply(mutant: Mutant | None, package: Path) -> None:
    """Apply ``mutant``'s edits to the package copy at ``package``; :class:`MutantRot` if one does not fit."""
    for edit in mutant.edits if mutant else ():
        path = package / edit.file
        text = path.read_text()
        n = text.count(edit.old)
        if n != 1:
            raise MutantRot(
                f"mutant {mutant.name}: its text occurs {n} times in aegis/{edit.file} (must be once)"
            )
        path.write_text(text.replace(edit.old, edit.new))


@contextmanager
def scratch(mutant: Mutant | None) -> Iterator[Path]:
    """A temporary directory with ``aegis/`` (mutated), ``tests/`` and ``pyproject.toml``; removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="aegis-mutant-") as tmp:
        root = Path(tmp)
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        shutil.copytree(PACKAGE_DIR, root / "aegis", ignore=ignore)
        shutil.copytree(ROOT / "tests", root / "tests", ignore=ignore)
        shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
        apply(mutant, root / "aegis")
        yield root


BATCH_NICE = ("nice", "-n", "10")
"""The layers' child processes run at a lower CPU priority: a batch of CPU-bound runs that must not starve what
else runs on the machine (the timing-bound tests the suite runs beside the mutants' quick subset, a cluster)."""


def _env(root: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(root) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _check_import(root: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", "import aegis; print(aegis.__file__)"],
        cwd=root,
        env=_env(root),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not Path(out).resolve().is_relative_to(root.resolve()):
        raise RuntimeError(f"the scratch copy is not what runs: aegis comes from {out}")


# -- the layers --------------------------------------------------------------------------------------------


def tests_layer(root: Path, tests: tuple[str, ...], timeout_s: float = 600) -> dict[str, Any]:
    """pytest on the scratch copy: caught when a test fails."""
    start = time.monotonic()
    proc = subprocess.run(
        [*BATCH_NICE, sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
        cwd=root,
        env=_env(root),
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    seconds = round(time.monotonic() - start, 2)
    last = (proc.stdout.strip().splitlines() or [""])[-1]
    if proc.returncode not in (0, 1):
        raise RuntimeError(
            f"pytest could not run {tests} (exit {proc.returncode}): {last}\n{proc.stderr[-2000:]}"
        )
    return {"caught": proc.returncode == 1, "seconds": seconds, "detail": last}


def sim_runs(runs: int) -> dict[str, Any]:
    """The fault-mix runs of the default campaign, up to the first violation (runs inside the scratch copy)."""
    from aegis.sim.campaign import CampaignConfig
    from aegis.sim.faults import MIXES
    from aegis.sim.run import RunConfig, run

    cfg = CampaignConfig()
    for k in range(runs):
        mix = cfg.mixes[k % len(cfg.mixes)]
        rc = RunConfig(
            seed=cfg.seed + k, params=cfg.params, ttl_s=cfg.ttl_s, mix=MIXES[mix], duration_s=cfg.duration_s
        )
        r = run(rc)
        if r.violations:
            v = r.violations[0]
            return {"runs": k + 1, "caught": True, "detail": f"{v.prop} at seed {rc.seed} ({mix})"}
    return {"runs": runs, "caught": False, "detail": f"0 violations in {runs} runs"}


def sim_layer(root: Path, runs: int, timeout_s: float = 1800) -> dict[str, Any]:
    """:func:`sim_runs` in a child process on the scratch copy."""
    start = time.monotonic()
    proc = subprocess.run(
        [*BATCH_NICE, sys.executable, "-m", "aegis.verify.mutants", "--sim-runs", str(runs)],
        cwd=root,
        env=_env(root),
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"the simulator layer failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["seconds"] = round(time.monotonic() - start, 2)
    return out


def tlc_layer(control: str) -> dict[str, Any]:
    """The spec's negative control ``control``: caught when TLC finds the violation the control expects."""
    from aegis.spec.suite import SPEC_DIR, judge, load_configs, name_temporal
    from aegis.spec.tlc import TlcUnavailable, run_tlc

    config = {c.name: c for c in load_configs()}.get(control)
    if config is None or config.expect is None:
        raise MutantRot(f"{control} is not a negative control in aegis/spec/tla")
    start = time.monotonic()
    try:
        result = name_temporal(
            config, run_tlc(SPEC_DIR / config.module, config.path, extra_args=config.simulate)
        )
    except TlcUnavailable as exc:
        return {"caught": None, "seconds": 0.0, "detail": f"TLC unavailable: {exc}"}
    reason = judge(config, result)
    return {
        "caught": reason is None,
        "seconds": round(time.monotonic() - start, 2),
        "detail": reason or f"{control}: {result.violated} violated ({result.distinct} states)",
    }


# -- the run -----------------------------------------------------------------------------------------------


@dataclass
class Options:
    layers: tuple[str, ...] = LAYERS
    sim_runs: int = FULL_SIM_RUNS
    names: tuple[str, ...] = ()
    quick: bool = False
    baseline: bool = True
    progress: Callable[[str], None] | None = None
    tlc_cache: dict[str, dict[str, Any]] = field(default_factory=dict)


def select(options: Options) -> list[Mutant]:
    """The mutants a run covers: ``names`` if given (unknown names raise), else the quick subset or all."""
    by_name = {m.name: m for m in MUTANTS}
    unknown = [n for n in options.names if n not in by_name]
    if unknown:
        raise KeyError(f"unknown mutant(s) {', '.join(unknown)}; choose from {', '.join(by_name)}")
    if options.names:
        return [by_name[n] for n in options.names]
    return [m for m in MUTANTS if m.quick or not options.quick]


def run_one(mutant: Mutant | None, options: Options) -> dict[str, Any]:
    """One row: ``mutant`` (None: the unmutated tree) through the chosen layers."""
    say = options.progress or (lambda _s: None)
    name = mutant.name if mutant else "(unmutated)"
    caught: dict[str, Any] = {}
    with scratch(mutant) as root:
        _check_import(root)
        if "tests" in options.layers:
            tests = mutant.tests if mutant else tuple(sorted({t for m in select(options) for t in m.tests}))
            say(f"{name}: tests")
            caught["tests"] = tests_layer(root, tests)
        if "sim" in options.layers:
            say(f"{name}: sim")
            caught["sim"] = sim_layer(root, options.sim_runs)
    if "tlc" in options.layers and mutant is not None:
        if mutant.tlc is None:
            caught["tlc"] = {"caught": None, "seconds": 0.0, "detail": "no matching negative control"}
        else:
            if mutant.tlc not in options.tlc_cache:
                say(f"{name}: tlc {mutant.tlc}")
                options.tlc_cache[mutant.tlc] = tlc_layer(mutant.tlc)
            caught["tlc"] = {**options.tlc_cache[mutant.tlc], "control": mutant.tlc}
    row: dict[str, Any] = {"name": name, "caught_by": caught}
    if mutant is not None:
        row.update(
            what=mutant.what,
            safety_relevant=mutant.safety_relevant,
            equivalent_because=mutant.equivalent_because,
            argued=dict(mutant.argued),
            files=sorted({e.file for e in mutant.edits}),
            edits=[{"file": e.file, "old": e.old, "new": e.new} for e in mutant.edits],
        )
    return row


def run_mutants(options: Options) -> dict[str, Any]:
    """Every selected mutant through the layers, plus the unmutated tree (which must pass them all)."""
    chosen = select(options)
    for m in chosen:  # fail loudly before spending minutes: every edit must fit
        with scratch(m):
            pass
    start = time.monotonic()
    baseline = run_one(None, options) if options.baseline else None
    rows = [run_one(m, options) for m in chosen]
    return {
        "layers": list(options.layers),
        "sim_runs": options.sim_runs,
        "smoke_campaign": SMOKE_NOT_A_LAYER,
        "baseline": baseline,
        "mutants": rows,
        "problems": problems(baseline, rows),
        "seconds": round(time.monotonic() - start, 1),
    }


def problems(baseline: dict[str, Any] | None, rows: list[dict[str, Any]]) -> list[str]:
    """What must be fixed: a layer the unmutated tree fails, a safety-relevant mutant a layer misses."""
    out = []
    if baseline is not None:
        for layer, res in baseline["caught_by"].items():
            if res["caught"]:
                out.append(f"the unmutated tree fails the {layer} layer: {res['detail']}")
    for row in rows:
        if row["safety_relevant"] and not row["equivalent_because"]:
            argued = row.get("argued") or {}
            missed = [k for k, v in row["caught_by"].items() if v["caught"] is False and k not in argued]
            if missed:
                out.append(f"{row['name']} (safety-relevant) not caught by {', '.join(missed)}")
    return out


def _cell(res: dict[str, Any] | None) -> str:
    if res is None:
        return "-"
    if res["caught"] is None:
        return "n/a"
    return f"{'**caught**' if res['caught'] else 'missed'} ({res['seconds']:.1f} s)"


def _why(row: dict[str, Any]) -> str:
    parts = [row.get("equivalent_because") or ""]
    parts += [f"{layer}: {why}" for layer, why in (row.get("argued") or {}).items()]
    return "; ".join(p for p in parts if p)


def markdown(report: dict[str, Any]) -> str:
    """The report as a Markdown table (``reports/mutants.md``)."""
    layers = report["layers"]
    lines = [
        "# Protocol mutants (`aegis mutants`)",
        "",
        f"Layers: {', '.join(layers)}; simulator: up to {report['sim_runs']} fault-mix runs of the default"
        " campaign, stopping at the first violation. The list and its rationale: `aegis/verify/mutants.py`.",
        "",
        f"The smoke campaign is not a layer per mutant: {report.get('smoke_campaign') or SMOKE_NOT_A_LAYER}.",
        "",
        "| mutant | safety-relevant | " + " | ".join(layers) + " | equivalent because |",
        "|---|---|" + "---|" * len(layers) + "---|",
    ]
    rows = ([report["baseline"]] if report["baseline"] else []) + report["mutants"]
    for row in rows:
        safety = "-" if "safety_relevant" not in row else ("yes" if row["safety_relevant"] else "no")
        cells = [_cell(row["caught_by"].get(layer)) for layer in layers]
        for layer in row.get("argued") or {}:
            if layer in layers:
                cells[layers.index(layer)] += " (argued)"
        if row["name"] == "(unmutated)":
            cells = [
                "-" if c == "-" else c.replace("missed", "passes").replace("**caught**", "**FAILS**")
                for c in cells
            ]
        lines.append(f"| `{row['name']}` | {safety} | " + " | ".join(cells) + f" | {_why(row)} |")
    lines += ["", "Details (what each layer said):", ""]
    for row in rows:
        for layer, res in row["caught_by"].items():
            extra = f" [{res['control']}]" if res.get("control") else ""
            lines.append(f"- `{row['name']}` {layer}{extra}: {res['detail']}")
    if report["problems"]:
        lines += ["", "Problems (left of issue 21):", ""] + [f"- {p}" for p in report["problems"]]
    if report.get("notes"):
        lines += ["", "Notes:", ""]
    lines += [f"- {n}" for n in report.get("notes", [])]
    lines += ["", f"Total: {report['seconds']} s.", ""]
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    """``python -m aegis.verify.mutants --sim-runs N``: the simulator layer inside a scratch copy."""
    if len(argv) == 2 and argv[0] == "--sim-runs":
        sys.stdout.write(json.dumps(sim_runs(int(argv[1]))) + "\n")
        return
    raise SystemExit("usage: python -m aegis.verify.mutants --sim-runs N (use `aegis mutants`)")


if __name__ == "__main__":
    main(sys.argv[1:])
