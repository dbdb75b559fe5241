"""Private Parley services for the benchmark tests, on this test run's database and Redis db."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.stack import Services, private_services
from bench.targets import Target, parley_target
from infra.settings import Settings


@pytest.fixture(scope="package")
def bench_settings(settings: Settings) -> Settings:
    """The test settings, with the benchmark's Redis database set to the test run's."""
    return settings.replace(bench_redis_db=int(settings.redis_url.rpartition("/")[2]))


@pytest.fixture(scope="package")
def services(
    bench_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Services]:
    with private_services(bench_settings, tmp_path_factory.mktemp("bench-services")) as running:
        yield running


@pytest.fixture
def parley(services: Services) -> Target:
    return parley_target(services.settings, services.base, services.processes, services.metrics)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path / "work"


def quiet(text: str) -> None:
    del text
