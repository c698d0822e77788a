"""``aegis spec``: model-check every configuration of the election spec and say whether each did as expected.

A configuration (``aegis/spec/tla/*.cfg``) declares itself in comment lines: ``\\* suite: quick`` (CI) or
``\\* suite: full``, and for a negative control ``\\* expect: <Invariant>``, the invariant TLC must find
violated (or the one liveness property the config checks: TLC 2.15 does not name a violated temporal
property, so a liveness control checks exactly one). Positive configurations must pass. The result is one
JSON-ready dict::

    {"passed": [...], "failed_as_expected": [...], "unexpected": [{"config": ..., "reason": ...}],
     "distinct_states": 123456, "seconds": 61.2, "configs": [{"name": ..., "expected": ..., ...}],
     "view_crosscheck": {"configs": [...], "agree": [...], "disagree": [...]},
     "mutants": {"configs": [...], "caught": [...], "missed": [...]}}

``unexpected`` is empty when all is well (it also lists cross-check disagreements and missed mutants).

**View cross-check.** Every pass rests on the hand-written ``VIEW`` of ``Lease.tla``. A configuration with
``\\* crosscheck: N`` is also checked *without* the view, on the behaviours of at most ``N`` ticks (a
``CONSTRAINT now <= N`` in a module generated in a temporary directory, under ``Spec``: no liveness, which
a bounded run cannot judge), and its verdict must agree with the view-on verdict: a positive config passes,
a negative control fails with the same invariant. (``crosscheck: N full``: only in the full suite.)

**Mutants.** One-line edits of the protocol in a temporary copy of ``Lease.tla`` (:data:`MUTANTS`), each
checked with the view on against a positive configuration: TLC must find a violation in every one.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from aegis.spec.tlc import TlcResult, run_tlc

SPEC_DIR = Path(__file__).resolve().parent / "tla"
SPEC_MODULE = "Lease.tla"
"""The module a configuration checks unless it names another (``\\* module: QuorumLease``)."""
SPEC_IMPORTS = ("SingleActive.tla",)
"""Modules the specs instantiate: a copy of a spec in another folder needs them beside it."""


def copy_spec(folder: Path, lease_text: str | None = None) -> Path:
    """``Lease.tla`` (or ``lease_text`` in its place: a mutant) and the modules it uses, into ``folder``."""
    for name in SPEC_IMPORTS:
        shutil.copy(SPEC_DIR / name, folder / name)
    target = folder / SPEC_MODULE
    if lease_text is None:
        shutil.copy(SPEC_DIR / SPEC_MODULE, target)
    else:
        target.write_text(lease_text)
    return target


@dataclass(frozen=True)
class ModelConfig:
    """One TLC configuration of the spec and what it must give."""

    name: str
    path: Path
    suite: str  # "quick" or "full"
    expect: str | None  # the invariant a negative control must violate; None: must pass

    @property
    def fair(self) -> bool:
        """The configuration checks the spec under fairness (liveness: the slowest to check)."""
        return bool(re.search(r"^SPECIFICATION\s+FairSpec\b", self.path.read_text(), re.M))

    @property
    def expected(self) -> str:
        """``pass`` or ``fail:<Invariant>``."""
        return "pass" if self.expect is None else f"fail:{self.expect}"

    @property
    def properties(self) -> list[str]:
        """The names on the config's PROPERTY lines."""
        return _names(self.path.read_text(), "PROPERTY")

    @property
    def module(self) -> str:
        """``\\* module: NAME``: the spec module the config checks (``NAME.tla``); default ``Lease.tla``."""
        m = re.search(r"^\\\*\s*module:\s*(\w+)", self.path.read_text(), re.M)
        return f"{m.group(1)}.tla" if m else SPEC_MODULE

    @property
    def simulate(self) -> tuple[str, ...]:
        """``\\* mode: simulate depth=D num=N [seed=S]``: TLC's arguments for a random simulation of N behaviours
        of at most D steps instead of exhaustive model checking (no distinct-state count: the states generated)."""
        m = re.search(r"^\\\*\s*mode:\s*simulate\b(.*)$", self.path.read_text(), re.M)
        if not m:
            return ()
        opts = dict(re.findall(r"(\w+)=(\d+)", m.group(1)))
        args = ["-simulate", f"num={opts.get('num', '1000')}", "-depth", opts.get("depth", "100")]
        if "seed" in opts:
            args += ["-seed", opts["seed"]]
        return tuple(args)

    @property
    def crosscheck(self) -> int | None:
        """``\\* crosscheck: N``: also check without the view, on behaviours of at most N ticks."""
        m = re.search(r"^\\\*\s*crosscheck:\s*(\d+)", self.path.read_text(), re.M)
        return int(m.group(1)) if m else None

    @property
    def crosscheck_full(self) -> bool:
        """``\\* crosscheck: N full``: the check without the view only runs with the full suite."""
        return bool(re.search(r"^\\\*\s*crosscheck:\s*\d+\s+full\b", self.path.read_text(), re.M))


