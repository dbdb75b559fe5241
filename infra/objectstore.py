"""The S3 adapter: presigned URLs, object heads and deletes, the bucket; nothing else.

Parley talks to its object store only through `ObjectStore`, built from settings
(`s3_endpoint`, `s3_region`, `s3_bucket`, `s3_access_key`, `s3_secret_key`), so AWS S3,
R2 or the stack's SeaweedFS differ only in settings. Media bytes never pass through
it: clients PUT and GET with the presigned URLs it signs.

Built on obstore (Rust's object_store) rather than boto3, measured on this machine
against the stack's SeaweedFS (docs/media.md): signing a URL 13 us against boto3's
430 us (median of 500), HEAD 0.68 ms against 2.2 ms. Its blocking calls run in a
thread: with obstore's own async calls a process aborted at exit (SIGABRT, exit 134)
in 1 run of 8 of a put-get-delete script, against none in 16 with blocking calls in
`asyncio.to_thread`; a thread hop is nothing next to an S3 round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import obstore
from obstore.store import S3Store

from infra.s3_presign import Presigner
from infra.settings import Settings

_S3_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


@dataclass(frozen=True)
class ObjectHead:
    """What the store says about one object."""

    key: str
    size: int


@dataclass(frozen=True)
class StoredPart:
    """One uploaded part of a multipart upload, as the store lists it."""

    number: int
    etag: str
    size: int


class ObjectStoreUnavailable(Exception):
    """The object store did not answer, or refused Parley's own credentials."""


class NoSuchUpload(Exception):
    """The store knows no such multipart upload (completed, aborted or expired)."""


class PartRejected(Exception):
    """The store refused to complete a multipart upload with the parts listed."""


