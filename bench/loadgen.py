"""A load generator process: `python -m bench.loadgen SPEC.json`.

It builds the peers the spec names (Parley or the baseline server through the client
library, or ejabberd over XMPP), then obeys one JSON command per line on stdin and
answers one JSON line on stdout, so that the `parley bench` process can start the
measured windows of several generators at one moment and read /proc around them:

    {"cmd": "connect"}                                 -> {"connected": n, "failed": n, ...}
    {"cmd": "traffic", "rate", "seconds", "start", "drain_s", "tag"}  -> the ledger window
    {"cmd": "hold", "seconds"}                         -> {"open": n}
    {"cmd": "quit"}                                    -> {"bye": true}

Spec: {"kind": "parley" | "xmpp", "base": url, "accounts": [...], "routes": [[sender,
to, chat, recipients], ...] (indices into accounts for sender and `to`), "size",
"auto_delivered", "read_interval_s", "connect_concurrency", "resync", "source_host"
(the loopback address its connections come from), "groups":
[{"admin", "members", "senders"}] (created on connect; their routes replace "routes"),
"e2e": a folder for key stores when the peers encrypt (`bench.e2e_peer`)}.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import resource
import sys
import time
from pathlib import Path
from typing import Any

import uvloop

from bench.ledger import Ledger
from bench.peers import ParleyPeer, Peer
from bench.traffic import Route, run_traffic
from client import Account

log = logging.getLogger("parley.bench.loadgen")


def raise_open_files() -> int:
    """Lift the soft limit on open files to the hard one; return it."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def build_peers(spec: dict[str, Any], ledger: Ledger) -> list[Peer]:
    peers: list[Peer] = []
    if spec["kind"] == "xmpp":
        from bench.xmpp import XmppPeer

        for jid, password in spec["accounts"]:
            peers.append(
                XmppPeer(
                    spec["base"],
                    jid,
                    password,
                    ledger,
                    spec["domain"],
                    read_interval_s=spec.get("read_interval_s", 1.0),
                )
            )
        return peers
    options = {
        "auto_delivered": spec.get("auto_delivered", True),
        "read_interval_s": spec.get("read_interval_s", 1.0),
    }
    for user_id, device_id, token in spec["accounts"]:
        account = Account(user_id, user_id[:8], device_id, token, "")
        if spec.get("e2e"):
            from bench.e2e_peer import EncryptingPeer

            stores = Path(spec["e2e"])
            peers.append(EncryptingPeer(spec["base"], account, ledger, stores, **options))
        else:
            peers.append(
                ParleyPeer(
                    spec["base"],
                    account,
                    ledger,
                    source_host=spec.get("source_host"),
                    **options,
                )
            )
    return peers


class LoadGenerator:
    """The peers of one process and the commands that drive them."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.ledger = Ledger()
        self.peers = build_peers(spec, self.ledger)
        self.routes = [
            Route(self.peers[s], self.peers[t].address if t is not None else None, chat, n)
            for s, t, chat, n in spec.get("routes", [])
        ]

    async def connect(self) -> dict[str, Any]:
        gate = asyncio.Semaphore(self.spec.get("connect_concurrency", 100))
        failures: dict[str, int] = {}
        started = time.monotonic()

        async def one(peer: Peer) -> bool:
            for attempt in range(3):  # a client retries a failed connect, after a pause
                async with gate:
                    try:
                        await peer.connect()
                        return True
                    except Exception as exc:
                        name = type(exc).__name__ + ("" if attempt == 2 else "_retried")
                        failures[name] = failures.get(name, 0) + 1
                        with contextlib.suppress(Exception):
                            await peer.close()
                await asyncio.sleep(1.0 + attempt)
            return False

        done = await asyncio.gather(*(one(p) for p in self.peers))
        if self.spec.get("groups"):
            await self._create_groups(self.spec["groups"])
        return {
            "connected": sum(done),
            "failed": len(done) - sum(done),
            "failures": failures,
            "seconds": round(time.monotonic() - started, 2),
        }

    async def _create_groups(self, groups: list[dict[str, Any]]) -> None:
        """Each group's admin creates it; its senders take turns, groups interleaved."""
        chats: list[str] = []
        for spec in groups:
            admin = self.peers[spec["admin"]]
            assert isinstance(admin, ParleyPeer), "groups are measured on Parley only"
            others = [self.peers[m].address for m in spec["members"] if m != spec["admin"]]
            chats.append(await admin.create_group(f"bench-{len(chats)}", others))
            if self.spec.get("e2e"):
                from bench.e2e_peer import EncryptingPeer

                members = [self.peers[m].address for m in spec["members"]]
                for sender in spec["senders"]:
                    peer = self.peers[sender]
                    assert isinstance(peer, EncryptingPeer)
                    await peer.share_keys(chats[-1], members)
        longest = max(len(spec["senders"]) for spec in groups)
        self.routes = [
            Route(self.peers[spec["senders"][j]], None, chat, len(spec["members"]) - 1)
            for j in range(longest)
            for spec, chat in zip(groups, chats, strict=True)
            if j < len(spec["senders"])
        ]

    async def traffic(self, command: dict[str, Any]) -> dict[str, Any]:
        resync = self.peers if self.spec.get("resync", True) else []
        return await run_traffic(
            self.routes,
            self.ledger,
            rate=float(command["rate"]),
            seconds=float(command["seconds"]),
            size=int(self.spec.get("size", 100)),
            start=float(command["start"]),
            drain_s=float(command.get("drain_s", 10.0)),
            tag=str(command["tag"]),
            resync=resync,
        )

    async def hold(self, seconds: float) -> dict[str, Any]:
        await asyncio.sleep(seconds)
        return {"open": sum(p.is_open() for p in self.peers)}

    async def close(self) -> None:
        await asyncio.gather(*(p.close() for p in self.peers), return_exceptions=True)


async def serve(spec: dict[str, Any]) -> None:
    """Answer commands from stdin until `quit` or end of input."""
    generator = LoadGenerator(spec)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    _answer({"ready": True, "peers": len(generator.peers), "open_files": raise_open_files()})
    while line := await reader.readline():
        command = json.loads(line)
        kind = command["cmd"]
        if kind == "connect":
            _answer(await generator.connect())
        elif kind == "traffic":
            _answer(await generator.traffic(command))
        elif kind == "hold":
            _answer(await generator.hold(float(command["seconds"])))
        elif kind == "quit":
            await generator.close()
            _answer({"bye": True})
            return


def _answer(reply: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(reply) + "\n")
    sys.stdout.flush()


def main() -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.WARNING,
        format="ts=%(asctime)s level=%(levelname)s service=loadgen logger=%(name)s %(message)s",
    )
    spec = json.loads(Path(sys.argv[1]).read_text())
    raise_open_files()
    uvloop.run(serve(spec))


if __name__ == "__main__":
    main()
