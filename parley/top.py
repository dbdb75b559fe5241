"""`parley top`: the live rates, latencies and lags of every service, from their `/metrics`.

Every `--interval` seconds it scrapes each service `parley up` runs (each gateway, each
processor and workers process, the relay, the notifier, the queries service: their
`/metrics` addresses from the settings, `infra.metrics_http.metrics_urls`) and shows per
service what changed since the last scrape: connections, frames, commands and events
per second, acks and errors per second, the p50 and p99 of the service's main stage
(from the histogram's buckets), the consumer lag summed over its partitions, HTTP
requests per second, CPU and memory. `--once` prints one table (two scrapes an interval
apart) and exits: 0 if every service answered, 3 if one did not.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

from rich.console import Console
from rich.live import Live
from rich.table import Table

from infra.metrics_http import metrics_urls
from infra.metrics_scrape import Samples, quantile, scrape
from infra.metrics_scrape import total as _sum
from infra.settings import Settings


@dataclass(frozen=True)
class Kind:
    """What the columns show for one kind of service (empty: nothing, shown `-`)."""

    commands: str = ""
    events: str = ""
    errors: str = ""
    stage: str = ""  # the histogram whose p50 and p99 are shown
    lag: str = ""


KINDS = {
    "commands": Kind(
        commands="parley_gateway_commands_total",
        errors="parley_gateway_errors_total",
        stage="parley_gateway_command_seconds",  # a command's round trip
    ),
    "processor": Kind(
        commands="parley_processor_commands_total",
        errors="parley_processor_errors_total",
        stage="parley_processor_batch_seconds",  # decided, committed, published
        lag="parley_processor_consumer_lag",
    ),
    "relay": Kind(
        events="parley_relay_published_total",
        errors="parley_relay_errors_total",
        stage="parley_relay_publish_seconds",
        lag="parley_relay_lag",
    ),
    "workers": Kind(
        events="parley_workers_events_total",
        errors="parley_workers_retries_total",
        stage="parley_workers_projected_seconds",  # appended to the topic -> projected
        lag="parley_workers_consumer_lag",
    ),
    "notifier": Kind(
        events="parley_notifier_events_total",
        stage="parley_notifier_record_seconds",
        lag="parley_notifier_consumer_lag",
    ),
}


def targets(settings: Settings) -> list[tuple[str, str]]:
    """(name, base URL) of every service that serves `/metrics`."""
    return list(metrics_urls(settings).items())


@dataclass
class Row:
    name: str
    up: bool
    cells: list[str]


def _rate(old: Samples, new: Samples, metric: str, seconds: float) -> str:
    if not metric:
        return "-"
    return f"{(_sum(new, metric) - _sum(old, metric)) / seconds:,.1f}"


def _ms(old: Samples, new: Samples, histogram: str, q: float) -> str:
    value = quantile(old, new, histogram, q) * 1000 if histogram else float("nan")
    return "-" if value != value else f"{value:.1f}"


def rows(
    names: list[str], before: list[Samples | None], after: list[Samples | None], seconds: float
) -> list[Row]:
    out = []
    for name, old, new in zip(names, before, after, strict=True):
        if old is None or new is None:
            out.append(Row(name, False, ["down"] + [""] * (len(HEADERS) - 2)))
            continue
        kind = KINDS.get(name.split("-")[0], Kind())
        gateway = "parley_gateway_connections" in new
        cpu = (new["process_cpu_seconds_total"] - old["process_cpu_seconds_total"]) / seconds
        cells = [
            f"{new['parley_gateway_connections']:,.0f}" if gateway else "-",
            _rate(old, new, "parley_gateway_frames_total" if gateway else "", seconds),
            _rate(old, new, kind.commands, seconds),
            _rate(old, new, kind.events, seconds),
            _rate(old, new, "parley_gateway_acks_total" if gateway else "", seconds),
            _rate(old, new, kind.errors, seconds),
            _ms(old, new, kind.stage, 0.5),
            _ms(old, new, kind.stage, 0.99),
            f"{_sum(new, kind.lag):,.0f}" if kind.lag else "-",
            _rate(old, new, "parley_http_requests_total", seconds),
            f"{cpu * 100:.0f}%",
            f"{new['process_resident_memory_bytes'] / 2**20:,.0f}",
        ]
        out.append(Row(name, True, cells))
    return out


HEADERS = [
    "service", "conns", "frames/s", "commands/s", "events/s", "acks/s", "errors/s",
    "p50 ms", "p99 ms", "lag", "http/s", "cpu", "rss MiB",
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
