"""`parley replay list|rebuild|republish`: the operator's side of projections/replay/rebuild.py.

Draws a rich progress bar (records, events/s, ETA) on stderr while a replay runs and
prints a summary at the end. Exit codes: 0 done, 1 failed, 3 refused (a `ReplayError`
with its stable code: `rebuild_running`, `partial_rebuild`, `topic_exists`, ...).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import threading
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from infra.settings import Settings

REFUSED = 3


class EventsPerSecond(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("-- ev/s" if speed is None else f"{speed:,.0f} ev/s", style="cyan")


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description:<12}"),
        BarColumn(),
        MofNCompleteColumn(),
        EventsPerSecond(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


class BarProgress:
    """`projections.replay.rebuild.Progress` drawn as one bar per phase."""

    def __init__(self, bar: Progress) -> None:
        self.bar = bar
        self.task: TaskID | None = None

    def phase(self, name: str, total: int) -> None:
        if self.task is not None:
            self.bar.update(self.task, total=self.bar.tasks[self.task].completed)
        self.task = self.bar.add_task(name, total=max(total, 1))

    def advance(self, records: int) -> None:
        if self.task is not None:
            self.bar.advance(self.task, records)


def replay_command(args: argparse.Namespace, settings: Settings) -> int:
    from projections.replay.errors import ReplayError
    from projections.schema import migrate

    if args.events_topic:
        settings = settings.replace(events_topic=args.events_topic)
    console = Console(stderr=True)
    try:
        migrate(settings)
        if args.action == "list":
            return _list(settings)
        if args.action == "republish":
            return _republish(args, settings, console)
        return _rebuild(args, settings, console)
    except ReplayError as exc:
        print(f"parley replay: error [{exc.code}]: {exc}", file=sys.stderr)
        return REFUSED
    except KeyboardInterrupt:
        print("parley replay: interrupted; see `parley replay list`", file=sys.stderr)
        return 1
    except Exception as exc:  # Kafka, PostgreSQL or Redis unreachable, ...
        print(f"parley replay: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


def _list(settings: Settings) -> int:
    from projections.replay.listing import replay_status

    rows = replay_status(settings)
    table = Table(box=None, pad_edge=False)
    for name, justify in (
        ("projection", "left"),
        ("state", "left"),
        ("partition", "right"),
        ("checkpoint", "right"),
        ("log end", "right"),
        ("lag", "right"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for status in rows:
        for part in status.partitions:
            table.add_row(
                status.projection,
                status.state,
                str(part.partition),
                str(part.checkpoint),
                str(part.log_end),
                str(part.lag),
            )
        table.add_row(
            status.projection, status.state, "all", "", "", str(status.lag), end_section=True
        )
    console = Console()
    console.print(table)
    for status in rows:
        run = status.run
        if run is None:
            continue
        if status.rebuilding:
            console.print(
                f"{status.projection}: rebuilding, run {run.run_id} ({', '.join(run.projections)}) "
                f"since {run.started_at:%Y-%m-%d %H:%M:%S}, phase {run.state}, "
                f"{run.events:,} events read"
            )
        else:
            ended = f"{run.finished_at:%Y-%m-%d %H:%M:%S}" if run.finished_at else "?"
            console.print(
                f"{status.projection}: last rebuild {run.run_id}: {run.state} at {ended}"
                + (f" ({run.outcome})" if run.outcome else "")
            )
    print(f"total lag: {sum(s.lag for s in rows)} events")
    return 0


def _rebuild(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    from projections.replay.listing import PROJECTIONS
    from projections.replay.rebuild import RebuildOptions, rebuild

    names = PROJECTIONS if args.all else tuple(args.projection)
    if not names:
        print("parley replay rebuild: name a projection or --all", file=sys.stderr)
        return 2
    options = RebuildOptions(
        projections=tuple(names),
        from_offset=args.from_offset,
        from_time=datetime.fromisoformat(args.from_time) if args.from_time else None,
        verify=args.verify,
        dry_run=args.dry_run,
    )
    with _progress(console) as bar:
        summary = asyncio.run(rebuild(settings, options, BarProgress(bar)))
    out = Console()
    out.print(f"run        {summary.run_id}")
    out.print(f"rebuilt    {', '.join(summary.projections)}  (built: {', '.join(summary.built)})")
    out.print(
        f"read       {summary.records:,} records in {summary.seconds:.1f}s "
        f"({summary.rate:,.0f} events/s); {summary.bad_records} unreadable"
    )
    if summary.verify is not None:
        _print_verify(out, summary.verify)
    if summary.swapped:
        pauses = ", ".join(f"{p:.0f} ms" for p in summary.pauses_ms)
        out.print(f"swapped    yes; live workers paused {pauses}")
        if summary.cache_keys is not None:
            keys = summary.cache_keys
            out.print(f"cache      {keys.renamed:,} keys installed, {keys.deleted:,} stale deleted")
    else:
        out.print("swapped    no (dry run): the live projections are untouched")
    return 0


def _print_verify(out: Console, report: Any) -> None:
    out.print(f"verify     {report.differences} difference(s) between live and shadow")
    for t in report.tables:
        mark = "ok" if not t.chats_differing else f"{t.chats_differing} chat(s) differ"
        examples = f" e.g. {', '.join(t.examples)}" if t.examples else ""
        out.print(
            f"  {t.table:<20} live {t.live_rows:>9,}  shadow {t.shadow_rows:>9,}  {mark}{examples}"
        )
    if report.cache is not None:
        c = report.cache
        mark = "ok" if not c.keys_differing else f"{c.keys_differing} key(s) differ"
        examples = f" e.g. {', '.join(c.examples)}" if c.examples else ""
        sizes = f"live {c.live_keys:>9,}  shadow {c.shadow_keys:>9,}"
        out.print(f"  {'redis cache':<20} {sizes}  {mark}{examples}")
    if report.ahead_partitions:
        out.print(
            f"  the live workers were behind in partitions {report.ahead_partitions}: "
            "differences there may only be their lag"
        )


def _republish(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    from streams.republish import republish

    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with _progress(console) as bar:
        task = bar.add_task("republishing", total=None)

        def on_batch(published: int, head: int) -> None:
            bar.update(task, completed=published, total=max(head, published))

        summary = republish(settings, args.to_topic, args.relay_name, on_batch, stop)
    out = Console()
    out.print(f"topic      {summary.topic} ({summary.partitions} partitions)")
    out.print(
        f"published  {summary.events:,} events up to position {summary.position} "
        f"in {summary.seconds:.1f}s ({summary.rate:,.0f} events/s)"
    )
    out.print(f"relay      position recorded as {summary.relay_name!r}")
    out.print(
        f"next       PARLEY_EVENTS_TOPIC={summary.topic} PARLEY_RELAY_NAME={summary.relay_name} "
        "for the relay; PARLEY_EVENTS_TOPIC for the workers after `parley replay rebuild --all`"
    )
    if stop.is_set():
        print("parley replay: interrupted; the topic holds a prefix of the log", file=sys.stderr)
        return 1
    return 0


def add_parser(sub: Any) -> None:
    """The `replay` subcommand of `parley` (parley/cli.py)."""
    replay = sub.add_parser("replay", help="rebuild projections or the log from the log/store")
    actions = replay.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="every projection: checkpoints, lag, state")
    rebuild = actions.add_parser("rebuild", help="rebuild projections into a shadow, then swap")
    rebuild.add_argument("projection", nargs="*", help="chats, messages, receipts, inbox, cache")
    rebuild.add_argument("--all", action="store_true", help="every projection")
    start = rebuild.add_mutually_exclusive_group()
    start.add_argument("--from-offset", type=int, help="start every partition at this offset")
    start.add_argument("--from-time", help="start at the first record at/after an ISO time")
    rebuild.add_argument("--verify", action="store_true", help="compare with live first")
    rebuild.add_argument("--dry-run", action="store_true", help="build and compare, no swap")
    again = actions.add_parser("republish", help="rebuild the Kafka log from the event store")
    again.add_argument("--to-topic", required=True, help="the new topic (must not hold records)")
    again.add_argument("--relay-name", help="relay name to record the position under")
    for parser in (listing, rebuild, again):
        parser.add_argument("--events-topic", help="read this events topic (PARLEY_EVENTS_TOPIC)")
        parser.set_defaults(run=replay_command)
