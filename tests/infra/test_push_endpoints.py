"""Which Web Push endpoints the notifier POSTs to (infra/push/endpoints.py): the default
policy refuses every way of pointing it at an internal address or a host other than a
push service's, and at send time it connects only to public addresses, follows no
redirect, and reaches a trusted origin's local receiver only when that origin is listed.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import yarl
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from infra.push.endpoints import (
    MAX_ENDPOINT_CHARS,
    AddressRefused,
    EndpointPolicy,
    EndpointRefused,
    PublicOnlyResolver,
    is_public_address,
)
from infra.push.provider import Notification, Outcome
from infra.push.webpush import WebPush, b64url, raw_public_key
from infra.settings import Settings
from parley.wiring import push_http

pytestmark = pytest.mark.unit

DEFAULT = EndpointPolicy.from_settings(Settings())
DEFAULT_HOSTS = Settings().webpush_endpoint_hosts.split(",")


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://fcm.googleapis.com/fcm/send/dGVzdA:APA91bH-x_y",
        "https://fcm.googleapis.com/wp/dGVzdA",
        "https://updates.push.services.mozilla.com/wpush/v2/gAAAAABk",
        "https://wns2-par02p.notify.windows.com/w/?token=BQYAAABPS6Pn%2f0sal0z2V",
        "https://web.push.apple.com/QGuQyavXutnMH5GMDd",
        "https://fcm.googleapis.com:443/fcm/send/x",
        "https://FCM.GoogleAPIs.com/fcm/send/x",
    ],
)
def test_the_browsers_push_services_are_accepted(endpoint: str) -> None:
    assert DEFAULT.check(endpoint) == endpoint


@pytest.mark.parametrize(
    "endpoint",
    [
        # Internal addresses, however written.
        "http://127.0.0.1:15432/",
        "https://127.0.0.1/",
        "https://127.1/",
        "https://2130706433/",
        "https://0x7f.0.0.1/",
        "https://[::1]/",
        "https://[::ffff:127.0.0.1]/",
        "https://localhost/",
        "https://10.0.0.5/wp/x",
        "https://192.168.1.1/",
        "https://172.16.0.1/",
        "https://169.254.169.254/latest/meta-data/",
        "https://[fe80::1]/",
        "https://224.0.0.1/",
        # Not https, or not its port.
        "http://fcm.googleapis.com/fcm/send/x",
        "ftp://fcm.googleapis.com/x",
        "javascript:alert(1)",
        "https://fcm.googleapis.com:8443/fcm/send/x",
        "https://fcm.googleapis.com:80/fcm/send/x",
        "https://fcm.googleapis.com:0443/fcm/send/x",
        "https://fcm.googleapis.com:/fcm/send/x",
        "https://fcm.googleapis.com:99999/",
        # User info, and the parser tricks built on it.
        "https://fcm.googleapis.com@evil.example/",
        "https://user:pw@fcm.googleapis.com/fcm/send/x",
        "https://evil.example@fcm.googleapis.com/",
        "https://fcm.googleapis.com:443@evil.example/",
        "https://fcm.googleapis.com%40evil.example/",
        "https://evil.example\\@fcm.googleapis.com/",
        "https://evil.example#@fcm.googleapis.com/",
        "https://evil.example?@fcm.googleapis.com/",
        "https://fcm.googleapis.com#@evil.example/",
        # Hosts that only look like a push service's.
        "https://fcm.googleapis.com.evil.com/fcm/send/x",
        "https://evilfcm.googleapis.com/",
        "https://xfcm.googleapis.com/",
        "https://googleapis.com/",
        "https://notify.windows.com/w/",
        "https://evil-notify.windows.com/",
        "https://notify.windows.com.evil.com/",
        "https://push.apple.com.evil.com/",
        "https://fcm.googleapis.com./fcm/send/x",
        "https://fcm%2egoogleapis.com/",
        "https://fcm.googleapis.com%2f.evil.com/",
        "https://f\u0441m.googleapis.com/",  # a Cyrillic es for the c
        "https://xn--fm-ilc.googleapis.com/",
        # Not one plain URL.
        "https:fcm.googleapis.com/x",
        "https:/fcm.googleapis.com/x",
        "https:///fcm.googleapis.com/x",
        "https://fcm.googleapis.com/x y",
        "https://fcm.googleapis.com/x\r\nHost: evil",
        " https://fcm.googleapis.com/x",
        "https://fcm.googleapis.com/" + "x" * MAX_ENDPOINT_CHARS,
        "",
    ],
)
def test_the_default_refuses_internal_addresses_other_hosts_and_tricks(endpoint: str) -> None:
    with pytest.raises(EndpointRefused):
        DEFAULT.check(endpoint)


def test_a_trusted_origin_is_accepted_exactly_as_listed() -> None:
    policy = EndpointPolicy.from_settings(
        Settings(webpush_trusted_origins="http://127.0.0.1:18099, https://push.internal:8443")
    )
    assert policy.check("http://127.0.0.1:18099/wp/phone")
    assert policy.check("https://push.internal:8443/wp/phone")
    assert policy.check("https://fcm.googleapis.com/fcm/send/x")  # the hosts still are
    for other in (
        "http://127.0.0.1:18098/wp/phone",  # another port
        "https://127.0.0.1:18099/wp/phone",  # another scheme
        "http://127.0.0.2:18099/",
        "http://evil@127.0.0.1:18099/",
        "http://127.0.0.1:18099@evil.example/",
        "http://push.internal:8443/",
        "https://push.internal/",
    ):
        with pytest.raises(EndpointRefused):
            policy.check(other)
    assert policy.trusts_host("push.internal") and not policy.trusts_host("fcm.googleapis.com")


@pytest.mark.parametrize(
    "changes",
    [
        {"webpush_endpoint_hosts": "fcm.googleapis.com,http://x.example"},
        {"webpush_endpoint_hosts": "*"},
        {"webpush_trusted_origins": "127.0.0.1:18099"},
        {"webpush_trusted_origins": "ftp://127.0.0.1:21"},
    ],
)
def test_a_bad_setting_is_refused_at_start(changes: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="PARLEY_WEBPUSH_"):
        EndpointPolicy.from_settings(Settings().replace(**changes))


# Hostile endpoints, built from parts a URL can be made of: whatever `check` accepts,
# aiohttp's own parser (yarl) must read as https to a listed push service on port 443,
# with no user info.
_HOSTS = st.sampled_from(
    [
        "fcm.googleapis.com",
        "FCM.googleapis.com",
        "wns2-par02p.notify.windows.com",
        "web.push.apple.com",
        "updates.push.services.mozilla.com",
        "fcm.googleapis.com.evil.com",
        "evil.com",
        "notify.windows.com",
        "127.0.0.1",
        "127.1",
        "2130706433",
        "[::1]",
        "[::ffff:169.254.169.254]",
        "169.254.169.254",
        "10.0.0.1",
        "localhost",
        "fcm.googleapis.com.",
        "fcm%2egoogleapis.com",
        "",
    ]
)
_PUNCTUATION = st.sampled_from([*"@:/\\?#%.[]; \t\r\n", "%40", "%2f", "..", "\x00", "\u00e9"])
_NOISE = st.lists(st.one_of(_PUNCTUATION, st.characters(codec="ascii")), max_size=6).map("".join)


def _mostly(plain: str, hostile: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """`plain` half the time, so that the hostile parts meet the accepted ones."""
    return st.one_of(st.just(plain), hostile)


@st.composite
def hostile_endpoints(draw: Callable[..., Any]) -> str:
    schemes = st.sampled_from(["http://", "HTTPS://", "https:", "https:/", "https:///", ""])
    scheme = draw(_mostly("https://", schemes))
    user = draw(_mostly("", st.one_of(_HOSTS, _NOISE).map("{}@".format)))
    listed = st.sampled_from(["fcm.googleapis.com", "wns2-par02p.notify.windows.com"])
    host = draw(st.one_of(listed, _HOSTS, _NOISE, st.builds("{}{}".format, _HOSTS, _NOISE)))
    ports = st.sampled_from([":443", ":8443", ":80", ":", ":0443", ":15432", ":-1"])
    port = draw(_mostly("", ports))
    tail = draw(_mostly("", st.one_of(_NOISE, st.builds("{}{}".format, _PUNCTUATION, _HOSTS))))
    return f"{scheme}{user}{host}{port}/fcm/send/{tail}"


@settings(max_examples=600, deadline=None)
@given(hostile_endpoints())
def test_whatever_is_accepted_goes_to_a_push_service_over_https(endpoint: str) -> None:
    try:
        DEFAULT.check(endpoint)
    except EndpointRefused:
        return
    url = yarl.URL(endpoint)
    assert url.scheme == "https" and url.port == 443
    assert url.user is None and url.password is None
    assert url.host is not None and not url.host[-1].isdigit()
    assert any(
        url.host == host or (host.startswith("*.") and url.host.endswith(host[1:]))
        for host in DEFAULT_HOSTS
    )


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_any_text_is_accepted_or_refused_never_an_error(text: str) -> None:
    for endpoint in (text, f"https://{text}", f"https://fcm.googleapis.com{text}"):
        with contextlib.suppress(EndpointRefused):
            DEFAULT.check(endpoint)


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("142.250.74.10", True),
        ("2607:f8b0:4004:800::200a", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.0.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),  # shared address space (CGNAT)
        ("0.0.0.0", False),
        ("224.0.0.251", False),
        ("239.255.255.250", False),
        ("255.255.255.255", False),
        ("::1", False),
        ("::", False),
        ("fe80::1", False),
        ("fd00::1", False),
        ("ff02::1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:10.0.0.1", False),
        ("2002:a9fe:a9fe::1", False),  # 6to4 of 169.254.169.254
        ("64:ff9b::a9fe:a9fe", False),  # NAT64 of 169.254.169.254
        ("not an address", False),
    ],
)
def test_public_addresses(address: str, public: bool) -> None:
    assert is_public_address(address) is public


class StubDns(AbstractResolver):
    """Names to addresses, as a DNS answer would give them (the test cannot own DNS)."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if host not in self.answers:
            raise OSError(f"no such host {host}")
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in self.answers[host]
        ]

    async def close(self) -> None:
        return None


