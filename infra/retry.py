"""The waits between attempts at something that is down: one shape for every retry loop.

Every loop that waits for PostgreSQL, Redis or Kafka to come back (the processor, the
relay, the workers, the gateway's and the command bus's Redis listeners) waits
`FIRST_S`, then twice as long each time, up to a cap: a server back within a second is
used again within a few hundred milliseconds, and one that stays down costs a log line
every few seconds, not a busy loop.
"""

from __future__ import annotations

FIRST_S = 0.1
CAP_S = 5.0


class Backoff:
    """Doubling waits from `first_s` up to `cap_s`; `reset()` once an attempt worked."""

    def __init__(self, first_s: float = FIRST_S, cap_s: float = CAP_S) -> None:
        self.first_s = first_s
        self.cap_s = cap_s
        self.delay = first_s
        """The wait before the next attempt."""

    def next(self) -> float:
        """The wait before the next attempt; the one after it doubles."""
        delay = self.delay
        self.delay = min(delay * 2, self.cap_s)
        return delay

    def reset(self) -> None:
        self.delay = self.first_s
