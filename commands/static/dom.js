// Small DOM and formatting helpers shared by the views. No framework: elements are
// built with h(), never from HTML strings, so no text a user typed is parsed as HTML.

export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (name === "class") element.className = value;
    else if (name === "dataset") Object.assign(element.dataset, value);
    else if (name in element && typeof value !== "string") element[name] = value;
    else element.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

export function clear(element, ...children) {
  element.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined));
  return element;
}

/** A version 4 UUID (crypto.randomUUID needs a secure context; this does not). */
export function uuid4() {
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const hex = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

export const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export function clockTime(date) {
  return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

/** "last seen today at 14:05", "last seen 3 Mar at 09:12"; from unix ms. */
export function lastSeenText(ms) {
  const seen = new Date(ms);
  const today = new Date();
  const sameDay = seen.toDateString() === today.toDateString();
  const day = sameDay
    ? "today"
    : seen.toLocaleDateString([], { day: "numeric", month: "short" });
  return `last seen ${day} at ${clockTime(seen)}`;
}

export function initials(name) {
  const parts = name.replace(/[^\p{L}\p{N} ]/gu, " ").trim().split(/\s+/);
  return ((parts[0] || "?")[0] + (parts[1] ? parts[1][0] : "")).toUpperCase();
}

/** A stable hue per user id, for avatars and sender names in groups. */
export function hue(id) {
  let n = 0;
  for (const c of id) n = (n * 31 + c.charCodeAt(0)) % 360;
  return n;
}
