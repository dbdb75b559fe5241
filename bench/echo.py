"""The WebSocket baseline: `python -m bench.echo --port N`.

uvicorn serving `/ws` as Parley's gateway does (`commands.gateway.wire`: picows after
the upgrade, the same options), or with `--ws` one of uvicorn's own WebSocket protocols
under a Starlette app (what the gateway used before picows). It speaks just enough of
Parley's protocol for the same client library and the same scenario code to drive it:
`hello` on connect; `send` answered at once with an `ack` and echoed as a `message`
frame to the recipient (not back to the sending device, as Parley); `delivered`/`read`
answered with `ok` when they carry an `id` (as Parley) and echoed as `receipt` frames to
the chat's members; `sync` answered empty. Nothing is stored, checked or routed beyond
one dict in memory: it is the cost of the sockets, the JSON and the event loop, which
any Python gateway pays.
"""

from __future__ import annotations

import argparse
import base64
import itertools
import socket
import sys
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl
from uuid import UUID

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from commands.gateway.wire import Options, upgrade_slot
from commands.gateway.wire import WebSocket as WireSocket
from domain.ids import direct_chat_id

Out = list[tuple[Any, bytes]]
"""Frames to write: (socket, text as bytes)."""


class Relay:
    """Connections by user, per-chat seqs, and the answer to each frame."""

    def __init__(self) -> None:
        self.sockets: dict[str, set[Any]] = defaultdict(set)
        self.seqs: dict[str, int] = defaultdict(int)
        self.members: dict[str, tuple[str, str]] = {}
        self.ids = itertools.count(1)

    def push(self, out: Out, users: tuple[str, ...], frame: dict[str, Any]) -> None:
        data = orjson.dumps(frame)
        for user in users:
            for ws in self.sockets.get(user, ()):
                out.append((ws, data))

    def on_frame(self, user: str, ws: Any, frame: dict[str, Any]) -> Out:
        out: Out = []
        kind = frame.get("type")
        if kind == "send":
            peer = str(frame["to"])
            chat = str(direct_chat_id(UUID(user), UUID(peer)))
            self.members[chat] = (user, peer)
            self.seqs[chat] += 1
            seq, message_id = self.seqs[chat], str(next(self.ids))
            body = base64.b64encode(str(frame.get("text", "")).encode()).decode()
            ack = {
                "type": "ack",
                "id": frame.get("id"),
                "chat_id": chat,
                "local_id": frame["local_id"],
                "message_id": message_id,
                "seq": seq,
                "position": 0,
                "duplicate": False,
            }
            out.append((ws, orjson.dumps(ack)))
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
            self.push(out, (peer,), message)
        elif kind in ("delivered", "read"):
            chat = str(frame["chat_id"])
            if frame.get("id"):
                ok = {"type": "ok", "id": frame["id"], "command": kind, "chat_id": chat}
                out.append((ws, orjson.dumps(ok)))
            receipt = {
                "type": "receipt",
                "chat_id": chat,
                "user_id": user,
                "delivered_up_to": frame["up_to"],
                "read_up_to": frame["up_to"] if kind == "read" else None,
            }
            self.push(out, self.members.get(chat, (user,)), receipt)
        elif kind == "sync":
            rid = frame.get("id")
            out.append((ws, orjson.dumps({"type": "sync_chats", "id": rid, "chats": []})))
            out.append((ws, orjson.dumps({"type": "sync_done", "id": rid, "pages": 0})))
        elif kind == "ping":
            out.append((ws, orjson.dumps({"type": "pong", "id": frame.get("id"), "at": 0})))
        return out

    def hello(self, user: str) -> bytes:
        return orjson.dumps({"type": "hello", "user_id": user, "heartbeat_s": 20})


def _token(query: bytes | str) -> str:
    text = query.decode("latin-1") if isinstance(query, bytes) else query
    return dict(parse_qsl(text)).get("access_token", "")


def wire_handler(relay: Relay) -> Callable[[WireSocket], Awaitable[None]]:
    """The relay on the gateway's own WebSocket (`commands.gateway.wire`)."""

    async def serve(ws: WireSocket) -> None:
        user = _token(ws.query_string)
        if not ws.accept():
            return
        relay.sockets[user].add(ws)
        ws.send(relay.hello(user))
        try:
            while (raw := await ws.receive()) is not None:
                for target, data in relay.on_frame(user, ws, orjson.loads(raw)):
                    target.send(data)
        finally:
            relay.sockets[user].discard(ws)

    return serve


def create_app(relay: Relay) -> Starlette:
    """The relay as a Starlette route, on one of uvicorn's WebSocket protocols."""

    async def endpoint(ws: WebSocket) -> None:
        user = ws.query_params.get("access_token", "")
        await ws.accept()
        relay.sockets[user].add(ws)
        await ws.send_text(relay.hello(user).decode())
        try:
            while True:
                frame = orjson.loads(await ws.receive_text())
                for target, data in relay.on_frame(user, ws, frame):
                    try:
                        await target.send_text(data.decode())
                    except (WebSocketDisconnect, RuntimeError, OSError):
                        relay.sockets[user].discard(target)
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
    parser.add_argument(
        "--ws", default="picows", help="picows (as the gateway), or one of uvicorn's own"
    )
    args = parser.parse_args()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(2048)
    print(f"listening port={sock.getsockname()[1]}", file=sys.stderr, flush=True)
    relay = Relay()
    if args.ws == "picows":
        options = Options(args.max_frame_bytes, args.heartbeat_s, send_queue=1000)
        handler = wire_handler(relay)
        app: Any = Starlette()
        ws: Any = upgrade_slot(lambda: handler, options)
        extra: dict[str, Any] = {}
    else:
        app, ws = create_app(relay), args.ws
        extra = {
            "ws_max_size": args.max_frame_bytes,
            "ws_per_message_deflate": False,
            "ws_ping_interval": args.heartbeat_s,
            "ws_ping_timeout": args.heartbeat_s,
        }
    config = uvicorn.Config(app, log_config=None, access_log=False, ws=ws, **extra)
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
