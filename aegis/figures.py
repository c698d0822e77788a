"""Figure tables in the README and docs, rendered from the JSON reports that hold their data.

A table of measured figures in a markdown file sits between two markers::

    <!-- figures:NAME source=reports/a.json,reports/b.json -->
    Reproduce: `the command that writes reports/a.json ...`
    | ... the table ... |
    <!-- /figures:NAME -->

``NAME`` picks a renderer in :data:`RENDERERS`; ``source`` names the JSON files (relative to the repository root)
it reads, in order. Everything between the markers is the renderer's output and is rewritten by
``render``: its first line is always the command that reproduces the JSON, so no figure can drift from the data
it cites (``aegis figures`` / ``make reports`` rewrite the files, ``aegis figures --check`` and
``tests/test_figures.py`` fail when a file disagrees with its JSON).

Percentiles are printed with their sample count, ``901 ms (100)``; below :data:`MIN_P99_SAMPLES` samples a p99 is
meaningless, so the maximum is printed instead, ``max 890 ms (10)``. Sample counts are taken from the JSON's
``*_samples`` keys where a report has them, else counted from its rows (a campaign's ``faults``).
"""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aegis.harness.bench.runner import GOALS, ratio_rows
from aegis.harness.campaign.report import trace_summary
from aegis.stats import MIN_P99_SAMPLES, percentile

REPO = Path(__file__).resolve().parents[1]  # the checkout: aegis/ sits in it
WIDTH = 115  # the README's and docs' line length

# Markers start a line (a marker quoted inside a sentence or code span is not one).
BLOCK = re.compile(
    r"^<!-- figures:(?P<name>[\w-]+) source=(?P<source>\S+) -->\n(?P<body>.*?)^<!-- /figures:(?P=name) -->",
    re.S | re.M,
)
OPENING = re.compile(r"^<!-- figures:(?P<name>[\w-]+)(?: source=(?P<source>\S+))? -->", re.M)


class FiguresError(ValueError):
    """A marker names no renderer, a source that cannot be read, or is not closed."""


# -- formatting --------------------------------------------------------------------------------------------------


def ms(v: float | None) -> str:
    """Seconds as whole milliseconds (rounded like the reports' own markdown); ``-`` for no value."""
    return "-" if v is None else f"{v * 1000:.0f} ms"


def p99_or_max(p99: float | None, mx: float | None, n: int, fmt: Callable[[float], str] = ms) -> str:
    """``p99 (n)``; below 20 samples ``max X (n)`` (the maximum, never a p99); ``- (0)`` without samples."""
    if n <= 0 or (p99 is None and mx is None):
        return "- (0)"
    if n < MIN_P99_SAMPLES:
        return f"max {fmt(mx)} ({n})" if mx is not None else f"too few samples ({n})"
    return f"{fmt(p99 if p99 is not None else mx)} ({n})"


def p99_and_max(p99: float | None, mx: float | None, n: int) -> str:
    """``p99 / max (n)``; below 20 samples only ``max X (n)``."""
    if n >= MIN_P99_SAMPLES and p99 is not None and mx is not None:
        return f"{ms(p99)} / {ms(mx)} ({n})"
    return p99_or_max(p99, mx, n)


def p50(v: float | None, n: int, fmt: Callable[[float], str] = ms) -> str:
    return "- (0)" if n <= 0 or v is None else f"{fmt(v)} ({n})"


def _first(row: dict[str, Any], *keys: str, default: Any = None) -> Any:
    """The first of ``keys`` present (and not None) in ``row``: tolerant of reports old and new."""
    for k in keys:
        if row.get(k) is not None:
            return row[k]
    return default


def _wrap(line: str) -> str:
    """Prose wrapped like the hand-written markdown around it, never inside a `code span` (tables stay one row a
    line)."""
    out: list[str] = []
    for word in re.findall(r"(?:`[^`]*`|[^\s`])+", line):
        if out and len(out[-1]) + 1 + len(word) <= WIDTH:
            out[-1] += " " + word
        else:
            out.append(word)
    return "\n".join(out)


def _num(v: float) -> str:
    return f"{v:g}"


def _secs(v: float) -> str:
    """A parameter in seconds with at least one decimal: 0.15 s, 2.0 s."""
    text = f"{v:g}"
    return f"{text if '.' in text or 'e' in text else text + '.0'} s"


# -- renderers ---------------------------------------------------------------------------------------------------

Renderer = Callable[[list[dict[str, Any]], list[str]], list[str]]


def _sim(data: list[dict[str, Any]], sources: list[str]) -> list[str]:
    """The simulator's headline figures: safety, crash failover (bound drift and real clocks), speedup."""
    sim = data[0]
    predicted = data[1] if len(data) > 1 else {}
    p = sim["params"]
    n = _first(sim, "failover_samples", default=0)
    pred_n = _first(
        sim,
        "predicted_failover_real_clocks_samples",
        default=_first(predicted, "n", default=len(predicted.get("samples_s", []))),
    )
    pred_p50 = _first(sim, "predicted_failover_real_clocks_p50_s", default=predicted.get("p50_s"))
    pred_p99 = _first(sim, "predicted_failover_real_clocks_p99_s", default=predicted.get("p99_s"))
    pred_max = _first(
        sim,
        "predicted_failover_real_clocks_max_s",
        default=max(predicted["samples_s"]) if predicted.get("samples_s") else None,
    )
    drift = _num(p["drift"] * 100)
    real_drift = _num(predicted["clock_drift"] * 100) if "clock_drift" in predicted else "real"
    return [
        f"Reproduce: `make sim` (= `aegis sim`; writes `{'`, `'.join(sources)}`), then `make reports`.",
        "",
        f"| figure ({sim['runs']} runs × {_num(sim['duration_s'])} simulated s, {len(sim['by_mix'])} fault mixes,"
        f" lease {_num(p['lease_s'])} s, renew {_num(p['renew_s'])} s) | value |",
        "|---|---|",
        f"| safety violations | {sim['violations']} |",
        f"| crash failover p50 / p99 / max (clocks anywhere within ρ = {drift} %) | "
        + _dist(sim["failover_p50_s"], sim["failover_p99_s"], sim.get("failover_max_s"), n)
        + " |",
        f"| crash failover p50 / p99 predicted with real clocks (±{real_drift} %) | "
        + _dist(pred_p50, pred_p99, pred_max, pred_n, show_max=False)
        + " |",
        f"| speedup (simulated seconds per wall second, one core) | {_num(sim['speedup'])}"
        f" ({_num(sim['sim_seconds'])} simulated s in {_num(sim['wall_seconds'])} s) |",
    ]


