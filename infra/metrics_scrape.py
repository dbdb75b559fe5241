"""Reading other processes' `/metrics`: scrape, sum a counter, a histogram's quantile.

What `parley top` and `parley bench` do with two scrapes of a service: the change of a
counter between them, and the quantiles and mean of what a histogram observed between
them, interpolated within its buckets as Prometheus' `histogram_quantile` does.
"""

from __future__ import annotations

import math
import re
import urllib.error
import urllib.request

SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$")
Samples = dict[str, float]


def scrape(url: str, timeout_s: float = 2.0) -> Samples | None:
    """The samples of `url`/metrics by `name{labels}`, or None if it does not answer."""
    try:
        with urllib.request.urlopen(url + "/metrics", timeout=timeout_s) as answer:
            text = answer.read().decode()
    except (urllib.error.URLError, OSError):
        return None
    samples = {}
    for line in text.splitlines():
        found = SAMPLE.match(line)
        if found and not line.startswith("#"):
            samples[found.group(1) + (found.group(2) or "")] = float(found.group(3))
    return samples


def total(samples: Samples, name: str) -> float:
    """A counter or gauge summed over its labels."""
    return sum(v for k, v in samples.items() if k == name or k.startswith(name + "{"))


def merged(scrapes: list[Samples | None]) -> Samples:
    """Several processes' samples added up (the processors of one group, say)."""
    out: Samples = {}
    for samples in scrapes:
        for key, value in (samples or {}).items():
            out[key] = out.get(key, 0.0) + value
    return out


def _buckets(before: Samples, after: Samples, name: str) -> list[tuple[float, float]]:
    buckets = []
    for key, value in after.items():
        found = re.fullmatch(rf'{name}_bucket\{{(?:[^}}]*,)?le="([^"]+)"\}}', key)
        if found:
            buckets.append((float(found.group(1)), value - before.get(key, 0.0)))
    merged_by_bound: dict[float, float] = {}
    for bound, count in buckets:  # labelled series of one histogram, added up
        merged_by_bound[bound] = merged_by_bound.get(bound, 0.0) + count
    return sorted(merged_by_bound.items())


def quantile(before: Samples, after: Samples, name: str, q: float) -> float:
    """The q-quantile (seconds) of what `name` observed between two scrapes (over all its
    labels); NaN if it observed nothing."""
    buckets = _buckets(before, after, name)
    count = buckets[-1][1] if buckets else 0.0
    if count <= 0:
        return math.nan
    rank, lower, below = q * count, 0.0, 0.0
    for bound, cumulative in buckets:
        if cumulative >= rank:
            if bound == math.inf:
                return lower
            inside = cumulative - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, cumulative
    return lower


def observed(before: Samples, after: Samples, name: str) -> dict[str, float]:
    """What histogram `name` observed between two scrapes: count, mean, p50 and p99, in
    milliseconds for the times (names ending `_seconds`), as they are otherwise."""
    count = total(after, name + "_count") - total(before, name + "_count")
    spent = total(after, name + "_sum") - total(before, name + "_sum")
    scale = 1000.0 if name.endswith("_seconds") else 1.0
    out = {"count": count}
    if count > 0:
        out["mean"] = round(spent / count * scale, 2)
        out["p50"] = round(quantile(before, after, name, 0.5) * scale, 2)
        out["p99"] = round(quantile(before, after, name, 0.99) * scale, 2)
    return out