async def test_the_resolver_keeps_only_public_addresses() -> None:
    dns = StubDns(
        {
            "fcm.googleapis.com": ["142.250.74.10", "10.0.0.1"],
            "rebound.push.apple.com": ["127.0.0.1", "::1", "169.254.169.254"],
            "push.internal": ["10.0.0.7"],
        }
    )
    policy = EndpointPolicy.from_settings(
        Settings(webpush_trusted_origins="https://push.internal:8443")
    )
    resolver = PublicOnlyResolver(policy, dns)
    found = await resolver.resolve("fcm.googleapis.com", 443)
    assert [each["host"] for each in found] == ["142.250.74.10"]
    with pytest.raises(AddressRefused):
        await resolver.resolve("rebound.push.apple.com", 443)
    trusted = await resolver.resolve("push.internal", 8443)
    assert [each["host"] for each in trusted] == ["10.0.0.7"]


class LocalServer:
    """A push service on loopback that answers each POST with `answer` and counts them."""

    def __init__(self, answer: Callable[[], web.StreamResponse]) -> None:
        self.hits = 0
        self.port = 0
        self._answer = answer

    async def _post(self, request: web.Request) -> web.StreamResponse:
        self.hits += 1
        await request.read()
        return self._answer()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[LocalServer]:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._post)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = runner.addresses[0][1]
        try:
            yield self
        finally:
            await runner.cleanup()


