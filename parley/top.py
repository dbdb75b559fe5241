"""`parley top`: the live rates and latencies of the HTTP services, from their `/metrics`.

Every `--interval` seconds it scrapes each gateway (`commands_port`, or each
`gateway_base_port + i` when there are several) and the queries service, and shows per
service what changed since the last scrape: connections, frames, commands and acks per
second, errors per second, the command round trip's p50 and p99 (from the histogram's
buckets), HTTP requests per second, CPU and memory. `--once` prints one table (two
scrapes an interval apart) and exits: 0 if every service answered, 3 if one did not.
"""

from __future__ import annotations

import argparse
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from rich.console import Console
from rich.live import Live
from rich.table import Table

from infra.settings import Settings

SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$")
COMMAND_SECONDS = "parley_gateway_command_seconds"


def scrape(url: str, timeout_s: float = 2.0) -> dict[str, float] | None:
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


def targets(settings: Settings) -> list[tuple[str, str]]:
    """(name, base URL) of every service that serves `/metrics`."""
    host = settings.commands_host
    if settings.gateways > 1:
        gateways = [
            (f"commands-{i}", f"http://{host}:{settings.gateway_base_port + i}")
            for i in range(1, settings.gateways + 1)
        ]
    else:
        gateways = [("commands", f"http://{host}:{settings.commands_port}")]
    return [*gateways, ("queries", f"http://{settings.queries_host}:{settings.queries_port}")]


def _sum(samples: dict[str, float], name: str) -> float:
    """A counter summed over its labels."""
    return sum(v for k, v in samples.items() if k == name or k.startswith(name + "{"))


def quantile(before: dict[str, float], after: dict[str, float], name: str, q: float) -> float:
    """The q-quantile (seconds) of what `name` observed between two scrapes, interpolated
    within its bucket as Prometheus' `histogram_quantile` does; NaN if nothing was."""
    buckets = []
    for key, value in after.items():
        found = re.fullmatch(rf'{name}_bucket\{{le="([^"]+)"\}}', key)
        if found:
            buckets.append((float(found.group(1)), value - before.get(key, 0.0)))
    buckets.sort()
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return float("nan")
    rank, lower, below = q * total, 0.0, 0.0
    for bound, cumulative in buckets:
        if cumulative >= rank:
            if bound == float("inf"):
                return lower
            inside = cumulative - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, cumulative
    return lower


@dataclass
class Row:
    name: str
    up: bool
    cells: list[str]


def rows(
    names: list[str], before: list[dict[str, float] | None], after: list[dict[str, float] | None],
    seconds: float,
) -> list[Row]:  # fmt: skip
    out = []
    for name, old, new in zip(names, before, after, strict=True):
        if old is None or new is None:
            out.append(Row(name, False, ["down"] + [""] * 9))
            continue

        def rate(metric: str, old: dict[str, float] = old, new: dict[str, float] = new) -> str:
            return f"{(_sum(new, metric) - _sum(old, metric)) / seconds:,.1f}"

        p50 = quantile(old, new, COMMAND_SECONDS, 0.5) * 1000
        p99 = quantile(old, new, COMMAND_SECONDS, 0.99) * 1000
        cpu = (new["process_cpu_seconds_total"] - old["process_cpu_seconds_total"]) / seconds
        gateway = "parley_gateway_connections" in new
        out.append(
            Row(
                name,
                True,
                [
                    f"{new['parley_gateway_connections']:,.0f}" if gateway else "-",
                    rate("parley_gateway_frames_total") if gateway else "-",
                    rate("parley_gateway_commands_total") if gateway else "-",
                    rate("parley_gateway_acks_total") if gateway else "-",
                    rate("parley_gateway_errors_total") if gateway else "-",
                    "-" if p50 != p50 else f"{p50:.1f}",
                    "-" if p99 != p99 else f"{p99:.1f}",
                    rate("parley_http_requests_total"),
                    f"{cpu * 100:.0f}%",
                    f"{new['process_resident_memory_bytes'] / 2**20:,.0f}",
                ],
            )
        )
    return out


HEADERS = [
    "service", "conns", "frames/s", "commands/s", "acks/s", "errors/s",
    "cmd p50 ms", "cmd p99 ms", "http/s", "cpu", "rss MiB",
]  # fmt: skip


def table(found: list[Row], interval: float) -> Table:
    view = Table(title=f"parley top: the last {interval:g} s")
    for header in HEADERS:
        view.add_column(header, justify="left" if header == "service" else "right")
    for row in found:
        view.add_row(row.name, *row.cells, style=None if row.up else "red")
    return view


def run_top(args: argparse.Namespace, settings: Settings) -> int:
    services = targets(settings)
    names = [name for name, _ in services]
    before = [scrape(url) for _, url in services]
    started = time.monotonic()
    console = Console()
    if args.once:
        time.sleep(args.interval)
        after = [scrape(url) for _, url in services]
        found = rows(names, before, after, time.monotonic() - started)
        console.print(table(found, args.interval))
        return 0 if all(row.up for row in found) else 3
    with Live(console=console, auto_refresh=False) as live:
        try:
            while True:
                time.sleep(args.interval)
                after = [scrape(url) for _, url in services]
                now = time.monotonic()
                live.update(table(rows(names, before, after, now - started), args.interval))
                live.refresh()
                before, started = after, now
        except KeyboardInterrupt:
            return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    top = sub.add_parser("top", help="live rates and latencies of the services, from /metrics")
    top.add_argument("--interval", type=float, default=2.0, help="seconds between scrapes")
    top.add_argument("--once", action="store_true", help="one table, then exit")
    top.set_defaults(run=run_top)
