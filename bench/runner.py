"""`parley bench SCENARIO`: the one way into every benchmark; run, print, write JSON.

Scenarios: `processor` (write path), `actions` (a reaction, an edit, a delete next to a
send, and what sealing costs), `relay`, `projection` (the live workers), `queries`
(the HTTP query API), `replay` (rebuild speed), `media` (uploads and downloads), `push`
(the notifier), and over WebSockets end to end `oneone`, `group`, `connections`,
`ramp`, `baselines`; `compare` sets two result files side by side.
Every run writes `bench/results/<scenario>-<time>.json` (machine, versions, commit,
parameters, figures); `ramp` also draws `<same name>.png`. Scenarios measure private
copies of Parley's services on the shared Kafka, PostgreSQL and Redis (`--stack own`,
`bench.stack`) or those of `parley up` (`--stack running`), and stop by
themselves.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infra.settings import Settings

if TYPE_CHECKING:
    from bench.targets import Target

COMPONENTS = ("processor", "actions", "relay", "projection", "queries", "replay", "media", "push")
"""One part of Parley measured on its own, each against private databases and topics."""
END_TO_END = ("oneone", "group", "connections", "ramp", "baselines")
SCENARIOS = (*COMPONENTS, *END_TO_END, "compare")
DEFAULT_RATES = "250,500,1000,1500,2000,2500,3000,4000"
DEFAULT_EVENTS = {
    "processor": 20_000,
    "actions": 10_000,
    "relay": 20_000,
    "projection": 60_000,
    "replay": 100_000,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`parley bench`'s arguments: the scenario and every scenario's options."""
    parser.add_argument("scenario", choices=SCENARIOS)
    parser.add_argument("files", nargs="*", help="compare: two result files, A then B")
    parser.add_argument(
        "--messages",
        type=int,
        default=None,
        help="processor, relay: sends (20,000); actions: sends, and as many of each action "
        "(10,000); projection: events (60,000); replay (100,000)",
    )
    parser.add_argument(
        "--rate",
        type=int,
        default=None,
        help="messages/s for latency (push: 100; group: 20 group messages/s; else 1,000)",
    )
    parser.add_argument("--pushes", type=int, default=2_000, help="push: the throughput burst")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--out", default="bench/results")
    parser.add_argument(
        "--phases",
        default="oneone,group,latency",
        help="projection: which of oneone, group (backlogs) and latency to run",
    )
    parser.add_argument("--concurrency", type=int, default=32, help="queries: requests in flight")
    parser.add_argument("--pairs", type=int, default=500, help="oneone/ramp: user pairs")
    parser.add_argument("--size", type=int, default=100, help="message text, characters")
    parser.add_argument("--procs", type=int, default=1, help="load generator processes")
    parser.add_argument("--rates", default=DEFAULT_RATES, help="ramp: msgs/s steps")
    parser.add_argument("--step-seconds", type=float, default=10.0, help="ramp: per step")
    parser.add_argument("--threshold-ms", type=float, default=100.0, help="ramp: p99 limit")
    parser.add_argument("--beyond", type=int, default=0, help="ramp: steps after the knee")
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument(
        "--gateways", type=int, default=1, help="connections: gateways behind HAProxy (>1)"
    )
    parser.add_argument(
        "--balancers", type=int, default=1, help="connections: HAProxy processes on one port"
    )
    parser.add_argument(
        "--sources", type=int, default=1, help="connections: loopback addresses to connect from"
    )
    parser.add_argument("--hold-seconds", type=float, default=30.0)
    parser.add_argument("--server", choices=["parley", "echo"], default="parley")
    parser.add_argument(
        "--echo-ws",
        choices=["picows", "websockets", "websockets-sansio", "wsproto"],
        default="picows",
        help="connections --server echo: picows as the gateway, or uvicorn's own",
    )
    parser.add_argument("--groups", type=int, default=1)
    parser.add_argument("--members", type=int, default=256)
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--ack-interval", type=float, default=0.0, help="group: s, 0 = no acks")
    parser.add_argument("--no-baselines", action="store_true", help="oneone/ramp: skip them")
    parser.add_argument("--peer", action="store_true", help="oneone/ramp: race ejabberd too")
    parser.add_argument("--profile", action="store_true", help="oneone: py-spy the services")
    parser.add_argument(
        "--e2e",
        action="store_true",
        help="oneone/group: clients encrypt end to end (client.e2e, docs/e2e.md)",
    )
    parser.add_argument(
        "--no-receipts",
        action="store_true",
        help="oneone: Parley's clients send no delivered/read receipts, to measure what "
        "receipts cost (needs --no-baselines; no peer)",
    )
    parser.add_argument("--workers", type=int, default=1, help="own stack: workers processes")
    parser.add_argument(
        "--stack",
        choices=["own", "running"],
        default="own",
        help="own: private copies of Parley's services (default); running: `parley up`'s",
    )


