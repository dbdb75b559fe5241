"""The `parley` command: run the stack, the services and the tools."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from infra.settings import Settings, load_settings


def _stack(args: argparse.Namespace, settings: Settings) -> int:
    from infra.stack import StackError, State, stack_down, stack_status, stack_up

    try:
        if args.action == "up":
            stack_up(settings)
        elif args.action == "down":
            stack_down(settings)
    except StackError as exc:
        print(f"parley stack: error: {exc}", file=sys.stderr)
        return 1
    if args.action == "status" or args.action == "up":
        from parley.services import services_status

        statuses = stack_status(settings)
        # Parley's own processes (each instance, and the balancer) after the servers;
        # only one that runs but does not answer makes the status fail.
        own = services_status(settings) if args.action == "status" else []
        for st in [*statuses, *own]:
            pid = f"pid {st.pid}" if st.pid else "-"
            print(f"{st.service:<11} {st.state:<11} {st.address:<22} {pid:<10} {st.log}")
        if args.action == "status":
            bad = {State.UNHEALTHY, State.UNREACHABLE, State.STOPPED}
            down = any(st.state in bad for st in statuses)
            return 3 if down or any(st.state == State.UNHEALTHY for st in own) else 0
    return 0


def _up(args: argparse.Namespace, settings: Settings) -> int:
    from infra.stack import StackError, stack_down, stack_up
    from parley.services import services_down, services_up

    try:
        if args.command == "up":
            stack_up(settings)
            services_up(settings)
            from commands.web_client import queries_url

            web = f"http://{settings.commands_host}:{settings.commands_port}"
            queries = queries_url(settings)
            print(
                f"parley: up. WebSocket: {web.replace('http', 'ws')}/ws  ·  "
                f"accounts API: {web}/v1/auth/…  ·  logs: {settings.state_dir}/services/"
            )
            if queries:
                print(f"parley: query API: {queries}/v1/…, described at {queries}/openapi.json")
            print(f"parley: web client: open {web}/ in two windows and register two users")
        else:
            services_down(settings)
            stack_down(settings)
    except StackError as exc:
        print(f"parley: error: {exc}", file=sys.stderr)
        return 1
    return 0


def _settings(args: argparse.Namespace, settings: Settings) -> int:
    from dataclasses import fields

    from infra.settings import Settings as Defaults

    defaults = Defaults()
    for f in fields(settings):
        value = getattr(settings, f.name)
        shown = "***" if any(w in f.name for w in ("password", "secret")) else value
        mark = "" if value == getattr(defaults, f.name) else "  (set)"
        print(f"PARLEY_{f.name.upper():<40} {shown}{mark}")
    return 0


def _topics(args: argparse.Namespace, settings: Settings) -> int:
    from infra.topics import TopicsError, align_topics, ensure_topics

    try:
        reports = ensure_topics(settings) if args.action == "ensure" else align_topics(settings)
    except TopicsError as exc:
        print(f"parley topics: error: {exc}", file=sys.stderr)
        return 1
    # Drift is a report, not a failure: `make up` runs `ensure` and carries on.
    for report in reports:
        print(f"{report.name:<32} {report}")
    return 0


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    import signal
    import threading

    from infra.logs import configure_logging
    from infra.runtime import lower_priority, tune_gc

    configure_logging(args.service, parley_level=settings.log_level)
    lower_priority(args.service, settings.off_path_nice)
    if args.service in ("commands", "queries"):  # both sign or check tokens
        from infra.auth import signing_secret

        try:
            signing_secret(settings)
        except (ValueError, OSError) as exc:
            print(f"parley: error: {exc}", file=sys.stderr)
            return 2
    from infra.metrics_http import serve_metrics  # the services without HTTP: /metrics

    if args.service == "workers":
        from parley.wiring import run_workers

        tune_gc(settings.gc_gen0_threshold)
        serve_metrics(settings, "workers")  # a daemon thread, ended with the process
        run_workers(settings)  # Faust handles SIGTERM/SIGINT itself
        return 0
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    run: Callable[[Settings, threading.Event], None]
    if args.service == "processor":
        from parley.wiring import run_processor as run
    elif args.service == "relay":
        from parley.wiring import run_relay as run
    elif args.service == "commands":
        from parley.wiring import run_commands as run
    elif args.service == "notifier":
        from parley.wiring import run_notifier as run
    elif args.service == "balancer":
        from parley.wiring import run_balancer as run
    else:
        from parley.wiring import run_queries as run
    tune_gc(settings.gc_gen0_threshold)  # once the service's modules are loaded
    metrics = serve_metrics(settings, args.service)
    try:
        run(settings, stop)
    finally:
        if metrics is not None:
            metrics.close()
    return 0


def _relay(args: argparse.Namespace, settings: Settings) -> int:
    import psycopg
    from eventsourcing.persistence import PersistenceError

    from projections.schema import migrate
    from streams.relay import relay_status

    try:
        migrate(settings)
        status = relay_status(settings)
    except (psycopg.Error, PersistenceError) as exc:
        print(f"parley relay: error: PostgreSQL: {exc}".rstrip(), file=sys.stderr)
        return 1
    updated = status.updated_at.isoformat() if status.updated_at else "never"
    print(f"relay     {status.name}")
    print(f"head      {status.head}")
    print(f"position  {status.position}  (recorded {updated})")
    print(f"lag       {status.lag}")
    return 0


def _bench(args: argparse.Namespace, settings: Settings) -> int:
    from bench.runner import run_bench

    return run_bench(args, settings)


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from parley.demo import run_demo

    return run_demo(settings)


def _workers(args: argparse.Namespace, settings: Settings) -> int:
    from projections.status import projection_lag

    rows = projection_lag(settings)
    print(f"{'projection':<10} {'partition':>9} {'checkpoint':>10} {'log end':>8} {'lag':>6}")
    for row in rows:
        print(
            f"{row.projection:<10} {row.partition:>9} {row.checkpoint:>10} "
            f"{row.log_end:>8} {row.lag:>6}"
        )
    total = sum(row.lag for row in rows)
    print(f"total lag: {total} events")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="parley", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="the stack and every Parley service, in the background")
    up.set_defaults(run=_up)
    down = sub.add_parser("down", help="stop every Parley service and the stack")
    down.set_defaults(run=_up)

    show = sub.add_parser("settings", help="every setting, its variable and value")
    show.set_defaults(run=_settings)

    stack = sub.add_parser("stack", help="the local Kafka, PostgreSQL and Redis")
    stack.add_argument("action", choices=["up", "down", "status"])
    stack.set_defaults(run=_stack)

    topics = sub.add_parser("topics", help="Parley's Kafka topics")
    topics.add_argument(
        "action",
        choices=["ensure", "align"],
        help="ensure: create missing topics, report how existing ones differ; "
        "align: set the differing configs on existing ones (never partitions)",
    )
    topics.set_defaults(run=_topics)

    bench = sub.add_parser("bench", help="measure a part of Parley (docs/performance.md)")
    from bench.runner import add_arguments

    add_arguments(bench)
    bench.set_defaults(run=_bench)

    serve = sub.add_parser("serve", help="run one of Parley's services in the foreground")
    serve.add_argument(
        "service",
        choices=["processor", "relay", "workers", "notifier", "commands", "queries", "balancer"],
    )
    serve.set_defaults(run=_serve)

    relay = sub.add_parser("relay", help="the relay from the event store to Kafka")
    relay.add_argument("action", choices=["status"])
    relay.set_defaults(run=_relay)

    workers = sub.add_parser("workers", help="the Faust workers that build the projections")
    workers.add_argument("action", choices=["status"])
    workers.set_defaults(run=_workers)

    from parley.replay_console import add_parser as add_replay_parser

    add_replay_parser(sub)  # parley replay list|rebuild|republish (docs/replay.md)

    from parley.push_console import add_parser as add_push_parser

    add_push_parser(sub)  # parley push status|test (docs/push.md)

    from parley.media_console import add_parser as add_media_parser

    add_media_parser(sub)  # parley media sweep (docs/media.md)

    from parley.top import add_parser as add_top_parser

    add_top_parser(sub)  # parley top (docs/observability.md)

    demo = sub.add_parser("demo", help="a scripted tour of the running stack, with a transcript")
    demo.set_defaults(run=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
    except ValueError as exc:
        print(f"parley: error: {exc}", file=sys.stderr)
        return 2
    run: Callable[[argparse.Namespace, Settings], int] = args.run
    return run(args, settings)


if __name__ == "__main__":
    sys.exit(main())
