"""The `parley bench` scenarios: each returns (parameters, figures) for a result file."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.driver import Fleet, Generator
from bench.measure import pair_fleet, warm, window
from bench.procfs import CpuMeter, rss_kib
from bench.targets import Target

Say = Callable[[str], None]


def oneone(
    target: Target,
    workdir: Path,
    say: Say,
    pairs: int,
    rate: float,
    seconds: float,
    size: int,
    procs: int,
    profile: bool = False,
    spec: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """N pairs at a total rate, receipts acked as the client library does; `spec`: more
    for the load generators (`{"e2e": folder}`: the clients encrypt end to end)."""
    fleet = pair_fleet(target, pairs, procs, workdir, {"size": size, **(spec or {})})
    try:
        say(f"{target.name}: connecting {2 * pairs} users")
        connected = fleet.connect()
        say(f"{target.name}: {connected['connected']} connected; warming up")
        warm(fleet, 2 * pairs, target.settle_s)
        say(f"{target.name}: {rate:g} msgs/s for {seconds:g} s")
        tag = f"m{uuid.uuid4().hex[:6]}"
        figures = window(
            fleet, target, rate, seconds, tag, profile_dir=workdir if profile else None
        )
    finally:
        fleet.close()
    return {"connect": connected, **figures}


def ramp(
    target: Target,
    workdir: Path,
    say: Say,
    pairs: int,
    rates: Sequence[float],
    step_s: float,
    size: int,
    procs: int,
    threshold_ms: float,
    beyond: int = 0,
) -> dict[str, Any]:
    """Raise the rate step by step until p99 send->delivered passes the threshold.

    With `beyond`, that many more rates are measured after the first failing one (to
    draw the curve), unless messages are lost.
    """
    fleet = pair_fleet(target, pairs, procs, workdir, {"size": size})
    steps: list[dict[str, Any]] = []
    try:
        fleet.connect()
        warm(fleet, 2 * pairs, target.settle_s)
        for rate in rates:
            for attempt in (1, 2):  # a failing step is tried once more: the machine is shared
                step = window(fleet, target, rate, step_s, f"r{int(rate)}-{uuid.uuid4().hex[:4]}")
                step["attempt"] = attempt
                steps.append(step)
                say(
                    f"{target.name}: {rate:g}/s -> {step['delivered_per_s']:g}/s delivered, "
                    f"p50 {step['delivered_ms']['p50']} p99 {step['delivered_ms']['p99']} ms, "
                    f"lost {step['lost']}"
                )
                if _passes(step, threshold_ms):
                    break
            if not _passes(steps[-1], threshold_ms):
                if beyond <= 0 or steps[-1]["lost"]:
                    break
                beyond -= 1
    finally:
        fleet.close()
    failing = [s["rate"] for s in steps if not _passes(s, threshold_ms) and s["attempt"] == 2]
    passing = [
        s for s in steps if _passes(s, threshold_ms) and s["rate"] < min(failing, default=1e12)
    ]
    return {
        "threshold_ms": threshold_ms,
        "knee_rate": passing[-1]["rate"] if passing else None,
        "first_failing_rate": min(failing, default=None),
        "steps": steps,
    }


def _passes(step: dict[str, Any], threshold_ms: float) -> bool:
    p99 = step["delivered_ms"]["p99"]
    return bool(p99 <= threshold_ms and not step["lost"] and step["failed"] <= 0.01 * step["sent"])


def group(
    target: Target,
    workdir: Path,
    say: Say,
    groups: int,
    members: int,
    senders: int,
    rate: float,
    seconds: float,
    size: int,
    ack_interval_s: float,
    spec: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Groups of `members`, `senders` of them sending; fanout and latency to the last member.
    `spec`: more for the load generator (`{"e2e": folder}`: the clients encrypt)."""
    accounts = target.accounts(groups * members)
    spec_groups = [
        {
            "admin": g * members,
            "members": list(range(g * members, (g + 1) * members)),
            "senders": list(range(g * members, g * members + senders)),
        }
        for g in range(groups)
    ]
    generator = Generator(
        {
            "kind": target.kind,
            "base": target.base,
            "accounts": accounts,
            "groups": spec_groups,
            "size": size,
            "auto_delivered": False,
            "read_interval_s": ack_interval_s,
            **target.spec,
            **(spec or {}),
        },
        workdir,
        f"{target.name}-group",
    )
    fleet = Fleet([generator])
    try:
        say(f"{target.name}: connecting {len(accounts)} users, creating {groups} groups")
        connected = fleet.connect()
        warm(fleet, groups * senders, target.settle_s)
        say(f"{target.name}: {rate:g} group msgs/s for {seconds:g} s")
        figures = window(fleet, target, rate, seconds, f"g{uuid.uuid4().hex[:6]}", drain_s=30.0)
    finally:
        fleet.close()
    span = figures["seconds"]
    figures["fanout_deliveries_per_s"] = figures.pop("delivered_per_s")
    figures["messages_per_s"] = round(figures["sent"] / span, 1)
    return {"connect": connected, **figures}


