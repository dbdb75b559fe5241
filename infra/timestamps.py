"""How Parley writes a moment on the wire: one format for every frame, answer and event.

UTC, microseconds, a `Z`: `2026-01-31T12:00:00.123456Z`. WebSocket frames, the query
API and the log envelope all write it with `utc_iso`, so a client parses one shape.
"""

from __future__ import annotations

from datetime import UTC, datetime


def utc_iso(moment: datetime) -> str:
    """`moment` in UTC as ISO 8601 with microseconds and `Z` (a naive one is UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
