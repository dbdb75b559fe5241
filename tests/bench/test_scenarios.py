"""Each scenario at a tiny size against private services: it runs, stops, and adds up.

The services are private; the servers (Kafka, PostgreSQL, Redis) are the shared ones.
Their CPU is in the figures only when this checkout's stack runs them (the pid files
under its state folder): with external servers (`PARLEY_MANAGED_SERVICES=""`) the test
of those figures is skipped, saying why, and every other test runs as usual."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import scenarios
from bench.baselines import baselines, ratios
from bench.procfs import STACK, stack_processes
from bench.stack import Services
from bench.targets import Target
from infra.settings import Settings
from parley.cli import build_parser
from tests.bench.conftest import quiet

pytestmark = pytest.mark.slow


def test_oneone_delivers_everything_once_with_receipts(parley: Target, workdir: Path) -> None:
    figures = scenarios.oneone(
        parley, workdir, quiet, pairs=3, rate=30.0, seconds=1.0, size=100, procs=1
    )
    assert figures["sent"] == 30
    assert figures["acked"] == figures["deliveries"] == 30
    assert figures["lost"] == figures["duplicates"] == figures["failed"] == 0
    assert figures["delivered_ms"]["count"] == 30
    assert figures["receipt_ms"]["count"] > 0  # the recipients' `delivered` came back
    assert figures["cpu_us_per_delivery"] > 0
    assert {"processor", "relay", "workers", "commands"} <= set(figures["cpu_s"])
    # The services' own /metrics, scraped around the window, count what the clients saw.
    metrics = figures["metrics"]
    assert metrics["down"] == []
    acks = metrics["agreement"]["acks"]
    assert acks["bench"] == 30 and acks["agree"], acks
    assert metrics["processor_commands"] >= 30  # the sends, and the receipts
    assert metrics["processor_wait_ms"]["count"] >= 30
    assert metrics["workers_projected_ms"]["count"] >= 30
    assert metrics["relay_published"] >= 30
    for row in ("ack_vs_gateway_command_ms", "send_to_event_vs_processor_wait_ms"):
        assert metrics["agreement"][row]["agree"], metrics["agreement"]


def test_oneone_counts_the_servers_cpu_when_this_checkout_runs_them(
    bench_settings: Settings, parley: Target, workdir: Path
) -> None:
    ours = set(stack_processes(bench_settings))
    if not set(STACK) <= ours:
        pytest.skip(
            f"{', '.join(sorted(set(STACK) - ours))} not run by this checkout's stack (no live "
            f"pid file under {bench_settings.state_dir}; PARLEY_MANAGED_SERVICES="
            f"{bench_settings.managed_services!r}): their processes are not ours to measure"
        )
    figures = scenarios.oneone(
        parley, workdir, quiet, pairs=2, rate=20.0, seconds=0.5, size=100, procs=1
    )
    assert set(STACK) <= set(figures["cpu_s"])


def test_oneone_without_receipts_sends_only_the_messages(parley: Target, workdir: Path) -> None:
    """`--no-receipts`: what receipts cost is the difference with the run above."""
    figures = scenarios.oneone(
        parley,
        workdir,
        quiet,
        pairs=3,
        rate=30.0,
        seconds=1.0,
        size=100,
        procs=1,
        spec={"auto_delivered": False, "read_interval_s": 0},
    )
    assert figures["deliveries"] == figures["sent"] == 30
    assert figures["lost"] == figures["duplicates"] == 0
    assert figures["receipt_ms"]["count"] == 0
    assert figures["metrics"]["processor_commands"] == 30  # the sends alone


def test_oneone_splits_pairs_over_generator_processes(parley: Target, workdir: Path) -> None:
    figures = scenarios.oneone(
        parley, workdir, quiet, pairs=4, rate=40.0, seconds=0.5, size=50, procs=2
    )
    assert figures["deliveries"] == figures["sent"] == 20
    assert figures["lost"] == 0


def test_group_fans_out_to_every_member(parley: Target, workdir: Path) -> None:
    figures = scenarios.group(
        parley,
        workdir,
        quiet,
        groups=1,
        members=8,
        senders=2,
        rate=10.0,
        seconds=1.0,
        size=100,
        ack_interval_s=0.0,
    )
    assert figures["sent"] == 10
    assert figures["deliveries"] == 10 * 7
    assert figures["last_member_ms"]["count"] == 10
    assert figures["lost"] == 0


def test_oneone_and_group_run_end_to_end_encrypted(parley: Target, workdir: Path) -> None:
    stores = workdir / "keys"
    spec = {"e2e": str(stores)}
    one = scenarios.oneone(
        parley, workdir, quiet, pairs=3, rate=30.0, seconds=1.0, size=100, procs=1, spec=spec
    )
    # Encrypting in the generator's event loop may make it late: a send past the window
    # is not counted (the lag is reported), so only most of the 30 are.
    assert one["acked"] == one["deliveries"] == one["sent"] >= 20
    assert one["lost"] == one["failed"] == 0 and one["errors"] == {}  # none undecryptable
    assert len(list(stores.glob("*.keys"))) == 6  # a key store per device
    group = scenarios.group(
        parley,
        workdir,
        quiet,
        groups=1,
        members=6,
        senders=2,
        rate=10.0,
        seconds=1.0,
        size=100,
        ack_interval_s=0.0,
        spec=spec,
    )
    assert group["deliveries"] == group["sent"] * 5 and group["sent"] >= 5
    assert group["lost"] == 0 and group["errors"] == {}
    assert group["loadgen_cpu_us_per_delivery"] > 0


def test_connections_are_held_and_measured(
    parley: Target, services: Services, workdir: Path
) -> None:
    measured = {"gateway": [services.pids["commands"]]}
    figures = scenarios.connections(parley, measured, workdir, quiet, count=20, hold_s=1.0, procs=1)
    assert figures["connected"] == figures["held"] == 20
    assert figures["gateway_rss_kib_after_hold"] > 0


def test_connections_through_haproxy_processes_to_several_gateways(
    bench_settings: Settings, tmp_path: Path
) -> None:
    """Two gateways behind two HAProxy processes on one port (filled from the registry),
    connected to from two loopback addresses: every connection held, and each process's
    share and memory reported."""
    args = build_parser().parse_args(
        [
            "bench",
            "connections",
            "--connections",
            "60",
            "--gateways",
            "2",
            "--balancers",
            "2",
            "--sources",
            "2",
            "--procs",
            "2",
            "--hold-seconds",
            "1",
            "--out",
            str(tmp_path / "results"),
        ]
    )
    assert args.run(args, bench_settings) == 0
    (result,) = (tmp_path / "results").glob("connections-*.json")
    figures = json.loads(result.read_text())["figures"]
    assert figures["connected"] == figures["held"] == 60
    assert figures["gateway_processes"] == figures["haproxy_processes"] == 2
    held_by = figures["held_by_process"]
    assert held_by["haproxy-1"] + held_by["haproxy-2"] == 60  # the client sides
    assert held_by["haproxy-1"] > 0 and held_by["haproxy-2"] > 0  # SO_REUSEPORT spreads
    # leastconn over the registry's gateways: both of the run's (and here also the one of
    # the package's `services`, registered in the same Redis database)
    assert held_by["commands-1"] > 0 and held_by["commands-2"] > 0
    assert figures["haproxy_rss_kib_after_hold"] > 0


def test_baselines_run_and_give_ratios(
    bench_settings: Settings, parley: Target, workdir: Path
) -> None:
    params = {"pairs": 2, "size": 100, "procs": 1}
    base = baselines(bench_settings, workdir, quiet, rate=20.0, seconds=1.0, **params)
    assert base["websocket"]["deliveries"] == 20
    assert base["kafka"]["throughput"]["per_second"] > 0
    assert base["postgres"]["throughput"]["per_second"] > 0
    parley_figures = scenarios.oneone(
        parley, workdir, quiet, pairs=2, rate=20.0, seconds=1.0, size=100, procs=1
    )
    both = ratios(parley_figures, base)
    assert both["delivered_p50_over_websocket_p50"] is not None


def test_cli_ramp_writes_json_and_a_plot(bench_settings: Settings, tmp_path: Path) -> None:
    args = build_parser().parse_args(
        [
            "bench",
            "ramp",
            "--pairs",
            "2",
            "--rates",
            "10,20",
            "--step-seconds",
            "1",
            "--no-baselines",
            "--threshold-ms",
            "60000",  # the steps' count, not this machine's load, is under test
            "--out",
            str(tmp_path),
        ]
    )
    assert args.run(args, bench_settings) == 0
    [result] = tmp_path.glob("ramp-*.json")
    data = json.loads(result.read_text())
    assert data["commit"] and data["machine"]["cpus"] and data["versions"]["kafka"]
    steps = data["figures"]["parley"]["steps"]
    assert [s["rate"] for s in steps] == [10.0, 20.0]
    assert result.with_suffix(".png").stat().st_size > 1000


def test_media_compares_parley_with_the_store_itself(settings: Settings, tmp_path: Path) -> None:
    from bench.media_transfer import run

    figures = run(settings, tmp_path, counts={"100KiB": 2, "5MiB": 1}, images=1)
    for label in ("100KiB", "5MiB"):
        size = figures["sizes"][label]
        for way in ("upload", "download"):
            assert size["direct"][way]["objects"] == size["parley"][way]["objects"] > 0
            assert size["ratio"][way] > 0
        assert set(size["cpu_ms_per_mb"]) == {"commands", "queries", "probes"}
    assert figures["thumbnails"]["confirm_image_ms_p50"] > 0