def _names(cfg_text: str, keyword: str) -> list[str]:
    """The names after ``keyword`` (``INVARIANT``, ``PROPERTY``) in a TLC config, on its line or below."""
    names: list[str] = []
    in_section = False
    for line in cfg_text.splitlines():
        words = line.split("\\*", 1)[0].split()
        if not words:
            continue
        if words[0].isupper() and words[0].isalpha():
            in_section = words[0] in (keyword, keyword + "S")
            words = words[1:]
        if in_section:
            names += words
    return names


class Mutant(NamedTuple):
    """A one-line edit of the protocol in ``Lease.tla`` that TLC must catch with the view on."""

    name: str
    what: str
    old: str  # text of Lease.tla replaced (must occur exactly once)
    new: str
    base: str  # the positive configuration it is checked with
    suite: str  # "quick" or "full"


MUTANTS: tuple[Mutant, ...] = (
    Mutant(
        "no_fencing",
        "the active serves until it hears it lost, not only within its window",
        "              /\\ Fencing => lc[i] < deadline[i]\n",
        "              /\\ TRUE\n",
        "MC_2inst_pause",
        # full: in the quick suite the same edit is Neg_NoFencing (Fencing = FALSE, MC_2inst_pause without
        # its crash) and Neg_Refines_NoFencing
        "full",
    ),
    Mutant(
        "adopt_any_epoch",
        "an active adopts any value left by a failed renewal, not only one carrying its own epoch",
        'mine == q.st = "fail" /\\ q.kind = "val" /\\ q.cep = epoch[i]',
        'mine == q.st = "fail" /\\ q.kind = "val"',
        "MC_2inst_pause",
        "quick",
    ),
    Mutant(
        "watch_keeps_timer",
        "a standby's timer does not restart when its watch delivers a new revision",
        "             THEN /\\ seen' = [seen EXCEPT ![i] = [rev |-> e.rev, kind |-> e.kind]]\n"
        "                  /\\ seenAt' = [seenAt EXCEPT ![i] = lc[i]]\n",
        "             THEN /\\ seen' = [seen EXCEPT ![i] = [rev |-> e.rev, kind |-> e.kind]]\n"
        "                  /\\ UNCHANGED seenAt\n",
        "MC_2inst_pause",
        "quick",
    ),
    Mutant(
        "expire_early",
        "the server expires the key a tick before its TTL",
        '    /\\ kv.kind = "val"\n    /\\ now - kv.wAt >= TTL\n    /\\ Write(',
        '    /\\ kv.kind = "val"\n    /\\ now - kv.wAt >= TTL - 1\n    /\\ Write(',
        "MC_2inst_pause",
        "quick",
    ),
    Mutant(
        "campaign_only_on_value",
        "a standby campaigns only against a value it waited a lease for, never on an absent, deleted or"
        " expired key (a liveness bug: TLC finds that nobody is ever elected)",
        'ready1 == seen1.kind \\in {"del", "exp", "none"} \\/ lc[i] - at1 >= Lease',
        'ready1 == seen1.kind = "val" /\\ lc[i] - at1 >= Lease',
        "MC_2inst",
        "quick",
    ),
    Mutant(
        "window_from_ack",
        "the serving window counts from the ack of the write, not from its send",
        '(IF WindowRule = "ack" THEN lc[i] ELSE q.sentAt) + Window',
        "lc[i] + Window",
        "MC_2inst_delays_pause",
        "full",
    ),
)


def load_configs(spec_dir: Path = SPEC_DIR) -> list[ModelConfig]:
    """Every model configuration in ``spec_dir`` (trace configs are generated elsewhere)."""
    configs = []
    for path in sorted(spec_dir.glob("*.cfg")):
        text = path.read_text()
        suite = re.search(r"^\\\*\s*suite:\s*(\w+)", text, re.M)
        expect = re.search(r"^\\\*\s*expect:\s*(\w+)", text, re.M)
        configs.append(
            ModelConfig(
                name=path.stem,
                path=path,
                suite=suite.group(1) if suite else "full",
                expect=expect.group(1) if expect else None,
            )
        )
    return configs


