"""Reading a `/metrics` page as Prometheus would: checked line by line, then as numbers."""

from __future__ import annotations

import re
import urllib.request

SAMPLE = re.compile(r"^([a-z_:][a-z0-9_:]*)(\{[^}]*\})? (-?[0-9.e+-]+|\+Inf|NaN)$")


def parse(text: str) -> dict[str, float]:
    """Each sample (`name{labels}`) and its value; fails on a line that is not the text
    format, and on a sample whose metric has no `# TYPE` line before it."""
    typed: set[str] = set()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            typed.add(line.split()[2])
            continue
        if line.startswith("# HELP ") or not line:
            continue
        found = SAMPLE.match(line)
        assert found, f"not a sample line: {line!r}"
        name = found.group(1)
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in typed or base in typed, f"{name} has no # TYPE"
        samples[name + (found.group(2) or "")] = float(found.group(3))
    return samples


def scrape(base: str) -> dict[str, float]:
    with urllib.request.urlopen(base + "/metrics", timeout=10) as answer:
        assert answer.status == 200
        assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return parse(answer.read().decode())
