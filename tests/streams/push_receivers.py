"""Local push receivers that check what real providers check, started by the tests.

- `WebPushReceiver`: a push service endpoint (RFC 8030) that verifies the VAPID JWT
  (RFC 8292: ES256 under the key in `k`, audience its own origin, expiry within 24 h)
  and decrypts the aes128gcm body (RFC 8291) with `http_ece`, an implementation other
  than Parley's; the browser's side of each subscription is made here.
- `FcmReceiver`: an OAuth2 token endpoint that verifies the service account's RS256
  assertion, and the FCM v1 `messages:send` endpoint that checks the access token.
- `ApnsReceiver`: APNs over HTTP/2 with TLS (a self-signed certificate made here) that
  verifies the ES256 provider token.

Each answers 201/200 unless a test scripted other answers for a device (`answer`):
404, 410, 429 with Retry-After, 5xx. What arrived is kept per device, and so is what
a device would show: the last notification of each collapse key.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import secrets
import socket
import ssl
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import h2.config
import h2.connection
import h2.events
import http_ece
import jwt
import orjson
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bench.servers import free_port
from infra.http import serve
from infra.push.webpush import b64url, raw_public_key, unb64url


@dataclass
class Arrival:
    device: str
    payload: dict[str, Any]
    collapse: str
    at: float
    headers: dict[str, str]


@dataclass
class Receiver:
    """What every receiver shares: scripted answers, arrivals, rejections, its server."""

    port: int = field(default_factory=free_port)
    arrivals: dict[str, list[Arrival]] = field(default_factory=lambda: defaultdict(list))
    attempts: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    rejected: list[str] = field(default_factory=list)
    scripted: dict[str, deque[tuple[int, dict[str, str]]]] = field(
        default_factory=lambda: defaultdict(deque)
    )
    delay_s: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def answer(
        self, device: str, status: int, times: int = 1, headers: dict[str, str] | None = None
    ) -> None:
        """The next `times` pushes to `device` get `status` (with `headers`)."""
        for _ in range(times):
            self.scripted[device].append((status, headers or {}))

    def shown(self, device: str) -> dict[str, dict[str, Any]]:
        """What the device displays: per collapse key, the last notification."""
        return {a.collapse: a.payload for a in self.arrivals[device]}

    def _next_answer(self, device: str) -> tuple[int, dict[str, str]] | None:
        with self._lock:
            self.attempts[device].append(time.monotonic())
            queue = self.scripted[device]
            return queue.popleft() if queue else None

    def start(self, app: Starlette) -> None:
        thread = threading.Thread(
            target=serve, args=(app, "receiver", "127.0.0.1", self.port, self._stop), daemon=True
        )
        thread.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.02)
        raise AssertionError("the receiver did not start")

    def stop(self) -> None:
        self._stop.set()


@dataclass
class Subscription:
    """The browser's side of one Web Push subscription."""

    device: str
    private_key: ec.EllipticCurvePrivateKey
    auth: bytes

    def as_json(self, origin: str) -> dict[str, Any]:
        return {
            "endpoint": f"{origin}/wp/{self.device}",
            "keys": {
                "p256dh": b64url(raw_public_key(self.private_key.public_key())),
                "auth": b64url(self.auth),
            },
        }


