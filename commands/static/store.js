// What the client holds, per docs/protocol.md: each chat's messages by seq (a seq held
// already is a duplicate), the highest seq held with no gap below it (`contiguous`),
// every member's receipt cursors, who is typing; and the outbox of sends not yet acked.

const decoder = new TextDecoder();
const OUTBOX_KEY = "parley.outbox";

export function bodyText(message) {
  if (message.kind === "ciphertext") return "encrypted message…"; // until it is opened (encryption.js)
  let text = "";
  try {
    const bytes = Uint8Array.from(atob(message.body || ""), (c) => c.charCodeAt(0));
    text = decoder.decode(bytes);
  } catch {
    /* shown as empty */
  }
  if (message.kind === "media" && !text) return message.media && message.media.kind === "image" ? "📷 Photo" : "📎 File";
  return text;
}

export class Chat {
  constructor(id) {
    this.id = id;
    this.kind = null; // "direct" | "group" (null until the first summary)
    this.name = null;
    this.lastSeq = 0;
    this.member = true;
    this.members = new Map(); // user_id -> {role, active, delivered, read}
    this.messages = new Map(); // seq -> message frame, with .text
    this.contiguous = 0; // every seq up to this one is held (or was never visible to us)
    this.order = 0; // position in the server's "newest activity first"
    this.typists = new Map(); // user_id -> expiry (ms)
  }

  cursor(userId) {
    let cursor = this.members.get(userId);
    if (!cursor) {
      cursor = { role: "member", active: true, delivered: 0, read: 0 };
      this.members.set(userId, cursor);
    }
    return cursor;
  }

  others(me) {
    return [...this.members.entries()].filter(([id, c]) => id !== me && c.active);
  }

  peer(me) {
    const other = [...this.members.keys()].find((id) => id !== me);
    return other || null;
  }

  lastMessage() {
    let top = null;
    for (const [seq, message] of this.messages) {
      if (!message.hidden && (top === null || seq > top)) top = seq;
    }
    return top === null ? null : this.messages.get(top);
  }

  sortedMessages() {
    return [...this.messages.values()].sort((a, b) => a.seq - b.seq);
  }
}

export class Store {
  constructor(me) {
    this.me = me;
    this.chats = new Map();
    this.outbox = new Map(); // local_id -> {local_id, chat_id, to, text, state, error}
    this.outboxKey = `${OUTBOX_KEY}.${me}`;
    const saved = JSON.parse(sessionStorage.getItem(this.outboxKey) || "[]");
    for (const entry of saved) this.outbox.set(entry.local_id, entry);
  }

  chat(id) {
    let chat = this.chats.get(id);
    if (!chat) {
      chat = new Chat(id);
      this.chats.set(id, chat);
    }
    return chat;
  }

  /** A `sync_chats` entry: kind, name, last seq and everyone's cursors. */
  applySummary(summary, order) {
    const chat = this.chat(summary.chat_id);
    chat.kind = summary.kind;
    chat.name = summary.name;
    chat.lastSeq = Math.max(chat.lastSeq, summary.last_seq);
    chat.member = summary.member;
    chat.order = order;
    const seen = new Set();
    for (const m of summary.members) {
      const cursor = chat.cursor(m.user_id);
      cursor.role = m.role;
      cursor.active = m.active;
      cursor.delivered = Math.max(cursor.delivered, m.delivered_up_to || 0);
      cursor.read = Math.max(cursor.read, m.read_up_to || 0);
      seen.add(m.user_id);
    }
    for (const id of chat.members.keys()) if (!seen.has(id)) chat.members.delete(id);
    return chat;
  }

  /** A message frame; false if that (chat, seq) is held already. */
  addMessage(frame) {
    const chat = this.chat(frame.chat_id);
    const seq = Number(frame.seq);
    if (frame.sender === this.me && frame.local_id) this.settle(frame.local_id);
    const held = chat.messages.get(seq);
    if (held && !held.provisional) return false;
    chat.messages.set(seq, { ...frame, seq, text: bodyText(frame) });
    chat.lastSeq = Math.max(chat.lastSeq, seq);
    this.advance(chat);
    return !held;
  }

  advance(chat) {
    while (chat.messages.has(chat.contiguous + 1)) chat.contiguous += 1;
  }

  /** Below the lowest seq a named-cursor sync returned, nothing is ours to see. */
  applyFloor(chat, cursor) {
    const seqs = [...chat.messages.keys()];
    const lowest = seqs.length ? Math.min(...seqs) : chat.lastSeq + 1;
    if (chat.contiguous === cursor && lowest > cursor + 1) {
      chat.contiguous = lowest - 1;
      this.advance(chat);
    }
  }

  hasGap(chat) {
    const seqs = [...chat.messages.keys()];
    return seqs.some((seq) => seq > chat.contiguous + 1);
  }

  applyReceipt(frame) {
    const chat = this.chat(frame.chat_id);
    const cursor = chat.cursor(frame.user_id);
    cursor.delivered = Math.max(cursor.delivered, frame.delivered_up_to || 0);
    if (frame.read_up_to !== null && frame.read_up_to !== undefined) {
      cursor.read = Math.max(cursor.read, frame.read_up_to);
      cursor.delivered = Math.max(cursor.delivered, cursor.read);
    }
  }

  /** sent / delivered / read for our message `seq`, from the other members' cursors. */
  ticks(chat, seq) {
    const others = chat.others(this.me);
    if (others.length && others.every(([, c]) => c.read >= seq)) return "read";
    if (others.length && others.every(([, c]) => c.delivered >= seq)) return "delivered";
    return "sent";
  }

  readBy(chat, seq) {
    return chat.others(this.me).filter(([, c]) => c.read >= seq).length;
  }

  /** Messages from others above our read cursor. */
  unread(chat) {
    const read = chat.cursor(this.me).read;
    let n = 0;
    for (const m of chat.messages.values()) if (m.seq > read && m.sender !== this.me && !m.hidden) n += 1;
    return n;
  }

  /** The highest contiguous seq holding someone else's message above `cursorName`. */
  toAcknowledge(chat, cursorName) {
    const mine = chat.cursor(this.me)[cursorName];
    for (let seq = chat.contiguous; seq > mine; seq -= 1) {
      const m = chat.messages.get(seq);
      if (m && m.sender !== this.me) return chat.contiguous;
    }
    return 0;
  }

  directChatWith(userId) {
    for (const chat of this.chats.values()) {
      if (chat.kind === "direct" && chat.members.has(userId)) return chat;
    }
    return null;
  }

  // The outbox

  queue(entry) {
    this.outbox.set(entry.local_id, entry);
    this._saveOutbox();
  }

  /** The server has the message: it leaves the outbox. */
  settle(localId) {
    if (this.outbox.delete(localId)) this._saveOutbox();
  }

  fail(localId, error) {
    const entry = this.outbox.get(localId);
    if (entry) {
      entry.state = "failed";
      entry.error = error;
      this._saveOutbox();
    }
  }

  pendingFor(key) {
    return [...this.outbox.values()].filter((e) => (e.chat_id || `to:${e.to}`) === key);
  }

  _saveOutbox() {
    sessionStorage.setItem(this.outboxKey, JSON.stringify([...this.outbox.values()]));
  }

  sortedChats() {
    const activity = (chat) => {
      const last = chat.lastMessage();
      return last ? Date.parse(last.sent_at) || 0 : 0;
    };
    return [...this.chats.values()]
      .filter((c) => c.kind !== null)
      .sort((a, b) => activity(b) - activity(a) || a.order - b.order);
  }
}
