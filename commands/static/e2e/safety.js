// Safety numbers, as client/e2e/safety.py: each user's half is SHA-512 iterated 5,200
// times over (version, their sorted identity keys, user id), cut to 30 digits; the lower
// user id's half comes first, so both users see the same 60 digits.

import { concat, utf8 } from "./bytes.js";
import { sha512 } from "./primitives.js";

const VERSION = Uint8Array.of(0, 0);
const ITERATIONS = 5200;

function compareBytes(a, b) {
  for (let i = 0; i < Math.min(a.length, b.length); i += 1) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
}

async function half(userId, identityKeys) {
  const keys = concat(...[...identityKeys].sort(compareBytes));
  let digest = concat(VERSION, keys, utf8(userId));
  for (let i = 0; i < ITERATIONS; i += 1) digest = await sha512(concat(digest, keys));
  let digits = "";
  for (let i = 0; i < 30; i += 5) {
    let n = 0;
    for (let j = i; j < i + 5; j += 1) n = n * 256 + digest[j];
    digits += String(n % 100000).padStart(5, "0");
  }
  return digits;
}

/** The 60-digit safety number of two users, in groups of five. */
export async function safetyNumber(userA, keysA, userB, keysB) {
  const halves = [
    [userA, await half(userA, keysA)],
    [userB, await half(userB, keysB)],
  ].sort((x, y) => (x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : x[1] < y[1] ? -1 : 1));
  const digits = halves[0][1] + halves[1][1];
  return digits.match(/.{5}/g).join(" ");
}