class WebPushReceiver(Receiver):
    def __init__(self) -> None:
        super().__init__()
        self.subscriptions: dict[str, Subscription] = {}
        self.start(Starlette(routes=[Route("/wp/{device}", self._push, methods=["POST"])]))

    def subscribe(self, device: str) -> dict[str, Any]:
        """A new subscription for `device`, as `PushSubscription.toJSON()` gives it."""
        sub = Subscription(device, ec.generate_private_key(ec.SECP256R1()), secrets.token_bytes(16))
        self.subscriptions[device] = sub
        return sub.as_json(self.origin)

    async def _push(self, request: Request) -> Response:
        device = request.path_params["device"]
        sub = self.subscriptions.get(device)
        if sub is None:
            return Response(status_code=404)
        problem = self._check_vapid(request.headers.get("authorization", ""))
        if problem:
            self.rejected.append(problem)
            return Response(problem, status_code=401)
        if request.headers.get("content-encoding") != "aes128gcm":
            self.rejected.append("content-encoding")
            return Response(status_code=415)
        body = await request.body()
        try:
            plain = http_ece.decrypt(
                body, private_key=sub.private_key, auth_secret=sub.auth, version="aes128gcm"
            )
        except Exception as exc:
            self.rejected.append(f"decrypt: {exc!r}")
            return Response(status_code=400)
        scripted = self._next_answer(device)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if scripted is not None:
            status, headers = scripted
            return Response(status_code=status, headers=headers)
        self.arrivals[device].append(
            Arrival(
                device,
                orjson.loads(plain),
                request.headers.get("topic", ""),
                time.monotonic(),
                dict(request.headers),
            )
        )
        return Response(status_code=201)

    def _check_vapid(self, header: str) -> str:
        scheme, _, rest = header.partition(" ")
        if scheme != "vapid":
            return "not a vapid authorization"
        params = dict(part.strip().split("=", 1) for part in rest.split(","))
        try:
            key = ec.EllipticCurvePublicKey.from_encoded_point(
                ec.SECP256R1(), unb64url(params["k"])
            )
            claims = jwt.decode(params["t"], key, algorithms=["ES256"], audience=self.origin)
        except (KeyError, ValueError, jwt.PyJWTError) as exc:
            return f"vapid: {exc!r}"
        if claims["exp"] - time.time() > 24 * 3600:
            return "vapid: exp more than 24 hours ahead"
        if not str(claims.get("sub", "")).startswith(("mailto:", "https:")):
            return "vapid: sub must be a mailto: or https: URL"
        return ""


class FcmReceiver(Receiver):
    """The token endpoint at /token and FCM at /v1/projects/{project}/messages:send."""

    def __init__(self, project: str = "parley-test") -> None:
        super().__init__()
        self.project = project
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.public_key = key.public_key()
        self.service_account = {
            "type": "service_account",
            "project_id": project,
            "client_email": f"push@{project}.iam.gserviceaccount.com",
            "private_key": key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ).decode(),
            "token_uri": f"{self.origin}/token",
        }
        self.tokens_issued = 0
        self._access: set[str] = set()
        self.registered: set[str] = set()
        self.start(
            Starlette(
                routes=[
                    Route("/token", self._token, methods=["POST"]),
                    Route("/v1/projects/{project}/messages:send", self._send, methods=["POST"]),
                ]
            )
        )

    async def _token(self, request: Request) -> Response:
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return JSONResponse({"error": "unsupported_grant_type"}, 400)
        try:
            claims = jwt.decode(
                str(form.get("assertion")),
                self.public_key,
                algorithms=["RS256"],
                audience=f"{self.origin}/token",
                issuer=self.service_account["client_email"],
            )
        except jwt.PyJWTError as exc:
            self.rejected.append(f"assertion: {exc!r}")
            return JSONResponse({"error": "invalid_grant"}, 400)
        if "firebase.messaging" not in claims.get("scope", ""):
            return JSONResponse({"error": "invalid_scope"}, 400)
        token = secrets.token_urlsafe(24)
        self._access.add(token)
        self.tokens_issued += 1
        return JSONResponse({"access_token": token, "expires_in": 3599, "token_type": "Bearer"})

    async def _send(self, request: Request) -> Response:
        bearer = request.headers.get("authorization", "").removeprefix("Bearer ")
        if bearer not in self._access or request.path_params["project"] != self.project:
            self.rejected.append("fcm: bad access token or project")
            return JSONResponse({"error": {"code": 401, "status": "UNAUTHENTICATED"}}, 401)
        message = (await request.json())["message"]
        device = message["token"]
        if device not in self.registered:
            return JSONResponse({"error": {"code": 404, "status": "NOT_FOUND"}}, 404)
        scripted = self._next_answer(device)
        if scripted is not None:
            status, headers = scripted
            return JSONResponse({"error": {"code": status}}, status, headers=headers)
        collapse = message.get("android", {}).get("collapse_key", "")
        self.arrivals[device].append(
            Arrival(device, message["data"], collapse, time.monotonic(), dict(request.headers))
        )
        return JSONResponse({"name": f"projects/{self.project}/messages/{secrets.token_hex(8)}"})


