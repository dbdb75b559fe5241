"""AWS Signature V4 in the query string: a URL that carries its own authorisation.

obstore signs plain object URLs (a GET or PUT of a key) but not those of the multipart
API, which name the upload in the query (`?uploads`, `?partNumber=3&uploadId=…`). This
signs any method, path-style key and query, with an unsigned payload, the way every S3
accepts for presigned requests (AWS's "Authenticating Requests: Using Query Parameters").
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote, urlsplit

_ALGORITHM = "AWS4-HMAC-SHA256"


def _encode(value: str, safe: str = "") -> str:
    """RFC 3986 percent-encoding: everything but unreserved characters (and `safe`)."""
    return quote(value, safe="-_.~" + safe)


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


@dataclass(frozen=True)
class Presigner:
    """Signs requests to one bucket of one S3 endpoint (path-style addressing)."""

    endpoint: str
    region: str
    bucket: str
    access_key: str
    secret_key: str

    def url(
        self,
        method: str,
        key: str,
        query: dict[str, str],
        ttl_s: int,
        now: datetime | None = None,
    ) -> str:
        """A URL that lets its holder send `method` to `key` with `query` for `ttl_s`."""
        at = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
        scope = f"{at[:8]}/{self.region}/s3/aws4_request"
        split = urlsplit(self.endpoint)
        path = f"{split.path.rstrip('/')}/{self.bucket}/{key}"
        params = {
            **query,
            "X-Amz-Algorithm": _ALGORITHM,
            "X-Amz-Credential": f"{self.access_key}/{scope}",
            "X-Amz-Date": at,
            "X-Amz-Expires": str(ttl_s),
            "X-Amz-SignedHeaders": "host",
        }
        canonical_query = "&".join(f"{_encode(k)}={_encode(v)}" for k, v in sorted(params.items()))
        canonical_path = _encode(path, safe="/")
        canonical = "\n".join(
            [
                method,
                canonical_path,
                canonical_query,
                f"host:{split.netloc}\n",
                "host",
                "UNSIGNED-PAYLOAD",
            ]
        )
        to_sign = "\n".join([_ALGORITHM, at, scope, hashlib.sha256(canonical.encode()).hexdigest()])
        signing_key = b"AWS4" + self.secret_key.encode()
        for part in (at[:8], self.region, "s3", "aws4_request"):
            signing_key = _hmac(signing_key, part)
        signature = hmac.new(signing_key, to_sign.encode(), hashlib.sha256).hexdigest()
        return (
            f"{split.scheme}://{split.netloc}{canonical_path}?{canonical_query}"
            f"&X-Amz-Signature={signature}"
        )
