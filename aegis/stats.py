"""The one percentile definition of the project: the simulator (``aegis/sim/``) and the fault harness (``aegis/harness/``)
both use it, so the figures the README compares are computed the same way.

* :func:`percentile` is the **nearest-rank** percentile: the smallest sample such that at least ``p`` % of the
  samples are at or below it (a value that was measured, never an interpolation). With fewer than 100
  samples, p99 is the maximum.
* A p99 over a handful of samples says nothing the maximum does not, and reads as more than it is: below
  :data:`MIN_P99_SAMPLES` samples :func:`summary` gives no p99 and the text helpers print the maximum with
  the sample count instead (``max 8417 ms (10 samples)``). Every printed percentile carries its sample count.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import TypedDict

MIN_P99_SAMPLES = 20
"""Below this many samples a p99 is not printed (nor given by :func:`summary`): the maximum is."""


class Summary(TypedDict):
    samples: int
    p50: float | None
    p99: float | None
    """None when empty or below :data:`MIN_P99_SAMPLES` samples."""
    max: float | None


def percentile(values: Iterable[float], p: float) -> float | None:
    """Nearest-rank percentile (``p`` in 0..100) of ``values``; None when empty."""
    ordered = sorted(values)
    if not ordered:
        return None
    if not 0 <= p <= 100:
        raise ValueError(f"percentile p must be within 0..100, got {p}")
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summary(values: Iterable[float]) -> Summary:
    """Sample count, p50, p99 (None below :data:`MIN_P99_SAMPLES` samples) and max of ``values``."""
    xs = sorted(values)
    return {
        "samples": len(xs),
        "p50": percentile(xs, 50),
        "p99": percentile(xs, 99) if len(xs) >= MIN_P99_SAMPLES else None,
        "max": xs[-1] if xs else None,
    }


def recorded(samples: int, p50: float | None, p99: float | None, max_: float | None) -> Summary:
    """A :class:`Summary` from figures already computed (a recorded report's keys), with the rule of
    :func:`summary` applied: no p99 below :data:`MIN_P99_SAMPLES` samples."""
    return {
        "samples": samples,
        "p50": p50,
        "p99": p99 if samples >= MIN_P99_SAMPLES else None,
        "max": max_,
    }


def seconds(v: float) -> str:
    """A duration in seconds as text: ``0.9012`` -> ``901 ms``, ``8.4166`` -> ``8.42 s``."""
    return f"{v * 1000:.0f} ms" if v < 1 else f"{v:.2f} s"


def _n(samples: int) -> str:
    return f"{samples} sample" if samples == 1 else f"{samples} samples"


def p99_text(values: Iterable[float] | Summary, fmt: Callable[[float], str] = seconds) -> str:
    """The p99 with its sample count (``p99 901 ms (100 samples)``); below :data:`MIN_P99_SAMPLES` samples
    the maximum instead (``max 8.42 s (10 samples)``); ``-`` when there are none."""
    s = values if isinstance(values, dict) else summary(values)
    if not s["samples"] or s["max"] is None:
        return "-"
    if s["p99"] is None:
        return f"max {fmt(s['max'])} ({_n(s['samples'])})"
    return f"p99 {fmt(s['p99'])} ({_n(s['samples'])})"


def spread_text(values: Iterable[float] | Summary, fmt: Callable[[float], str] = seconds) -> str:
    """p50, p99 and max with the sample count (``p50 780 ms, p99 901 ms, max 906 ms (100 samples)``); below
    :data:`MIN_P99_SAMPLES` samples no p99 (``p50 3.95 s, max 8.42 s (10 samples)``); ``-`` when empty."""
    s = values if isinstance(values, dict) else summary(values)
    if not s["samples"] or s["max"] is None or s["p50"] is None:
        return "-"
    parts = [f"p50 {fmt(s['p50'])}"]
    if s["p99"] is not None:
        parts.append(f"p99 {fmt(s['p99'])}")
    parts.append(f"max {fmt(s['max'])}")
    return f"{', '.join(parts)} ({_n(s['samples'])})"


__all__ = [
    "MIN_P99_SAMPLES",
    "Summary",
    "p99_text",
    "percentile",
    "recorded",
    "seconds",
    "spread_text",
    "summary",
]
