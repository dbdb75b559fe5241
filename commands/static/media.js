// Media for the web client (docs/media.md): upload a file straight to the object store
// with a presigned PUT (progress from XHR), confirm it, and get a photo's short-lived
// download URL from the query API. The bytes never go through Parley's services.

async function authorizedJson(url, token, method = "GET", body = undefined, headers = {}) {
  const response = await fetch(url, {
    method,
    headers: { Authorization: `Bearer ${token}`, ...(body ? { "Content-Type": "application/json" } : {}), ...headers },
    body: body ? JSON.stringify(body) : undefined,
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = new Error((data.error && data.error.message) || `HTTP ${response.status}`);
    error.code = (data.error && data.error.code) || "http_error";
    throw error;
  }
  return data;
}

async function sha256Hex(buffer) {
  if (!crypto.subtle) throw new Error("attaching files needs https or localhost (Web Crypto)");
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", buffer));
  return [...digest].map((b) => b.toString(16).padStart(2, "0")).join("");
}

function put(url, headers, buffer, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("PUT", url);
    for (const [name, value] of Object.entries(headers)) xhr.setRequestHeader(name, value);
    xhr.upload.onprogress = (e) => e.lengthComputable && onProgress(e.loaded / e.total);
    xhr.onload = () => (xhr.status < 300 ? resolve() : reject(new Error(`upload failed (${xhr.status})`)));
    xhr.onerror = () => reject(new Error("upload failed: the object store does not answer"));
    xhr.send(buffer);
  });
}

/** Upload a File; `onProgress(0..1)` while its bytes go up; the confirmed media reference. */
export async function uploadFile(session, file, onProgress) {
  const buffer = await file.arrayBuffer();
  const kind = file.type.startsWith("image/") ? "image" : file.type.startsWith("video/") ? "video" : file.type.startsWith("audio/") ? "audio" : "document";
  return uploadBytes(session, buffer, file.type || "application/octet-stream", kind, onProgress);
}

/** Upload bytes as media of this type and kind (an encrypted file is a `document`). */
export async function uploadBytes(session, buffer, mimeType, kind, onProgress) {
  const declared = { kind, size: buffer.byteLength, mime_type: mimeType, sha256: await sha256Hex(buffer) };
  const upload = await authorizedJson("/v1/media/uploads", await session.accessToken(), "POST", declared);
  await put(upload.upload_url, upload.headers, buffer, onProgress);
  const confirmed = await authorizedJson(`/v1/media/${upload.media_id}/confirm`, await session.accessToken(), "POST", {});
  return confirmed.media;
}

/** A short-lived URL of media sent in a chat (null when the query API is not running).
 *  `position`: that of the message carrying it, when known (a pushed frame's): the query
 *  API then waits until it holds that message (`X-Parley-Position`, docs/queries.md). */
export async function downloadUrl(session, queriesUrl, chatId, mediaId, position = null) {
  if (!queriesUrl) return null;
  const headers = position === null || position === undefined ? {} : { "X-Parley-Position": `${chatId}:${position}` };
  const found = await authorizedJson(`${queriesUrl}/v1/chats/${chatId}/media/${mediaId}`, await session.accessToken(), "GET", undefined, headers);
  return found.url;
}
