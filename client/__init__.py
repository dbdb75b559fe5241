"""Parley's Python client: accounts over HTTP, chat over one WebSocket.

Used by the tests, the benchmark and the demo; the server never imports it. It keeps
what a real client keeps: per-chat messages by seq (so nothing is shown twice), the
highest contiguous seq of each chat (its sync cursor), the ticks of its own messages
from the receipt cursors, and unacknowledged sends to resend after a reconnect with the
same local id (the server answers a resend with the original message). A request waiting
when the connection drops fails at once with `ConnectionError`, not at its timeout.
"""

from client.chat import (
    Account,
    Ack,
    ChatClient,
    CommandFailed,
    lookup_user,
    register_and_login,
)
from client.media import fetch_media, upload_large_media, upload_media

__all__ = [
    "Account",
    "Ack",
    "ChatClient",
    "CommandFailed",
    "fetch_media",
    "lookup_user",
    "register_and_login",
    "upload_large_media",
    "upload_media",
]
