// The Double Ratchet, written to give byte for byte what the Python client's
// `doubleratchet` 1.3.0 gives with the parameters of client/e2e/sessions.py:
//
//   root chain    HKDF-SHA-256(salt = root key, ikm = X25519 output, info = "parley-e2e-v1 root"),
//                 64 bytes: the next root key, then the new chain key
//   message chain next chain key = HMAC-SHA-256(chain key, 0x02), message key = HMAC(chain key, 0x01)
//   AEAD          HKDF-SHA-256(salt = 32 zero bytes, ikm = message key, info = "parley-e2e-v1 message"),
//                 80 bytes: AES-256 key, HMAC key, IV; AES-256-CBC (PKCS#7), then
//                 HMAC-SHA-256(HMAC key, ad || ciphertext) appended (32 bytes)
//   ad            len(ad) as 4 bytes big-endian || ad || ratchet key || pn (8 bytes) || n (8 bytes)
//
// A skipped message key is kept under (ratchet key, n), at most MAX_SKIPPED, the oldest
// dropped first; at most MAX_SKIP are derived in one step. A decryption changes the
// state only when the message authenticates.

import { b64, bigEndian, concat, equal, utf8 } from "./bytes.js";
import { aesCbcDecrypt, aesCbcEncrypt, generateX25519, hkdf, hmac, x25519 } from "./primitives.js";

export const INFO = "parley-e2e-v1";
export const MAX_SKIP = 200;
export const MAX_SKIPPED = 1000;
const ROOT_INFO = utf8(`${INFO} root`);
const MESSAGE_INFO = utf8(`${INFO} message`);
const ZERO_SALT = new Uint8Array(32);

export class RatchetError extends Error {}

async function rootStep(rootKey, dhOutput) {
  const out = await hkdf(dhOutput, rootKey, ROOT_INFO, 64);
  return [out.slice(0, 32), out.slice(32)];
}

async function chainStep(chain) {
  const [next, messageKey] = await Promise.all([hmac(chain.key, Uint8Array.of(2)), hmac(chain.key, Uint8Array.of(1))]);
  return [{ key: next, length: chain.length + 1 }, messageKey];
}

async function aeadKeys(messageKey) {
  const out = await hkdf(messageKey, ZERO_SALT, MESSAGE_INFO, 80);
  return [out.slice(0, 32), out.slice(32, 64), out.slice(64, 80)];
}

export async function aeadEncrypt(messageKey, plaintext, ad) {
  const [encKey, authKey, iv] = await aeadKeys(messageKey);
  const ciphertext = await aesCbcEncrypt(encKey, iv, plaintext);
  return concat(ciphertext, await hmac(authKey, concat(ad, ciphertext)));
}

export async function aeadDecrypt(messageKey, sealed, ad) {
  if (sealed.length < 48) throw new RatchetError("too short");
  const [encKey, authKey, iv] = await aeadKeys(messageKey);
  const ciphertext = sealed.subarray(0, sealed.length - 32);
  const tag = await hmac(authKey, concat(ad, ciphertext));
  let diff = 0;
  for (let i = 0; i < 32; i += 1) diff |= tag[i] ^ sealed[sealed.length - 32 + i];
  if (diff !== 0) throw new RatchetError("does not authenticate");
  try {
    return await aesCbcDecrypt(encKey, iv, ciphertext);
  } catch {
    throw new RatchetError("bad padding");
  }
}

export function buildAd(ad, header) {
  return concat(bigEndian(ad.length, 4), ad, header.dh, bigEndian(header.pn, 8), bigEndian(header.n, 8));
}

const skippedName = (pub, n) => `${b64(pub)}:${n}`;

export class Ratchet {
  /** `generate`: where new ratchet key pairs come from (known-answer tests fix them). */
  constructor(fields, generate = generateX25519) {
    Object.assign(this, fields); // own {priv, pub}, theirs, root, send, recv, previousSend, skipped
    this.generate = generate;
  }

  /** The side that ran X3DH actively: its first chain sends, to the signed prekey. */
  static async active(secret, theirRatchetPub, generate = generateX25519) {
    const own = await generate();
    const [root, sendKey] = await rootStep(secret, await x25519(own.priv, theirRatchetPub));
    const fields = { own, theirs: theirRatchetPub, root, send: { key: sendKey, length: 0 }, recv: null, previousSend: null, skipped: new Map() };
    return new Ratchet(fields, generate);
  }

