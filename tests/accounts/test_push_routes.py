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


def subscription(endpoint: str = "") -> dict[str, Any]:
    """A PushSubscription as Chrome gives it (FCM's endpoint, one of the defaults)."""
    key = ec.generate_private_key(ec.SECP256R1())
    return {
        "endpoint": endpoint or f"https://fcm.googleapis.com/fcm/send/{uuid.uuid4().hex}",
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


async def test_an_endpoint_that_is_not_a_push_services_is_refused(webpush_on: Settings) -> None:
    """The defaults (docs/push.md): https on port 443 to a browser's push service only."""
    refused = [
        "http://127.0.0.1:15432/",
        "https://169.254.169.254/latest/meta-data/",
        "https://10.0.0.5/wp/x",
        "https://[::1]/wp/x",
        "http://fcm.googleapis.com/fcm/send/x",
        "https://fcm.googleapis.com:8443/fcm/send/x",
        "https://fcm.googleapis.com@evil.example/fcm/send/x",
        "https://fcm.googleapis.com.evil.com/fcm/send/x",
        "https://push.example/wp/x",
        "https://fcm.googleapis.com/" + "x" * 1024,
    ]
    async with http_client(webpush_on) as client:
        user_id, username, _ = await register(client)
        auth = bearer(await login(client, username))
        for endpoint in refused:
            body = {"provider": "webpush", "subscription": subscription(endpoint)}
            answer = await client.post("/v1/me/push", json=body, headers=auth)
            assert answer.status_code == 400, endpoint
            assert answer.json()["error"]["code"] == "push_endpoint_refused", endpoint
        for endpoint in (
            "https://updates.push.services.mozilla.com/wpush/v2/gAAAAABk",
            "https://wns2-par02p.notify.windows.com/w/?token=BQYAAABPS6Pn%2f0s",
            "https://web.push.apple.com/QGuQyavXutnMH5GMDd",
        ):
            body = {"provider": "webpush", "subscription": subscription(endpoint)}
            answer = await client.post("/v1/me/push", json=body, headers=auth)
            assert answer.status_code == 200, answer.text
        assert targets(webpush_on, user_id) == [("phone-1", "webpush")]


async def test_a_trusted_origin_is_accepted_as_listed(webpush_on: Settings) -> None:
    local = webpush_on.replace(webpush_trusted_origins="http://127.0.0.1:18099")
    async with http_client(local) as client:
        _, username, _ = await register(client)
        auth = bearer(await login(client, username))
        for endpoint, status in (
            ("http://127.0.0.1:18099/wp/phone", 200),
            ("http://127.0.0.1:18098/wp/phone", 400),
        ):
            body = {"provider": "webpush", "subscription": subscription(endpoint)}
            answer = await client.post("/v1/me/push", json=body, headers=auth)
            assert answer.status_code == status, answer.text


async def test_subscription_keys_are_bounded_and_checked(webpush_on: Settings) -> None:
    good = subscription()["keys"]
    bad_keys: list[dict[str, Any]] = [
        {**good, "p256dh": good["p256dh"] * 10},  # refused before it is decoded
        {**good, "p256dh": good["p256dh"][:-4]},
        {**good, "p256dh": "A" + good["p256dh"][1:]},  # not an uncompressed point
        {**good, "p256dh": good["p256dh"][:-1] + "!"},  # not base64url
        {**good, "auth": b64url(b"0" * 17)},
        {**good, "auth": "A"},  # one character more than a multiple of 4
        {**good, "auth": 16},
        {"p256dh": good["p256dh"]},
    ]
    async with http_client(webpush_on) as client:
        _, username, _ = await register(client)
        auth = bearer(await login(client, username))
        for keys in bad_keys:
            body = {"provider": "webpush", "subscription": subscription() | {"keys": keys}}
            answer = await client.post("/v1/me/push", json=body, headers=auth)
            assert answer.status_code == 400, keys
            assert answer.json()["error"]["code"] == "bad_request", keys
        padded = {**good, "auth": b64url(b"0" * 16) + "=="}
        body = {"provider": "webpush", "subscription": subscription() | {"keys": padded}}
        answer = await client.post("/v1/me/push", json=body, headers=auth)
        assert answer.status_code == 200, answer.text


async def test_the_service_worker_is_served_at_the_root(fast: Settings) -> None:
    async with http_client(fast) as client:
        answer = await client.get("/sw.js")
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/javascript")
        assert 'addEventListener("push"' in answer.text