def select_configs(configs: list[ModelConfig], quick: bool, names: list[str] | None) -> list[ModelConfig]:
    """The configurations to run: those named, else the quick suite, else all. Unknown names raise."""
    if names:
        by_name = {c.name: c for c in configs}
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise KeyError(f"unknown config(s) {', '.join(unknown)}; known: {', '.join(by_name)}")
        return [by_name[n] for n in names]
    return [c for c in configs if c.suite == "quick" or not quick]


def judge(config: ModelConfig, result: TlcResult) -> str | None:
    """Why ``result`` is not what ``config`` expects, or None when it is."""
    if config.expect is None:
        if result.passed:
            return None
        what = result.violated or result.message or ""
        return f"expected to pass, got {result.status} {what}".strip()
    if result.status in ("invariant", "property", "temporal") and result.violated == config.expect:
        return None
    if result.passed:
        return f"expected {config.expect} to be violated, but TLC found no error"
    return f"expected {config.expect} to be violated, got {result.status} {result.violated or result.message}"


def name_temporal(config: ModelConfig, result: TlcResult) -> TlcResult:
    """A liveness violation names no property in TLC 2.15: name it when the config checks exactly one
    temporal property (its PROPERTY list less the action properties ``[][...]_vars`` of the spec)."""
    if result.status != "temporal" or result.violated is not None:
        return result
    temporal = [p for p in config.properties if p not in _action_properties(SPEC_DIR / config.module)]
    return replace(result, violated=temporal[0]) if len(temporal) == 1 else result


def _action_properties(spec: Path | None = None) -> set[str]:
    """Names of the spec's action properties (safety: ``Name == [][...]_vars``)."""
    text = (spec or SPEC_DIR / SPEC_MODULE).read_text()
    return set(re.findall(r"^(\w+)\s*==\s*\n?\s*\[\]\[", text, re.M))


def _row(config: ModelConfig, result: TlcResult, reason: str | None) -> dict[str, Any]:
    return {
        "name": config.name,
        "suite": config.suite,
        "expected": config.expected,
        "result": "pass" if result.passed else "fail" if result.status != "error" else "error",
        "as_expected": reason is None,
        "invariant": result.violated,
        "status": result.status,
        "generated": result.generated,
        "distinct": result.distinct,
        "depth": result.depth,
        "seconds": result.seconds,
        **({"reason": reason} if reason else {}),
    }


def _unbounded_cfg(config: ModelConfig, ticks: int, module: str) -> str:
    """``config`` without its VIEW, under ``Spec`` (no fairness: a bounded run cannot judge liveness),
    without its temporal properties, and with ``CONSTRAINT XBound`` (``now <= ticks``, in ``module``)."""
    actions = _action_properties(SPEC_DIR / config.module)
    out = []
    for line in config.path.read_text().splitlines():
        words = line.split()
        if words[:1] == ["VIEW"] or line.startswith("\\*"):  # (comments: they may name a property)
            continue
        if words[:1] == ["SPECIFICATION"]:
            line = "SPECIFICATION Spec"
        elif words[:1] == ["PROPERTY"]:
            kept = [w for w in words[1:] if w in actions]
            if not kept:
                continue
            line = "PROPERTY " + " ".join(kept)
        out.append(line)
    out.append("CONSTRAINT XBound")
    return "\n".join(out) + "\n"


def run_unbounded_view_off(config: ModelConfig, *, workers: int = 1) -> TlcResult:
    """Check ``config`` without the VIEW, on behaviours of at most ``config.crosscheck`` ticks."""
    ticks = config.crosscheck
    assert ticks is not None, config.name
    module = f"XC_{config.name}"
    with tempfile.TemporaryDirectory(prefix="aegis-xc-") as tmp:
        folder = Path(tmp)
        copy_spec(folder)
        if config.module != SPEC_MODULE:
            shutil.copy(SPEC_DIR / config.module, folder / config.module)
        (folder / f"{module}.tla").write_text(
            f"---- MODULE {module} ----\nEXTENDS {config.module[:-4]}\nXBound == now <= {ticks}\n====\n"
        )
        cfg = folder / f"{module}.cfg"
        cfg.write_text(_unbounded_cfg(config, ticks, module))
        result = run_tlc(
            folder / f"{module}.tla", cfg, workers=workers, deadlock=False, short=config.expect is not None
        )
        return name_temporal(config, result)


