"""The web client and the Python client in encrypted chats with each other, through the
real stack (docs/e2e.md): 1:1 and group, both directions, two devices per user (one of
bob's is his browser), a message the browser gets late, one a Python device never gets,
the same safety number on both sides, a device added to a list the browser held, and a
removed member who cannot read on.

The browser is driven through `driver.mjs` (`web_driver.Web`); the Python devices are
`client.e2e.SecureChat`s with key stores in the test's temporary directory.
"""

from __future__ import annotations

import base64
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from client import ChatClient, register_and_login
from client.e2e import SecureChat
from tests.browser.web_driver import Web
from tests.fullstack import FullStack

PASSWORD = "correct horse battery"

SHOWN = """
const chat = window.parley.messenger.store.chats.get(arg.chat);
if (!chat) return [];
return chat.sortedMessages().filter((m) => !m.hidden)
  .map((m) => ({seq: m.seq, text: m.text, e2e: m.e2e || null}));
"""
HOLDS_TEXTS = """
const chat = window.parley.messenger.store.chats.get(arg.chat);
if (!chat) return false;
const shown = chat.sortedMessages().filter((m) => !m.hidden);
return JSON.stringify(shown.map((m) => m.text)) === JSON.stringify(arg.texts)
  && shown.every((m) => m.e2e === "open");
"""
SENT = """
const m = window.parley.messenger;
const chat = m.openChat();
return m.store.outbox.size === 0 && chat
  && chat.sortedMessages().some((x) => x.text === arg.text && x.e2e === "open");
"""
ACTIVE_MEMBERS = """
const chat = window.parley.messenger.store.chats.get(arg.chat);
return chat && chat.others(window.parley.messenger.me).length === arg.others;
"""


@pytest.fixture
async def web() -> AsyncIterator[Web]:
    driver = await Web.start()
    try:
        yield driver
    finally:
        await driver.close()


class People:
    """Accounts on the stack, Python devices with key stores, browser windows."""

    def __init__(self, stack: FullStack, web: Web, stores: Path) -> None:
        self.stack, self.web, self.stores = stack, web, stores
        self.suffix = uuid.uuid4().hex[:6]
        self.devices: list[SecureChat] = []

    def username(self, name: str) -> str:
        return f"{name}_{self.suffix}"

    async def python(self, name: str, device: str) -> SecureChat:
        account = register_and_login(self.stack.base, self.username(name), PASSWORD, device)
        chat = ChatClient(self.stack.base, account, timeout_s=20.0)
        await chat.connect()
        secure = SecureChat(chat, self.stores / f"{name}-{device}.keys", "a passphrase")
        secure.publish_keys()
        self.devices.append(secure)
        return secure

    async def browser(self, name: str) -> str:
        """The user logged in in a browser window of that name; their user id."""
        register_and_login(self.stack.base, self.username(name), PASSWORD, "setup")
        await self.web.call("open", name=name)
        username = self.username(name)
        who = await self.web.call(
            "login", name=name, base=self.stack.base, username=username, password=PASSWORD
        )
        return str(who["user_id"])

    async def close(self) -> None:
        for device in self.devices:
            await device.chat.close()


@pytest.fixture
async def people(web_stack: FullStack, web: Web, tmp_path: Path) -> AsyncIterator[People]:
    crowd = People(web_stack, web, tmp_path)
    try:
        yield crowd
    finally:
        await crowd.close()


async def received(device: SecureChat, chat_id: str, texts: list[str]) -> None:
    """Wait until the Python device holds and decrypts exactly `texts` in that chat."""
    deadline = time.monotonic() + 30
    while device.texts(chat_id) != texts and time.monotonic() < deadline:
        more = frames_beyond(device, len(device.chat.frames))
        await device.read()
        if device.texts(chat_id) == texts:
            break
        with contextlib.suppress(TimeoutError):
            await device.chat.wait_until(more, 1)
    assert device.texts(chat_id) == texts, device.failed


