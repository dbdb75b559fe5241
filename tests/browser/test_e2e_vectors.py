"""The web client's end-to-end encryption against the Python client's, byte for byte:
vectors made by the Python client (`e2e_vectors.py`) replayed in Debian's chromium
(`e2e_kat.mjs`, `e2e_kat.js`). No server is needed."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.browser.e2e_vectors import vectors
from tests.browser.tools import CHROMIUM, HERE, node


def test_the_web_client_writes_and_reads_what_the_python_client_does(tmp_path: Path) -> None:
    path = tmp_path / "vectors.json"
    path.write_text(json.dumps(vectors()))
    result = subprocess.run(
        [node(), str(HERE / "e2e_kat.mjs")],
        cwd=HERE,
        env={**os.environ, "PARLEY_VECTORS": str(path), "PARLEY_CHROMIUM": CHROMIUM},
        capture_output=True,
        text=True,
        timeout=120,
    )
    print(result.stdout)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr[-4000:]}"
    assert " 0 failed" in result.stdout and "this browser has every primitive" in result.stdout
