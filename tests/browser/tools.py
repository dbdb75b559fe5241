"""What the browser tests run: Node, Debian's chromium and playwright-core."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ARTIFACTS = HERE / "artifacts"
CHROMIUM = os.environ.get("PARLEY_CHROMIUM", "/usr/bin/chromium")


def node() -> str:
    """Node's path; the test fails (never skips) when a tool is missing."""
    found = shutil.which("node")
    missing = [
        what
        for what, there in (
            ("node", found is not None),
            (CHROMIUM, Path(CHROMIUM).exists()),
            ("playwright-core", (HERE / "node_modules" / "playwright-core").is_dir()),
        )
        if not there
    ]
    if missing or found is None:
        pytest.fail(f"missing {', '.join(missing)}: run `make browser-deps` (or `make test`)")
    return found
