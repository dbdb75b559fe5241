// Bytes for the end-to-end encryption modules: base64 as the Python client writes it
// (standard alphabet, padded, strict on reading), UTF-8, concatenation, big-endian
// integers, and JSON written byte for byte as Python's `json.dumps` writes it.

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

export function b64(bytes) {
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(text);
}

/** Base64 to bytes; anything but padded standard base64 is an error (as Python's validate=True). */
export function unb64(text) {
  if (typeof text !== "string" || !BASE64.test(text)) throw new Error("not base64");
  return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
}

export function utf8(text) {
  return encoder.encode(text);
}

export function fromUtf8(bytes) {
  return decoder.decode(bytes);
}

export function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

export function equal(a, b) {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i += 1) diff |= a[i] ^ b[i];
  return diff === 0;
}

/** `n` as `size` big-endian bytes (n < 2^53). */
export function bigEndian(n, size) {
  const out = new Uint8Array(size);
  let rest = BigInt(n);
  for (let i = size - 1; i >= 0; i -= 1) {
    out[i] = Number(rest & 0xffn);
    rest >>= 8n;
  }
  return out;
}

export function hex(bytes) {
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}

export function randomBytes(n) {
  return crypto.getRandomValues(new Uint8Array(n));
}

const SHORT_ESCAPES = { '"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f" };

function pyString(text) {
  let out = '"';
  for (const ch of text) {
    const code = ch.codePointAt(0);
    if (SHORT_ESCAPES[ch]) out += SHORT_ESCAPES[ch];
    else if (code >= 0x20 && code <= 0x7e) out += ch;
    else if (code < 0x10000) out += `\\u${code.toString(16).padStart(4, "0")}`;
    else {
      const v = code - 0x10000;
      const high = 0xd800 | (v >> 10);
      const low = 0xdc00 | (v & 0x3ff);
      out += `\\u${high.toString(16)}\\u${low.toString(16)}`;
    }
  }
  return `${out}"`;
}

/**
 * JSON text exactly as Python's `json.dumps(value)` writes it: ASCII only (`\uXXXX`,
 * lowercase), ", " and ": " between items, or "," and ":" when `compact` (Python's
 * `separators=(",", ":")`). Keys keep their insertion order; numbers must be integers.
 */
export function pyJson(value, compact = false) {
  const [item, key] = compact ? [",", ":"] : [", ", ": "];
  const write = (v) => {
    if (v === null || v === undefined) return "null";
    if (v === true) return "true";
    if (v === false) return "false";
    if (typeof v === "number") {
      if (!Number.isSafeInteger(v)) throw new Error("pyJson writes integers only");
      return String(v);
    }
    if (typeof v === "string") return pyString(v);
    if (Array.isArray(v)) return `[${v.map(write).join(item)}]`;
    return `{${Object.entries(v)
      .filter(([, x]) => x !== undefined)
      .map(([k, x]) => `${pyString(k)}${key}${write(x)}`)
      .join(item)}}`;
  };
  return write(value);
}