def connections(
    target: Target,
    measured: dict[str, list[int]],
    workdir: Path,
    say: Say,
    count: int,
    hold_s: float,
    procs: int,
    sources: int = 1,
    spread: Callable[[], dict[str, int]] | None = None,
) -> dict[str, Any]:
    """N idle authenticated connections: held, resident memory and CPU of the processes
    that hold them (`measured`: "gateway", and "haproxy" behind a balancer, each a list
    of pids). Generator k connects from 127.0.0.(1 + k % `sources`); `spread` says how
    many connections each process holds, read while they are held. The target's
    `settle_s` passes before the idle memory is read and again once all are open."""
    time.sleep(target.settle_s)
    pids = {pid: group for group, group_pids in measured.items() for pid in group_pids}
    rss_before = {pid: rss_kib(pid) for pid in pids}
    accounts = target.accounts(count)
    generators = [
        Generator(
            {
                "kind": target.kind,
                "base": target.base,
                "accounts": accounts[k::procs],
                "connect_concurrency": 25,
                **({"source_host": f"127.0.0.{1 + k % sources}"} if sources > 1 else {}),
                **target.spec,
            },
            workdir,
            f"{target.name}-conn-{k}",
        )
        for k in range(procs)
    ]
    fleet = Fleet(generators)
    try:
        say(f"{target.name}: opening {count} connections to {target.base}")
        connected = fleet.connect()
        say(f"{target.name}: {connected['connected']} open in {connected['seconds']} s; holding")
        time.sleep(target.settle_s)
        rss_held = {pid: rss_kib(pid) for pid in pids}
        held_by = spread() if spread is not None else {}
        groups: dict[str, list[int]] = {**measured, "loadgen": fleet.pids}
        stack = target.processes()
        if "redis" in stack:
            groups["redis"] = stack["redis"]
        meter = CpuMeter(groups)
        meter.start()
        held = fleet.ask({"cmd": "hold", "seconds": hold_s})
        cpu = meter.stop()
        rss_after = {pid: rss_kib(pid) for pid in pids}
    finally:
        fleet.close()
    still_open = sum(h["open"] for h in held)

    def total(rss: dict[int, int], group: str) -> int:
        return sum(kib for pid, kib in rss.items() if pids[pid] == group)

    def per_connection(group: str) -> float | None:
        grown = total(rss_after, group) - total(rss_before, group)
        return round(grown / still_open, 1) if still_open else None

    figures: dict[str, Any] = {
        "requested": count,
        "connected": connected["connected"],
        "connect_failures": connected["failures"],
        "connect_seconds": connected["seconds"],
        "held_after_s": hold_s,
        "held": still_open,
        "gateway_processes": len(measured["gateway"]),
        "gateway_rss_kib_idle": total(rss_before, "gateway"),
        "gateway_rss_kib_connected": total(rss_held, "gateway"),
        "gateway_rss_kib_after_hold": total(rss_after, "gateway"),
        "kib_per_connection": per_connection("gateway"),
        "hold_cpu_s": cpu,
        "gateway_cpu_cores_idle_connections": round(cpu["gateway"] / hold_s, 3),
        "gateway_cpu_us_per_connection_per_s": round(cpu["gateway"] / hold_s / still_open * 1e6, 2)
        if still_open
        else None,
    }
    if "haproxy" in measured:
        figures["haproxy_processes"] = len(measured["haproxy"])
        figures["haproxy_rss_kib_idle"] = total(rss_before, "haproxy")
        figures["haproxy_rss_kib_after_hold"] = total(rss_after, "haproxy")
        figures["haproxy_kib_per_connection"] = per_connection("haproxy")
        figures["haproxy_cpu_cores_idle_connections"] = round(cpu["haproxy"] / hold_s, 3)
    if held_by:
        figures["held_by_process"] = held_by
    return figures
