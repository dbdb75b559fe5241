"""Firebase Cloud Messaging, HTTP v1: a service-account JWT (RS256) is traded at the
OAuth2 token endpoint for an access token, which `messages:send` takes as a bearer.

Both URLs come from settings (the token endpoint defaults to the service account's
`token_uri`), so tests point them at local receivers.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import jwt

from infra.push.provider import Notification, Outcome, Result, result_of
from infra.settings import Settings

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
TOKEN_LIFETIME_S = 3600
REFRESH_BEFORE_S = 300


class Fcm:
    """Sends to an FCM registration token: `target` is `{"token": ...}`."""

    name = "fcm"

    def __init__(self, settings: Settings, client: aiohttp.ClientSession) -> None:
        account = json.loads(Path(settings.fcm_service_account).read_text())
        self._email: str = account["client_email"]
        self._key: str = account["private_key"]
        self._project: str = account["project_id"]
        self._token_url: str = settings.fcm_token_url or account["token_uri"]
        self._send_url = (
            f"{settings.fcm_base_url.rstrip('/')}/v1/projects/{self._project}/messages:send"
        )
        self._ttl_s = settings.push_ttl_s
        self._client = client
        self._access = ("", 0.0)  # (token, expires at)

    async def _access_token(self) -> str | Result:
        token, expires = self._access
        now = time.time()
        if expires - now > REFRESH_BEFORE_S:
            return token
        claims = {
            "iss": self._email,
            "scope": SCOPE,
            "aud": self._token_url,
            "iat": int(now),
            "exp": int(now) + TOKEN_LIFETIME_S,
        }
        assertion = jwt.encode(claims, self._key, algorithm="RS256")
        form = {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": assertion}
        async with self._client.post(self._token_url, data=form) as response:
            if response.status != 200:
                failed = result_of(response.status, response.headers, "token endpoint")
                if failed.outcome is Outcome.GONE:  # the endpoint, not the device, is missing
                    return Result(Outcome.RETRY, failed.status, None, "token endpoint")
                return failed
            answer = await response.json()
        self._access = (answer["access_token"], now + float(answer.get("expires_in", 3600)))
        return self._access[0]

    async def send(self, target: dict[str, Any], note: Notification) -> Result:
        token = target.get("token")
        if not isinstance(token, str) or not token:
            return Result(Outcome.GONE, detail="no registration token")
        access = await self._access_token()
        if isinstance(access, Result):
            return access
        message = {
            "message": {
                "token": token,
                "data": note.data(),
                "android": {
                    "collapse_key": note.collapse_key,
                    "priority": "HIGH",
                    "ttl": f"{self._ttl_s}s",
                },
            }
        }
        headers = {"Authorization": f"Bearer {access}"}
        async with self._client.post(self._send_url, json=message, headers=headers) as response:
            if response.status == 401:
                self._access = ("", 0.0)  # revoked or expired early: a new one next try
                return Result(Outcome.RETRY, 401, None, "access token refused")
            detail = (await response.text(errors="replace"))[:200]
            if response.status == 400 and "UNREGISTERED" in detail:
                return Result(Outcome.GONE, 400, detail=detail)
            return result_of(response.status, response.headers, detail)

    async def close(self) -> None:
        return None
