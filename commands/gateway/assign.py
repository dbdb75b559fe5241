"""`GET /v1/gateways/assign`: the least-loaded live gateway, for clients that connect directly.

The seed's alternative to a balancer: a client asks any gateway (through the balancer or
not) which one to connect to, then opens its WebSocket there. The answer comes from the
gateway's watched cache of the registry of live gateways (`infra.registry.GatewayWatch`:
ZooKeeper's watches, or Redis listed every `registry_report_s`), so a request reads
memory, not the registry: the gateway with the fewest connections as last reported. A
gateway that drains has left the registry; one that died is gone within its lease or
session timeout. No token needed: the answer names a gateway, nothing about users.
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from infra.registry import RegistryUnavailable, least_loaded
from infra.web import error_response

log = logging.getLogger("parley.gateway")


async def assign(request: Request) -> JSONResponse:
    try:
        live = request.app.state.gateway.gateways.gateways()
    except RegistryUnavailable:  # not read once yet: say so, never a 500
        log.warning("event=assign_failed error=registry_unread")
        return error_response("unavailable", "the gateway registry does not answer", 503)
    chosen = least_loaded(live)
    if chosen is None:
        return error_response("no_gateway", "no gateway is alive", 503)
    return JSONResponse(
        {
            "gateway_id": chosen.gateway_id,
            "url": chosen.url,
            "connections": chosen.connections,
            "gateways": len(live),
        },
        headers={"Cache-Control": "no-store"},
    )


def assign_routes() -> list[Route]:
    return [Route("/v1/gateways/assign", assign, methods=["GET"])]