def run_mutant(mutant: Mutant, base: ModelConfig, *, workers: int = 1) -> TlcResult | str:
    """Check ``base`` (view on) against ``Lease.tla`` with ``mutant`` applied; a string when it does not apply."""
    text = (SPEC_DIR / SPEC_MODULE).read_text()
    if text.count(mutant.old) != 1:
        return f"the mutant's text occurs {text.count(mutant.old)} times in {SPEC_MODULE} (must be once)"
    with tempfile.TemporaryDirectory(prefix="aegis-mutant-") as tmp:
        folder = Path(tmp)
        spec = copy_spec(folder, text.replace(mutant.old, mutant.new))
        cfg = folder / f"{base.name}.cfg"
        cfg.write_text(base.path.read_text())
        return run_tlc(spec, cfg, workers=workers)


def _run_config(config: ModelConfig, workers: int) -> TlcResult:
    """TLC on ``config`` against its module (exhaustive, or a simulation when the config asks for one)."""
    return run_tlc(
        SPEC_DIR / config.module,
        config.path,
        workers=workers,
        extra_args=config.simulate,
        short=config.expect is not None and not config.simulate,
    )


def _verdict(result: TlcResult) -> str:
    return "pass" if result.passed else f"fail:{result.violated}" if result.violated else result.status


def _counts(result: TlcResult) -> dict[str, Any]:
    return {"distinct": result.distinct, "depth": result.depth, "seconds": result.seconds}


