"""The same machine without Parley: the WebSocket baseline, raw Kafka, raw PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.scenarios import Say, oneone
from bench.servers import echo_server
from bench.stats import ratio
from bench.targets import echo_target
from infra.settings import ROOT, Settings


def raw_layer(which: str, rate: float, seconds: float) -> dict[str, Any]:
    """`python -m bench.raw kafka|postgres` in its own process; its figures."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.raw", which, str(rate), str(seconds)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        return {"error": done.stderr.strip()[-500:]}
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def websocket_oneone(settings: Settings, workdir: Path, say: Say, **params: Any) -> dict[str, Any]:
    """The oneone scenario, same client and parameters, against the WebSocket baseline."""
    with echo_server(settings, workdir) as server:
        target = echo_target(server.base, server.pid, settings.bench_settle_s)
        return oneone(target, workdir, say, **params)


def baselines(
    settings: Settings, workdir: Path, say: Say, rate: float, seconds: float, **params: Any
) -> dict[str, Any]:
    say("baseline: WebSocket relay on uvicorn")
    ws = websocket_oneone(settings, workdir, say, rate=rate, seconds=seconds, **params)
    say("baseline: Kafka produce -> consume")
    kafka = raw_layer("kafka", rate, seconds)
    say("baseline: PostgreSQL inserts")
    postgres = raw_layer("postgres", rate, seconds)
    return {"websocket": ws, "kafka": kafka, "postgres": postgres}


def _get(figures: dict[str, Any], *path: str) -> float:
    value: Any = figures
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return 0.0
        value = value[key]
    return float(value) if isinstance(value, int | float) else 0.0


def ratios(parley: dict[str, Any], base: dict[str, Any]) -> dict[str, float | None]:
    """Parley's figures over the baselines' (above 1: Parley is slower or costlier)."""
    ws, kafka, pg = base.get("websocket", {}), base.get("kafka", {}), base.get("postgres", {})
    kafka_rt = ("latency_at_rate", "produce_to_consume_ms")
    pg_commit = ("latency_at_rate", "commit_ms")
    out: dict[str, float | None] = {}
    for p in ("p50", "p99"):
        out[f"delivered_{p}_over_websocket_{p}"] = ratio(
            _get(parley, "delivered_ms", p), _get(ws, "delivered_ms", p)
        )
        out[f"ack_{p}_over_websocket_ack_{p}"] = ratio(
            _get(parley, "ack_ms", p), _get(ws, "ack_ms", p)
        )
        out[f"ack_{p}_over_kafka_round_trip_{p}"] = ratio(
            _get(parley, "ack_ms", p), _get(kafka, *kafka_rt, p)
        )
        out[f"delivered_{p}_over_kafka_round_trip_{p}"] = ratio(
            _get(parley, "delivered_ms", p), _get(kafka, *kafka_rt, p)
        )
        out[f"ack_{p}_over_postgres_commit_{p}"] = ratio(
            _get(parley, "ack_ms", p), _get(pg, *pg_commit, p)
        )
    out["cpu_per_delivery_over_websocket"] = ratio(
        _get(parley, "cpu_us_per_delivery"), _get(ws, "cpu_us_per_delivery")
    )
    out["rate_over_kafka_max_records_per_s"] = ratio(
        _get(parley, "delivered_per_s"), _get(kafka, "throughput", "per_second")
    )
    out["rate_over_postgres_max_rows_per_s"] = ratio(
        _get(parley, "delivered_per_s"), _get(pg, "throughput", "per_second")
    )
    return out
