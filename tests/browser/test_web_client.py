"""The web client end to end: Debian's chromium, driven by playwright-core, two users.

The scenario is `two_windows.mjs` (Node); this test starts the whole stack, runs it and
keeps its screenshots in `tests/browser/artifacts/` (git-ignored). `make test` installs
chromium and playwright-core first (`make browser-deps`).
"""

from __future__ import annotations

import os
import subprocess

from tests.browser.tools import ARTIFACTS, CHROMIUM, HERE, node
from tests.fullstack import FullStack


def test_two_people_chat_in_two_browser_windows(web_stack: FullStack) -> None:
    node_path = node()
    ARTIFACTS.mkdir(exist_ok=True)
    result = subprocess.run(
        [node_path, str(HERE / "two_windows.mjs")],
        cwd=HERE,
        env={
            **os.environ,
            "PARLEY_WEB_URL": web_stack.base,
            "PARLEY_ARTIFACTS": str(ARTIFACTS),
            "PARLEY_CHROMIUM": CHROMIUM,
        },
        capture_output=True,
        text=True,
        timeout=240,
    )
    print(result.stdout)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr[-4000:]}"
    for window in ("alice", "bob"):
        assert (ARTIFACTS / f"{window}.png").stat().st_size > 10_000