class ApnsReceiver:
    """APNs over HTTP/2 and TLS (a certificate made here, for 127.0.0.1): checks the
    provider token (ES256 under the team's key, `kid` and `iss` as configured, at most an
    hour old), the topic and the push type, then answers like APNs."""

    def __init__(self, home: Path, team_id: str = "TEAM123456", key_id: str = "KEY1234567") -> None:
        self.team_id, self.key_id, self.topic = team_id, key_id, "org.parley.app"
        self.port = free_port()
        key = ec.generate_private_key(ec.SECP256R1())
        self.public_key = key.public_key()
        self.key_path = home / "apns.p8"
        self.key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        self.cert_path, tls_key_path = home / "apns-cert.pem", home / "apns-key.pem"
        _self_signed(self.cert_path, tls_key_path)
        self.arrivals: dict[str, list[Arrival]] = defaultdict(list)
        self.rejected: list[str] = []
        self.scripted: dict[str, deque[int]] = defaultdict(deque)
        self.protocols: set[str] = set()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_path, tls_key_path)
        context.set_alpn_protocols(["h2"])
        self._loop = asyncio.new_event_loop()
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._connection, "127.0.0.1", self.port, ssl=context)
            )
            started.set()
            self._loop.run_forever()

        threading.Thread(target=run, daemon=True).start()
        assert started.wait(10), "the APNs receiver did not start"

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def answer(self, device: str, status: int) -> None:
        self.scripted[device].append(status)

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ssl_object = writer.get_extra_info("ssl_object")
        self.protocols.add(ssl_object.selected_alpn_protocol() or "http/1.1")
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        headers: dict[int, dict[str, str]] = {}
        bodies: dict[int, bytes] = defaultdict(bytes)
        while data := await reader.read(65536):
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.RequestReceived):
                    headers[event.stream_id] = {_text(k): _text(v) for k, v in event.headers or []}
                elif isinstance(event, h2.events.DataReceived):
                    bodies[event.stream_id] += event.data or b""
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamEnded):
                    stream = event.stream_id
                    status, body = self._answer(headers.pop(stream), bodies.pop(stream, b""))
                    conn.send_headers(stream, [(":status", str(status)), ("apns-id", "x")])
                    conn.send_data(stream, body, end_stream=True)
            writer.write(conn.data_to_send())
            await writer.drain()
        writer.close()

    def _answer(self, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        try:
            claims = jwt.decode(
                token, self.public_key, algorithms=["ES256"], options={"verify_exp": False}
            )
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError as exc:
            self.rejected.append(f"token: {exc!r}")
            return 403, b'{"reason":"InvalidProviderToken"}'
        if scheme != "bearer" or kid != self.key_id or claims.get("iss") != self.team_id:
            self.rejected.append("token: kid or iss")
            return 403, b'{"reason":"InvalidProviderToken"}'
        if time.time() - claims["iat"] > 3600:
            return 403, b'{"reason":"ExpiredProviderToken"}'
        if headers.get("apns-topic") != self.topic or headers.get("apns-push-type") != "alert":
            self.rejected.append("topic or push type")
            return 400, b'{"reason":"TopicDisallowed"}'
        device = headers[":path"].removeprefix("/3/device/")
        queue = self.scripted[device]
        if queue:
            status = queue.popleft()
            reason = {410: "Unregistered", 429: "TooManyRequests"}.get(
                status, "InternalServerError"
            )
            return status, orjson.dumps({"reason": reason, "timestamp": int(time.time() * 1000)})
        payload = orjson.loads(body)
        self.arrivals[device].append(
            Arrival(device, payload, headers.get("apns-collapse-id", ""), time.monotonic(), headers)
        )
        return 200, b""


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _self_signed(cert_path: Path, key_path: Path) -> None:
    """A certificate for 127.0.0.1 and its key, each as PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
