"""Services off the live path run at a lower CPU priority (`infra/runtime.py`)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit

PROBE = "from infra.runtime import lower_priority as p; p({!r}, 5); import os; print(os.nice(0))"


def niceness_after(service: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(service)], capture_output=True, text=True, check=True
    )
    return int(done.stdout)


@pytest.mark.parametrize("service", ["relay", "workers", "notifier"])
def test_a_service_nobody_waits_on_gives_way(service: str) -> None:
    assert niceness_after(service) == os.nice(0) + 5


@pytest.mark.parametrize("service", ["processor", "commands", "queries"])
def test_the_live_path_keeps_its_priority(service: str) -> None:
    assert niceness_after(service) == os.nice(0)
