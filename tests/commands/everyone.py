"""`People` for tests that decide commands without the user directory: every user
exists and nobody blocks anybody."""

from __future__ import annotations

from collections.abc import Iterable
from uuid import UUID


class Everyone:
    def exists(self, user_id: UUID) -> bool:
        return True

    def has_blocked(self, user_id: UUID, other: UUID) -> bool:
        return False

    def prepare(self, senders: Iterable[UUID], named: Iterable[UUID]) -> None:
        return None

    def close(self) -> None:
        return None