def _dist(p50v: float | None, p99v: float | None, mx: float | None, n: int, show_max: bool = True) -> str:
    """``p50 / p99 / max (n samples)``; below 20 samples ``p50 / max X (n samples)``."""
    if not n or p50v is None:
        return "- (0 samples)"
    if n < MIN_P99_SAMPLES:
        return f"{ms(p50v)} / max {ms(mx)} ({n} samples)" if mx is not None else f"{ms(p50v)} ({n} samples)"
    parts = [ms(p50v), ms(p99v)] + ([ms(mx)] if show_max and mx is not None else [])
    return " / ".join(parts) + f" ({n} samples)"


def _sweep(data: list[dict[str, Any]], sources: list[str]) -> list[str]:
    """The lease x renewal sweep: crash-failover p99 (samples) / false failovers per hour, per cell."""
    sim = data[0]
    sweep = sim["sweep"]
    cells = {(c["lease_s"], c["renew_s"]): c for c in sweep["cells"]}
    leases = sorted({k[0] for k in cells})
    renews = sorted({k[1] for k in cells})
    pz = sweep["pauses"]
    hours = {c["pause_hours"] for c in sweep["cells"]}
    per_cell = f"{_num(min(hours))} simulated hour" + ("" if hours == {1.0} else "s")
    lines = [
        f"Reproduce: `make sim` (= `aegis sim`; writes `{sources[0]}`), then `make reports`.",
        "",
        "Each cell: crash-failover p99 (kill -9 of the active → first reply a sticky client accepts from the new"
        " epoch; samples in brackets, the maximum below 20) / false failovers per hour under a harsh pause"
        f" distribution ({_num(pz['rate_hz'])} pause per second, lognormal around {_num(pz['median_s'] * 1000)} ms,"
        f" {_num(pz['stall_p'] * 100)} % of them stalls around {_num(pz['stall_median_s'] * 1000)} ms;"
        f" {per_cell} per cell, so a count of 5-15 is ±30 %):",
        "",
        "| lease \\ renew | " + " | ".join(_secs(r) for r in renews) + " |",
        "|---|" + "---|" * len(renews),
    ]
    for lease in leases:
        row = []
        for renew in renews:
            c = cells.get((lease, renew))
            if c is None:
                row.append("-")
                continue
            n = _first(c, "failover_samples", default=0)
            p99 = p99_or_max(c["failover_p99_s"], c.get("failover_max_s"), n)
            row.append(f"{p99} / {_num(c['false_failovers_per_hour'])}")
        lines.append(f"| {_secs(lease)} | " + " | ".join(row) + " |")
    ratios = [
        c["failover_p99_s"] / c["lease_s"] for c in sweep["cells"] if c.get("failover_p99_s") is not None
    ]
    lines += [
        "",
        "(- : renewal interval not allowed for that lease, `renew_s ≤ lease_s / 3`.)",
        "",
    ]
    if ratios:
        lines.append(
            f"Failover p99 is {min(ratios):.2f}-{max(ratios):.2f} × lease across the cells."
            + (
                f" Under milder, GC-like pauses (the `gc` mix, {sim['by_mix']['gc']['runs']} runs) the simulator"
                f" counts {sim['by_mix']['gc']['false_failovers_per_hour']:.1f} false failovers per hour with"
                f" lease {_num(sim['params']['lease_s'])} s, renew {_num(sim['params']['renew_s'])} s."
                if "gc" in sim.get("by_mix", {})
                else ""
            )
        )
    return lines


def _failover(data: list[dict[str, Any]], sources: list[str]) -> list[str]:
    """``aegis failover``: kill -9 and graceful-stop gaps of the single-active group."""
    f = data[0]
    command = f.get("command", "aegis failover")
    if "--out" not in command:
        command += " --out reports"
    kills = _first(f, "failover_samples", default=len(f.get("failover_gaps_s", [])) or f["kills"])
    graceful = _first(f, "graceful_samples", default=len(f.get("graceful_gaps_s", [])) or f["graceful_stops"])
    worst = f["failover_max_s"] if kills < MIN_P99_SAMPLES else f["failover_p99_s"]
    what = f"the largest of {kills} gaps is" if kills < MIN_P99_SAMPLES else f"p99 over {kills} kills is"
    met = "met" if worst is not None and worst <= 1.0 else "**not met**"
    return [
        f"Reproduce: `{command}` (writes `{sources[0]}`), then `make reports`.",
        "",
        "| faults | p50 (n) | p99 (n; the max below 20) | split brain | failed sticky calls |",
        "|---|---|---|---|---|",
        f"| kill -9 of the active ×{f['kills']} | {p50(f['failover_p50_s'], kills)}"
        f" | {p99_or_max(f['failover_p99_s'], f['failover_max_s'], kills)} | {f['split_brain']}"
        f" | {f['failed_calls']} of {f['calls']} |",
        f"| graceful stop (SIGTERM) ×{f['graceful_stops']} | {p50(f['graceful_p50_s'], graceful)}"
        f" | {p99_or_max(f['graceful_p99_s'], f['graceful_max_s'], graceful)} | | |",
        "",
        f"Crash failover goal p99 ≤ 1.0 s: {met} in this run ({what} {ms(worst)}).",
    ]