  /** The passive side, from its signed prekey and the first message's ratchet key. */
  static async passive(secret, signedPrekey, theirRatchetPub, generate = generateX25519) {
    const [root1, recvKey] = await rootStep(secret, await x25519(signedPrekey.priv, theirRatchetPub));
    const own = await generate();
    const [root, sendKey] = await rootStep(root1, await x25519(own.priv, theirRatchetPub));
    const fields = {
      own,
      theirs: theirRatchetPub,
      root,
      send: { key: sendKey, length: 0 },
      recv: { key: recvKey, length: 0 },
      previousSend: null,
      skipped: new Map(),
    };
    return new Ratchet(fields, generate);
  }

  toRecord() {
    const { generate, ...fields } = this;
    return { ...fields, skipped: new Map(this.skipped) };
  }

  static fromRecord(record, generate = generateX25519) {
    return new Ratchet({ ...record, skipped: new Map(record.skipped) }, generate);
  }

  _clone() {
    return new Ratchet({ ...this.toRecord() }, this.generate);
  }

  async encrypt(plaintext, ad) {
    const header = { dh: this.own.pub, pn: this.previousSend ?? 0, n: this.send.length };
    const [send, messageKey] = await chainStep(this.send);
    this.send = send;
    return { header, ciphertext: await aeadEncrypt(messageKey, plaintext, buildAd(ad, header)) };
  }

  /** The message key for `header`, stepping (a DH step when its ratchet key is new). */
  async _nextDecryptionKey(header) {
    const skipped = new Map();
    if (!equal(header.dh, this.theirs)) {
      if (this.recv !== null) {
        const count = Math.max(header.pn - this.recv.length, 0);
        if (count <= MAX_SKIP) {
          for (let i = 0; i < count; i += 1) {
            const at = this.recv.length;
            const [recv, key] = await chainStep(this.recv);
            skipped.set(skippedName(this.theirs, at), key);
            this.recv = recv;
          }
        } // beyond the bound the previous chain's rest is given up, as the package does
      }
      this.theirs = header.dh;
      const [root1, recvKey] = await rootStep(this.root, await x25519(this.own.priv, this.theirs));
      this.recv = { key: recvKey, length: 0 };
      this.own = await this.generate();
      this.previousSend = this.send.length;
      const [root, sendKey] = await rootStep(root1, await x25519(this.own.priv, this.theirs));
      this.root = root;
      this.send = { key: sendKey, length: 0 };
    }
    const count = Math.max(header.n - this.recv.length, 0);
    if (count > MAX_SKIP) throw new RatchetError(`more than ${MAX_SKIP} message keys skipped`);
    for (let i = 0; i < count; i += 1) {
      const at = this.recv.length;
      const [recv, key] = await chainStep(this.recv);
      skipped.set(skippedName(this.theirs, at), key);
      this.recv = recv;
    }
    if (header.n < this.recv.length) throw new RatchetError("already decrypted");
    const [recv, key] = await chainStep(this.recv);
    this.recv = recv;
    return [key, skipped];
  }

  /** The first message of a passive session (the ratchet was just made from it). */
  async decryptInitial(header, ciphertext, ad) {
    const [key, skipped] = await this._nextDecryptionKey(header);
    this.skipped = skipped;
    return aeadDecrypt(key, ciphertext, buildAd(ad, header));
  }

  async decrypt(header, ciphertext, ad) {
    const name = skippedName(header.dh, header.n);
    const trial = this._clone();
    let key = this.skipped.get(name);
    let fresh = null;
    if (key === undefined) [key, fresh] = await trial._nextDecryptionKey(header);
    const plaintext = await aeadDecrypt(key, ciphertext, buildAd(ad, header));
    const skipped = new Map(this.skipped);
    skipped.delete(name);
    if (fresh) for (const [k, v] of fresh) skipped.set(k, v);
    while (skipped.size > MAX_SKIPPED) skipped.delete(skipped.keys().next().value);
    Object.assign(this, fresh ? trial.toRecord() : {}, { skipped });
    return plaintext;
  }
}
