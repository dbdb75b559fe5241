"""Settings that are derived from others when left empty."""

from __future__ import annotations

import pytest

from infra.settings import load_settings

pytestmark = pytest.mark.unit


def test_allowed_origins_follow_the_commands_service_unless_listed() -> None:
    moved = load_settings({"PARLEY_COMMANDS_PORT": "19999"})
    assert moved.allowed_origins == ["http://127.0.0.1:19999", "http://localhost:19999"]
    listed = load_settings({"PARLEY_WS_ALLOWED_ORIGINS": " https://chat.example , http://a:1 "})
    assert listed.allowed_origins == ["https://chat.example", "http://a:1"]
    elsewhere = load_settings({"PARLEY_COMMANDS_HOST": "10.0.0.5", "PARLEY_COMMANDS_PORT": "80"})
    assert elsewhere.allowed_origins == ["http://10.0.0.5:80"]
