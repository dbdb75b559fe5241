"""The push routes of the accounts API in process (docs/push.md): config, registration,
preferences, and the target going away with its device."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from infra.push.webpush import b64url, raw_public_key, unb64url
from infra.settings import Settings
from tests.accounts.client import bearer, http_client, login, register


def subscription() -> dict[str, Any]:
    key = ec.generate_private_key(ec.SECP256R1())
    return {
        "endpoint": f"https://push.example/{uuid.uuid4().hex}",
        "keys": {"p256dh": b64url(raw_public_key(key.public_key())), "auth": b64url(b"0" * 16)},
    }


def targets(settings: Settings, user_id: str) -> list[tuple[str, str]]:
    with psycopg.connect(settings.pg_conninfo) as conn:
        rows = conn.execute(
            "SELECT device_id, provider FROM push.targets WHERE user_id = %s ORDER BY 1",
            (user_id,),
        ).fetchall()
    return [(r[0], r[1]) for r in rows]


@pytest.fixture
def webpush_on(fast: Settings, tmp_path: Path) -> Settings:
    return fast.replace(
        webpush_subject="mailto:ops@parley.test", webpush_vapid_key=str(tmp_path / "vapid.pem")
    )


async def test_a_provider_that_is_off_refuses_registrations(fast: Settings) -> None:
    async with http_client(fast) as client:
        config = await client.get("/v1/push/config")
        assert config.json() == {"providers": [], "vapid_public_key": None}
        _, username, _ = await register(client)
        auth = bearer(await login(client, username))
        body = {"provider": "webpush", "subscription": subscription()}
        answer = await client.post("/v1/me/push", json=body, headers=auth)
        assert answer.status_code == 400
        assert answer.json()["error"]["code"] == "push_provider_off"


async def test_register_replace_prefs_and_forget_with_the_device(webpush_on: Settings) -> None:
    async with http_client(webpush_on) as client:
        config = (await client.get("/v1/push/config")).json()
        assert config["providers"] == ["webpush"]
        assert len(unb64url(config["vapid_public_key"])) == 65  # made once, then the same
        again = (await client.get("/v1/push/config")).json()
        assert again["vapid_public_key"] == config["vapid_public_key"]

        user_id, username, _ = await register(client)
        phone = bearer(await login(client, username, device_id="phone"))
        laptop = bearer(await login(client, username, device_id="laptop"))
        for auth in (phone, phone, laptop):  # the phone registers twice: replaced
            body = {"provider": "webpush", "subscription": subscription()}
            answer = await client.post("/v1/me/push", json=body, headers=auth)
            assert answer.status_code == 200, answer.text
        assert targets(webpush_on, user_id) == [("laptop", "webpush"), ("phone", "webpush")]

        chat = str(uuid.uuid4())
        prefs = await client.post(
            "/v1/me/push/prefs", json={"previews": True, "mute": [chat]}, headers=phone
        )
        assert prefs.json() == {"previews": True, "dnd": False, "muted": [chat]}
        prefs = await client.post("/v1/me/push/prefs", json={"unmute": [chat]}, headers=phone)
        assert prefs.json() == {"previews": True, "dnd": False, "muted": []}
        bad = await client.post("/v1/me/push/prefs", json={"mute": ["x"]}, headers=phone)
        assert bad.json()["error"]["code"] == "bad_request"

        removed = await client.post(
            "/v1/me/devices", json={"action": "remove", "device_id": "laptop"}, headers=phone
        )
        assert removed.status_code == 200
        assert targets(webpush_on, user_id) == [("phone", "webpush")]
        gone = await client.delete("/v1/me/push", headers=phone)
        assert gone.json() == {"removed": 1}
        assert targets(webpush_on, user_id) == []


async def test_the_service_worker_is_served_at_the_root(fast: Settings) -> None:
    async with http_client(fast) as client:
        answer = await client.get("/sw.js")
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/javascript")
        assert 'addEventListener("push"' in answer.text
