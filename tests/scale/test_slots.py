"""HAProxy's gateways come from the registry: a gateway started later is routed to, one
that leaves stops being routed to, with no configuration written or HAProxy restarted.

`parley serve balancer` watches the registry (Redis or ZooKeeper, both runs of the
fixture) and fills HAProxy's empty slots over its runtime API.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from bench.servers import free_port
from infra.balancer import servers_state
from tests.scale.conftest import GATEWAYS, Balanced
from tests.services import running

DRAIN = 0x08  # HAProxy's srv_admin_state bit: forced drain


def _until(check: Callable[[], bool], what: str, deadline_s: float = 30.0) -> None:
    deadline = time.monotonic() + deadline_s
    while not check():
        assert time.monotonic() < deadline, f"not within {deadline_s}s: {what}"
        time.sleep(0.1)


def test_a_gateway_started_later_is_routed_to_and_drained_when_it_leaves(
    balanced: Balanced,
) -> None:
    pid = balanced.balancer.pid()
    live = {f"127.0.0.1:{g.env['PARLEY_COMMANDS_PORT']}" for g in balanced.gateways}
    _until(lambda: balanced.routed() >= live, "the fixture's gateways routed")
    port = free_port()
    env = {**balanced.env, "PARLEY_COMMANDS_PORT": str(port)}
    with running("commands", balanced.logs / f"commands-late-{port}.log", env) as late:
        late.wait_for_log(r"event=commands_listening", deadline_s=90)
        address = f"127.0.0.1:{port}"
        _until(lambda: address in balanced.routed(), "the new gateway in a slot")
        slot = balanced.slot_of(late)
        # HAProxy sends new connections there (leastconn: it holds none) once its
        # health checks pass.
        late_id = late.wait_for_log(r"event=gateway_started gateway=(\S+)").split("=")[-1]
        users = [balanced.account(f"late-{i}") for i in range(GATEWAYS + 3)]

        async def connect_until_routed_there() -> None:
            clients = []
            try:
                for user in users:
                    client = await balanced.client(user)
                    clients.append(client)
                    if client.hello["gateway_id"] == late_id:
                        return
                raise AssertionError(f"no connection reached {late_id} in {slot}")
            finally:
                for client in clients:
                    await client.close()

        deadline = time.monotonic() + 30
        while True:
            try:
                asyncio.run(connect_until_routed_there())
                break
            except AssertionError:
                assert time.monotonic() < deadline, "the late gateway never got a connection"
                time.sleep(0.5)
    # Stopped (SIGTERM: it leaves the registry): its slot drains, the others stay.
    _until(lambda: address not in balanced.routed(), "the late gateway drained")
    # HAProxy's health check may see it down before the balancer's `drain` arrives (the
    # balancer learns of the leave from the registry): wait for the drain, not only for
    # the slot to stop being routed to.
    _until(
        lambda: bool(int(servers_state(balanced.balancer.api)[slot]["srv_admin_state"]) & DRAIN),
        "the late gateway's slot set to drain",
    )
    assert balanced.routed() >= live
    assert balanced.balancer.pid() == pid  # the same HAProxy all along: no reload
    # Its log names each WebSocket's path, never the access token in its query string.
    log = balanced.balancer_log()
    assert '"GET /ws HTTP/1.1"' in log and "access_token" not in log
