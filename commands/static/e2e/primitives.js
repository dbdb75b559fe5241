// The primitives of the end-to-end encryption, on Web Crypto: X25519, Ed25519, HKDF,
// HMAC, AES-CBC and AES-GCM with SHA-256, as `cryptography` gives them to the Python
// client. Private keys are CryptoKeys made non-extractable: script can use them, not
// read them. What Web Crypto lacks is one conversion, an Ed25519 public key to its
// X25519 (Montgomery) form, done here with BigInt arithmetic on public values only.

import { concat, equal, randomBytes } from "./bytes.js";

const subtle = globalThis.crypto && globalThis.crypto.subtle;
const PKCS8_X25519 = Uint8Array.from([0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x04, 0x22, 0x04, 0x20]);
const PKCS8_ED25519 = Uint8Array.from([0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20]);

export class CryptoUnavailable extends Error {}

/**
 * Whether this browser does every primitive the protocol needs (null), or what it lacks.
 * Web Crypto exists only in secure contexts (https, localhost); X25519 and Ed25519 came
 * to Chromium in 2024-2025 (Secure Curves).
 */
export async function missingPrimitive() {
  if (!subtle) return "Web Crypto (the page needs https or localhost)";
  const tries = [
    ["X25519", () => subtle.generateKey({ name: "X25519" }, false, ["deriveBits"])],
    ["Ed25519", () => subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"])],
    ["HKDF", () => hkdf(new Uint8Array(32), new Uint8Array(32), new Uint8Array(1), 32)],
    ["AES-GCM", () => aesGcmEncrypt(new Uint8Array(32), new Uint8Array(12), new Uint8Array(1), new Uint8Array(0))],
    ["AES-CBC", () => aesCbcEncrypt(new Uint8Array(32), new Uint8Array(16), new Uint8Array(1))],
    ["IndexedDB", async () => { if (!globalThis.indexedDB) throw new Error("none"); }],
  ];
  for (const [name, run] of tries) {
    try {
      await run();
    } catch {
      return name;
    }
  }
  return null;
}

const u8 = (buffer) => new Uint8Array(buffer);

export async function sha256(data) {
  return u8(await subtle.digest("SHA-256", data));
}

export async function sha512(data) {
  return u8(await subtle.digest("SHA-512", data));
}

/** HKDF-SHA-256 (RFC 5869); an empty salt is HashLen zero bytes, as the RFC says. */
export async function hkdf(ikm, salt, info, length) {
  const key = await subtle.importKey("raw", ikm, "HKDF", false, ["deriveBits"]);
  return u8(await subtle.deriveBits({ name: "HKDF", hash: "SHA-256", salt, info }, key, length * 8));
}

export async function hmac(key, data) {
  const k = await subtle.importKey("raw", key, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  return u8(await subtle.sign("HMAC", k, data));
}

export async function aesCbcEncrypt(key, iv, plaintext) {
  const k = await subtle.importKey("raw", key, "AES-CBC", false, ["encrypt"]);
  return u8(await subtle.encrypt({ name: "AES-CBC", iv }, k, plaintext)); // PKCS#7 padded
}

export async function aesCbcDecrypt(key, iv, ciphertext) {
  const k = await subtle.importKey("raw", key, "AES-CBC", false, ["decrypt"]);
  return u8(await subtle.decrypt({ name: "AES-CBC", iv }, k, ciphertext));
}

export async function aesGcmEncrypt(key, nonce, plaintext, aad) {
  const k = await subtle.importKey("raw", key, "AES-GCM", false, ["encrypt"]);
  return u8(await subtle.encrypt({ name: "AES-GCM", iv: nonce, additionalData: aad }, k, plaintext));
}

export async function aesGcmDecrypt(key, nonce, sealed, aad) {
  const k = await subtle.importKey("raw", key, "AES-GCM", false, ["decrypt"]);
  return u8(await subtle.decrypt({ name: "AES-GCM", iv: nonce, additionalData: aad }, k, sealed));
}

function base64url(text) {
  return Uint8Array.from(atob(text.replace(/-/g, "+").replace(/_/g, "/")), (c) => c.charCodeAt(0));
}

// X25519

/** A fresh X25519 key pair: {priv: CryptoKey (non-extractable), pub: 32 bytes}. */
export async function generateX25519() {
  const pair = await subtle.generateKey({ name: "X25519" }, false, ["deriveBits"]);
  return { priv: pair.privateKey, pub: u8(await subtle.exportKey("raw", pair.publicKey)) };
}

/** The X25519 key pair of a 32-byte private scalar (clamped on use, as RFC 7748 says). */
export async function x25519FromScalar(scalar) {
  const der = concat(PKCS8_X25519, scalar);
  const open = await subtle.importKey("pkcs8", der, { name: "X25519" }, true, ["deriveBits"]);
  const pub = base64url((await subtle.exportKey("jwk", open)).x);
  const priv = await subtle.importKey("pkcs8", der, { name: "X25519" }, false, ["deriveBits"]);
  return { priv, pub };
}

/** X25519(priv, pub): 32 bytes; an all-zero result (a low-order point) is refused. */
export async function x25519(priv, pub) {
  const theirs = await subtle.importKey("raw", pub, { name: "X25519" }, true, []);
  return u8(await subtle.deriveBits({ name: "X25519", public: theirs }, priv, 256));
}

// Ed25519

/** The Ed25519 signing key of a 32-byte seed (RFC 8032): {signing: CryptoKey, pub}. */
export async function ed25519FromSeed(seed) {
  const der = concat(PKCS8_ED25519, seed);
  const open = await subtle.importKey("pkcs8", der, { name: "Ed25519" }, true, ["sign"]);
  const pub = base64url((await subtle.exportKey("jwk", open)).x);
  const signing = await subtle.importKey("pkcs8", der, { name: "Ed25519" }, false, ["sign"]);
  return { signing, pub };
}

export async function generateEd25519() {
  return ed25519FromSeed(randomBytes(32));
}

export async function ed25519Sign(signing, data) {
  return u8(await subtle.sign("Ed25519", signing, data));
}

export async function ed25519Verify(pub, signature, data) {
  try {
    const key = await subtle.importKey("raw", pub, { name: "Ed25519" }, true, ["verify"]);
    return await subtle.verify("Ed25519", key, signature, data);
  } catch {
    return false; // not a point on the curve
  }
}

// An Ed25519 public key as X25519: u = (1 + y) / (1 - y) mod p (RFC 7748, section 4.1).

const P = 2n ** 255n - 19n;

function modPow(base, exponent) {
  let result = 1n;
  let b = base % P;
  let e = exponent;
  while (e > 0n) {
    if (e & 1n) result = (result * b) % P;
    b = (b * b) % P;
    e >>= 1n;
  }
  return result;
}

function littleEndian(bytes) {
  let n = 0n;
  for (let i = bytes.length - 1; i >= 0; i -= 1) n = (n << 8n) | BigInt(bytes[i]);
  return n;
}

export function edToMontgomery(edPub) {
  const yBytes = Uint8Array.from(edPub);
  yBytes[31] &= 0x7f; // the sign of x: the Montgomery form has none
  const y = littleEndian(yBytes) % P;
  const u = (((1n + y) % P) * modPow((1n - y + P) % P, P - 2n)) % P;
  const out = new Uint8Array(32);
  let rest = u;
  for (let i = 0; i < 32; i += 1) {
    out[i] = Number(rest & 0xffn);
    rest >>= 8n;
  }
  return out;
}

/**
 * A device identity as the Python client's `x3dh` package makes it: a 32-byte seed; its
 * Ed25519 key signs, and the same secret scalar, clamp(SHA-512(seed)[:32]), does X25519
 * (XEdDSA's one key for both). The seed itself is not kept.
 */
export async function identityFromSeed(seed) {
  const { signing, pub } = await ed25519FromSeed(seed);
  const scalar = (await sha512(seed)).slice(0, 32);
  scalar[0] &= 248;
  scalar[31] &= 127;
  scalar[31] |= 64;
  const dh = await x25519FromScalar(scalar);
  scalar.fill(0);
  if (!equal(dh.pub, edToMontgomery(pub))) throw new Error("identity key conversion mismatch");
  return { signing, dh: dh.priv, pub };
}
