"""HAProxy from Debian's packages, in front of the gateways when there is more than one.

Clients keep one address: HAProxy listens on the commands port (`commands_host:
commands_port`) and hands each new connection, HTTP or WebSocket, to the gateway with
the fewest connections (`leastconn`). Which gateways there are is not written here: the
backend has `balancer_slots` empty server slots, which `parley serve balancer` fills
from the registry of live gateways over HAProxy's runtime API (its admin socket;
`infra/balancer.py`). Every `balancer_check_ms` it asks each gateway's
`/healthz`; after `balancer_fall` failed checks (a gateway that died, or one draining
after SIGTERM, which answers 503) it routes no new connection there, and a connection
refused by a gateway it still thought up is tried again on another (`redispatch`).
It adds `X-Forwarded-For`, which the gateways behind it believe from its address only
(`PARLEY_TRUSTED_PROXIES`), so per-address rate limits still see each client.
A WebSocket is a tunnel once upgraded: its idle timeout is an hour, longer than any
client's heartbeat. Configuration and log live under `.state/haproxy/`.
"""

from __future__ import annotations

import shutil

from infra.balancer import RuntimeApi, api_path, slot_names
from infra.settings import Settings
from infra.stack.process import StackError, apt_install
from infra.stack.service import LocalService

CONF = """\
# Written by `parley up`; edits are overwritten.
global
    log stdout format raw local0 info
    maxconn {maxconn}
    stats socket {api} mode 600 level admin

defaults
    mode http
    log global
    log-format "{log_format}"
    option forwardfor
    option redispatch
    retries 3
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout tunnel 1h
    timeout client-fin 5s
    timeout http-request 10s
    maxconn {maxconn}

frontend commands
    bind {host}:{port}
    default_backend gateways

backend gateways
    balance leastconn
    option httpchk GET /healthz
    http-check expect status 200
    timeout check {check_timeout}ms
    default-server inter {inter}ms fastinter {inter}ms fall {fall} rise 2
{servers}
"""

LOG_FORMAT = (
    "%ci:%cp [%tr] %ft %b/%s %TR/%Tw/%Tc/%Tr/%Ta %ST %B %CC %CS %tsc "
    '%ac/%fc/%bc/%sc/%rc %sq/%bq %hr %hs \\"%HM %HP %HV\\"'
)
"""`option httplog`'s format, with the path instead of the whole request line: a
WebSocket's query string carries its access token, which must not reach a log file."""


def gateway_ports(settings: Settings) -> list[int]:
    """The port of each gateway behind the balancer (gateway i at base + i, from 1)."""
    return [settings.gateway_base_port + i for i in range(1, settings.gateways + 1)]


class HAProxy(LocalService):
    name = "haproxy"
    port_variable = "PARLEY_COMMANDS_PORT"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.api = RuntimeApi(api_path(settings))

    @property
    def managed(self) -> bool:
        return True

    @property
    def host_port(self) -> tuple[str, int]:
        return self.settings.commands_host, self.settings.commands_port

    @property
    def maxconn(self) -> int:
        """`balancer_maxconn`, or what the file-descriptor limit allows (two a connection:
        client side and gateway side), whichever is lower: HAProxy refuses to start with
        more than it can open."""
        import resource

        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        fits = (
            (hard - 100) // 2 if hard != resource.RLIM_INFINITY else self.settings.balancer_maxconn
        )
        return max(1, min(self.settings.balancer_maxconn, fits))

    @property
    def config(self) -> str:
        host = self.settings.commands_host
        # Empty slots in maintenance, on a placeholder address until a gateway takes one.
        servers = "\n".join(
            f"    server {name} {host}:1 check disabled"
            for name in slot_names(self.settings.balancer_slots)
        )
        return CONF.format(
            host=host,
            api=self.api.path,
            log_format=LOG_FORMAT,
            port=self.settings.commands_port,
            maxconn=self.maxconn,
            inter=self.settings.balancer_check_ms,
            check_timeout=self.settings.balancer_check_timeout_ms,
            fall=self.settings.balancer_fall,
            servers=servers,
        )

    def configured_as_now(self) -> bool:
        """Whether the configuration on disk is the one these settings would write."""
        try:
            return (self.home / "haproxy.cfg").read_text() == self.config
        except OSError:
            return False

    def install(self) -> None:
        if shutil.which("haproxy") is None:
            apt_install("haproxy")
        if shutil.which("haproxy") is None:
            raise StackError("haproxy: installed, but haproxy is not on PATH")

    def prepare(self) -> None:
        (self.home / "haproxy.cfg").write_text(self.config)

    def command(self) -> list[str]:
        return ["haproxy", "-db", "-f", str(self.home / "haproxy.cfg")]

    def healthy(self) -> bool:
        """Its runtime API answers (the gateways are routed to once `parley serve
        balancer` has filled their slots)."""
        try:
            return "Name: HAProxy" in self.api.run(["show info"])
        except OSError:
            return False