DEFAULT_RATE = {"push": 100, "group": 20}
"""Rates for the scenarios where 1,000 a second is not the measure: a group of 256 at
1,000 messages a second would be 256,000 deliveries a second, and rate limited."""


def run_bench(args: argparse.Namespace, settings: Settings) -> int:
    """Run one scenario from the parsed arguments; 0 on success."""
    if args.rate is None:
        args.rate = DEFAULT_RATE.get(args.scenario, 1_000)
    if args.scenario == "compare":
        from bench.results import compare

        if len(args.files) != 2:
            print("parley bench compare: give two result files", file=sys.stderr)
            return 2
        print("\n".join(compare(Path(args.files[0]), Path(args.files[1]))))
        return 0
    if args.no_receipts and (args.scenario != "oneone" or args.peer or not args.no_baselines):
        # The baselines and the peer keep their receipts: their figures would not compare.
        print(
            "parley bench: --no-receipts is for oneone with --no-baselines and no --peer",
            file=sys.stderr,
        )
        return 2
    from bench.results import versions, write_result

    if args.scenario in COMPONENTS:
        figures = _component(args, settings)
        if figures is None:
            return 2
        parameters = {k: v for k, v in vars(args).items() if k not in ("run", "files", "command")}
        path = write_result(Path(args.out), args.scenario, parameters, figures, versions(settings))
        print(json.dumps(figures, indent=2))
        print(f"parley bench: results written to {path}")
        return 0
    workdir = Path(settings.state_dir) / "bench" / f"{args.scenario}-{uuid.uuid4().hex[:6]}"
    parameters = {k: v for k, v in vars(args).items() if k not in ("run", "files", "command")}
    started = time.monotonic()
    figures = _run(args, settings, workdir)
    figures["elapsed_s"] = round(time.monotonic() - started, 1)
    path = write_result(Path(args.out), args.scenario, parameters, figures, versions(settings))
    if args.scenario == "ramp":
        from bench.plot import plot_ramp

        series = {
            name: f["steps"] for name, f in figures.items() if isinstance(f, dict) and "steps" in f
        }
        plot_ramp(series, args.threshold_ms, path.with_suffix(".png"))
        print(f"parley bench: plot written to {path.with_suffix('.png')}")
    print(json.dumps(_headline(figures), indent=2))
    print(f"parley bench: results written to {path} (work files in {workdir})")
    return 0


def _component(args: argparse.Namespace, settings: Settings) -> dict[str, Any] | None:
    """Run one of `COMPONENTS`; None (after saying why) when its options are wrong."""
    events = args.messages or DEFAULT_EVENTS.get(args.scenario, 0)
    if args.scenario == "processor":
        from bench.processor_throughput import run as run_processor

        return run_processor(settings, messages=events, rate=args.rate, seconds=args.seconds)
    if args.scenario == "actions":
        from bench.actions_cost import run as run_actions

        return run_actions(settings, messages=events, rate=args.rate, seconds=args.seconds)
    if args.scenario == "relay":
        from bench.relay_throughput import run as run_relay

        return run_relay(settings, events=events, rate=args.rate, seconds=args.seconds)
    if args.scenario == "projection":
        from bench.live_projections import run as run_projection

        phases = tuple(p.strip() for p in args.phases.split(",") if p.strip())
        unknown = set(phases) - {"oneone", "group", "latency"}
        if unknown or not phases:
            print(f"parley bench: --phases takes oneone, group, latency (got {args.phases})")
            return None
        return run_projection(
            settings, phases=phases, events=events, rate=args.rate, seconds=args.seconds
        )
    if args.scenario == "queries":
        from bench.query_load import run as run_queries

        return run_queries(settings, seconds=args.seconds, concurrency=args.concurrency)
    if args.scenario == "media":
        from bench.media_transfer import run as run_media

        return run_media(settings, Path(args.out) / "media-logs")
    if args.scenario == "push":
        from bench.push_notifications import run as run_push

        workdir = Path(settings.state_dir) / "bench" / f"push-{uuid.uuid4().hex[:6]}"
        return run_push(settings, workdir, _say, args.rate, args.seconds, args.pushes)
    from bench.replay_speed import run as run_replay

    return run_replay(settings, events=events)