def _kind_rows(report: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [f for f in report.get("faults", []) if f.get("kind") == kind]


def _campaign_reproduce(data: list[dict[str, Any]]) -> str:
    """``make campaign`` runs exactly these campaigns by default (its CAMPAIGNS); each writes its JSON."""
    names = ", ".join(f"`{d['campaign']['name']}`" for d in data)
    return (
        "Reproduce: `make campaign` (= `aegis campaign harness/campaigns/<name>.yaml --out reports` for"
        f" {names}; writes `reports/<name>.json`), then `make reports`."
    )


def _campaign_classes(data: list[dict[str, Any]], sources: list[str]) -> list[str]:
    """Per campaign and fault class: client-visible gap and new-epoch failover, failed calls, split brain."""
    lines = [
        _campaign_reproduce(data),
        "",
        "(n) = samples: for a gap the faults with a measured gap, for a new epoch the faults that changed the"
        " active; below 20 samples the maximum is shown instead of a p99.",
        "",
        "| campaign | fault class | runs | gap p50 | gap p99 / max | new epoch p99 | failed sticky calls"
        " | other failed ops | split brain |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for d in data:
        for kind, r in d["by_class"].items():
            rows = _kind_rows(d, kind)
            gap_n = _first(
                r,
                "gap_samples",
                default=sum(1 for f in rows if f.get("gap_s") is not None) if rows else r["runs"],
            )
            fo_n = _first(
                r,
                "new_epoch_failover_samples",
                "new_epoch_samples",
                "failover_samples",
                "failovers",
                default=0,
            )
            fo_p99 = _first(r, "new_epoch_failover_p99_s", "new_epoch_p99_s", "failover_p99_s")
            fo_max = _first(r, "new_epoch_failover_max_s", "new_epoch_max_s", "failover_max_s")
            lines.append(
                f"| {d['campaign']['name']} | {kind} | {r['runs']} | {p50(r['gap_p50_s'], gap_n)}"
                f" | {p99_and_max(r['gap_p99_s'], r['gap_max_s'], gap_n)} | {p99_or_max(fo_p99, fo_max, fo_n)}"
                f" | {r['failed_calls']} | {r['failed_ops']} | {r['split_brain']} |"
            )
    return lines


def _campaign_totals(data: list[dict[str, Any]], sources: list[str]) -> list[str]:
    """Per campaign: the promises (split brain, lost events, commands twice, epoch order, trace) and its time."""
    lines = [
        _campaign_reproduce(data),
        "",
        "| campaign | faults | split brain | lost events (of acked) | commands processed twice (of completed)"
        " | epoch regressions | election trace (TLC) | budgets broken | took |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for d in data:
        lines.append(
            f"| {d['campaign']['name']} | {d['runs']} | {d['split_brain']}"
            f" | {d['lost_events']} (of {d['events_acked']}) | {d['duplicate_commands']} (of"
            f" {d['commands_completed']}) | {d['epoch_regressions']} | {_trace_cell(d)}"
            f" | {sum(1 for b in d.get('expectations_broken', []) if b.startswith('budget'))}"
            f" | {d['took_s']:.0f} s |"
        )
    return lines


def _campaign_aims(data: list[dict[str, Any]], sources: list[str]) -> list[str]:
    """Per campaign (with its election), fault class and what each fault was aimed at (the node leading an
    election bucket, the node the active is connected to, ...): the client-visible gap, and per class whether its
    budget held. For comparing the same faults under the two elections."""
    names = " and ".join(f"`harness/campaigns/{d['campaign']['name']}.yaml`" for d in data)
    lines = [
        f"Reproduce: `aegis campaign <file> --out reports` for {names} (writes `reports/<name>.json`), then"
        " `make reports`.",
        "",
        "(n) = faults; below 20 samples the maximum is shown instead of a p99.",
        "",
        "| campaign | election | faults | aimed at | gap p50 | gap p99 / max | failed sticky calls | split brain"
        " | budget held |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for d in data:
        election = d["campaign"].get("election", "lease")
        for kind, summary in d["by_class"].items():
            rows = _kind_rows(d, kind)
            groups: dict[str, list[dict[str, Any]]] = {}
            for f in rows:
                aim = f["details"].get("aimed_at") or "?"
                groups.setdefault(
                    "an election bucket's stream leader" if aim.startswith("stream-leader") else aim, []
                ).append(f)
            for aim, group in [*groups.items(), ("all", rows)]:
                gaps = sorted(f["gap_s"] for f in group if f["gap_s"] is not None)
                n = len(gaps)
                budget = summary["budget"]
                held = (
                    f"{'yes' if summary['budget_held'] else '**no**'} ({budget['gap_max_s']:g} s)"
                    if aim == "all"
                    else ""
                )
                lines.append(
                    f"| {d['campaign']['name']} | {election} | {kind} | {aim} | {p50(percentile(gaps, 50), n)}"
                    f" | {p99_and_max(percentile(gaps, 99), gaps[-1] if gaps else None, n)}"
                    f" | {sum(f['failed_calls'] for f in group)} | {sum(f['split_brain'] for f in group)} | {held} |"
                )
    lines.append("")
    for d in data:
        lines.append(
            f"- {d['campaign']['name']}: election trace checked with TLC: {trace_summary(d.get('trace'))}."
        )
    return lines


def _sim_quorum(data: list[dict[str, Any]], sources: list[str]) -> list[str]:
    """The simulator's prediction for the quorum lease: the gap after a NATS node crash (spread and colocated
    stream leaders), as a client sees it, and per fault kind; with the runs and violations it rests on."""
    (d,) = data
    col = d["colocated"]

    def dist(g: dict[str, Any]) -> tuple[str, str]:
        return p50(g["p50_s"], g["n"]), p99_and_max(g["p99_s"], g["max_s"], g["n"])

    lines = [
        f"Reproduce: `aegis sim --election quorum --runs {d['runs']} --colocated-runs {d['colocated_runs']} --json"
        f" --out reports` (writes `{sources[0]}`), then `make reports`.",
        "",
        f"{d['runs']} runs of {d['duration_s']:.0f} s over the mixes {', '.join(d['mixes'])} with the leaders spread,"
        f" {d['colocated_runs']} node-crash runs with two buckets' leaders on one node; violations (overlap, served"
        f" ballots not increasing, a bucket's floor going down, a stale epoch accepted): {d['violations']} spread,"
        f" {col['violations']} colocated. Gap: {d['gap_measure']}. (n) = faults.",
        "",
        "| fault | gap p50 | gap p99 / max | client gap p50 | client gap p99 / max |",
        "|---|---|---|---|---|",
    ]
    spread = {
        "p50_s": d["node_crash_gap_p50_s"],
        "p99_s": d["node_crash_gap_p99_s"],
        "max_s": d["node_crash_gap_max_s"],
        "n": d["node_crash_gap_samples"],
    }
    client = {
        "p50_s": d["node_crash_client_gap_p50_s"],
        "p99_s": d["node_crash_client_gap_p99_s"],
        "max_s": d["node_crash_client_gap_max_s"],
        "n": d["node_crash_client_gap_samples"],
    }
    rows = [
        ("NATS node crash, leaders spread", spread, client),
        ("NATS node crash, two leaders on one node", col["node_crash_gap"], col["node_crash_client_gap"]),
        *((kind, g["gap"], g["client_gap"]) for kind, g in d["gaps_by_fault"].items() if kind != "node"),
    ]
    for name, gap, cgap in rows:
        lines.append(f"| {name} | {' | '.join(dist(gap))} | {' | '.join(dist(cgap))} |")
    lines += [
        "",
        f"With two leaders on one node, {col['over_budget']} of {col['node_crash_gap']['n']} node crashes left the"
        f" group without an active for longer than the {d['gap_budget_s']:g} s budget.",
    ]
    return lines


def _partition_heal(data: list[dict[str, Any]], sources: list[str]) -> list[str]:
    """``harness/experiments/partition_watch.py``: a node's routes cut for 5 s and healed, with the quorum buckets
    as shipped (R3) and as three R1 buckets pinned one to a node; the client's longest gap and the buckets that lost
    their stream leader after the heal."""
    (d,) = data
    lines = [
        f"Reproduce: `{d['command']}` (writes `{sources[0]}`; needs root for nftables), then `make reports`.",
        "",
        "The active's node cut from the other two for 5 s; a sticky client on that node (`same`), on another one"
        " (`other`), or with one connection on each (`both`); (n) = runs. Leaderless after the heal: a bucket whose stream had no leader (as a third node"
        " sees it) at some point after the heal, and the longest such stretch.",
        "",
        "| buckets | client on | client gap p50 | client gap max | runs with a bucket leaderless after the heal |"
        " most buckets leaderless in one run | longest leaderless |",
        "|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for run in d["runs"]:
        groups.setdefault((run["replicas"], run["client"]), []).append(run)
    for (replicas, client), runs in groups.items():
        gaps = sorted(r["client_gap_s"] for r in runs)
        stalls = [[v for v in r["leaderless_after_heal_s"].values() if v > 0] for r in runs]
        kind = "R3, leaders spread" if replicas == 3 else "R1, one per node"
        lines.append(
            f"| {kind} | {client} | {p50(statistics.median(gaps), len(gaps))} | {p99_or_max(None, gaps[-1], len(gaps))} |"
            f" {sum(bool(s) for s in stalls)} of {len(runs)} | {max(map(len, stalls))} |"
            f" {ms(max((max(s) for s in stalls if s), default=None))} |"
        )
    return lines


def _trace_cell(d: dict[str, Any]) -> str:
    """What TLC checked of the campaign's trace: the result and the faults covered (older reports: the flag)."""
    t = d.get("trace") or {}
    if "result" not in t:
        return str(d["trace_validated"])
    seconds = "" if t["result"] == "incomplete" else f", {t['seconds']:.0f} s"
    return f"{t['result']} ({t['faults_covered']} of {t['faults_total']} faults{seconds})"


BENCH_MEASURES = [
    ("rpc_c1", "sdk", "RPC, concurrency 1"),
    ("rpc_c1", "discovery", "RPC via discovery, concurrency 1"),
    ("rpc_c64", "sdk", "RPC, concurrency 64"),
    ("rpc_c64", "discovery", "RPC via discovery, concurrency 64"),
    ("event_c1", "sdk", "event publish, concurrency 1"),
    ("event_c64", "sdk", "event publish, concurrency 64"),
]


def _bench_reproduce(b: dict[str, Any], sources: list[str]) -> list[str]:
    plan = b.get("plan", {})
    rounds = f", {plan['rounds']} alternating rounds per side" if "rounds" in plan else ""
    load = b.get("load_avg")
    load_note = (
        f"; 1-minute load average {load['before'][0]} at the start, {load['after'][0]} at the end"
        if load
        else ""
    )
    return [
        f"Reproduce: `make bench` (= `aegis bench`; writes `{sources[0]}` and `reports/baseline.md`), then"
        " `make reports`.",
        "",
        f"Recorded {b['recorded_at'][:10]} on a {b['machine']['cpus']}-CPU"
        f" machine (Python {b['machine']['python']}; 3-node cluster, responder and client on one host{rounds}"
        f"{load_note}).",
    ]


def _ms3(side: dict[str, Any], key: str, n: int) -> str:
    if n < MIN_P99_SAMPLES and key in ("p99_ms", "p999_ms"):
        return f"max {side['max_ms']:.3f}"
    return f"{side[key]:.3f}"


def _bench(data: list[dict[str, Any]], sources: list[str]) -> list[str]:
    """``aegis bench``: raw nats-py vs SDK latency and throughput, and the SDK/raw ratios against the goals."""
    b = data[0]
    res = b["results"]
    lines = _bench_reproduce(b, sources) + [
        "",
        "| measure | samples (raw / SDK) | raw p50 ms | SDK p50 ms | raw p99 ms | SDK p99 ms | raw p99.9 ms"
        " | SDK p99.9 ms | raw /s | SDK /s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, side, label in BENCH_MEASURES:
        if key not in res or side not in res[key]:
            continue
        r, s = res[key]["raw"], res[key][side]
        rn, sn = r["ops"], s["ops"]
        lines.append(
            f"| {label} | {rn} / {sn} | {r['p50_ms']:.3f} | {s['p50_ms']:.3f} | {_ms3(r, 'p99_ms', rn)}"
            f" | {_ms3(s, 'p99_ms', sn)} | {_ms3(r, 'p999_ms', rn)} | {_ms3(s, 'p999_ms', sn)}"
            f" | {r['per_s']:.0f} | {s['per_s']:.0f} |"
        )
    lines += ["", *ratio_rows(b)]
    return lines


def _bench_goals(data: list[dict[str, Any]], sources: list[str]) -> list[str]:
    """The three NFR1 ratios against their goals (``reports/rpc-overhead.md``)."""
    b = data[0]
    rows = [
        ("RPC p99, concurrency 1", "rpc_p99_ratio"),
        ("RPC throughput, concurrency 64", "rpc_throughput_ratio"),
        ("event publish throughput, concurrency 64", "event_throughput_ratio"),
        ("RPC via discovery p99, concurrency 1", "discovery_rpc_p99_ratio"),
    ]
    spreads = b.get("ratio_spread", {})
    lines = _bench_reproduce(b, sources) + [""]
    if spreads:
        lines += [
            f"Each ratio is the {b.get('ratio_method', 'median of per-round ratios')} (SDK and raw of the same"
            " round); the spread is over the rounds.",
            "",
            "| ratio (SDK / raw) | measured | per-round min - max | goal | met |",
            "|---|---|---|---|---|",
        ]
    else:
        lines += ["| ratio (SDK / raw) | measured | goal | met |", "|---|---|---|---|"]
    for label, key in rows:
        goal, met = GOALS[key]
        verdict = "yes" if met(b[key]) else "no"
        if spreads:
            s = spreads[key]
            lines.append(f"| {label} | {b[key]:.3f} | {s['min']:.3f} - {s['max']:.3f} | {goal} | {verdict} |")
        else:
            lines.append(f"| {label} | {b[key]:.3f} | {goal} | {verdict} |")
    ev = b["results"].get("event_c1")
    if ev:
        lines += [
            "",
            f"Event publish p50 at concurrency 1 (one JetStream round trip at R3): raw {ev['raw']['p50_ms']:.3f} ms,"
            f" SDK {ev['sdk']['p50_ms']:.3f} ms ({ev['raw']['ops']} / {ev['sdk']['ops']} samples).",
        ]
    return lines


PROCESS_LABELS = {
    "client": "client process",
    "responder": "responder process",
    "nats_server_n1": "nats-server n1",
}


def _bench_cpu(data: list[dict[str, Any]], sources: list[str]) -> list[str]:
    """CPU per RPC by process at concurrency 64, and what its sum predicts for throughput."""
    b = data[0]
    res = b["results"]
    raw, sdk = res["rpc_c64"]["raw"], res["rpc_c64"]["sdk"]
    procs = [k.removesuffix("_cpu_us") for k in raw if k.endswith("_cpu_us") and k in sdk]
    lines = [
        f"Reproduce: `make bench` (= `aegis bench`; writes `{sources[0]}`), then `make reports`.",
        "",
        "| RPC, concurrency 64 | raw | SDK | SDK - raw |",
        "|---|---|---|---|",
    ]
    for p in procs:
        r, s = raw[f"{p}_cpu_us"], sdk[f"{p}_cpu_us"]
        lines.append(f"| {PROCESS_LABELS.get(p, p)} | {r:.1f} us | {s:.1f} us | {s - r:+.1f} us |")
    raw_sum = sum(raw[f"{p}_cpu_us"] for p in procs)
    sdk_sum = sum(sdk[f"{p}_cpu_us"] for p in procs)
    c1r, c1s = res["rpc_c1"]["raw"], res["rpc_c1"]["sdk"]
    lines += [
        "",
        f"Sum of CPU per call: {raw_sum:.0f} us raw, {sdk_sum:.0f} us SDK, ratio {raw_sum / sdk_sum:.2f}; measured"
        f" throughput ratio {b['rpc_throughput_ratio']:.2f}. At concurrency 1 the SDK's p50 is"
        f" {(c1s['p50_ms'] - c1r['p50_ms']) * 1000:.0f} us above raw ({c1r['p50_ms']:.3f} -> {c1s['p50_ms']:.3f} ms)"
        f" and its p99 {(c1s['p99_ms'] - c1r['p99_ms']) * 1000:.0f} us ({c1r['p99_ms']:.3f} -> {c1s['p99_ms']:.3f} ms;"
        f" {c1r['ops']} / {c1s['ops']} samples).",
    ]
    return lines


ABLATION_RATIOS = [
    ("rpc_p50_ratio", "RPC p50, c1"),
    ("rpc_p99_ratio", "RPC p99, c1"),
    ("rpc_throughput_ratio", "RPC throughput, c64"),
    ("discovery_rpc_p99_ratio", "discovery p99, c1"),
    ("event_throughput_ratio", "event throughput, c64"),
]


def _bench_ablation(data: list[dict[str, Any]], sources: list[str]) -> list[str]:
    """``python -m aegis.harness.bench.ablation``: the quick bench's ratios with one hot-path change taken out."""
    a = data[0]
    lines = [
        f"Reproduce: `{a['command']}` (writes `{sources[0]}`), then `make reports`.",
        "",
        f"Recorded {a['recorded_at'][:10]} at commit `{a['commit'][:7]}` on a {a['machine']['cpus']}-CPU machine:"
        " each variant is that commit with one patch of `reports/rpc-ablation/` applied, and runs `aegis bench"
        " --quick` in turn with the others; each cell is the median over the variant's runs (each run's ratio"
        " is itself the median of its 8 rounds), with the range of the runs.",
        "",
        "| variant (what it takes out) | runs | " + " | ".join(label for _, label in ABLATION_RATIOS) + " |",
        "|---|---|" + "---|" * len(ABLATION_RATIOS),
    ]
    for v in a["variants"]:
        runs = v["runs"]
        cells = []
        for key, _ in ABLATION_RATIOS:
            values = sorted(r[key] for r in runs)
            med = statistics.median(values)
            cells.append(
                f"{med:.3f} ({values[0]:.3f} - {values[-1]:.3f})" if len(values) > 1 else f"{med:.3f}"
            )
        lines.append(f"| {v['name']} ({v['takes_out']}) | {len(runs)} | " + " | ".join(cells) + " |")
    loads = [r["load_avg"]["before"][0] for v in a["variants"] for r in v["runs"]]
    lines += ["", f"1-minute load average before the runs: {min(loads)} - {max(loads)}."]
    return lines


def _bench_check(data: list[dict[str, Any]], sources: list[str]) -> list[str]:
    """``aegis bench --check --repeat N --out reports``: every run's verdict against the baseline."""
    c = data[0]
    runs = c["runs"]
    first = runs[0]["check"]
    failed = sum(not r["check"]["ok"] for r in runs)
    plan = c["plan"]
    lines = [
        f"Reproduce: `{c['command']}` (writes `{sources[0]}`), then `make reports`.",
        "",
        f"{len(runs)} runs in a row from {runs[0]['recorded_at']}, each {plan['rounds']} alternating rounds of"
        f" {plan['seq_ops']} calls per side at concurrency 1, against the baseline {first['baseline']:.3f}"
        f" (`reports/baseline.json`, {first['baseline_recorded_at']}); limit {first['limit']:.3f}"
        f" (+{first['tolerance']:.0%}). Runs over the limit: **{failed} of {len(runs)}**"
        + (
            f", of which {sum(not r['ok'] for r in runs)} confirmed by a second measurement."
            if any(r.get("confirmation") for r in runs)
            else "."
        ),
        "",
        "| run | rpc_p99_ratio (median of rounds) | rounds' IQR | rounds' min - max | verdict | load average before |",
        "|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(runs, 1):
        v, sp = r["check"], r["ratio_spread"]
        lines.append(
            f"| {i} | {v['measured']:.3f} | {sp['q1']:.3f} - {sp['q3']:.3f} | {sp['min']:.3f} - {sp['max']:.3f}"
            f" | {'ok' if v['ok'] else '**regression**'} | {r['load_avg']['before'][0]} |"
        )
    return lines


def _spec_verdict(c: dict[str, Any]) -> tuple[str, str]:
    """What a configuration of ``aegis spec --json`` was expected to give and what it gave (with the invariant)."""
    result = c["result"] if c["invariant"] is None else f"{c['result']} {c['invariant']}"
    return c["expected"].replace(":", " "), result


def _spec_quick(data: list[dict[str, Any]], sources: list[str]) -> list[str]:
    """``aegis spec --quick --json``: every configuration, the view cross-checks and the mutants, with TLC's
    distinct states and seconds."""
    d = data[0]
    configs = d["configs"]
    cross = d.get("view_crosscheck", {}).get("configs", [])
    mutants = d.get("mutants", {}).get("configs", [])
    lines = [
        f"Reproduce: `aegis spec --quick --json > {sources[0]}`, then `make reports`.",
        "",
        f"{len(configs)} configurations ({len(d['passed'])} pass, {len(d['failed_as_expected'])} negative controls"
        f" fail as they must, {len(d['unexpected'])} unexpected), {len(cross)} runs without the view,"
        f" {len(mutants)} mutants; {d['distinct_states']:,} distinct states in the configurations,"
        f" {d['seconds']:.1f} s wall.",
        "",
        "| run | expected | result | distinct states | seconds |",
        "|---|---|---|---|---|",
    ]
    for c in configs:
        expected, result = _spec_verdict(c)
        lines.append(f"| `{c['name']}` | {expected} | {result} | {c['distinct']:,} | {c['seconds']:.1f} |")
    for c in cross:
        lines.append(
            f"| `{c['name']}` without the view ({c['ticks']} ticks) | {c['view_on'].replace(':', ' ')} (as with it) |"
            f" {c['view_off'].replace(':', ' ')} | {c['distinct']:,} | {c['seconds']:.1f} |"
        )
    for c in mutants:
        lines.append(
            f"| mutant `{c['name']}` on `{c['base']}` | caught | {'caught' if c['caught'] else 'MISSED'}"
            f" ({c['result'].replace(':', ' ')}) | {c['distinct']:,} | {c['seconds']:.1f} |"
        )
    return lines


def _spec_configs(data: list[dict[str, Any]], sources: list[str]) -> list[str]:
    """``make spec-quorum`` (``aegis spec --config A --config B ... --json``): the named configurations (a
    simulation has no distinct count: the states of its traces instead)."""
    d = data[0]
    configs = d["configs"]
    lines = [
        f"Reproduce: `make spec-quorum` (`aegis spec --config NAME ... --parallel 1 --json` for the configurations"
        f" below; writes `{sources[0]}`), then `make reports`.",
        "",
        f"{len(configs)} configurations ({len(d['passed'])} pass, {len(d['failed_as_expected'])} negative controls"
        f" fail as they must, {len(d['unexpected'])} unexpected), {d['seconds']:.1f} s wall.",
        "",
        "| configuration | expected | result | states | seconds |",
        "|---|---|---|---|---|",
    ]
    for c in configs:
        expected, result = _spec_verdict(c)
        states = (
            f"{c['distinct']:,} distinct" if c["distinct"] else f"{c['generated']:,} generated (simulation)"
        )
        lines.append(f"| `{c['name']}` | {expected} | {result} | {states} | {c['seconds']:.1f} |")
    return lines


def _management_bench(data: list[dict[str, Any]], sources: list[str]) -> list[str]:
    """``aegis bench --management``: ``GET /api/metrics`` latency, rate and errors, and the NATS messages the
    service sent per HTTP request, against issue 15's goals."""
    b = data[0]
    n = b["latency_samples"]
    pc = b["paced"]
    served = b["requests"] - b["errors"]
    nats = b["nats"]
    sec = lambda v: None if v is None else v / 1000  # noqa: E731 - the report's milliseconds as seconds
    yes = lambda ok: "yes" if ok else "**no**"  # noqa: E731
    md = sources[0].removesuffix(".json") + ".md"
    return [
        f"Reproduce: `{b['command']}` (writes `{sources[0]}` and `{md}`), then `make reports`.",
        "",
        f"Recorded {b['recorded_at'][:10]} on a {b['machine']['cpus']}-CPU machine (nats-server"
        f" {b['versions']['nats-server']}, Python {b['versions']['python']}): 3-node cluster, {b['instances']}"
        f" instances heartbeating every second through the SDK, one `aegis manage`, {b['clients']} HTTP clients"
        f" calling `GET {b['route']}` ({b['response_kb']} KB answers), all on one host. Paced: each client polls"
        f" once per {_num(pc['interval_s'])} s ({_num(pc['offered_per_s'])} requests/s offered), the goal's"
        " basis; back to back: the saturation throughput, whose latency is queueing (about clients / throughput).",
        "",
        "| figure | measured | goal | met |",
        "|---|---|---|---|",
        f"| latency p50 / p99 / max, paced"
        f" | {_dist(sec(pc['p50_ms']), sec(pc['p99_ms']), sec(pc['max_ms']), pc['latency_samples'])}"
        f" | p99 < {_num(b['goal_p99_ms'])} ms | {yes(b['goal_p99_met'])} |",
        f"| latency p50 / p99 / max, back to back | {_dist(sec(b['p50_ms']), sec(b['p99_ms']), sec(b['max_ms']), n)}"
        " | | |",
        f"| NATS messages sent by the service per HTTP request | {b['nats_msgs_per_request']:.3f}"
        f" ({nats['load']['in_msgs']} / {served}) | < {_num(b['goal_nats_msgs_per_request'])}"
        f" | {yes(b['goal_nats_met'])} |",
        f"| requests/s | {b['requests_per_s']:.0f} ({b['requests']} in {b['load_s']:.1f} s) | | |",
        f"| errors | {b['errors'] + pc['errors']} of {b['requests'] + pc['requests']} | 0"
        f" | {yes(b['errors'] + pc['errors'] == 0)} |",
        f"| the service's CPU per request | {b['management_cpu_ms_per_request']:.2f} ms | | |",
        "",
        f"Idle, the service sent {nats['idle_in_msgs_per_s']:g} NATS messages/s; CPU seconds during the"
        f" {b['load_s']:.0f} s load: "
        + ", ".join(f"{k.replace('_', ' ')} {v:.1f}" for k, v in b["cpu_s"].items())
        + f" (load average {b['machine']['load_avg_at_start'][0]:g} before the run).",
    ]


def _deploy_test(data: list[dict[str, Any]], sources: list[str]) -> list[str]:
    """``make deploy-test``: the three-host deploy, its re-run, the rolling restart and the power loss."""
    d = data[0]
    md = sources[0].removesuffix(".json") + ".md"
    yes = lambda ok: "yes" if ok else "**no**"  # noqa: E731
    checks = d.get("checks") or {}
    hosts = ", ".join(h["name"] for h in d["hosts"])
    changed = d.get("second_run_changed_by_host") or {}
    epochs = d.get("rolling_restart_epochs") or []
    led = d.get("poweroff_host_led")
    led = "not recorded" if led is None else ", ".join(f"`{x}`" for x in led) or "no Aegis stream"
    lease = "quorum lease" if d.get("ledger_election") == "quorum" else "single-bucket lease"
    if d.get("poweroff_host_meta_leader"):
        led += " and the JetStream meta group"
    serving_s = d.get("poweroff_cluster_serving_s")
    serving_after = "" if serving_s is None else f" ({_num(serving_s)} s after the first answer + 2 s)"
    lines = [
        f"Reproduce: `{d['command']}` (root; writes `{sources[0]}` and `{md}`), then `make reports`.",
        "",
        f"Recorded {d['started_at'][:16].replace('T', ' ')} UTC, {len(d['hosts'])} hosts ({hosts}), base root"
        f" filesystem cached: {_num(d['total_s'])} s in all (staging {_num(d['stage_s'])} s, lab up"
        f" {_num(d['lab_up_s'])} s, teardown {_num(d.get('teardown_s', 0))} s). Passed: {yes(d['passed'])}.",
        "",
        "| step | measured | goal | met |",
        "|---|---|---|---|",
        f"| first `site.yml` | {_num(d['first_run_s'])} s, {d['first_run_changed']} changes"
        f" | checks from outside ok | {yes(checks.get('ok'))} |",
        f"| second `site.yml` | {_num(d['second_run_s'])} s, changed="
        + "/".join(str(v) for v in changed.values())
        + f" | changed=0 | {yes(d['second_run_changed'] == 0)} |",
        f"| `site.yml --check --diff` | changed={d['check_diff_run_changed']} | changed=0"
        f" | {yes(d['check_diff_run_changed'] == 0)} |",
        f"| `rolling-restart.yml` under a sticky client | {_num(d['rolling_restart_s'])} s,"
        f" {d['rolling_restart_failed_calls']} failed of {d['rolling_restart_calls']} calls, worst gap"
        f" {ms(d['rolling_restart_worst_gap_s'])}, epochs {' -> '.join(str(e) for e in epochs)}"
        f" | 0 failed | {yes(d['rolling_restart_failed_calls'] == 0)} |",
        f"| power loss of the active's host ({d['poweroff_host']}; {lease}; it led {led}) | first answer from another"
        f" instance after {_num(d['poweroff_failover_s'])} s; {d['poweroff_failed_calls']} failed calls, worst gap"
        f" {_num(d['poweroff_worst_gap_s'])} s | < 2 s | {yes(d['poweroff_failover_s'] < 2)} |",
        f"| cluster serving after it (a new active, a meta leader on the survivors) | {yes(d['poweroff_cluster_serving'])}"
        f"{serving_after} | yes, within 30 s | " + yes(d["poweroff_cluster_serving"]) + " |",
        f"| rejoined after boot (node healthy, instance a standby again) | {yes(d['rejoined'])}"
        f" ({_num(d.get('rejoin_s') or 0)} s) | yes | {yes(d['rejoined'])} |",
        f"| leftovers after teardown | {', '.join(d['leftovers']) or 'none'} | none | {yes(not d['leftovers'])} |",
    ]
    if d["poweroff_failover_s"] >= 2 and "KV_aegis_election" in (d.get("poweroff_host_led") or []):
        lines += [
            "",
            "The power-loss failover is over 2 s when the lost host led the election bucket's stream: the playbooks"
            " deploy the single-bucket lease, which waits out NATS's new stream leader (4-9 s). The quorum lease"
            " rides through that (see [the quorum lease](#the-quorum-lease-riding-through-a-nats-node-crash-issue-18)); it is not yet deployed by"
            " the playbooks. The deploy test's verdict does not include this row.",
        ]
    return lines


def _soak(data: list[dict[str, Any]], sources: list[str]) -> list[str]:
    """``aegis bench --soak``: RSS growth of service and client, p99 of the first and last window (issue 19)."""
    from aegis.harness.bench.soak import markdown

    return _from_report_markdown(markdown(data[0]))


def _election_scale(data: list[dict[str, Any]], sources: list[str]) -> list[str]:
    """``aegis bench --groups``: the election's cost and sampled crash failover per group count (issue 19)."""
    from aegis.harness.bench.election_scale import markdown

    return _from_report_markdown(markdown(data[0]))


def _from_report_markdown(text: str) -> list[str]:
    """A report's own markdown as a figures block: its first line (the command) also says ``make reports``."""
    lines = text.rstrip("\n").split("\n")
    lines[0] = lines[0].rstrip(".") + ", then `make reports`."
    return lines


RENDERERS: dict[str, Renderer] = {
    "sim": _sim,
    "sim-sweep": _sweep,
    "failover": _failover,
    "campaign-classes": _campaign_classes,
    "campaign-aims": _campaign_aims,
    "sim-quorum": _sim_quorum,
    "campaign-totals": _campaign_totals,
    "bench": _bench,
    "bench-goals": _bench_goals,
    "bench-cpu": _bench_cpu,
    "bench-ablation": _bench_ablation,
    "bench-check": _bench_check,
    "spec-quick": _spec_quick,
    "spec-configs": _spec_configs,
    "management-bench": _management_bench,
    "deploy-test": _deploy_test,
    "soak": _soak,
    "election-scale": _election_scale,
    "partition-heal": _partition_heal,
}


# -- blocks ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    name: str
    sources: tuple[str, ...]
    line: int
    current: str
    rendered: str


def _load(source: str, root: Path, where: str) -> dict[str, Any]:
    path = root / source
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise FiguresError(f"{where}: cannot read {source}: {exc}") from None
    if not isinstance(data, dict):
        raise FiguresError(f"{where}: {source} is not a JSON object")
    return data


def _render_body(name: str, sources: Sequence[str], root: Path, where: str) -> str:
    renderer = RENDERERS.get(name)
    if renderer is None:
        raise FiguresError(f"{where}: no renderer named {name!r} (known: {', '.join(RENDERERS)})")
    data = [_load(s, root, where) for s in sources]
    try:
        lines = renderer(data, list(sources))
        lines = [line if line.startswith("|") else _wrap(line) for line in lines]
    except (KeyError, TypeError, IndexError, ZeroDivisionError) as exc:
        raise FiguresError(
            f"{where}: {name}: {', '.join(sources)} lacks what the table needs: {exc!r}"
        ) from None
    return "\n".join(lines) + "\n"


def blocks(path: Path, root: Path | None = None) -> list[Block]:
    """Every figures block of ``path``, with its text now and as rendered from its JSON."""
    root = REPO if root is None else root
    text = path.read_text()
    found = list(BLOCK.finditer(text))
    opened = list(OPENING.finditer(text))
    if len(opened) != len(found):
        closed = {m.start() for m in found}
        bad = next(m for m in opened if m.start() not in closed)
        line = text.count("\n", 0, bad.start()) + 1
        raise FiguresError(
            f"{path}:{line}: figures:{bad['name']} needs `source=...` and a closing `<!-- /figures:{bad['name']} -->`"
        )
    out = []
    for m in found:
        line = text.count("\n", 0, m.start()) + 1
        sources = tuple(s for s in m["source"].split(",") if s)
        body = _render_body(m["name"], sources, root, f"{path}:{line}")
        out.append(Block(m["name"], sources, line, m["body"], body))
    return out


def render(path: Path, root: Path | None = None) -> str:
    """``path``'s text with every figures block rendered from its JSON (the file is not written)."""
    root = REPO if root is None else root
    text = path.read_text()
    rendered = iter(b.rendered for b in blocks(path, root))

    def fill(m: re.Match[str]) -> str:
        opening = m.group(0).split("\n", 1)[0]
        return f"{opening}\n{next(rendered)}<!-- /figures:{m['name']} -->"

    return BLOCK.sub(fill, text)


def check(path: Path, root: Path | None = None) -> list[Block]:
    """The blocks of ``path`` whose text differs from what their JSON renders to (empty: all current)."""
    return [b for b in blocks(path, root) if b.current != b.rendered]


def targets(root: Path | None = None) -> list[Path]:
    """The files that hold figures: README.md, docs/*.md, aegis/spec/README.md and any reports/*.md with a figures
    block."""
    root = REPO if root is None else root
    candidates = [
        root / "README.md",
        root / "aegis" / "spec" / "README.md",
        *sorted((root / "docs").glob("*.md")),
        *sorted((root / "reports").glob("*.md")),
    ]
    return [p for p in candidates if p.exists() and (p.name == "README.md" or OPENING.search(p.read_text()))]


def write(paths: Sequence[Path], root: Path | None = None) -> list[Path]:
    """Rewrite each file's blocks in place; return the files that changed."""
    changed = []
    for p in paths:
        new = render(p, root)
        if new != p.read_text():
            p.write_text(new)
            changed.append(p)
    return changed