def frames_beyond(device: SecureChat, seen: int) -> Callable[[], bool]:
    return lambda: len(device.chat.frames) > seen


async def web_holds(web: Web, window: str, chat_id: str, texts: list[str]) -> None:
    """Wait until the browser shows exactly `texts`, every one decrypted."""
    try:
        await web.until(window, HOLDS_TEXTS, {"chat": chat_id, "texts": texts})
    except Exception:
        shown = await web.js(window, SHOWN, {"chat": chat_id})
        raise AssertionError(f"the browser shows {shown}, not {texts}") from None


async def web_sends(web: Web, window: str, chat_id: str, text: str) -> None:
    """Type and send `text` in the chat; wait until the server took it, encrypted."""
    await web.call("click", name=window, selector=f'.chat-item[data-chat-id="{chat_id}"]')
    await web.call("fill", name=window, selector="#composer-input", value=text)
    await web.call("press", name=window, selector="#composer-input", key="Enter")
    await web.until(window, SENT, {"text": text})


def plaintext_absent(device: SecureChat, chat_id: str, texts: list[str]) -> None:
    """What the server gave this device for the chat holds none of the texts."""
    for message in device.chat.chats[chat_id].messages.values():
        body = base64.b64decode(message.get("body") or "")
        assert all(text.encode() not in body for text in texts)


def seqs(device: SecureChat, chat_id: str) -> Callable[[], int]:
    return lambda: len(device.chat.chats[chat_id].messages)


async def test_one_to_one_between_python_and_web_both_ways(people: People, web: Web) -> None:
    alice_phone = await people.python("alice", "phone")
    alice_laptop = await people.python("alice", "laptop")
    bob_id = await people.browser("bob")
    bob_tablet = await people.python("bob", "tablet")  # bob's second device
    alice_id = alice_phone.account.user_id

    step1 = "hello web bob, from alice's phone"
    ack = await alice_phone.send_text(bob_id, step1)
    chat_id = ack.chat_id
    await web_holds(web, "bob", chat_id, [step1])
    await received(bob_tablet, chat_id, [step1])
    await received(alice_laptop, chat_id, [step1])

    # The browser answers: alice's two devices and bob's other one open it.
    step2 = "hi alice, from bob's browser 😀 <b>ü</b>"
    await web_sends(web, "bob", chat_id, step2)
    for device in (alice_phone, alice_laptop, bob_tablet):
        await received(device, chat_id, [step1, step2])
    plaintext_absent(alice_phone, chat_id, [step2])

    # bob's tablet writes: the browser gets its own user's message from another device.
    step3 = "bob again, from the tablet"
    await bob_tablet.send_text(alice_id, step3)
    await web_holds(web, "bob", chat_id, [step1, step2, step3])

    # Out of order at the browser: the push of the first of three is held back; the
    # page opens the next ones first and gets it by a sync (its ratchet kept the key).
    await received(alice_phone, chat_id, [step1, step2, step3])
    late = max(alice_phone.chat.chats[chat_id].messages) + 1
    await web.call("hold", name="bob", chat_id=chat_id, seq=late)
    three = ["three: a (late at the browser)", "three: b", "three: c"]
    for text in three:
        await alice_phone.send_text(bob_id, text)
    await web_holds(web, "bob", chat_id, [step1, step2, step3, *three])
    assert await web.call("held", name="bob") == [late]

    # Lost at a Python device: the browser sends three; alice's laptop never gets the
    # second and gets the first after the third.
    await received(alice_laptop, chat_id, [step1, step2, step3, *three])
    before = seqs(alice_laptop, chat_id)()
    web3 = ["web: first (late at the laptop)", "web: second (lost)", "web: third"]
    for text in web3:
        await web_sends(web, "bob", chat_id, text)
    await alice_laptop.chat.wait_until(lambda: seqs(alice_laptop, chat_id)() == before + 3)
    held = alice_laptop.chat.chats[chat_id].messages
    first_seq = sorted(held)[before]
    first, lost = held.pop(first_seq), held.pop(first_seq + 1)
    await alice_laptop.read()
    everything = [step1, step2, step3, *three]
    assert alice_laptop.texts(chat_id) == [*everything, web3[2]], alice_laptop.failed
    held[first_seq] = first
    await alice_laptop.read()
    assert alice_laptop.texts(chat_id) == [*everything, web3[0], web3[2]]
    assert lost["body"] and not alice_laptop.failed.get(chat_id)
    await received(alice_phone, chat_id, [*everything, *web3])

    # Both sides show the same safety number, and the browser says the chat is encrypted.
    await web.call("waitFor", name="bob", selector='#e2e-state[data-encrypted="yes"]')
    await web.call("click", name="bob", selector="#safety-number")
    number = "document.querySelector('#safety-number-digits').textContent"
    await web.until("bob", rf"return /^(\d{{5}} ){{11}}\d{{5}}$/.test({number});")
    shown = await web.call("text", name="bob", selector="#safety-number-digits")
    assert shown == alice_phone.safety_number(bob_id)
    await web.call("click", name="bob", selector="#dialog-submit")

    # alice adds a device: the browser's list of hers is stale (the send is refused with
    # `stale_devices`, or the list was old enough to be read again): the new device
    # gets the next message all the same.
    alice_desk = await people.python("alice", "desk")
    fresh = "after alice's new desk"
    await web_sends(web, "bob", chat_id, fresh)
    await received(alice_desk, chat_id, [fresh])
    assert await web.call("problems", name="bob") == []


