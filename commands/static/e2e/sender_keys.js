// Group messages with Sender Keys, as client/e2e/sender_keys.py: each message encrypted
// once, signed, fanned out by the server.
//
//   message key = HMAC-SHA-256(chain key, 0x01); next chain key = HMAC-SHA-256(chain key, 0x02)
//   AES key, nonce = HKDF-SHA-256(message key, salt none, info "parley-sender-key"), 32 + 12 bytes
//   ciphertext = AES-256-GCM(key, nonce, plaintext, aad = header)
//   signature = Ed25519(signing key, header || ciphertext)
//   header = JSON [chat, sender user, sender device, key id, step] (compact)
//
// A receiver checks the signature first, then steps the chain, keeping skipped steps'
// keys (MAX_SKIP a step, MAX_SKIPPED in all) for late messages.

import { b64, concat, pyJson, randomBytes, unb64, utf8 } from "./bytes.js";
import { aesGcmDecrypt, aesGcmEncrypt, ed25519FromSeed, ed25519Sign, ed25519Verify, hkdf, hmac } from "./primitives.js";
import { SessionError } from "./sessions.js";

export const MAX_SKIP = 200;
export const MAX_SKIPPED = 1000;
const INFO = utf8("parley-sender-key");

async function step(chainKey) {
  return Promise.all([hmac(chainKey, Uint8Array.of(1)), hmac(chainKey, Uint8Array.of(2))]);
}

async function cipherKeys(messageKey) {
  const out = await hkdf(messageKey, new Uint8Array(32), INFO, 44);
  return [out.slice(0, 32), out.slice(32)];
}

export function header(chatId, user, device, keyId, n) {
  return utf8(pyJson([chatId, user, device, keyId, n], true));
}

/** This device's sender key for a group: {keyId, chainKey, step, signing, signingPub}. */
export async function newOwnSenderKey(seed = randomBytes(32), chainKey = randomBytes(32), keyId = null) {
  const { signing, pub } = await ed25519FromSeed(seed);
  seed.fill(0);
  const id = keyId ?? crypto.getRandomValues(new Uint32Array(1))[0] >>> 1; // 31 bits
  return { keyId: id, chainKey, step: 0, signing, signingPub: pub };
}

/** What each member device gets over its pairwise session (the content's key order). */
export function distribution(own, chatId) {
  return {
    type: "sender_key",
    chat_id: chatId,
    key_id: own.keyId,
    step: own.step,
    chain_key: b64(own.chainKey),
    signing_key: b64(own.signingPub),
  };
}

/** Encrypt with our sender key (it steps); the wire fields `{v, kid, n, ct, sig}`. */
export async function encryptGroup(own, chatId, user, device, plaintext) {
  const [messageKey, next] = await step(own.chainKey);
  const n = own.step;
  own.chainKey = next;
  own.step += 1;
  const head = header(chatId, user, device, own.keyId, n);
  const [key, nonce] = await cipherKeys(messageKey);
  const ciphertext = await aesGcmEncrypt(key, nonce, plaintext, head);
  const signature = await ed25519Sign(own.signing, concat(head, ciphertext));
  return { v: 1, kid: own.keyId, n, ct: b64(ciphertext), sig: b64(signature) };
}

/** Another device's sender key, from its distribution. */
export function peerSenderKey(message) {
  return { chainKey: unb64(message.chain_key), step: Number(message.step), verifyKey: unb64(message.signing_key), skipped: new Map() };
}

async function keyFor(peer, n) {
  if (n < peer.step) {
    const key = peer.skipped.get(n);
    if (key === undefined) throw new SessionError("group message already read, or too old");
    peer.skipped.delete(n);
    return key;
  }
  if (n - peer.step > MAX_SKIP) throw new SessionError("group message too far ahead");
  while (peer.step < n) {
    const [skippedKey, next] = await step(peer.chainKey);
    peer.skipped.set(peer.step, skippedKey);
    peer.chainKey = next;
    peer.step += 1;
    while (peer.skipped.size > MAX_SKIPPED) peer.skipped.delete(peer.skipped.keys().next().value);
  }
  const [key, next] = await step(peer.chainKey);
  peer.chainKey = next;
  peer.step += 1;
  return key;
}

/** Decrypt a group message with the sender's key; `peer` steps only on success. */
export async function decryptGroup(peer, chatId, user, device, wire) {
  const n = wire.n;
  if (!Number.isSafeInteger(n) || n < 0) throw new SessionError("not a group message");
  const head = header(chatId, user, device, wire.kid, n);
  let ciphertext;
  let signature;
  try {
    ciphertext = unb64(wire.ct);
    signature = unb64(wire.sig);
  } catch {
    throw new SessionError("not a group message");
  }
  if (!(await ed25519Verify(peer.verifyKey, signature, concat(head, ciphertext)))) {
    throw new SessionError("bad group message signature");
  }
  const trial = { ...peer, skipped: new Map(peer.skipped) };
  const messageKey = await keyFor(trial, n);
  const [key, nonce] = await cipherKeys(messageKey);
  let plaintext;
  try {
    plaintext = await aesGcmDecrypt(key, nonce, ciphertext, head);
  } catch {
    throw new SessionError("group message does not decrypt");
  }
  Object.assign(peer, trial);
  return plaintext;
}
