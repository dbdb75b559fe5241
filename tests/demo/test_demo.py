"""`parley demo` against a stack started by the test: every step does what it says."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.settings import Settings
from parley.demo import replay_available
from projections.schema import migrate
from tests.fullstack import FullStack, full_stack
from tests.gateway.conftest import REGISTRATION_LIMITS

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo_stack(topics: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FullStack]:
    migrate(topics)
    with full_stack(topics, tmp_path_factory.mktemp("demo-stack"), **REGISTRATION_LIMITS) as stack:
        yield stack


def test_parley_demo_passes_every_step(demo_stack: FullStack) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "parley.cli", "demo"],
        cwd=ROOT,
        env={**os.environ, **demo_stack.env},
        capture_output=True,
        text=True,
        timeout=600,
    )
    print(result.stdout)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr[-3000:]}"
    out = result.stdout
    assert "parley demo: PASSED" in out
    for seen in (
        "✓✓ read",
        "Bob is typing…",
        "last seen today at",
        "all 5, in order, each once",
        "read by 19 of 19",
        "sees the thumbnail at once",
        "byte for byte",
        "Coffee? Always!",
        "This message was deleted",
        "its key is erased",
    ):
        assert seen in out, seen
    if demo_stack.queries is not None:
        assert "says read by 19 of 19" in out
    if replay_available():
        assert "identical to before" in out
    else:
        assert "SKIPPED" in out


def test_parley_demo_says_so_when_the_stack_is_down(tmp_path: Path) -> None:
    free = {"PARLEY_COMMANDS_PORT": "9"}  # nothing listens on the discard port
    result = subprocess.run(
        [sys.executable, "-m", "parley.cli", "demo"],
        cwd=ROOT,
        env={**os.environ, **free},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "make up" in result.stdout