async def test_a_group_of_python_and_web_devices_and_a_removed_member(
    people: People, web: Web
) -> None:
    alice_phone = await people.python("alice", "phone")
    alice_laptop = await people.python("alice", "laptop")
    bob_id = await people.browser("bob")
    bob_tablet = await people.python("bob", "tablet")
    carol = await people.python("carol", "phone")
    alice_id, carol_id = alice_phone.account.user_id, carol.account.user_id
    group = await alice_phone.chat.create_group("interop club", [bob_id, carol_id])
    members = [alice_id, bob_id, carol_id]

    first = "welcome, from alice's phone"
    await alice_phone.send_group(group, members, first)
    await web_holds(web, "bob", group, [first])
    await web.until("bob", ACTIVE_MEMBERS, {"chat": group, "others": 2})

    # The browser's sender key goes to every member device over pairwise sessions,
    # then one ciphertext for all.
    second = "hello all, from bob's browser"
    await web_sends(web, "bob", group, second)
    for device in (alice_phone, alice_laptop, bob_tablet, carol):
        await received(device, group, [first, second])
    bodies = [m["body"] for m in carol.chat.chats[group].messages.values()]
    assert len(set(bodies)) == 2  # one body per message, the same for every member
    plaintext_absent(carol, group, [first, second])

    third = "carol, replying from python"
    await carol.send_group(group, members, third)
    await web_holds(web, "bob", group, [first, second, third])

    # carol is removed: the browser makes a new sender key, for alice and bob only.
    await alice_phone.chat.group("remove_member", group, user_id=carol_id)
    alice_phone.member_left(group)
    await web.until("bob", ACTIVE_MEMBERS, {"chat": group, "others": 1})
    after = "carol cannot read this"
    await web_sends(web, "bob", group, after)
    for device in (alice_phone, alice_laptop, bob_tablet):
        await received(device, group, [first, second, third, after])

    # Handed the ciphertext anyway, carol's keys do not open it.
    leaked: dict[str, Any] = next(
        m
        for m in alice_phone.chat.chats[group].messages.values()
        if alice_phone.plain[group].get(str(m["seq"]), {}).get("text") == after
    )
    carol.chat.chats[group].messages[leaked["seq"]] = dict(leaked)
    await carol.read()
    assert carol.texts(group) == [first, second, third]
    assert str(leaked["seq"]) in carol.failed[group]
    assert await web.call("problems", name="bob") == []
