// Encrypted media, as client/e2e/media.py: the file is encrypted with a fresh key before
// upload, `nonce || AES-256-GCM(key, nonce, file, aad "parley-media-v1")`; the key and
// both SHA-256 hashes travel inside the end-to-end encrypted message.

import { b64, concat, hex, randomBytes, unb64, utf8 } from "./bytes.js";
import { aesGcmDecrypt, aesGcmEncrypt, sha256 } from "./primitives.js";
import { SessionError } from "./sessions.js";

const MEDIA_AAD = utf8("parley-media-v1");

/** [the bytes to upload, what the message carries to open them]. */
export async function encryptFile(data, key = randomBytes(32), nonce = randomBytes(12)) {
  const sealed = concat(nonce, await aesGcmEncrypt(key, nonce, data, MEDIA_AAD));
  return [
    sealed,
    { key: b64(key), sha256_plain: hex(await sha256(data)), sha256_cipher: hex(await sha256(sealed)), plain_size: data.length },
  ];
}

/** The file, or SessionError when the bytes are not the ones the message names. */
export async function decryptFile(sealed, info) {
  if (hex(await sha256(sealed)) !== info.sha256_cipher) throw new SessionError("the downloaded file is not the one sent");
  let data;
  try {
    data = await aesGcmDecrypt(unb64(info.key), sealed.subarray(0, 12), sealed.subarray(12), MEDIA_AAD);
  } catch {
    throw new SessionError("the file does not decrypt");
  }
  if (hex(await sha256(data)) !== info.sha256_plain) throw new SessionError("the decrypted file is not the one sent");
  return data;
}