def _target(endpoint: str) -> dict[str, Any]:
    key = ec.generate_private_key(ec.SECP256R1())
    return {
        "endpoint": endpoint,
        "keys": {
            "p256dh": b64url(raw_public_key(key.public_key())),
            "auth": b64url(os.urandom(16)),
        },
    }


NOTE = Notification("00000000-0000-0000-0000-000000000001", "Alice", 1, None)


@asynccontextmanager
async def webpush(
    tmp_path: Path, dns: StubDns, trusted: str = ""
) -> AsyncIterator[tuple[WebPush, Settings]]:
    settings = Settings(
        webpush_subject="mailto:ops@parley.test",
        webpush_vapid_key=str(tmp_path / "vapid.pem"),
        webpush_trusted_origins=trusted,
        push_timeout_s=5.0,
    )
    resolver = PublicOnlyResolver(EndpointPolicy.from_settings(settings), dns)
    async with push_http(settings, resolver) as client:
        yield WebPush(settings, client), settings


async def test_a_push_service_name_that_resolves_to_loopback_is_never_connected_to(
    tmp_path: Path,
) -> None:
    dns = StubDns({"fcm.googleapis.com": ["127.0.0.1"]})
    async with webpush(tmp_path, dns) as (provider, _):
        result = await provider.send(_target("https://fcm.googleapis.com/fcm/send/x"), NOTE)
    assert result.outcome is Outcome.FAILED and result.status == 0
    assert result.detail.startswith("address refused")


async def test_a_stored_endpoint_the_policy_refuses_is_not_sent_to(tmp_path: Path) -> None:
    async with LocalServer(lambda: web.Response(status=201)).running() as local:
        async with webpush(tmp_path, StubDns({})) as (provider, _):
            result = await provider.send(_target(f"http://127.0.0.1:{local.port}/wp/x"), NOTE)
        assert result.outcome is Outcome.FAILED and result.detail.startswith("endpoint refused")
        assert local.hits == 0


async def test_a_trusted_origin_reaches_its_local_receiver(tmp_path: Path) -> None:
    async with LocalServer(lambda: web.Response(status=201)).running() as local:
        origin = f"http://push.parley.test:{local.port}"
        dns = StubDns({"push.parley.test": ["127.0.0.1"]})
        async with webpush(tmp_path, dns, trusted=origin) as (provider, _):
            result = await provider.send(_target(f"{origin}/wp/phone"), NOTE)
        assert result.outcome is Outcome.SENT and local.hits == 1


async def test_a_redirect_is_not_followed(tmp_path: Path) -> None:
    async with LocalServer(lambda: web.Response(status=201)).running() as internal:
        elsewhere = f"http://127.0.0.1:{internal.port}/steal"
        redirect = LocalServer(lambda: web.Response(status=307, headers={"Location": elsewhere}))
        async with redirect.running() as local:
            origin = f"http://127.0.0.1:{local.port}"
            async with webpush(tmp_path, StubDns({}), trusted=origin) as (provider, _):
                result = await provider.send(_target(f"{origin}/wp/phone"), NOTE)
        assert result.outcome is Outcome.FAILED and result.status == 307
        assert local.hits == 1 and internal.hits == 0


def test_ip_literals_are_refused_by_the_policy_as_aiohttp_does_not_resolve_them() -> None:
    for endpoint in ("https://169.254.169.254/", "https://[::1]/", "https://8.8.8.8/"):
        with pytest.raises(EndpointRefused):
            DEFAULT.check(endpoint)