class ObjectStore:
    """One bucket of an S3-compatible store."""

    def __init__(self, settings: Settings) -> None:
        self.bucket = settings.s3_bucket
        self._presigner = Presigner(
            settings.s3_endpoint,
            settings.s3_region,
            settings.s3_bucket,
            settings.s3_access_key,
            settings.s3_secret_key,
        )
        self._store = S3Store(
            settings.s3_bucket,
            endpoint=settings.s3_endpoint,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key,
            secret_access_key=settings.s3_secret_key,
            virtual_hosted_style_request=False,
            client_options={
                "allow_http": settings.s3_endpoint.startswith("http://"),
                "timeout": timedelta(seconds=30),
                "connect_timeout": timedelta(seconds=5),
            },
        )

    def presign_put(self, key: str, ttl_s: float) -> str:
        """A URL that lets its holder PUT `key` for `ttl_s` seconds."""
        return str(obstore.sign(self._store, "PUT", key, timedelta(seconds=ttl_s)))

    def presign_get(self, key: str, ttl_s: float) -> str:
        """A URL that lets its holder GET (with Range) `key` for `ttl_s` seconds."""
        return str(obstore.sign(self._store, "GET", key, timedelta(seconds=ttl_s)))

    async def head(self, key: str) -> ObjectHead | None:
        """The object's size, or None if there is no such object."""
        try:
            meta: Any = await asyncio.to_thread(obstore.head, self._store, key)
        except FileNotFoundError:
            return None
        except Exception as exc:
            raise ObjectStoreUnavailable(f"HEAD {key}: {type(exc).__name__}") from exc
        return ObjectHead(key, int(meta["size"]))

    async def delete(self, key: str) -> None:
        """Delete `key`; deleting what is not there is not an error."""
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(obstore.delete, self._store, key)

    async def copy(self, source: str, target: str) -> None:
        """Copy `source` to `target` inside the bucket (the store copies; no bytes here)."""
        await asyncio.to_thread(obstore.copy, self._store, source, target)

    async def get(self, key: str) -> bytes:
        """The whole object (benchmarks and tests drive the store directly)."""
        return await asyncio.to_thread(self._get, key)

    def _get(self, key: str) -> bytes:
        return bytes(obstore.get(self._store, key).bytes())

    async def put(self, key: str, data: bytes) -> None:
        """Store `data` under `key` (benchmarks and tests drive the store directly)."""
        await asyncio.to_thread(obstore.put, self._store, key, data)

    def ensure_bucket(self) -> None:
        """Create the bucket unless it exists (an S3 `CreateBucket`, signed like any PUT)."""
        url = str(obstore.sign(self._store, "PUT", "", timedelta(seconds=60)))
        request = urllib.request.Request(url, method="PUT", data=b"")
        try:
            with urllib.request.urlopen(request, timeout=10):
                return
        except urllib.error.HTTPError as exc:
            body = exc.read().decode("utf-8", "replace")
            if exc.code == 409 and "BucketAlready" in body:
                return
            raise ObjectStoreUnavailable(f"creating bucket {self.bucket}: {exc.code}") from exc
        except OSError as exc:
            raise ObjectStoreUnavailable(f"creating bucket {self.bucket}: {exc}") from exc

    def delete_bucket(self) -> None:
        """Delete the bucket and what it holds (test runs clean up their own bucket)."""
        url = str(obstore.sign(self._store, "DELETE", "", timedelta(seconds=60)))
        request = urllib.request.Request(url, method="DELETE")
        with contextlib.suppress(OSError), urllib.request.urlopen(request, timeout=30):
            return

    # Multipart uploads: the client PUTs each part with a URL signed here; Parley starts,
    # lists, completes and aborts (infra.s3_presign signs what obstore does not).

    def presign_part(self, key: str, upload_id: str, number: int, ttl_s: int) -> str:
        """A URL that lets its holder PUT part `number` of the multipart upload."""
        query = {"partNumber": str(number), "uploadId": upload_id}
        return self._presigner.url("PUT", key, query, ttl_s)

    async def create_multipart(self, key: str, content_type: str) -> str:
        """Start a multipart upload of `key`; the store's upload id."""
        url = self._presigner.url("POST", key, {"uploads": ""}, 60)
        body = await self._call("POST", url, b"", {"Content-Type": content_type})
        upload_id = ET.fromstring(body).findtext(f"{_S3_NS}UploadId")
        if not upload_id:
            raise ObjectStoreUnavailable(f"starting a multipart upload of {key}: no UploadId")
        return upload_id

    async def list_parts(self, key: str, upload_id: str) -> list[StoredPart]:
        """The parts uploaded so far (at most 1000, the S3 page: more than Parley allows)."""
        url = self._presigner.url("GET", key, {"uploadId": upload_id}, 60)
        root = ET.fromstring(await self._call("GET", url))
        return [
            StoredPart(
                int(part.findtext(f"{_S3_NS}PartNumber") or 0),
                (part.findtext(f"{_S3_NS}ETag") or "").strip('"'),
                int(part.findtext(f"{_S3_NS}Size") or 0),
            )
            for part in root.iter(f"{_S3_NS}Part")
        ]

    async def complete_multipart(self, key: str, upload_id: str, parts: list[StoredPart]) -> None:
        """Join the parts into the object `key`."""
        body = "".join(
            f'<Part><PartNumber>{p.number}</PartNumber><ETag>"{p.etag}"</ETag></Part>'
            for p in parts
        )
        xml = f"<CompleteMultipartUpload>{body}</CompleteMultipartUpload>".encode()
        url = self._presigner.url("POST", key, {"uploadId": upload_id}, 60)
        answer = await self._call("POST", url, xml, {"Content-Type": "application/xml"})
        if b"<Error>" in answer:  # S3 may answer 200 and report the failure in the body
            raise PartRejected(answer.decode("utf-8", "replace")[:200])

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        """Drop a multipart upload and its parts; aborting what is gone is not an error."""
        url = self._presigner.url("DELETE", key, {"uploadId": upload_id}, 60)
        with contextlib.suppress(NoSuchUpload):
            await self._call("DELETE", url)

    async def _call(
        self,
        method: str,
        url: str,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> bytes:
        return await asyncio.to_thread(self._call_blocking, method, url, data, headers or {})

    def _call_blocking(
        self, method: str, url: str, data: bytes | None, headers: dict[str, str]
    ) -> bytes:
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                answer: bytes = response.read()
                return answer
        except urllib.error.HTTPError as exc:
            body = exc.read()
            code = ET.fromstring(body).findtext("Code") if body.startswith(b"<") else None
            if code == "NoSuchUpload":
                raise NoSuchUpload() from None
            if code in ("InvalidPart", "InvalidPartOrder", "EntityTooSmall"):
                raise PartRejected(code) from None
            raise ObjectStoreUnavailable(f"{method}: {exc.code} {code}") from exc
        except OSError as exc:
            raise ObjectStoreUnavailable(f"{method}: {exc}") from exc