def _say(text: str) -> None:
    print(f"parley bench: {text}", flush=True)


@contextmanager
def _parley(args: argparse.Namespace, settings: Settings, workdir: Path) -> Iterator[Target]:
    """Parley to measure: private services (default) or those of `parley up`."""
    from bench.targets import parley_target

    if args.stack == "running":
        from infra.metrics_http import metrics_urls

        yield parley_target(settings, metrics=metrics_urls(settings, queries=False))
        return
    from bench.stack import private_services

    _say("starting private copies of processor, relay, workers and commands")
    with private_services(settings, workdir / "services", args.workers) as services:
        yield parley_target(services.settings, services.base, services.processes, services.metrics)


def _balanced_connections(
    args: argparse.Namespace, settings: Settings, workdir: Path, params: dict[str, Any]
) -> dict[str, Any]:
    """`connections` through HAProxy to `--gateways` private gateways (`bench.balanced`)."""
    from bench import scenarios
    from bench.balanced import balanced_services
    from bench.targets import parley_target
    from infra.metrics_scrape import scrape

    _say(f"starting {args.gateways} gateways behind {args.balancers} HAProxy processes")
    with balanced_services(settings, workdir, args.gateways, args.balancers) as front:
        services = front.services
        target = parley_target(
            services.settings, services.base, services.processes, services.metrics
        )
        gateway_pids = [services.pids[name] for name in front.gateways]
        measured = {"gateway": gateway_pids, "haproxy": front.balancer_pids()}

        def spread() -> dict[str, int]:
            held = {}
            for name in front.gateways:
                samples = scrape(services.metrics[name]) or {}
                held[name] = int(samples.get("parley_gateway_connections", -1))
            return {**held, **front.balancer_connections()}

        figures = scenarios.connections(target, measured, workdir, _say, spread=spread, **params)
    return {"gateways": args.gateways, "balancers": args.balancers, **figures}


def _gateway_pid(target: Target, settings: Settings) -> int:
    pids = target.processes().get("commands") or []
    if not pids:
        raise RuntimeError("no commands service pid found")
    return pids[0]


