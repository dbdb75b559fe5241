"""Fixtures for the accounts tests."""

from __future__ import annotations

import pytest

from infra.settings import Settings
from tests.accounts.client import FAST_HASHING, GENEROUS_LIMITS


@pytest.fixture(scope="session")
def fast(settings: Settings) -> Settings:
    """Test settings with cheap hashing and limits that tests do not hit by accident."""
    return settings.replace(**FAST_HASHING, **GENEROUS_LIMITS)
