// What members did with a message (docs/protocol.md, "What members do with a message"):
// replies, reactions, edits, deletes, disappearing timers, forwards. Actions are messages
// of the chat naming their target in `ref`; `shown` folds them, in seq order, into what
// the user sees, and `menu` builds the hover menu of one message.

import { h } from "./dom.js";

export const ACTION_KINDS = new Set(["reaction", "edit", "delete"]);
export const NOTICE_KINDS = new Set([...ACTION_KINDS, "timer"]);
export const QUICK_REACTIONS = ["👍", "❤️", "😂", "😮", "🙏"];
export const EDIT_WINDOW_MS = 15 * 60 * 1000; // PARLEY_EDIT_WINDOW_S's default
const MANY_TIMES = 5;

/** The chat's messages as shown: content messages (by seq) with their actions applied. */
export function shown(chat, now = Date.now()) {
  const out = new Map();
  let timer = 0;
  for (const message of chat.sortedMessages()) {
    if (message.hidden) continue;
    if (message.kind === "timer") {
      timer = Number(message.text) || 0;
      out.set(message.seq, { ...message, notice: timerNotice(timer) });
      continue;
    }
    if (!ACTION_KINDS.has(message.kind)) {
      const expired = message.expires_at && Date.parse(message.expires_at) <= now;
      out.set(message.seq, { ...message, reactions: new Map(), deleted: message.deleted || expired, edited: message.edited });
      continue;
    }
    const target = out.get(message.ref);
    if (!target || target.deleted) continue;
    if (message.kind === "delete") {
      Object.assign(target, { deleted: true, reactions: new Map() });
      for (const other of out.values()) if (other.quote && other.quote.seq === message.ref) other.quote = { seq: message.ref, deleted: true };
    } else if (message.kind === "edit" && message.text) {
      Object.assign(target, { text: message.text, edited: true });
    } else if (message.kind === "reaction") {
      if (message.text) target.reactions.set(message.sender, message.text);
      else target.reactions.delete(message.sender);
    }
  }
  chat.timer = timer;
  return out;
}

function timerNotice(seconds) {
  if (!seconds) return "Disappearing messages are off";
  const days = seconds / 86400;
  return `Messages now disappear after ${days >= 1 ? `${days} day${days > 1 ? "s" : ""}` : `${seconds} s`}`;
}

/** The lines a message shows besides its text: forwarded mark, quote, reactions. */
export function decorations(message, nameOf) {
  const above = [];
  if (message.forwarded) above.push(h("div", { class: "forwarded" }, message.forwarded >= MANY_TIMES ? "↪↪ Forwarded many times" : "↪ Forwarded"));
  if (message.quote) {
    const q = message.quote;
    above.push(h("div", { class: "quote", dataset: { ref: String(q.seq) } }, q.deleted ? "🚫 This message was deleted" : [h("b", {}, nameOf(q.sender)), " ", q.excerpt || (q.kind === "media" ? "📷 Photo" : "")]));
  }
  const counts = new Map();
  for (const emoji of message.reactions.values()) counts.set(emoji, (counts.get(emoji) || 0) + 1);
  const below = counts.size ? h("div", { class: "reactions" }, [...counts].map(([emoji, n]) => h("span", { class: "reaction" }, n > 1 ? `${emoji} ${n}` : emoji))) : null;
  return { above, below };
}

/** The hover menu of a message: reply, react, and for who may, edit, delete, forward. */
export function menu(m, chat, message) {
  const mine = message.sender === m.me;
  const admin = chat.kind === "group" && chat.cursor(m.me).role === "admin";
  if (message.kind === "ciphertext") {
    // Replies, reactions, edits and forwards would carry their content in plaintext:
    // an encrypted message offers only what reveals nothing (docs/e2e.md).
    const del = mine || admin ? h("button", { class: "quiet", title: "Delete for everyone", onclick: () => m.act(chat, "delete", message.seq, "") }, "🗑") : null;
    return h("div", { class: "msg-menu" }, del);
  }
  const items = [h("button", { class: "quiet", title: "Reply", onclick: () => m.replyTo(chat, message) }, "↩")];
  for (const emoji of QUICK_REACTIONS) {
    const again = message.reactions.get(m.me) === emoji;
    items.push(h("button", { class: "quiet", title: again ? "Remove your reaction" : `React ${emoji}`, onclick: () => m.act(chat, "reaction", message.seq, again ? "" : emoji) }, emoji));
  }
  const age = Date.now() - Date.parse(message.sent_at);
  if (mine && message.kind === "text" && age < EDIT_WINDOW_MS) items.push(h("button", { class: "quiet", title: "Edit", onclick: () => m.editMessage(chat, message) }, "✎"));
  if (mine || admin) items.push(h("button", { class: "quiet", title: "Delete for everyone", onclick: () => m.act(chat, "delete", message.seq, "") }, "🗑"));
  if (message.kind === "text" || message.kind === "media") items.push(h("button", { class: "quiet", title: "Forward", onclick: () => m.forwardMessage(chat, message) }, "↪"));
  return h("div", { class: "msg-menu" }, items);
}
