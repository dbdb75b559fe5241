"""The message-actions step of `parley demo`: reply, react, edit, delete for everyone.

Bob answers Alice's first message quoting it; Alice reacts to his answer; Bob fixes a
typo in it and Alice's phone shows the new text marked edited; Alice takes back a
message she sent by mistake and Bob's phone shows "This message was deleted". Its
body was stored sealed in the event log under keys of its own (docs/write-model.md);
the step checks in PostgreSQL that the delete erased them, so not even the log can
give it back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import psycopg

from client import Account, ChatClient


class ActionFailed(Exception):
    """A reply, reaction, edit or delete did not show as the step says."""


async def reply_react_edit_delete(
    chat: str,
    first_seq: int,
    sender: tuple[Account, ChatClient],
    receiver: tuple[Account, ChatClient],
    conninfo: str,
    say: Callable[[str, str], None],
) -> str:
    (alice, a), (_, b) = sender, receiver
    reply = await b.send_text("Coffee? Alwyas!", chat_id=chat, reply_to=first_seq)
    await a.wait_until(lambda: reply.seq in a.chats[chat].messages)
    quote = a.shown(chat)[reply.seq].quote or {}
    if quote.get("seq") != first_seq or not quote.get("excerpt"):
        raise ActionFailed(f"the reply came without its quote: {quote}")
    say("bob", f'replies to seq {first_seq}, quoting "{quote["excerpt"]}"')

    await a.react(chat, reply.seq, "❤️")
    await b.wait_until(lambda: b.shown(chat)[reply.seq].reactions.get(alice.user_id) == "❤️")
    say("alice", f"reacts ❤️ to his reply; bob's phone shows it under seq {reply.seq}")

    await b.edit(chat, reply.seq, "Coffee? Always!")
    await a.wait_until(lambda: a.shown(chat)[reply.seq].edited)
    shown = a.shown(chat)[reply.seq]
    if shown.text != "Coffee? Always!":
        raise ActionFailed(f"alice's phone shows {shown.text!r} after the edit")
    say("bob", f'fixes his typo; alice sees "{shown.text}" [dim](edited)[/]')

    oops = await a.send_text("My bank PIN is 4921", chat_id=chat)
    await b.wait_until(lambda: oops.seq in b.chats[chat].messages)
    say("alice", f'→ bob  "My bank PIN is 4921" (seq {oops.seq}): wrong chat!')
    await a.delete(chat, oops.seq)
    await b.wait_until(lambda: b.shown(chat)[oops.seq].deleted)
    if b.shown(chat)[oops.seq].text:
        raise ActionFailed("bob's phone still shows the deleted text")
    say("bob", "sees [italic]This message was deleted[/]")
    keys = await asyncio.to_thread(_keys_left, conninfo, chat, oops.seq)
    if keys:
        raise ActionFailed(f"{keys} keys of the deleted message are left")
    say("log", "its body stays sealed in the event log, and its key is erased: unreadable")
    return "reply quoted, reaction, edit marked, delete erased its key"


def _keys_left(conninfo: str, chat: str, seq: int) -> int:
    with psycopg.connect(conninfo) as conn:
        row = conn.execute(
            "SELECT count(*) FROM message_keys WHERE chat_id = %s AND seq = %s", (chat, seq)
        ).fetchone()
    return int(row[0]) if row else 0
