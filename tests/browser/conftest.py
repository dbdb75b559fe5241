"""The full stack for the browser test, with limits that let a test register users."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from infra.settings import Settings
from projections.schema import migrate
from tests.fullstack import FullStack, full_stack
from tests.gateway.conftest import REGISTRATION_LIMITS


@pytest.fixture(scope="package")
def web_stack(topics: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FullStack]:
    migrate(topics)
    with full_stack(topics, tmp_path_factory.mktemp("web-stack"), **REGISTRATION_LIMITS) as stack:
        yield stack
