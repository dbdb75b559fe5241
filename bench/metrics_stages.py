"""The services' own `/metrics` around a measured window, set beside the benchmark's figures.

`parley bench oneone` (and every window) scrapes each service before the traffic starts
and after its last delivery, and reports what the histograms observed in between: the
gateway's command round trip, the processor's stages (wait in Kafka, batch, commit,
publish to the gateways) and batch sizes, the relay's publish and the workers'
projection lag. `agreement` puts each beside the benchmark's own figure of the same span
as the client sees it: a metric taken inside the services must count the same commands
and take no longer than the client's figure that contains it.
"""

from __future__ import annotations

from typing import Any

from infra.metrics_scrape import Samples, merged, observed, scrape, total

STAGES = {
    "gateway_command_ms": ("commands", "parley_gateway_command_seconds"),
    "processor_wait_ms": ("processor", "parley_processor_wait_seconds"),
    "processor_batch_ms": ("processor", "parley_processor_batch_seconds"),
    "processor_commit_ms": ("processor", "parley_processor_commit_seconds"),
    "processor_publish_ms": ("processor", "parley_processor_publish_seconds"),
    "processor_batch_commands": ("processor", "parley_processor_batch_commands"),
    "relay_publish_ms": ("relay", "parley_relay_publish_seconds"),
    "relay_batch_events": ("relay", "parley_relay_batch_events"),
    "workers_projected_ms": ("workers", "parley_workers_projected_seconds"),
    "workers_batch_events": ("workers", "parley_workers_batch_events"),
}
COUNTERS = {
    "gateway_acks": ("commands", "parley_gateway_acks_total"),
    "gateway_commands": ("commands", "parley_gateway_commands_total"),
    "processor_commands": ("processor", "parley_processor_commands_total"),
    "processor_errors": ("processor", "parley_processor_errors_total"),
    "relay_published": ("relay", "parley_relay_published_total"),
    "workers_events": ("workers", "parley_workers_events_total"),
}


def scrape_all(urls: dict[str, str]) -> dict[str, Samples | None]:
    return {name: scrape(url, timeout_s=5.0) for name, url in urls.items()}


def _kind(scrapes: dict[str, Samples | None], kind: str) -> Samples:
    """The samples of every instance of a kind (commands-1, commands-2…) added up."""
    return merged([s for name, s in scrapes.items() if name.split("-")[0] == kind])


def stages(
    before: dict[str, Samples | None], after: dict[str, Samples | None], bench: dict[str, Any]
) -> dict[str, Any]:
    """What the metrics saw between the scrapes, and how it compares with `bench` (the
    window's own figures: acked, ack_ms, stages_ms)."""
    down = sorted(n for n in after if after[n] is None or before.get(n) is None)
    kinds = {name.split("-")[0] for name in after}
    old = {kind: _kind(before, kind) for kind in kinds}
    new = {kind: _kind(after, kind) for kind in kinds}
    out: dict[str, Any] = {"scraped": sorted(after), "down": down}
    for key, (kind, name) in STAGES.items():
        if kind in new:
            out[key] = observed(old[kind], new[kind], name)
    for key, (kind, name) in COUNTERS.items():
        if kind in new:
            out[key] = total(new[kind], name) - total(old[kind], name)
    out["agreement"] = _agreement(out, bench)
    return out


def _agreement(metrics: dict[str, Any], bench: dict[str, Any]) -> dict[str, Any]:
    command = metrics.get("gateway_command_ms", {})
    wait = metrics.get("processor_wait_ms", {})
    ack = bench.get("ack_ms", {})
    to_event = bench.get("stages_ms", {}).get("send_to_event", {})
    rows: dict[str, Any] = {
        # every send the clients saw acknowledged counted by the gateways, and a resend
        # (same local id, after a timeout) once more: the gateway acks it again
        "acks": {
            "bench": bench.get("acked"),
            "bench_resent": bench.get("resent", 0),
            "metrics": metrics.get("gateway_acks"),
        },
        # client send -> ack contains the gateway's command round trip
        "ack_vs_gateway_command_ms": {
            "bench_p50": ack.get("p50"),
            "metrics_p50": command.get("p50"),
            "bench_mean": ack.get("mean"),
            "metrics_mean": command.get("mean"),
        },
        # client send -> event stamped by the processor contains the wait in Kafka
        "send_to_event_vs_processor_wait_ms": {
            "bench_p50": to_event.get("p50"),
            "metrics_p50": wait.get("p50"),
            "bench_mean": to_event.get("mean"),
            "metrics_mean": wait.get("mean"),
        },
    }
    acks = rows["acks"]
    if acks["bench"] is not None and acks["metrics"] is not None:
        acks["agree"] = acks["bench"] <= acks["metrics"] <= acks["bench"] + acks["bench_resent"]
    for key in ("ack_vs_gateway_command_ms", "send_to_event_vs_processor_wait_ms"):
        row = rows[key]
        if row["bench_mean"] is not None and row["metrics_mean"] is not None:
            row["inside_by_mean_ms"] = round(row["bench_mean"] - row["metrics_mean"], 2)
            row["agree"] = row["inside_by_mean_ms"] >= 0
    return rows
