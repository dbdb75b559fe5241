"""What a process depends on that is down right now: for `/readyz` and the logs.

A component (a Redis listener, a connection) reports `down` on each failure and `up`
once it works again. Only the changes are logged, one structured line each:
`event=degraded component=... error=...` when it goes down, `event=recovered
component=... after_s=...` when it comes back, so a server that stays away for a minute
costs two lines, not one per retry.
"""

from __future__ import annotations

import logging
import time

log = logging.getLogger("parley.health")


class Health:
    """The components of one process that are down, with why and since when."""

    def __init__(self) -> None:
        self._down: dict[str, tuple[float, str]] = {}

    def down(self, component: str, error: BaseException | str) -> None:
        reason = error if isinstance(error, str) else type(error).__name__
        if component not in self._down:
            log.warning("event=degraded component=%s error=%s", component, reason)
        self._down[component] = (self._down.get(component, (time.monotonic(), ""))[0], reason)

    def up(self, component: str) -> None:
        since = self._down.pop(component, None)
        if since is not None:
            log.info(
                "event=recovered component=%s after_s=%.1f", component, time.monotonic() - since[0]
            )

    @property
    def degraded(self) -> dict[str, str]:
        """Each component that is down, with the error that last said so."""
        return {component: reason for component, (_, reason) in sorted(self._down.items())}
