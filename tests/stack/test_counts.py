"""`parley up` with counts: which processes it runs, where, and what HAProxy is told."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.settings import Settings, load_settings
from infra.stack.haproxy import HAProxy
from parley.services import balancer, parley_services, services_status

pytestmark = pytest.mark.unit


def _settings(tmp_path: Path, **counts: str) -> Settings:
    env = {"PARLEY_STATE_DIR": str(tmp_path), "PARLEY_GATEWAY_BASE_PORT": "28100", **counts}
    return load_settings(env)


def test_one_of_each_by_default_and_no_balancer(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    names = [s.name for s in parley_services(settings)]
    assert names[:4] == ["processor", "relay", "workers", "commands"]
    # With the processor publishing what it stores, no relay runs (docs/log.md).
    publishing = _settings(tmp_path, PARLEY_EVENTS_PUBLISHER="processor")
    assert [s.name for s in parley_services(publishing)][:3] == ["processor", "workers", "commands"]
    commands = next(s for s in parley_services(settings) if s.name == "commands")
    assert commands.address == f"127.0.0.1:{settings.commands_port}"
    assert balancer(settings) is None


def test_counts_name_each_instance_with_its_own_log_pid_and_port(tmp_path: Path) -> None:
    settings = _settings(tmp_path, PARLEY_GATEWAYS="3", PARLEY_PROCESSORS="2", PARLEY_WORKERS="2")
    services = parley_services(settings)
    names = [s.name for s in services]
    for name in ["processor-1", "processor-2", "relay", "workers-1", "workers-2", "balancer"]:
        assert name in names
    assert names[-1] == "balancer"  # it fills HAProxy's slots: started after the gateways
    # The services without HTTP serve /metrics, each instance on a port of its own.
    by_name = {s.name: s for s in services}
    assert by_name["processor-2"].address == f"127.0.0.1:{settings.processor_metrics_port + 2}"
    assert by_name["workers-1"].address == f"127.0.0.1:{settings.workers_metrics_port + 1}"
    assert by_name["relay"].address == f"127.0.0.1:{settings.relay_metrics_port}"
    own = by_name["processor-2"].environment()
    assert own is not None
    assert own["PARLEY_PROCESSOR_METRICS_PORT"] == str(settings.processor_metrics_port + 2)
    gateways = [s for s in services if s.kind == "commands"]
    assert [g.address for g in gateways] == [f"127.0.0.1:{28100 + i}" for i in (1, 2, 3)]
    assert len({s.log for s in services}) == len({s.pidfile for s in services}) == len(services)
    env = gateways[1].environment()
    assert env is not None and env["PARLEY_COMMANDS_PORT"] == "28102"
    # Browsers still come from the one address, the balancer's.
    assert f"http://127.0.0.1:{settings.commands_port}" in env["PARLEY_WS_ALLOWED_ORIGINS"]
    # …and their addresses in the balancer's X-Forwarded-For, believed from it alone.
    assert env["PARLEY_TRUSTED_PROXIES"] == "127.0.0.1"
    # Nothing runs, so every instance and the balancer are listed as stopped.
    listed = {st.service: st.state for st in services_status(settings)}
    assert set(listed) == {*names, "haproxy"} and set(listed.values()) == {"stopped"}


def test_the_balancer_takes_the_commands_port_and_has_slots_for_the_registry(
    tmp_path: Path,
) -> None:
    settings = _settings(tmp_path, PARLEY_GATEWAYS="3", PARLEY_BALANCER_MAXCONN="5000")
    front = balancer(settings)
    assert isinstance(front, HAProxy)
    config = front.config
    assert f"bind 127.0.0.1:{settings.commands_port}" in config
    assert "balance leastconn" in config and "option httpchk GET /healthz" in config
    assert "timeout check 3000ms" in config  # a busy gateway is slow, not dead
    # No gateway is named: empty slots, filled from the registry over the runtime API.
    for i in range(1, settings.balancer_slots + 1):
        assert f"server gw{i} 127.0.0.1:1 check disabled" in config
    assert "28101" not in config
    assert f"stats socket {tmp_path}/haproxy/admin.sock mode 600 level admin" in config
    # The gateway count does not change the configuration: no restart to add one.
    assert config == balancer(settings.replace(gateways=5)).config  # type: ignore[union-attr]
    assert "option forwardfor" in config
    assert "%HM %HP %HV" in config and "%{+Q}r" not in config  # paths, not tokens
    assert "maxconn 5000" in config and "timeout tunnel 1h" in config
    assert front.log.parent == tmp_path / "haproxy"