def run_suite(
    quick: bool = False,
    names: list[str] | None = None,
    *,
    parallel: int = 2,
    workers: int | None = None,
    console: Console | None = None,
    on_result: Callable[[dict[str, Any]], None] | None = None,
    crosscheck: bool = True,
    mutants: bool | None = None,
) -> dict[str, Any]:
    """Run the selected configurations, ``parallel`` TLC processes at a time, and collect the verdicts.

    Each TLC process gets ``workers`` threads (default: the cores shared among the parallel runs).
    With a ``console`` a progress bar shows which configurations are done. ``crosscheck``: also check the
    selected configurations that declare ``crosscheck: N`` without the view (see the module docstring).
    ``mutants`` (default: when no names are given): check the mutants of the suite (quick: the quick ones).
    """
    all_configs = load_configs()
    by_name = {c.name: c for c in all_configs}
    chosen = select_configs(all_configs, quick, names)
    xc = [
        c
        for c in chosen
        if crosscheck and c.crosscheck is not None and not (quick and not names and c.crosscheck_full)
    ]
    if mutants is None:
        mutants = not names
    muts = [m for m in MUTANTS if mutants and (m.suite == "quick" or not quick)]
    jobs = len(chosen) + len(xc) + len(muts)
    parallel = max(1, min(parallel, jobs))
    if workers is None:
        workers = max(1, (os.cpu_count() or 2) // parallel)
    # Longest first (positive configs explore everything; negative ones stop at the first violation;
    # among positive ones, those under fairness also check liveness, the slowest part), so the longest
    # run starts at once and two parallel runs finish close together. The bounded runs without the view
    # and the mutants come between the positive configs and the negative controls.
    chosen.sort(key=lambda c: (c.expect is not None, not c.fair, c.name))
    rows: dict[str, dict[str, Any]] = {}
    xc_rows: dict[str, dict[str, Any]] = {}
    mut_rows: dict[str, dict[str, Any]] = {}
    start = time.monotonic()
    progress = Progress(
        TextColumn("[bold]TLC[/]"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} {task.description}"),
        TimeElapsedColumn(),
        console=console,
        disable=console is None,
        transient=True,
    )
    with progress, ThreadPoolExecutor(max_workers=parallel) as pool:
        task = progress.add_task("", total=jobs)
        futures: dict[Any, tuple[str, Any]] = {}
        positives = [c for c in chosen if c.expect is None]
        negatives = [c for c in chosen if c.expect is not None]
        for c in positives:
            futures[pool.submit(_run_config, c, workers)] = ("config", c)
        for c in xc:
            futures[pool.submit(run_unbounded_view_off, c, workers=workers)] = ("xc", c)
        for m in muts:
            futures[pool.submit(run_mutant, m, by_name[m.base], workers=workers)] = ("mutant", m)
        for c in negatives:
            futures[pool.submit(_run_config, c, workers)] = ("config", c)
        for future in as_completed(futures):
            kind, item = futures[future]
            result = future.result()
            if kind == "config":
                result = name_temporal(item, result)
                row = _row(item, result, judge(item, result))
                rows[item.name] = row
                if on_result is not None:
                    on_result(row)
            elif kind == "xc":
                xc_rows[item.name] = {
                    "name": item.name,
                    "ticks": item.crosscheck,
                    "view_off": _verdict(result),
                }
                xc_rows[item.name] |= _counts(result)
            else:
                mut_rows[item.name] = _mutant_row(item, result)
            progress.update(task, advance=1, description=f"{kind} {item.name}")
    ordered = [rows[c.name] for c in chosen]
    report: dict[str, Any] = {
        "quick": quick and not names,
        "passed": [r["name"] for r in ordered if r["as_expected"] and r["expected"] == "pass"],
        "failed_as_expected": [r["name"] for r in ordered if r["as_expected"] and r["expected"] != "pass"],
        "unexpected": [{"config": r["name"], "reason": r["reason"]} for r in ordered if not r["as_expected"]],
        "distinct_states": sum(r["distinct"] for r in ordered),
        "seconds": round(time.monotonic() - start, 1),
        "configs": ordered,
    }
    if xc:
        xrows = []
        for c in xc:
            x = xc_rows[c.name]
            # the view-on verdict: this run's (the unbounded check of the same config)
            on = rows[c.name]
            x["view_on"] = (
                "pass"
                if on["result"] == "pass"
                else f"fail:{on['invariant']}"
                if on["invariant"]
                else on["status"]
            )
            x["agree"] = x["view_on"] == x["view_off"] == c.expected
            xrows.append(x)
        report["view_crosscheck"] = {
            "configs": xrows,
            "agree": [x["name"] for x in xrows if x["agree"]],
            "disagree": [x["name"] for x in xrows if not x["agree"]],
        }
        report["unexpected"] += [
            {
                "config": f"view-crosscheck:{x['name']}",
                "reason": f"with the view {x['view_on']}, without it (<= {x['ticks']} ticks) {x['view_off']}",
            }
            for x in xrows
            if not x["agree"]
        ]
    if muts:
        mrows = [mut_rows[m.name] for m in muts]
        report["mutants"] = {
            "configs": mrows,
            "caught": [r["name"] for r in mrows if r["caught"]],
            "missed": [r["name"] for r in mrows if not r["caught"]],
        }
        report["unexpected"] += [
            {"config": f"mutant:{r['name']}", "reason": f"not caught by {r['base']}: {r['result']}"}
            for r in mrows
            if not r["caught"]
        ]
    return report


def _mutant_row(mutant: Mutant, result: TlcResult | str) -> dict[str, Any]:
    if isinstance(result, str):
        return {
            "name": mutant.name,
            "what": mutant.what,
            "base": mutant.base,
            "result": result,
            "caught": False,
        }
    caught = result.status in ("invariant", "property", "temporal", "deadlock")
    return {
        "name": mutant.name,
        "what": mutant.what,
        "base": mutant.base,
        "result": _verdict(result) if result.status != "error" else f"error {result.message}",
        "caught": caught,
        **_counts(result),
    }


def table(report: dict[str, Any]) -> Table:
    """The report as a rich table: config, result, states generated, distinct states, depth, seconds."""
    t = Table(title=f"TLC: {len(report['configs'])} configurations in {report['seconds']} s")
    for col, justify in [
        ("config", "left"),
        ("expected", "left"),
        ("result", "left"),
        ("generated", "right"),
        ("distinct", "right"),
        ("depth", "right"),
        ("seconds", "right"),
    ]:
        t.add_column(col, justify=justify)  # type: ignore[arg-type]
    for r in report["configs"]:
        got = "pass" if r["result"] == "pass" else f"{r['status']} {r['invariant'] or ''}".strip()
        mark = "[green]ok[/]" if r["as_expected"] else "[red]UNEXPECTED[/]"
        t.add_row(
            r["name"],
            r["expected"],
            f"{got} {mark}",
            f"{r['generated']:,}",
            f"{r['distinct']:,}",
            str(r["depth"]),
            f"{r['seconds']:.1f}",
        )
    for x in report.get("view_crosscheck", {}).get("configs", []):
        mark = "[green]ok[/]" if x["agree"] else "[red]UNEXPECTED[/]"
        t.add_row(
            f"no view: {x['name']} (<= {x['ticks']} ticks)",
            x["view_on"],
            f"{x['view_off']} {mark}",
            "",
            f"{x['distinct']:,}",
            str(x["depth"]),
            f"{x['seconds']:.1f}",
        )
    for m in report.get("mutants", {}).get("configs", []):
        mark = "[green]caught[/]" if m["caught"] else "[red]MISSED[/]"
        t.add_row(
            f"mutant: {m['name']} ({m['base']})",
            "fail",
            f"{m['result']} {mark}",
            "",
            f"{m.get('distinct', 0):,}",
            str(m.get("depth", "")),
            f"{m.get('seconds', 0.0):.1f}",
        )
    return t
