"""ZooKeeper in the stack: present only when it is the registry, configured from settings."""

from __future__ import annotations

from pathlib import Path

from infra.settings import Settings
from infra.stack import services
from infra.stack.zookeeper import ZooKeeper


def test_zookeeper_is_a_server_of_the_stack_only_when_it_is_the_registry() -> None:
    assert "zookeeper" not in [s.name for s in services(Settings(registry="redis"))]
    names = [s.name for s in services(Settings(registry="zookeeper"))]
    assert names == ["postgres", "redis", "kafka", "objectstore", "zookeeper"]


def test_its_configuration_follows_the_settings(tmp_path: Path) -> None:
    settings = Settings(
        state_dir=str(tmp_path),
        registry="zookeeper",
        zookeeper_hosts="127.0.0.1:12345",
        zookeeper_tick_ms=250,
    )
    server = ZooKeeper(settings)
    server.home.mkdir(parents=True)
    server.prepare()
    config = dict(
        line.split("=", 1)
        for line in (server.home / "zoo.cfg").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert config["clientPortAddress"] == "127.0.0.1"
    assert config["clientPort"] == "12345"
    assert config["tickTime"] == "250"
    assert config["minSessionTimeout"] == "500"  # two ticks: the shortest session allowed
    assert config["dataDir"] == str(tmp_path / "zookeeper" / "data")
    assert config["admin.enableServer"] == "false"
    assert str(server.lib).endswith("lib-3.9.5")
    assert server.command()[-2:] == [
        "org.apache.zookeeper.server.ZooKeeperServerMain",
        str(server.home / "zoo.cfg"),
    ]
