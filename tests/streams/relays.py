"""`parley serve relay` subprocesses for the tests, and the relay's recorded position."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg

from infra.settings import Settings
from streams.relay import read_position
from tests.services import ROOT, Service


def relay_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a relay subprocess for these settings."""
    return {
        "PARLEY_PG_DB": settings.pg_db,
        "PARLEY_TOPIC_PREFIX": settings.topic_prefix,
        "PARLEY_RELAY_NAME": settings.relay_name,
        "PARLEY_RELAY_BATCH_MAX": str(settings.relay_batch_max),
        **extra,
    }


def relay(settings: Settings, log: Path, **extra: str) -> Service:
    """A relay subprocess, not started yet."""
    return Service("relay", log, relay_env(settings, **extra))


def recorded_position(settings: Settings) -> int:
    with psycopg.connect(settings.pg_conninfo, autocommit=True) as conn:
        try:
            return read_position(conn, settings.relay_name)
        except psycopg.errors.UndefinedTable:
            return 0


def wait_position(settings: Settings, position: int, deadline_s: float) -> float:
    """Until the relay recorded `position` (or beyond); returns the seconds it took."""
    started = time.monotonic()
    while recorded_position(settings) < position:
        if time.monotonic() - started > deadline_s:
            raise AssertionError(f"relay position {recorded_position(settings)} < {position}")
        time.sleep(0.005)
    return time.monotonic() - started


def relay_status(settings: Settings) -> str:
    """The output of `parley relay status`."""
    done = subprocess.run(
        [sys.executable, "-m", "parley.cli", "relay", "status"],
        cwd=ROOT,
        env={**os.environ, **relay_env(settings)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout
