"""One settings object, read from the environment, with defaults for a developer machine.

Every component takes its hosts, ports, names and limits from here; no other module
holds a literal host or port. Variables are named ``PARLEY_<FIELD>`` in upper case.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent


def _default_state_dir() -> str:
    return str(ROOT / ".state")


@dataclass(frozen=True)
class Settings:
    """Everything a Parley process needs to know about where things are and how big."""

    # Where the local stack keeps its data and logs (git-ignored).
    state_dir: str = field(default_factory=_default_state_dir)
    # Which services `parley stack` installs and runs here; the rest are external.
    managed_services: str = "kafka,postgres,redis,objectstore,zookeeper"

    kafka_bootstrap: str = "127.0.0.1:19092"
    kafka_controller_port: int = 19093
    kafka_version: str = "4.4.0"
    kafka_heap: str = "768m"
    topic_prefix: str = ""
    events_partitions: int = 12
    commands_partitions: int = 12
    replication_factor: int = 1
    min_insync_replicas: int = 1

    pg_host: str = "127.0.0.1"
    pg_port: int = 15432
    pg_user: str = "parley"
    pg_password: str = "parley"
    pg_db: str = "parley"

    redis_url: str = "redis://127.0.0.1:16379/0"
    redis_max_connections: int = 200

    # The S3-compatible object store for media (docs/media.md). Any S3 endpoint works; the
    # stack runs SeaweedFS here, its other ports counted up from the S3 port.
    s3_endpoint: str = "http://127.0.0.1:18333"
    s3_region: str = "us-east-1"
    s3_bucket: str = "parley-media"
    s3_access_key: str = "parley"
    s3_secret_key: str = "parley-dev-only-s3-secret-set-PARLEY_S3_SECRET_KEY-in-production"

    health_deadline_s: float = 60.0
    # Parley's own loggers: "info", or "debug" for each command's trail of ids.
    log_level: str = "info"

    # Every `parley serve` service: the young generation of Python's garbage collector is
    # collected every this many allocations (Python's default: 700; 0 keeps it).
    gc_gen0_threshold: int = 20_000
    # Services off the live path (relay, workers, notifier) run at this `nice` (0: none).
    off_path_nice: int = 5

    # The write side.
    aggregate_cache_size: int = 10_000
    max_body_bytes: int = 64 * 1024
    max_group_members: int = 256
    edit_window_s: float = 15 * 60  # a sender may edit a text message this long
    delete_window_s: float = 2 * 24 * 3600  # and delete a message for everyone this long
    disappearing_timers_s: str = "0,86400,604800,7776000"  # the timers a chat offers
    forward_max_chats: int = 5  # a `forward` reaches at most this many chats at once
    processor_group: str = ""  # empty: <topic prefix>parley-processor
    processor_batch_max: int = 500
    processor_linger_ms: int = 2
    # How long the broker may hold the processor's fetch when no command is there. It
    # answers as soon as one is, so this bounds only idle polling (docs/performance.md).
    processor_fetch_wait_ms: int = 500
    # Each processor deletes from the commands topic, this often, the commands it has
    # decided and committed (a send carries its body in plaintext: docs/log.md). 0: never;
    # the topic's retention (7 days) then drops them.
    commands_truncate_interval_s: float = 5.0
    # Who publishes stored events to `parley.events` (docs/log.md): "relay" (the relay
    # service reads them back from the store) or "processor" (the processor, right after
    # its save; no relay runs). Its producer waits `processor_publish_linger_ms` to send
    # the batches of those milliseconds in one request (off the live path).
    events_publisher: str = "relay"
    processor_publish_linger_ms: int = 20
    snowflake_lease_ttl_ms: int = 15_000
    command_timeout_s: float = 10.0
    receipt_window_ms: int = 200  # a connection's receipts per chat coalesced within it

    # The relay (event store -> Kafka `parley.events`).
    relay_name: str = "parley"
    relay_batch_max: int = 500
    relay_poll_s: float = 1.0
    relay_linger_ms: int = 50  # after a wake-up, wait this long for more commits

    # Accounts and access (commands service HTTP, tokens, passwords, rate limits; docs/auth.md).
    commands_host: str = "127.0.0.1"
    commands_port: int = 18080
    max_request_bytes: int = 16 * 1024
    # Proxies whose X-Forwarded-For both HTTP services believe (addresses or networks,
    # comma-separated); empty: none, a client's address is its socket's peer.
    trusted_proxies: str = ""
    # Empty: a random secret made at first start, `<state_dir>/secrets/jwt_secret` (0600).
    jwt_secret: str = ""
    jwt_issuer: str = "parley"
    jwt_audience: str = "parley-clients"
    jwt_leeway_s: int = 5
    access_token_ttl_s: int = 15 * 60
    refresh_token_ttl_s: int = 30 * 24 * 3600
    argon2_time_cost: int = 3
    argon2_memory_kib: int = 64 * 1024
    argon2_parallelism: int = 4
    password_hash_concurrency: int = 4
    rate_send_user_burst: int = 60
    rate_send_user_per_s: float = 10.0
    rate_send_connection_burst: int = 30
    rate_send_connection_per_s: float = 5.0
    rate_group_change_user_burst: int = 20
    rate_group_change_user_per_s: float = 0.5
    rate_group_change_connection_burst: int = 10
    rate_group_change_connection_per_s: float = 0.25
    rate_login_account_burst: int = 10
    rate_login_account_per_s: float = 0.05
    rate_login_address_burst: int = 30
    rate_login_address_per_s: float = 0.5
    rate_register_address_burst: int = 10
    rate_register_address_per_s: float = 0.02
    rate_media_upload_user_burst: int = 30
    rate_media_upload_user_per_s: float = 0.5
    rate_lookup_user_burst: int = 20
    rate_lookup_user_per_s: float = 0.1
    # Prekey bundles fetched by one user of one other user's devices (docs/e2e.md): each
    # fetch takes a one-time prekey of every device, so it is what drains a pool.
    rate_key_bundle_burst: int = 10
    rate_key_bundle_per_s: float = 0.2

    # End-to-end encryption keys (docs/e2e.md).
    e2e_max_prekeys: int = 500
    """One-time prekeys a device may hold on the server."""

    # Media (docs/media.md): per-kind size limits, URL lifetimes, the probe's limits, GC.
    media_max_image_bytes: int = 16 * 1024 * 1024
    media_max_video_bytes: int = 100 * 1024 * 1024
    media_max_audio_bytes: int = 16 * 1024 * 1024
    media_max_document_bytes: int = 2 * 1024 * 1024 * 1024
    media_upload_url_ttl_s: int = 600
    media_download_url_ttl_s: int = 300
    media_max_pixels: int = 40_000_000  # beyond it an image is refused as a bomb
    media_max_duration_s: float = 3 * 3600.0  # a longer video or sound is refused
    media_thumbnail_px: int = 160
    media_probe_memory_mib: int = 1024
    media_probe_cpu_s: int = 20
    media_probe_timeout_s: float = 30.0
    media_probe_concurrency: int = 2
    media_gc_grace_s: float = 3600.0
    media_unsent_grace_s: float = 24 * 3600.0
    media_gc_interval_s: float = 300.0
    media_part_min_bytes: int = 8 * 1024 * 1024  # a multipart upload's parts (docs/media.md)
    media_part_max_bytes: int = 64 * 1024 * 1024
    media_max_parts: int = 1000
    media_multipart_ttl_s: float = 24 * 3600.0  # to PUT every part and complete
    media_sweep_interval_s: float = 3600.0  # the retention sweep's rounds (docs/media.md)
    media_sweep_batch: int = 500  # uploads decided per query of a sweep round
    # The objects of deleted and disappeared messages (commands/media/erasure.py): looked
    # at this often, once their note is this old (a forward's copy in flight is stored).
    media_erase_interval_s: float = 10.0
    media_erase_grace_s: float = 60.0

    # The Faust workers and the projections.
    workers_app_id: str = ""  # empty: <topic prefix>parley-workers
    workers_batch_max: int = 500
    # A batch that finds nothing more waiting waits this long after its first event for
    # more (the workers are off the live path; at light load a batch of one event costs
    # almost what a batch of fifty does). 0: a batch is whatever is ready.
    workers_linger_ms: int = 50
    workers_session_timeout_s: float = 10.0
    inbox_ttl_days: float = 30.0
    inbox_expiry_interval_s: float = 3600.0
    message_expiry_interval_s: float = 10.0  # disappearing messages are erased this often

    # The WebSocket gateway (on the commands service).
    ws_send_queue: int = 1000
    ws_heartbeat_s: float = 20.0
    ws_max_frame_bytes: int = 96 * 1024  # a 64 KiB body, base64 in its JSON frame
    ws_allowed_origins: str = ""  # empty: the commands service's own address (below)
    # Each gateway's PostgreSQL connections (sync, typing's members, command checks).
    gateway_pool_size: int = 8
    # How long a sync waits for the projections of the user's chats to reach what is
    # stored before it answers with what is there (docs/protocol.md); no connection is
    # held while it waits.
    sync_settle_timeout_s: float = 5.0

    # Scaling out on one machine (docs/scaling.md): how many of each process `parley up`
    # starts. With more than one gateway, HAProxy takes `commands_port` and balances it
    # over the gateways, gateway i (from 1) listening on `gateway_base_port + i`.
    gateways: int = 1
    # The gateway's producer waits this long for more commands before a request (one
    # request then carries every partition's records); librdkafka's `linger.ms`.
    gateway_linger_ms: int = 5
    processors: int = 1
    workers: int = 1
    gateway_base_port: int = 18100
    balancer_check_ms: int = 1000  # HAProxy's health check of each gateway's /healthz
    # How long a check may wait for the answer. HAProxy's default is `balancer_check_ms`:
    # with 1 s, gateways admitting 30,000 sockets on a loaded machine answered later,
    # were taken out in turn, and 701 connects met a balancer with no gateway (503).
    balancer_check_timeout_ms: int = 3000
    balancer_fall: int = 2  # failed checks before HAProxy stops routing to a gateway
    balancer_maxconn: int = 40_000
    # HAProxy's gateways come from the registry (`parley serve balancer`, infra/balancer.py)
    # into this many server slots; the runtime API sockets it fills (comma-separated;
    # empty: the one of the stack's HAProxy, in its state folder).
    balancer_slots: int = 16
    balancer_api: str = ""
    # SIGTERM on a gateway: how long it waits for the balancer to see it draining, then
    # for its clients (told to reconnect, close 1012) to leave, before it exits anyway.
    gateway_drain_notice_s: float = 5.0
    gateway_drain_s: float = 10.0

    # `GET /metrics` of the services that serve no HTTP (docs/observability.md), each on
    # a port of its own; with several of a kind (`processors`, `workers`), instance i
    # (from 1) listens on the port + i. 0: no `/metrics` for that service.
    metrics_host: str = "127.0.0.1"
    processor_metrics_port: int = 18120
    workers_metrics_port: int = 18130
    relay_metrics_port: int = 18140
    notifier_metrics_port: int = 18150

    # The registry of live gateways (docs/scaling.md): "redis" (a lease key per gateway)
    # or "zookeeper" (an ephemeral sequential znode per gateway; `parley stack` then runs
    # ZooKeeper). Each gateway reports its address and connection count every
    # `registry_report_s`; `gateway_public_url` is the address it reports (empty: the
    # ws:// URL of the socket it listens on). In Redis each report renews the gateway's
    # lease for `registry_lease_s`: one that dies without leaving is listed that long.
    registry: str = "redis"
    registry_report_s: float = 5.0
    registry_lease_s: float = 15.0
    gateway_public_url: str = ""
    zookeeper_hosts: str = "127.0.0.1:12181"
    zookeeper_version: str = "3.9.5"
    zookeeper_heap: str = "128m"
    zookeeper_tick_ms: int = 500
    zookeeper_session_timeout_ms: int = 4_000
    zookeeper_root: str = "/parley"

    # The queries service (HTTP read API; docs/queries.md).
    queries_host: str = "127.0.0.1"
    queries_port: int = 18081
    queries_pool_size: int = 10
    read_your_writes_timeout_s: float = 2.0
    queries_ready_max_lag: int = 10_000
    queries_statement_timeout_ms: int = 5_000

    # Push notifications (docs/push.md): the notifier and its providers, each off until
    # configured (Web Push by its VAPID subject, FCM by its service-account file, APNs by
    # its .p8 key).
    push_grace_s: float = 3.0  # a message not delivered within this gets a push
    push_max_age_s: float = 3600.0  # older messages never get one (bounds a replay)
    push_poll_s: float = 0.2
    push_batch_max: int = 200
    push_max_tries: int = 5  # then the notification goes to the dead-letter topic
    push_backoff_s: float = 1.0  # doubled each try, up to push_backoff_max_s
    push_backoff_max_s: float = 300.0
    push_ttl_s: int = 24 * 3600  # how long a provider keeps an undelivered push
    push_record_days: float = 7.0  # the record of what was sent, kept this long
    push_timeout_s: float = 10.0
    # Pushes in flight at once. A notifier killed mid-batch may send these again after its
    # restart (the provider took them, the record had not been written yet); each
    # provider's collapse key makes such a copy replace the notification it repeats.
    push_concurrency: int = 32
    notifier_group: str = ""  # empty: <topic prefix>parley-notifier
    webpush_subject: str = ""  # e.g. mailto:ops@example.com; empty: Web Push off
    webpush_vapid_key: str = ""  # a PEM file; empty: <state_dir>/push/vapid.pem, made once
    # The push services a Web Push endpoint may point at (infra/push/endpoints.py): a
    # host, or `*.` and any subdomain of one. The browsers' own: Chrome's FCM, Firefox's
    # autopush, Edge's WNS on Windows, Safari's (WebKit asks servers that restrict
    # endpoints to allow every subdomain of push.apple.com).
    webpush_endpoint_hosts: str = (
        "fcm.googleapis.com,updates.push.services.mozilla.com,*.notify.windows.com,*.push.apple.com"
    )
    # Origins (`scheme://host:port`) accepted as they are, on any address, loopback and
    # private included: a local receiver in tests, a push service inside your network.
    webpush_trusted_origins: str = ""
    fcm_service_account: str = ""  # the JSON key file; empty: FCM off
    fcm_base_url: str = "https://fcm.googleapis.com"
    fcm_token_url: str = ""  # empty: the service account's token_uri
    apns_key_path: str = ""  # the .p8 key; empty: APNs off
    apns_key_id: str = ""
    apns_team_id: str = ""
    apns_topic: str = ""  # the app's bundle id
    apns_base_url: str = "https://api.push.apple.com"
    apns_ca_file: str = ""  # a CA bundle to trust instead of the system's (tests)

    # `parley bench` (docs/performance.md): the Redis database of its private services,
    # flushed at the start of each run, and the ejabberd peer's loopback ports.
    bench_redis_db: int = 14
    bench_ejabberd_port: int = 15280
    # The pause before a measured window: the warm-up's receipts and reads (sent a second
    # after delivery) pass, and idle connections settle before their memory is read. The
    # tests' tiny runs are through in well under 1.5 s, so they set that.
    bench_settle_s: float = 5.0

    # `parley replay` (docs/replay.md). `events_topic` names the events topic outright
    # (e.g. one rebuilt by `parley replay republish`); empty: `<topic_prefix>parley.events`.
    events_topic: str = ""
    replay_batch_max: int = 5_000
    replay_pause_below: int = 2_000  # pause the workers once the shadow is this close
    replay_swap_lock_timeout_ms: int = 2_000
    replay_swap_attempts: int = 5
    bench_replay_redis_db: int = 11  # `parley bench replay` writes its cache here

    @property
    def kafka_host_port(self) -> tuple[str, int]:
        first = self.kafka_bootstrap.split(",")[0]
        host, _, port = first.rpartition(":")
        return host, int(port)

    @property
    def s3_host_port(self) -> tuple[str, int]:
        parts = urlsplit(self.s3_endpoint)
        default = 443 if parts.scheme == "https" else 80
        return parts.hostname or "127.0.0.1", parts.port or default

    @property
    def zookeeper_host_port(self) -> tuple[str, int]:
        host, _, port = self.zookeeper_hosts.split(",")[0].rpartition(":")
        return host, int(port)

    @property
    def redis_host_port(self) -> tuple[str, int]:
        parts = urlsplit(self.redis_url)
        return parts.hostname or "127.0.0.1", parts.port or 6379

    @property
    def pg_conninfo(self) -> str:
        return (
            f"host={self.pg_host} port={self.pg_port} user={self.pg_user} "
            f"password={self.pg_password} dbname={self.pg_db}"
        )

    @property
    def allowed_origins(self) -> list[str]:
        """Browser origins the WebSocket and the query API's CORS accept: the listed
        ones, or by default the commands service's own address (where the web client is
        served), so moving its port needs nothing else."""
        listed = [o.strip() for o in self.ws_allowed_origins.split(",") if o.strip()]
        if listed:
            return listed
        own = [f"http://{self.commands_host}:{self.commands_port}"]
        if self.commands_host in ("127.0.0.1", "0.0.0.0"):
            own.append(f"http://localhost:{self.commands_port}")
        return own

    @property
    def processor_group_id(self) -> str:
        """The processors' consumer group: one per set of topics, never shared across them."""
        return self.processor_group or self.topic("parley-processor")

    @property
    def workers_group_id(self) -> str:
        """The Faust app id (its consumer group), likewise one per set of topics."""
        return self.workers_app_id or self.topic("parley-workers")

    @property
    def notifier_group_id(self) -> str:
        """The notifier's consumer group, one per set of topics."""
        return self.notifier_group or self.topic("parley-notifier")

    def topic(self, name: str) -> str:
        """The full Kafka topic name for one of Parley's logical topics."""
        if name == "parley.events" and self.events_topic:
            return self.events_topic
        return f"{self.topic_prefix}{name}"

    def is_managed(self, service: str) -> bool:
        return service in {s.strip() for s in self.managed_services.split(",") if s.strip()}

    def replace(self, **changes: Any) -> Settings:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return Settings(**values)


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    """Read ``PARLEY_*`` variables over the defaults; a bad value names its variable."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in fields(Settings):
        key = f"PARLEY_{f.name.upper()}"
        if key not in env:
            continue
        raw = env[key]
        kind = f.type if isinstance(f.type, str) else f.type.__name__
        try:
            if kind == "int":
                values[f.name] = int(raw)
            elif kind == "float":
                values[f.name] = float(raw)
            else:
                values[f.name] = raw
        except ValueError as exc:
            raise ValueError(f"{key}={raw!r} is not a valid {kind}") from exc
    publisher = values.get("events_publisher", "relay")
    if publisher not in ("relay", "processor"):
        raise ValueError(f"PARLEY_EVENTS_PUBLISHER={publisher!r} is not relay or processor")
    return Settings(**values)
