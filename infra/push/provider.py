"""The one interface every push provider implements, and what a send can come to.

A provider takes a device's target (what the device registered: a Web Push subscription,
an FCM registration token, an APNs device token) and a `Notification`, and answers with
an `Outcome` the notifier acts on: sent; gone (forget the target); retry (a 429 or 5xx,
with the provider's Retry-After if it gave one); failed (anything else: not retried).
"""

from __future__ import annotations

import email.utils
import time
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol


class Outcome(Enum):
    SENT = "sent"
    GONE = "gone"
    RETRY = "retry"
    FAILED = "failed"


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    status: int = 0  # the provider's HTTP status; 0 when no answer came
    retry_after_s: float | None = None
    detail: str = ""


@dataclass(frozen=True)
class Notification:
    """What a push says: as little as possible (docs/push.md, "Payloads")."""

    chat_id: str
    sender_name: str
    count: int  # messages in the chat not yet delivered to the device's user
    preview: str | None  # only when the recipient allows previews
    kind: str = "message"  # or "test" (`parley push test`)

    @property
    def collapse_key(self) -> str:
        """One notification per chat: each provider replaces the one with this key."""
        return self.chat_id.replace("-", "")  # 32 characters: Web Push's Topic limit

    def data(self) -> dict[str, str]:
        fields = {
            "type": self.kind,
            "chat_id": self.chat_id,
            "sender": self.sender_name,
            "count": str(self.count),
        }
        if self.preview is not None:
            fields["preview"] = self.preview
        return fields


class Provider(Protocol):
    name: str

    async def send(self, target: dict[str, Any], note: Notification) -> Result: ...

    async def close(self) -> None: ...


def result_of(status: int, headers: Any, detail: str = "") -> Result:
    """The outcome of a provider's HTTP answer, the same rules for all three providers:
    2xx sent, 404 and 410 gone, 429 and 5xx retry (after Retry-After if given)."""
    if 200 <= status < 300:
        return Result(Outcome.SENT, status)
    if status in (404, 410):
        return Result(Outcome.GONE, status, detail=detail)
    if status == 429 or status >= 500:
        return Result(Outcome.RETRY, status, retry_after(headers.get("retry-after")), detail)
    return Result(Outcome.FAILED, status, detail=detail)


def retry_after(value: str | None) -> float | None:
    """Retry-After in seconds from now: either delay-seconds or an HTTP date (RFC 9110)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
