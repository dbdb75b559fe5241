"""A small XMPP-over-WebSocket client (RFC 7395) for racing ejabberd with the same traffic.

One `XmppPeer` per user: open the framed stream, register in-band (XEP-0077, fresh
users each run), authenticate with SASL PLAIN, bind a resource, enable stream
management (XEP-0198), send initial presence. Then, to mirror Parley's client:

- a message carries a delivery-receipt request (XEP-0184) and is followed by an ack
  request `<r/>`; the server's `<a h=N/>` covering it is the single tick (the server
  has taken the stanza), the analogue of Parley's `ack`;
- a received message is answered with `<received/>` (the second tick, like Parley's
  `delivered`), and at most once per `read_interval_s` per chat with a chat marker
  `<displayed/>` (XEP-0333, like Parley's `read`);
- the server's `<r/>` is answered with `<a h=.../>`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import xml.etree.ElementTree as ET
from collections import deque
from xml.sax.saxutils import escape, quoteattr

import websockets
from websockets.asyncio.client import ClientConnection

from bench.ledger import Ledger, body_text

FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"
SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
SM = "urn:xmpp:sm:3"
RECEIPTS = "urn:xmpp:receipts"
MARKERS = "urn:xmpp:chat-markers:0"


class XmppError(Exception):
    """The server refused a step of the login."""


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


class XmppPeer:
    """One user's XMPP session over WebSocket, recording into a ledger."""

    def __init__(
        self,
        url: str,
        jid: str,
        password: str,
        ledger: Ledger,
        domain: str,
        read_interval_s: float = 1.0,
    ) -> None:
        self.url = url
        self.address = jid
        self.user = jid.split("@", 1)[0]
        self.password = password
        self.domain = domain
        self.ledger = ledger
        self.read_interval_s = read_interval_s
        self.full_jid = jid
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._inbox: asyncio.Queue[ET.Element] = asyncio.Queue()
        self._handled_out = 0  # stanzas sent since <enable/>
        self._handled_in = 0  # stanzas received since <enabled/>
        self._awaiting_ack: deque[tuple[int, str]] = deque()
        self._last_seen: dict[str, str] = {}  # peer jid -> last message id, for <displayed/>
        self._read_due: set[str] = set()
        self._live = False

    def is_open(self) -> bool:
        return self._reader is not None and not self._reader.done()

    async def _raw(self, xml: str) -> None:
        assert self._ws is not None
        await self._ws.send(xml)

    async def _stanza(self, xml: str) -> None:
        await self._raw(xml)
        if self._live:
            self._handled_out += 1

    async def _expect(self, *names: str) -> ET.Element:
        while True:
            element = await asyncio.wait_for(self._inbox.get(), 30)
            if _local(element.tag) in names:
                return element
            if _local(element.tag) in ("failure", "stream:error", "error", "close"):
                raise XmppError(ET.tostring(element, encoding="unicode")[:300])

    async def _open(self) -> None:
        await self._raw(f'<open xmlns="{FRAMING}" to="{self.domain}" version="1.0"/>')
        await self._expect("open")
        await self._expect("features")

    async def connect(self) -> None:
        self._ws = await websockets.connect(
            self.url,
            subprotocols=[websockets.Subprotocol("xmpp")],
            compression=None,
            max_size=2**20,
        )
        self._reader = asyncio.create_task(self._read())
        await self._open()
        await self._raw(
            '<iq type="set" id="reg" xmlns="jabber:client"><query xmlns="jabber:iq:register">'
            f"<username>{escape(self.user)}</username><password>{escape(self.password)}</password>"
            "</query></iq>"
        )
        answer = await self._expect("iq")
        if answer.get("type") != "result":
            raise XmppError(
                "registration refused: " + ET.tostring(answer, encoding="unicode")[:300]
            )
        plain = base64.b64encode(f"\0{self.user}\0{self.password}".encode()).decode()
        await self._raw(f'<auth xmlns="{SASL}" mechanism="PLAIN">{plain}</auth>')
        await self._expect("success")
        await self._open()
        await self._raw(
            '<iq type="set" id="bind" xmlns="jabber:client">'
            '<bind xmlns="urn:ietf:params:xml:ns:xmpp-bind"><resource>bench</resource></bind></iq>'
        )
        bound = await self._expect("iq")
        jid = bound.find(".//{urn:ietf:params:xml:ns:xmpp-bind}jid")
        self.full_jid = jid.text if jid is not None and jid.text else f"{self.address}/bench"
        await self._raw(f'<enable xmlns="{SM}"/>')
        await self._expect("enabled")
        self._live = True
        await self._stanza('<presence xmlns="jabber:client"/>')

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._raw(f'<close xmlns="{FRAMING}"/>')
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()

    async def reconnect(self) -> None:
        """Not attempted: a closed XMPP session is counted, not resumed."""
        return None

    async def sync(self) -> int:
        """Offline messages arrive by themselves at login; nothing to ask for."""
        return 0

    async def send(self, local_id: str, size: int, to: str | None, chat: str | None) -> None:
        assert to is not None, "1:1 only"
        text = escape(body_text(local_id, size))
        try:
            await self._stanza(
                f'<message xmlns="jabber:client" to={quoteattr(to)} id={quoteattr(local_id)} '
                f'type="chat"><body>{text}</body><request xmlns="{RECEIPTS}"/>'
                f'<markable xmlns="{MARKERS}"/></message>'
            )
            self._awaiting_ack.append((self._handled_out, local_id))
            await self._raw(f'<r xmlns="{SM}"/>')
        except Exception as exc:  # a dropped connection: counted, not raised
            self.ledger.on_error(type(exc).__name__, local_id)

    async def _read(self) -> None:
        assert self._ws is not None
        async for raw in self._ws:
            element = ET.fromstring(raw)
            name = _local(element.tag)
            if not self._live:
                await self._inbox.put(element)
                continue
            if name == "a":
                self._on_ack(int(element.get("h", "0")))
            elif name == "r":
                await self._raw(f'<a xmlns="{SM}" h="{self._handled_in}"/>')
            else:
                self._handled_in += name in ("message", "presence", "iq")
                if name == "message":
                    await self._on_message(element)

    def _on_ack(self, handled: int) -> None:
        while self._awaiting_ack and self._awaiting_ack[0][0] <= handled:
            self.ledger.on_ack(self._awaiting_ack.popleft()[1])

    async def _on_message(self, element: ET.Element) -> None:
        received = element.find(f"{{{RECEIPTS}}}received")
        if received is not None:
            self.ledger.on_receipt(received.get("id", ""))
            return
        if element.find("{jabber:client}body") is None:
            return  # a chat marker or another notification
        local_id = element.get("id", "")
        sender = element.get("from", "")
        self.ledger.on_receive(local_id, element.find("{urn:xmpp:delay}delay") is not None)
        await self._stanza(
            f'<message xmlns="jabber:client" to={quoteattr(sender)} id={quoteattr("d" + local_id)}>'
            f'<received xmlns="{RECEIPTS}" id={quoteattr(local_id)}/></message>'
        )
        bare = sender.split("/", 1)[0]
        self._last_seen[bare] = local_id
        if self.read_interval_s > 0 and bare not in self._read_due:
            self._read_due.add(bare)
            asyncio.get_running_loop().call_later(self.read_interval_s, self._mark_read, bare)

    def _mark_read(self, bare: str) -> None:
        self._read_due.discard(bare)
        last = self._last_seen.get(bare)
        if last is None:
            return
        xml = (
            f'<message xmlns="jabber:client" to={quoteattr(bare)} type="chat">'
            f'<displayed xmlns="{MARKERS}" id={quoteattr(last)}/></message>'
        )
        task = asyncio.get_running_loop().create_task(self._quiet(xml))
        task.add_done_callback(lambda _: None)

    async def _quiet(self, xml: str) -> None:
        with contextlib.suppress(Exception):
            await self._stanza(xml)


def xmpp_accounts(prefix: str, count: int, domain: str) -> list[list[str]]:
    """Fresh user names for a run: [jid, password]."""
    return [[f"{prefix}{i}@{domain}", f"pw-{prefix}{i}"] for i in range(count)]
