"""Result files: machine, versions, commit, parameters and figures as JSON; and `compare`."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.procfs import load_average
from infra.settings import ROOT, Settings

PACKAGES = ("uvicorn", "starlette", "websockets", "aiokafka", "psycopg", "redis", "faust-streaming")


def commit() -> str:
    """The checked-out commit, with `+dirty` when the tree has changes."""
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return f"{head}+dirty" if dirty else head


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        mem_kib = 0
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(mem_kib / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_average": load_average(),
    }


def versions(settings: Settings) -> dict[str, str]:
    found: dict[str, str] = {"kafka": settings.kafka_version}
    for package in PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    try:
        import psycopg

        with psycopg.connect(settings.pg_conninfo, connect_timeout=5) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            found["postgresql"] = str(row[0]) if row else ""
    except Exception:  # versions are informative; a missing one is not a failure
        pass
    try:
        import redis

        info = redis.Redis.from_url(settings.redis_url).info("server")
        found["redis"] = str(info.get("redis_version", ""))
    except Exception:
        pass
    return found


def write_result(
    out: Path, scenario: str, parameters: dict[str, Any], figures: dict[str, Any], extra: Any
) -> Path:
    """Write one run's JSON under `out`; return its path."""
    result = {
        "scenario": scenario,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": commit(),
        "machine": machine(),
        "versions": extra,
        "parameters": parameters,
        "figures": figures,
    }
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{scenario}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, inner in value.items():
            flat.update(_flatten(inner, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        flat = {}
        for i, inner in enumerate(value):
            flat.update(_flatten(inner, f"{prefix}[{i}]"))
        return flat
    return {prefix: value}


def compare(first: Path, second: Path) -> list[str]:
    """Lines saying how every figure and parameter of `second` differs from `first`."""
    a = json.loads(first.read_text())
    b = json.loads(second.read_text())
    lines = [
        f"A: {first.name}  {a.get('scenario')}  {a.get('date')}  commit {a.get('commit')}",
        f"B: {second.name}  {b.get('scenario')}  {b.get('date')}  commit {b.get('commit')}",
        f"{'key':<58} {'A':>12} {'B':>12} {'B/A':>7}",
    ]
    flat_a = _flatten({k: a.get(k) for k in ("parameters", "figures")})
    flat_b = _flatten({k: b.get(k) for k in ("parameters", "figures")})
    for key in sorted(set(flat_a) | set(flat_b)):
        va, vb = flat_a.get(key), flat_b.get(key)
        if va == vb:
            continue
        change = ""
        if isinstance(va, int | float) and isinstance(vb, int | float) and va:
            change = f"{vb / va:.2f}"
        lines.append(f"{key:<58} {_show(va):>12} {_show(vb):>12} {change:>7}")
    if len(lines) == 3:
        lines.append("(no differences)")
    return lines


def _show(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)[:12]
