"""The stack's own JWT secret: made once at first start, 0600, shared, never the public one."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from infra.auth import DEVELOPMENT_JWT_SECRET, signing_secret
from infra.local_secret import local_secret
from infra.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_a_secret_is_made_once_private_and_the_same_for_everyone(tmp_path: Path) -> None:
    settings = Settings(state_dir=str(tmp_path))
    with ThreadPoolExecutor(8) as pool:  # processes starting together race to make it
        seen = set(pool.map(lambda _: signing_secret(settings), range(32)))
    assert len(seen) == 1
    secret = seen.pop()
    assert len(secret) >= 64 and secret != DEVELOPMENT_JWT_SECRET
    path = tmp_path / "secrets" / "jwt_secret"
    assert path.read_text() == secret
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) & 0o077 == 0
    assert sorted(p.name for p in path.parent.iterdir()) == ["jwt_secret"]  # no leftovers
    # Another stack (another state folder) has its own.
    assert local_secret(str(tmp_path / "other"), "jwt_secret") != secret


def test_a_secret_given_in_the_environment_wins(tmp_path: Path) -> None:
    given = "s" * 40
    assert signing_secret(Settings(state_dir=str(tmp_path), jwt_secret=given)) == given
    assert not (tmp_path / "secrets").exists()


@pytest.mark.parametrize("service", ["commands", "queries"])
def test_a_service_refuses_to_start_with_the_published_development_secret(
    service: str, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "PARLEY_JWT_SECRET": DEVELOPMENT_JWT_SECRET,
        "PARLEY_STATE_DIR": str(tmp_path),
    }
    done = subprocess.run(
        [sys.executable, "-m", "parley.cli", "serve", service],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "PARLEY_JWT_SECRET is the development value" in done.stderr
    assert "Traceback" not in done.stderr
