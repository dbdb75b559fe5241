"""One measured window: start the generators, read /proc around it, summarise the samples."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench.driver import Fleet, Generator
from bench.metrics_stages import scrape_all, stages
from bench.procfs import CpuMeter
from bench.stats import summary
from bench.targets import Target, server_cpu_groups


def pair_fleet(
    target: Target, pairs: int, procs: int, workdir: Path, spec: dict[str, Any]
) -> Fleet:
    """Generators holding `pairs` 1:1 pairs between them; each user sends to its partner."""
    accounts = target.accounts(2 * pairs)
    generators = []
    for k in range(procs):
        mine = [accounts[i] for p in range(k, pairs, procs) for i in (2 * p, 2 * p + 1)]
        routes = []
        for j in range(len(mine) // 2):
            routes.append([2 * j, 2 * j + 1, None, 1])
            routes.append([2 * j + 1, 2 * j, None, 1])
        generators.append(
            Generator(
                {
                    "kind": target.kind,
                    "base": target.base,
                    "accounts": mine,
                    "routes": routes,
                    **target.spec,
                    **spec,
                },
                workdir,
                f"{target.name}-{k}",
            )
        )
    return Fleet(generators)


def window(
    fleet: Fleet,
    target: Target,
    rate: float,
    seconds: float,
    tag: str,
    drain_s: float = 15.0,
    profile_dir: Path | None = None,
) -> dict[str, Any]:
    """Send at `rate` for `seconds`; figures with latency summaries and CPU per delivery.

    With `profile_dir`, each of Parley's Python services is sampled by py-spy meanwhile.
    """
    groups = {**target.processes(), "loadgen": fleet.pids}
    meter = CpuMeter(groups)
    scraped = scrape_all(target.metrics)  # the services' /metrics, before and after
    start = fleet.start_traffic(rate, seconds, drain_s, tag)
    time.sleep(max(0.0, start - time.monotonic()))
    meter.start()
    profiler = None
    if profile_dir is not None:
        from bench.profile import PYTHON_SERVICES, Profiler

        pids = {g: groups[g][0] for g in PYTHON_SERVICES if groups.get(g)}
        profiler = Profiler(pids, seconds, profile_dir / tag)
    time.sleep(seconds)
    cpu = meter.stop()
    raw = fleet.finish_traffic()
    scraped_after = scrape_all(target.metrics)
    span = max(raw["window_s"], raw["last_delivery"] - raw["first_send"])
    deliveries = raw["deliveries"]
    server_cpu = sum(cpu[g] for g in server_cpu_groups(groups))
    # The CPU window is the send window; in steady state it holds that many deliveries.
    in_window = deliveries
    figures: dict[str, Any] = {
        **({"profile": profiler.summary()} if profiler is not None else {}),
        "rate": rate,
        "seconds": seconds,
        "sent": raw["sent"],
        "acked": raw["acked"],
        "deliveries": deliveries,
        "failed": raw["failed"],
        "lost": raw["lost"],
        "duplicates": raw["duplicates"],
        "errors": raw["errors"],
        "resent": raw["resent"],
        "recovered_by_sync": raw["via_sync"],
        "redundant_pushes": raw["redundant_pushes"],
        "delivered_per_s": round(deliveries / span, 1) if span > 0 else 0.0,
        "ack_ms": summary(raw["ack_ms"]),
        "delivered_ms": summary(raw["delivered_ms"]),
        "last_member_ms": summary(raw["last_member_ms"]),
        "receipt_ms": summary(raw["receipt_ms"]),
        # delivered = send -> event (gateway, Kafka, processor) + event -> socket (commit,
        # relay, Kafka, workers, Redis, gateway); wall clocks of one machine
        "stages_ms": {
            "send_to_event": summary(raw["to_event_ms"]),
            "event_to_delivered": summary(raw["event_to_delivered_ms"]),
        },
        "generator_lag_ms_p99": raw["generator_lag_ms_p99"],
        "generator_lag_ms_max": raw["generator_lag_ms_max"],
        "cpu_s": cpu,
        "cpu_cores_server": round(server_cpu / seconds, 2),
        "cpu_cores_loadgen": round(cpu["loadgen"] / seconds, 2),
        "cpu_us_per_delivery": round(server_cpu / in_window * 1e6) if in_window else None,
        "loadgen_cpu_us_per_delivery": round(cpu["loadgen"] / in_window * 1e6)
        if in_window
        else None,
    }
    if target.metrics:
        figures["metrics"] = stages(scraped, scraped_after, figures)
    return figures


def warm(fleet: Fleet, routes: int, settle_s: float, tag: str = "warm") -> dict[str, Any]:
    """Each route sends once, slowly (opens the chats, fills caches); not measured. Then
    `settle_s` (the target's) for the warm-up's receipts and reads to pass."""
    rate = min(500.0, float(routes))
    start = fleet.start_traffic(rate, routes / rate, 20.0, tag)
    del start
    raw = fleet.finish_traffic()
    time.sleep(settle_s)
    return {"sent": raw["sent"], "deliveries": raw["deliveries"], "errors": raw["errors"]}