def _run(args: argparse.Namespace, settings: Settings, workdir: Path) -> dict[str, Any]:
    from bench import scenarios
    from bench.baselines import baselines, ratios

    pair_params = {"pairs": args.pairs, "size": args.size, "procs": args.procs}
    e2e = {"e2e": str(workdir / "keys")} if args.e2e else {}
    if args.scenario == "connections":
        conn_params = {
            "count": args.connections,
            "hold_s": args.hold_seconds,
            "procs": args.procs,
            "sources": args.sources,
        }
        if args.server == "echo":
            from bench.servers import echo_server
            from bench.targets import echo_target

            with echo_server(settings, workdir, args.echo_ws) as server:
                target = echo_target(server.base, server.pid, settings.bench_settle_s)
                measured = {"gateway": [server.pid]}
                return scenarios.connections(target, measured, workdir, _say, **conn_params)
        if args.gateways > 1:
            return _balanced_connections(args, settings, workdir, conn_params)
        with _parley(args, settings, workdir) as target:
            measured = {"gateway": [_gateway_pid(target, settings)]}
            return scenarios.connections(target, measured, workdir, _say, **conn_params)
    if args.scenario == "group":
        with _parley(args, settings, workdir) as target:
            return scenarios.group(
                target,
                workdir,
                _say,
                args.groups,
                args.members,
                args.senders,
                float(args.rate),
                args.seconds,
                args.size,
                args.ack_interval,
                e2e,
            )
    if args.scenario == "baselines":
        return baselines(settings, workdir, _say, float(args.rate), args.seconds, **pair_params)
    if args.scenario == "oneone":
        unreceipted = {"auto_delivered": False, "read_interval_s": 0} if args.no_receipts else {}
        with _parley(args, settings, workdir) as target:
            figures: dict[str, Any] = {
                "parley": scenarios.oneone(
                    target,
                    workdir,
                    _say,
                    rate=float(args.rate),
                    seconds=args.seconds,
                    profile=args.profile,
                    spec={**e2e, **unreceipted},
                    **pair_params,
                )
            }
        if not args.no_baselines:
            figures["baselines"] = _guarded(
                lambda: baselines(
                    settings, workdir, _say, float(args.rate), args.seconds, **pair_params
                )
            )
            figures["ratios"] = ratios(figures["parley"], figures["baselines"])
        if args.peer:
            from bench.peer import peer_oneone

            figures["ejabberd"] = _guarded(
                lambda: peer_oneone(
                    settings,
                    workdir,
                    _say,
                    rate=float(args.rate),
                    seconds=args.seconds,
                    **pair_params,
                )
            )
            if "error" not in figures["ejabberd"]:
                figures["ratios_to_ejabberd"] = _peer_ratios(figures["parley"], figures["ejabberd"])
        return figures
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    ramp_params = {
        "rates": rates,
        "step_s": args.step_seconds,
        "threshold_ms": args.threshold_ms,
        "beyond": args.beyond,
        **pair_params,
    }
    with _parley(args, settings, workdir) as target:
        figures = {"parley": scenarios.ramp(target, workdir, _say, **ramp_params)}
    if not args.no_baselines:
        from bench.servers import echo_server
        from bench.targets import echo_target

        def websocket_ramp() -> dict[str, Any]:
            with echo_server(settings, workdir) as server:
                target = echo_target(server.base, server.pid, settings.bench_settle_s)
                return scenarios.ramp(target, workdir, _say, **ramp_params)

        figures["websocket"] = _guarded(websocket_ramp)
    if args.peer:
        from bench.peer import peer_ramp

        figures["ejabberd"] = _guarded(lambda: peer_ramp(settings, workdir, _say, **ramp_params))
    return figures


def _guarded(run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """A comparison that fails is reported as such; Parley's own figures are kept."""
    try:
        return run()
    except Exception as exc:
        _say(f"comparison failed: {type(exc).__name__}: {exc}")
        return {"error": f"{type(exc).__name__}: {exc}"[:2000]}


def _peer_ratios(parley: dict[str, Any], peer: dict[str, Any]) -> dict[str, float | None]:
    from bench.stats import ratio

    out: dict[str, float | None] = {
        "delivered_per_s": ratio(parley["delivered_per_s"], peer.get("delivered_per_s", 0)),
        "cpu_per_delivery": ratio(
            parley.get("cpu_us_per_delivery") or 0, peer.get("cpu_us_per_delivery") or 0
        ),
    }
    for key in ("ack_ms", "delivered_ms", "receipt_ms"):
        for p in ("p50", "p99"):
            out[f"{key}_{p}"] = ratio(parley[key][p], peer.get(key, {}).get(p, 0))
    return out


def _headline(figures: dict[str, Any]) -> dict[str, Any]:
    """The figures without the per-step detail, for the terminal."""
    short: dict[str, Any] = {}
    for key, value in figures.items():
        if isinstance(value, dict) and "steps" in value:
            short[key] = {
                "knee_rate": value["knee_rate"],
                "steps": [
                    {
                        "rate": s["rate"],
                        "delivered_per_s": s["delivered_per_s"],
                        "delivered_ms": s["delivered_ms"],
                        "lost": s["lost"],
                        "cpu_us_per_delivery": s["cpu_us_per_delivery"],
                    }
                    for s in value["steps"]
                ],
            }
        else:
            short[key] = value
    return short
