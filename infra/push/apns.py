"""Apple Push Notification service over HTTP/2, authenticated by a provider token: an
ES256 JWT signed with the team's .p8 key, made again before it is an hour old (APNs
refuses older ones, and newer than every 20 minutes is "too many").
"""

from __future__ import annotations

import ssl
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from infra.push.provider import Notification, Outcome, Result, result_of
from infra.settings import Settings

TOKEN_REFRESH_S = 45 * 60


class Apns:
    """Sends to an APNs device token: `target` is `{"token": "<hex>"}`."""

    name = "apns"

    def __init__(self, settings: Settings) -> None:
        key = serialization.load_pem_private_key(
            Path(settings.apns_key_path).read_bytes(), password=None
        )
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{settings.apns_key_path} does not hold an EC (.p8) key")
        self._key = key
        self._key_id = settings.apns_key_id
        self._team_id = settings.apns_team_id
        self._topic = settings.apns_topic
        self._ttl_s = settings.push_ttl_s
        verify: ssl.SSLContext | bool = True
        if settings.apns_ca_file:
            verify = ssl.create_default_context(cafile=settings.apns_ca_file)
        self._client = httpx.AsyncClient(
            http2=True,
            verify=verify,
            base_url=settings.apns_base_url,
            timeout=settings.push_timeout_s,
        )
        self._token = ("", 0.0)  # (jwt, made at)

    def _provider_token(self) -> str:
        token, made = self._token
        now = time.time()
        if now - made >= TOKEN_REFRESH_S:
            token = jwt.encode(
                {"iss": self._team_id, "iat": int(now)},
                self._key,
                algorithm="ES256",
                headers={"kid": self._key_id},
            )
            self._token = (token, now)
        return token

    async def send(self, target: dict[str, Any], note: Notification) -> Result:
        token = target.get("token")
        if not isinstance(token, str) or not token.isalnum():
            return Result(Outcome.GONE, detail="no device token")
        alert = {"title": note.sender_name, "body": note.preview or _count_text(note.count)}
        body = {
            "aps": {"alert": alert, "thread-id": note.chat_id, "mutable-content": 1},
            **{k: v for k, v in note.data().items() if k != "preview"},
        }
        headers = {
            "authorization": f"bearer {self._provider_token()}",
            "apns-topic": self._topic,
            "apns-push-type": "alert",
            "apns-priority": "10",
            "apns-collapse-id": note.collapse_key,
            "apns-expiration": str(int(time.time()) + self._ttl_s),
        }
        response = await self._client.post(f"/3/device/{token}", json=body, headers=headers)
        detail = response.text[:200]
        if response.status_code == 400 and "BadDeviceToken" in detail:
            return Result(Outcome.GONE, 400, detail=detail)
        if response.status_code == 403 and "ExpiredProviderToken" in detail:
            self._token = ("", 0.0)
            return Result(Outcome.RETRY, 403, None, detail)
        return result_of(response.status_code, response.headers, detail)

    async def close(self) -> None:
        await self._client.aclose()


def _count_text(count: int) -> str:
    return "1 new message" if count == 1 else f"{count} new messages"
