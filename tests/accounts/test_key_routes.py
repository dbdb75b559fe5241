"""The key service of the accounts API (docs/e2e.md): devices publish public keys, others
fetch bundles that each take one one-time prekey, at most once, rate-limited."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import psycopg

from client.e2e.sessions import Device
from infra.settings import Settings
from tests.accounts.client import bearer, http_client, login, register


async def device_session(client: httpx.AsyncClient, device_id: str = "phone-1") -> dict[str, Any]:
    """A new user logged in on `device_id`: their id and auth header."""
    user_id, username, _ = await register(client)
    auth = bearer(await login(client, username, device_id=device_id))
    return {"user_id": user_id, "username": username, "auth": auth}


async def publish(client: httpx.AsyncClient, auth: dict[str, str], body: dict[str, Any]) -> Any:
    return await client.put("/v1/me/keys", json=body, headers=auth)


async def test_publish_count_fetch_and_the_device_list(fast: Settings) -> None:
    async with http_client(fast) as client:
        bob = await device_session(client)
        alice = await device_session(client)
        device = Device.create()
        body = device.upload_body()
        answer = await publish(client, bob["auth"], body)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {
            "device_id": "phone-1",
            "one_time_prekeys": 100,
            "device_list_changed": True,
        }
        listed = (
            await client.get(f"/v1/users/{bob['user_id']}/devices", headers=alice["auth"])
        ).json()
        assert listed["version"] == 1
        assert listed["devices"] == [{"device_id": "phone-1", "identity_key": body["identity_key"]}]

        fetched = await client.post(f"/v1/users/{bob['user_id']}/keys", headers=alice["auth"])
        bundle = fetched.json()["devices"][0]
        assert bundle["identity_key"] == body["identity_key"]
        assert bundle["signed_prekey"] == body["signed_prekey"]
        assert bundle["one_time_prekey"] in body["one_time_prekeys"]
        count = (await client.get("/v1/me/keys", headers=bob["auth"])).json()
        assert count == {"device_id": "phone-1", "one_time_prekeys": 99}

        # Publishing again (a rotated signed prekey) leaves the list as it was; sending
        # the whole set again does not put back the key handed out.
        device.rotate_signed_prekey()
        again = (await publish(client, bob["auth"], device.upload_body())).json()
        assert again["device_list_changed"] is False and again["one_time_prekeys"] == 99
        device.mark_uploaded(body)
        device.refill(left_on_server=10)  # 90 new ones, with new ids
        refilled = (await publish(client, bob["auth"], device.upload_body())).json()
        assert refilled["one_time_prekeys"] == 189
        rotated = await client.post(f"/v1/users/{bob['user_id']}/keys", headers=alice["auth"])
        assert (
            rotated.json()["devices"][0]["signed_prekey"]["key_id"]
            != bundle["signed_prekey"]["key_id"]
        )

        # A second device, then a new identity on the first: the version moves each time.
        tablet = bearer(await login(client, bob["username"], device_id="tablet"))
        await publish(client, tablet, Device.create().upload_body())
        await publish(client, bob["auth"], Device.create().upload_body())
        listed = (
            await client.get(f"/v1/users/{bob['user_id']}/devices", headers=alice["auth"])
        ).json()
        assert listed["version"] == 3
        assert [d["device_id"] for d in listed["devices"]] == ["phone-1", "tablet"]
        # Our own other devices, never the asking one.
        mine = (await client.post(f"/v1/users/{bob['user_id']}/keys", headers=tablet)).json()
        assert [d["device_id"] for d in mine["devices"]] == ["phone-1"]
        # Only the named devices.
        named = await client.post(
            f"/v1/users/{bob['user_id']}/keys",
            json={"device_ids": ["tablet"]},
            headers=alice["auth"],
        )
        assert [d["device_id"] for d in named.json()["devices"]] == ["tablet"]

        assert (await client.delete("/v1/me/keys", headers=tablet)).json() == {"removed": True}
        listed = (
            await client.get(f"/v1/users/{bob['user_id']}/devices", headers=alice["auth"])
        ).json()
        assert listed["version"] == 4 and len(listed["devices"]) == 1


async def test_a_bad_signature_or_a_bad_key_is_refused_with_a_stable_code(fast: Settings) -> None:
    async with http_client(fast) as client:
        bob = await device_session(client)
        body = Device.create().upload_body()
        other = Device.create().upload_body()
        forged = {**body, "signed_prekey": other["signed_prekey"]}  # signed by another identity
        answer = await publish(client, bob["auth"], forged)
        assert answer.status_code == 422
        assert answer.json()["error"]["code"] == "bad_signature"
        for broken in (
            {**body, "identity_key": "not base64!"},
            {**body, "identity_key": "AAAA"},
            {**body, "one_time_prekeys": [{"key_id": -1, "public_key": body["identity_key"]}]},
            {**body, "signed_prekey": None},
        ):
            answer = await publish(client, bob["auth"], broken)
            assert answer.status_code == 400 and answer.json()["error"]["code"] == "bad_request"
        # Nothing was stored by a refused upload.
        count = (await client.get("/v1/me/keys", headers=bob["auth"])).json()
        assert count["one_time_prekeys"] == 0


async def test_the_pool_is_bounded(fast: Settings) -> None:
    async with http_client(fast.replace(e2e_max_prekeys=150)) as client:
        bob = await device_session(client)
        device = Device.create()
        first = device.upload_body()
        assert (await publish(client, bob["auth"], first)).status_code == 200
        device.mark_uploaded(first)
        device.state.generate_pre_keys(100)
        answer = await publish(client, bob["auth"], device.upload_body())
        assert answer.status_code == 409
        assert answer.json()["error"]["code"] == "prekey_pool_full"


async def test_an_empty_pool_gives_bundles_without_a_one_time_prekey(fast: Settings) -> None:
    async with http_client(fast.replace(rate_key_bundle_burst=1000)) as client:
        bob = await device_session(client)
        alice = await device_session(client)
        body = Device.create().upload_body()
        body["one_time_prekeys"] = body["one_time_prekeys"][:2]
        await publish(client, bob["auth"], body)
        prekeys = []
        for _ in range(4):
            answer = await client.post(f"/v1/users/{bob['user_id']}/keys", headers=alice["auth"])
            prekeys.append(answer.json()["devices"][0]["one_time_prekey"])
        assert prekeys[2:] == [None, None]
        assert sorted(p["key_id"] for p in prekeys[:2]) == sorted(
            k["key_id"] for k in body["one_time_prekeys"]
        )


async def test_each_one_time_prekey_is_handed_out_at_most_once_under_1000_fetches(
    fast: Settings,
) -> None:
    async with http_client(fast.replace(rate_key_bundle_burst=5000)) as client:
        bob = await device_session(client)
        fetchers = [await device_session(client) for _ in range(4)]
        device = Device.create()
        body = device.upload_body()  # 100 one-time prekeys
        await publish(client, bob["auth"], body)

        async def fetch(i: int) -> Any:
            auth = fetchers[i % len(fetchers)]["auth"]
            answer = await client.post(f"/v1/users/{bob['user_id']}/keys", headers=auth)
            assert answer.status_code == 200, answer.text
            return answer.json()["devices"][0]["one_time_prekey"]

        handed = await asyncio.gather(*(fetch(i) for i in range(1000)))
        given = [p["key_id"] for p in handed if p is not None]
        assert len(given) == len(set(given)) == 100  # each once, and every one used
        assert handed.count(None) == 900
        with psycopg.connect(fast.pg_conninfo) as conn:
            left = conn.execute(
                "SELECT count(*) FROM e2e.prekeys WHERE user_id = %s", (bob["user_id"],)
            ).fetchone()
        assert left == (0,)


async def test_bundle_fetches_are_limited_per_requester_and_target(fast: Settings) -> None:
    async with http_client(
        fast.replace(rate_key_bundle_burst=3, rate_key_bundle_per_s=0.01)
    ) as client:
        bob = await device_session(client)
        carol = await device_session(client)
        alice = await device_session(client)
        for who in (bob, carol):
            await publish(client, who["auth"], Device.create().upload_body())
        codes = []
        for _ in range(4):
            answer = await client.post(f"/v1/users/{bob['user_id']}/keys", headers=alice["auth"])
            codes.append(answer.status_code)
        assert codes == [200, 200, 200, 429]
        # Another target, or another requester, has its own bucket.
        assert (
            await client.post(f"/v1/users/{carol['user_id']}/keys", headers=alice["auth"])
        ).status_code == 200
        assert (
            await client.post(f"/v1/users/{bob['user_id']}/keys", headers=carol["auth"])
        ).status_code == 200
