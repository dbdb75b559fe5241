"""What a replay refuses or fails with: typed errors with stable codes for the operator.

`parley replay` prints `parley replay: error [<code>]: <message>` and exits with 3 for a
refusal (`rebuild_running`, `partial_rebuild`, `topic_exists`, ...), 1 for a failure.
"""

from __future__ import annotations


class ReplayError(Exception):
    """A replay refused or failed for a reason the operator can act on."""

    code = "replay_failed"


class RebuildRunning(ReplayError):
    """Another session is rebuilding one of the projections asked for."""

    code = "rebuild_running"

    def __init__(self, projection: str) -> None:
        super().__init__(
            f"projection {projection!r} is already being rebuilt by another session; "
            "wait for it to finish (see `parley replay list`) or stop it first"
        )
        self.projection = projection


class UnknownProjection(ReplayError):
    code = "unknown_projection"

    def __init__(self, name: str, known: tuple[str, ...]) -> None:
        super().__init__(f"no projection {name!r}; known: {', '.join(known)}")


class PartialRebuild(ReplayError):
    """A rebuild that does not start at the beginning of the log cannot be swapped in."""

    code = "partial_rebuild"


class LogMissing(ReplayError):
    """The events topic does not exist (or has no partitions)."""

    code = "topic_missing"

    def __init__(self, topic: str) -> None:
        super().__init__(f"topic {topic!r} does not exist (PARLEY_EVENTS_TOPIC?)")


class TopicExists(ReplayError):
    """`republish` never appends to a topic that already holds records."""

    code = "topic_exists"


class SwapFailed(ReplayError):
    """The swap could not take its locks in time, attempt after attempt."""

    code = "swap_failed"
