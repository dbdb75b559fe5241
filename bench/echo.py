"""The WebSocket baseline: `python -m bench.echo --port N`.

A Starlette app on uvicorn, configured like Parley's gateway (same WebSocket options),
that speaks just enough of Parley's protocol for the same client library and the same
scenario code to drive it: `hello` on connect; `send` answered at once with an `ack`
and echoed as a `message` frame to the recipient (not back to the sending device, as
Parley); `delivered`/`read` answered with `ok` when they carry an `id` (as Parley) and
echoed as `receipt` frames to the chat's members; `sync` answered
empty. Nothing is stored, checked or routed beyond one dict in memory: it is the cost
of the sockets, the JSON and the event loop, which any Python gateway pays.
"""

from __future__ import annotations

import argparse
import base64
import itertools
import socket
import sys
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from domain.ids import direct_chat_id


def _dump(frame: dict[str, Any]) -> str:
    return orjson.dumps(frame).decode()


class Relay:
    """Connections by user, per-chat seqs, and the answer to each frame."""

    def __init__(self) -> None:
        self.sockets: dict[str, set[WebSocket]] = defaultdict(set)
        self.seqs: dict[str, int] = defaultdict(int)
        self.members: dict[str, tuple[str, str]] = {}
        self.ids = itertools.count(1)

    async def push(self, users: tuple[str, ...], frame: dict[str, Any]) -> None:
        text = _dump(frame)
        for user in users:
            for ws in list(self.sockets.get(user, ())):
                try:
                    await ws.send_text(text)
                except (WebSocketDisconnect, RuntimeError, OSError):
                    self.sockets[user].discard(ws)

    async def on_frame(self, user: str, ws: WebSocket, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "send":
            peer = str(frame["to"])
            chat = str(direct_chat_id(UUID(user), UUID(peer)))
            self.members[chat] = (user, peer)
            self.seqs[chat] += 1
            seq, message_id = self.seqs[chat], str(next(self.ids))
            body = base64.b64encode(str(frame.get("text", "")).encode()).decode()
            await ws.send_text(
                _dump(
                    {
                        "type": "ack",
                        "id": frame.get("id"),
                        "chat_id": chat,
                        "local_id": frame["local_id"],
                        "message_id": message_id,
                        "seq": seq,
                        "position": 0,
                        "duplicate": False,
                    }
                )
            )
            message = {
                "type": "message",
                "chat_id": chat,
                "seq": seq,
                "message_id": message_id,
                "sender": user,
                "local_id": frame["local_id"],
                "kind": "text",
                "body": body,
                "media": None,
                "sent_at": datetime.now(UTC).isoformat(),
            }
            await self.push((peer,), message)
        elif kind in ("delivered", "read"):
            chat = str(frame["chat_id"])
            if frame.get("id"):
                await ws.send_text(
                    _dump({"type": "ok", "id": frame["id"], "command": kind, "chat_id": chat})
                )
            receipt = {
                "type": "receipt",
                "chat_id": chat,
                "user_id": user,
                "delivered_up_to": frame["up_to"],
                "read_up_to": frame["up_to"] if kind == "read" else None,
            }
            await self.push(self.members.get(chat, (user,)), receipt)
        elif kind == "sync":
            rid = frame.get("id")
            await ws.send_text(_dump({"type": "sync_chats", "id": rid, "chats": []}))
            await ws.send_text(_dump({"type": "sync_done", "id": rid, "pages": 0}))
        elif kind == "ping":
            await ws.send_text(_dump({"type": "pong", "id": frame.get("id"), "at": 0}))


def create_app() -> Starlette:
    relay = Relay()

    async def endpoint(ws: WebSocket) -> None:
        user = ws.query_params.get("access_token", "")
        await ws.accept()
        relay.sockets[user].add(ws)
        await ws.send_text(_dump({"type": "hello", "user_id": user, "heartbeat_s": 20}))
        try:
            while True:
                await relay.on_frame(user, ws, orjson.loads(await ws.receive_text()))
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            relay.sockets[user].discard(ws)

    return Starlette(routes=[WebSocketRoute("/ws", endpoint)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--max-frame-bytes", type=int, required=True)
    parser.add_argument("--heartbeat-s", type=float, required=True)
    parser.add_argument("--ws", default="auto", help="uvicorn's WebSocket implementation")
    args = parser.parse_args()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(2048)
    print(f"listening port={sock.getsockname()[1]}", file=sys.stderr, flush=True)
    config = uvicorn.Config(
        create_app(),
        log_config=None,
        access_log=False,
        ws=args.ws,
        ws_max_size=args.max_frame_bytes,
        ws_per_message_deflate=False,
        ws_ping_interval=args.heartbeat_s,
        ws_ping_timeout=args.heartbeat_s,
    )
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
