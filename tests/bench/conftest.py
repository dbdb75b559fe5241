"""Private Parley services for the benchmark tests, on this test run's database and Redis db."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.stack import Services, private_services
from bench.targets import Target, parley_target
from infra.settings import Settings

SETTLE_S = 1.5
"""The pause before each measured window (`bench_settle_s`, 5 s by default): the tiny
warm-ups here (at most 8 messages) have their receipts and their reads (sent 1 s after
delivery) through before it ends; 5 s per window was a fifth of this package's time."""


@pytest.fixture(scope="package")
def bench_settings(settings: Settings) -> Settings:
    """The test settings, with the benchmark's Redis database set to the test run's."""
    return settings.replace(
        bench_redis_db=int(settings.redis_url.rpartition("/")[2]), bench_settle_s=SETTLE_S
    )


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
