"""The gateway's Prometheus instruments (served at `/metrics`, docs/observability.md).

Each is touched once per event on the hot path: one increment, or one observation for a
command's round trip. Labels come from bounded sets: frame types the protocol knows,
stable error codes, frame kinds the delivery routes.
"""

from __future__ import annotations

from infra.metrics import REGISTRY, Counter, Gauge, Histogram

CONNECTIONS = REGISTRY.add(Gauge("parley_gateway_connections", "WebSockets open on this gateway."))
CONNECTS = REGISTRY.add(Counter("parley_gateway_connects_total", "WebSockets accepted."))
FRAMES = REGISTRY.add(
    Counter("parley_gateway_frames_total", "Client frames received, by type.", "type")
)
COMMANDS = REGISTRY.add(
    Counter(
        "parley_gateway_commands_total", "Commands sent to the processors, by frame type.", "type"
    )
)
ACKS = REGISTRY.add(Counter("parley_gateway_acks_total", "Sends acknowledged (`ack` frames)."))
COMMAND_SECONDS = REGISTRY.add(
    Histogram(
        "parley_gateway_command_seconds",
        "From a command handed to the command bus to its outcome back (ack, ok or error).",
    )
)
ERRORS = REGISTRY.add(
    Counter("parley_gateway_errors_total", "`error` frames sent to clients, by code.", "code")
)
DELIVERIES = REGISTRY.add(
    Counter(
        "parley_gateway_deliveries_total",
        "Frames routed here for this gateway's users (message, receipt, chat, typing), by kind.",
        "kind",
    )
)
SYNCS = REGISTRY.add(
    Gauge(
        "parley_gateway_syncs",
        "Syncs being answered: waiting for the projections of their chats, or sending pages.",
    )
)
