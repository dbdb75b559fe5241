"""`GET /metrics` for the services that serve no HTTP: the processor, relay, workers and
notifier (docs/observability.md).

A small threaded HTTP server on a port of the service's own (`metrics_port_of`), in a
daemon thread beside the service's loop, answering the process's registry
(`infra.metrics.REGISTRY`) and nothing else. A scrape costs the service nothing between
scrapes, and the service's loop never waits on one.
"""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from infra.metrics import CONTENT_TYPE, REGISTRY
from infra.settings import Settings

log = logging.getLogger("parley.metrics")

BACKGROUND = ("processor", "relay", "workers", "notifier")
"""The services whose `/metrics` this module serves (the HTTP ones route it themselves)."""


def metrics_port_of(settings: Settings, service: str) -> int:
    """The port `service`'s `/metrics` listens on (0: none)."""
    ports = {
        "processor": settings.processor_metrics_port,
        "relay": settings.relay_metrics_port,
        "workers": settings.workers_metrics_port,
        "notifier": settings.notifier_metrics_port,
    }
    return ports.get(service, 0)


def metrics_urls(settings: Settings, queries: bool = True) -> dict[str, str]:
    """name -> base URL of the `/metrics` of every service `parley up` runs with these
    settings, named as `parley stack status` names them (`commands-2`, `processor-1`…)."""
    host = settings.metrics_host
    urls = {}
    if settings.gateways > 1:
        for i in range(1, settings.gateways + 1):
            urls[f"commands-{i}"] = f"http://{host}:{settings.gateway_base_port + i}"
    else:
        urls["commands"] = f"http://{settings.commands_host}:{settings.commands_port}"
    counts = {"processor": settings.processors, "workers": settings.workers}
    for kind in BACKGROUND:
        port, count = metrics_port_of(settings, kind), counts.get(kind, 1)
        if not port:
            continue
        if count > 1:
            urls.update({f"{kind}-{i}": f"http://{host}:{port + i}" for i in range(1, count + 1)})
        else:
            urls[kind] = f"http://{host}:{port}"
    if queries:
        urls["queries"] = f"http://{settings.queries_host}:{settings.queries_port}"
    return urls


class _Scrape(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path.split("?")[0] != "/metrics":
            self._answer(404, b"only /metrics here\n", "text/plain; charset=utf-8")
            return
        self._answer(200, REGISTRY.render().encode(), CONTENT_TYPE)

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return None  # a scrape every few seconds is not worth a log line


class MetricsServer:
    """`/metrics` served from a daemon thread until `close`."""

    def __init__(self, host: str, port: int) -> None:
        self.http = ThreadingHTTPServer((host, port), _Scrape)
        self.http.daemon_threads = True
        self.address = f"http://{host}:{self.http.server_address[1]}"
        self.thread = threading.Thread(target=self.http.serve_forever, name="metrics", daemon=True)

    def start(self) -> MetricsServer:
        self.thread.start()
        log.info("event=metrics_listening url=%s/metrics", self.address)
        return self

    def close(self) -> None:
        if self.thread.is_alive():  # `shutdown` waits for a loop that must be running
            self.http.shutdown()
        self.http.server_close()


def serve_metrics(settings: Settings, service: str) -> MetricsServer | None:
    """Start `service`'s `/metrics` if it has a port; None if it has none, or the port is
    taken (logged: the service runs on without its metrics rather than not at all)."""
    port = metrics_port_of(settings, service)
    if not port:
        return None
    try:
        return MetricsServer(settings.metrics_host, port).start()
    except OSError as exc:
        log.warning("event=metrics_unavailable port=%d error=%s", port, exc.strerror or exc)
        return None
