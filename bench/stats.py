"""Latency summaries: percentiles of samples in milliseconds."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

PERCENTILES = (50, 95, 99)


def percentile(ordered: Sequence[float], p: float) -> float:
    """The nearest-rank percentile of already sorted samples (0 when there are none)."""
    if not ordered:
        return 0.0
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(len(ordered), rank) - 1]


def summary(samples_ms: Sequence[float]) -> dict[str, float]:
    """count, p50, p95, p99, max and mean of samples, rounded to 0.01 ms."""
    ordered = sorted(samples_ms)
    out: dict[str, float] = {"count": len(ordered)}
    for p in PERCENTILES:
        out[f"p{p}"] = round(percentile(ordered, p), 2)
    out["max"] = round(ordered[-1], 2) if ordered else 0.0
    out["mean"] = round(statistics.fmean(ordered), 2) if ordered else 0.0
    return out


def ratio(numerator: float, denominator: float) -> float | None:
    """numerator / denominator rounded to 0.01, or None when it has no meaning."""
    if not denominator:
        return None
    return round(numerator / denominator, 2)
