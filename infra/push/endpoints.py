"""Where the notifier may POST a Web Push: the push services' hosts, and public addresses.

A Web Push endpoint is a URL the client chose, and the notifier POSTs to it. Left open,
a user could have Parley's servers POST to an internal address (PostgreSQL's port, a
cloud's metadata service at 169.254.169.254, a private network) or to any host at all.
Two checks close that (docs/push.md, "Which endpoints are accepted"):

- `EndpointPolicy.check`, at registration and again before each send: an https URL on
  port 443, without user info or fragment, whose host is a push service's
  (`PARLEY_WEBPUSH_ENDPOINT_HOSTS`), or whose origin is exactly one that
  `PARLEY_WEBPUSH_TRUSTED_ORIGINS` lists (a local receiver in tests, a push service
  inside the operator's network);
- `PublicOnlyResolver`, when the connection is made: a push service's name is connected
  to only at the public addresses it resolves to, never at a loopback, private,
  link-local, multicast or reserved one, so a name pointed at an internal address
  (DNS rebinding included: the addresses checked are the ones connected to) is refused.
  The hosts of trusted origins are exempt; that is what listing one means.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

import yarl
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from infra.settings import Settings

MAX_ENDPOINT_CHARS = 1024
"""A browser's endpoint is a push service's origin and one opaque token, a few hundred
characters; this leaves room for longer tokens and bounds what one device stores."""

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOST_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})+")  # a DNS name: dotted, no trailing dot
_PRINTABLE = re.compile(r"[!-~]+")  # ASCII, no space, no control character
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class EndpointRefused(ValueError):
    """An endpoint the notifier will not POST to; the message says why."""


class AddressRefused(OSError):
    """A push service's name that resolves to no public address."""


@dataclass(frozen=True)
class EndpointPolicy:
    """Which Web Push endpoints are accepted: `hosts` are exact names (`push.example`)
    or any subdomain of one (`*.push.example`); `trusted` are exact origins, as
    (scheme, host, port), accepted whatever their scheme, port and address."""

    hosts: tuple[str, ...]
    trusted: frozenset[tuple[str, str, int]] = frozenset()

    @classmethod
    def from_settings(cls, settings: Settings) -> EndpointPolicy:
        hosts = tuple(_listed(settings.webpush_endpoint_hosts))
        for host in hosts:
            if not _HOST_NAME.fullmatch(host.removeprefix("*.")):
                raise ValueError(f"PARLEY_WEBPUSH_ENDPOINT_HOSTS: {host!r} is not a host name")
        trusted = set()
        for origin in _listed(settings.webpush_trusted_origins):
            parts = urlsplit(origin)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"PARLEY_WEBPUSH_TRUSTED_ORIGINS: {origin!r} is not an origin")
            trusted.add((parts.scheme, parts.hostname, _port(parts.scheme, parts.port)))
        return cls(hosts, frozenset(trusted))

    def check(self, endpoint: str) -> str:
        """The endpoint, if the notifier may POST to it; else `EndpointRefused`."""
        if len(endpoint) > MAX_ENDPOINT_CHARS:
            raise EndpointRefused(f"longer than {MAX_ENDPOINT_CHARS} characters")
        if not _PRINTABLE.fullmatch(endpoint) or "\\" in endpoint:
            raise EndpointRefused("not a plain ASCII URL")
        try:
            parts = urlsplit(endpoint)
            port = _port(parts.scheme, parts.port)
            parsed = yarl.URL(endpoint)
        except (ValueError, IndexError):  # yarl: IndexError on "https://[::1]@/"
            raise EndpointRefused("not a URL") from None
        host = parts.hostname or ""
        # What is checked must be what aiohttp connects to: two parsers, one answer.
        if (parsed.scheme, parsed.host, parsed.port) != (parts.scheme, host, port):
            raise EndpointRefused("an ambiguous URL")
        if "@" in parts.netloc:
            raise EndpointRefused("user info in the URL")
        if "#" in endpoint:
            raise EndpointRefused("a fragment in the URL")
        if (parts.scheme, host, port) in self.trusted:
            return endpoint
        if parts.scheme != "https":
            raise EndpointRefused("not https")
        if port != 443:
            raise EndpointRefused("a port other than 443")
        if not _HOST_NAME.fullmatch(host) or host.rsplit(".", 1)[-1].isdigit():
            raise EndpointRefused("not a push service's host name")
        if parts.netloc.lower() not in (host, f"{host}:443"):
            raise EndpointRefused("not a plain host and port")
        if not any(_matches(host, allowed) for allowed in self.hosts):
            raise EndpointRefused(f"{host} is not a push service this server sends to")
        return endpoint

    def trusts_host(self, host: str) -> bool:
        """Whether `host` is a trusted origin's: it may resolve to any address."""
        return any(host == trusted for _, trusted, _ in self.trusted)


def is_public_address(text: str) -> bool:
    """Whether an address is one on the public internet: not loopback, private,
    link-local, multicast, shared (CGNAT), reserved or unspecified, nor an IPv6 address
    that carries such an IPv4 one (mapped, 6to4, NAT64)."""
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(text)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        elif address.sixtofour is not None:
            address = address.sixtofour
        elif address in _NAT64:
            address = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.is_global and not address.is_multicast


class PublicOnlyResolver(AbstractResolver):
    """aiohttp's resolver, keeping only public addresses (`is_public_address`) for any
    host but a trusted origin's; a host left with none is refused (`AddressRefused`).

    aiohttp does not resolve an IP literal: `EndpointPolicy.check` refuses those unless
    their origin is trusted."""

    def __init__(self, policy: EndpointPolicy, inner: AbstractResolver | None = None) -> None:
        self._policy = policy
        self._inner = inner or DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        if self._policy.trusts_host(host):
            return found
        public = [each for each in found if is_public_address(each["host"])]
        if not public:
            raise AddressRefused(f"{host} resolves to no public address")
        return public

    async def close(self) -> None:
        await self._inner.close()


def _listed(value: str) -> list[str]:
    return [item.strip().lower() for item in value.split(",") if item.strip()]


def _port(scheme: str, port: int | None) -> int:
    return port if port is not None else {"https": 443, "http": 80}.get(scheme, 0)


def _matches(host: str, allowed: str) -> bool:
    if allowed.startswith("*."):
        return host.endswith(allowed[1:])
    return host == allowed
