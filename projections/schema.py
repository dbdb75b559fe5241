"""The read-model tables (SQLAlchemy Core), and the one migrator of Parley's tables.

`migrate(settings)` creates every table Parley keeps in PostgreSQL besides the event
stores (which the eventsourcing library creates): the read model in `read`, and
`OWN_TABLES`, the tables written outside the projections (the user directory, last seen,
the relay's position, replay runs, media uploads, the message keys; the event store
creates these too when it opens). The composition root runs it before any service
starts (`parley up`, `parley serve`); nothing else creates tables at start-up.

Every projection lives in one PostgreSQL schema (`read` when live); a rebuild fills a
shadow schema with the same tables side by side and swaps names in one transaction.
Each projection keeps its checkpoint (Kafka partition -> last applied offset) in the
same schema, written in the same transaction as its rows.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    Uuid,
    create_engine,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from infra.message_keys import KEYS_DDL
from infra.settings import Settings
from projections.directory import DIRECTORY_DDL
from projections.key_store import E2E_DDL
from projections.push_store import PUSH_DDL

LIVE_SCHEMA = "read"

metadata = MetaData()

checkpoints = Table(
    "checkpoints",
    metadata,
    Column("projection", String(32), primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("offset", BigInteger, nullable=False),
)

# The newest event version of each chat a projection has applied: a re-published event
# (same chat, same or older version) is dropped, whatever its offset.
chat_versions = Table(
    "chat_versions",
    metadata,
    Column("projection", String(32), primary_key=True),
    Column("chat_id", Uuid, primary_key=True),
    Column("version", BigInteger, nullable=False),
)

chats = Table(
    "chats",
    metadata,
    Column("chat_id", Uuid, primary_key=True),
    Column("kind", String(8), nullable=False),  # direct | group
    Column("name", Text),
    Column("created_by", Uuid, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("last_seq", BigInteger, nullable=False, server_default="0"),
    Column("last_message_id", BigInteger),
    Column("last_sender", Uuid),
    Column("last_activity_at", DateTime(timezone=True), nullable=False),
    Column("position", BigInteger, nullable=False, server_default="0"),
    # The newest message that is no action on another (a reaction, an edit, a delete):
    # the chat list's last message (migration 6). `last_seq` counts every message.
    Column("last_message_seq", BigInteger),
)

members = Table(
    "members",
    metadata,
    Column("chat_id", Uuid, primary_key=True),
    Column("user_id", Uuid, primary_key=True),
    Column("role", String(8), nullable=False),  # admin | member
    Column("active", Boolean, nullable=False),
    Column("joined_at", DateTime(timezone=True), nullable=False),
    Column("delivered_up_to", BigInteger, nullable=False, server_default="0"),
    Column("read_up_to", BigInteger, nullable=False, server_default="0"),
    Index("members_by_user", "user_id"),
)

membership_history = Table(
    "membership_history",
    metadata,
    Column("chat_id", Uuid, primary_key=True),
    Column("user_id", Uuid, primary_key=True),
    Column("joined_after_seq", BigInteger, primary_key=True),
    Column("left_at_seq", BigInteger),  # null while a member
    Column("left_at_message_seq", BigInteger),  # the chat's `last_message_seq` then (migr. 6)
)

messages = Table(
    "messages",
    metadata,
    Column("chat_id", Uuid, primary_key=True),
    Column("seq", BigInteger, primary_key=True),
    Column("message_id", BigInteger, nullable=False, unique=True),
    Column("sender", Uuid, nullable=False),
    Column("device_id", Text, nullable=False),
    Column("local_id", Text, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("media", JSONB),
    Column("sent_at", DateTime(timezone=True), nullable=False),
    # Actions (docs/protocol.md#what-members-do-with-a-message): the seq a reply answers
    # or an action acts on, a reply's quote, when the message was last edited or deleted.
    Column("ref", BigInteger),
    Column("quote", JSONB),
    Column("edited_at", DateTime(timezone=True)),
    Column("deleted_at", DateTime(timezone=True)),
    # Disappearing messages (migration 4): when the message is erased (projections/expiry.py).
    Column("expires_at", DateTime(timezone=True)),
    Column("forwarded", Integer, nullable=False, server_default="0"),  # hops (migration 4)
)
MESSAGE_EXPIRY = (
    "ALTER TABLE {schema}.messages ADD COLUMN IF NOT EXISTS expires_at timestamptz, "
    "ADD COLUMN IF NOT EXISTS forwarded integer NOT NULL DEFAULT 0",
    "CREATE INDEX IF NOT EXISTS messages_by_expiry ON {schema}.messages (expires_at) "
    "WHERE expires_at IS NOT NULL AND deleted_at IS NULL",
)
MESSAGE_ACTION_COLUMNS = (
    "ALTER TABLE {schema}.messages ADD COLUMN IF NOT EXISTS ref bigint, "
    "ADD COLUMN IF NOT EXISTS quote jsonb, ADD COLUMN IF NOT EXISTS edited_at timestamptz, "
    "ADD COLUMN IF NOT EXISTS deleted_at timestamptz"
)
# A delete finds the replies quoting the message and the edits of it.
MESSAGES_BY_REF = (
    "CREATE INDEX IF NOT EXISTS messages_by_ref ON {schema}.messages (chat_id, ref) "
    "WHERE ref IS NOT NULL"
)

LAST_MESSAGE = (
    "ALTER TABLE {schema}.chats ADD COLUMN IF NOT EXISTS last_message_seq bigint",
    "ALTER TABLE {schema}.membership_history ADD COLUMN IF NOT EXISTS left_at_message_seq bigint",
    # What the projections would have written, from the messages already projected.
    "UPDATE {schema}.chats c SET last_message_seq = (SELECT max(m.seq) "
    "FROM {schema}.messages m WHERE m.chat_id = c.chat_id "
    "AND m.kind NOT IN ('reaction', 'edit', 'delete')) WHERE c.last_message_seq IS NULL",
    "UPDATE {schema}.membership_history h SET left_at_message_seq = (SELECT max(m.seq) "
    "FROM {schema}.messages m WHERE m.chat_id = h.chat_id AND m.seq <= h.left_at_seq "
    "AND m.kind NOT IN ('reaction', 'edit', 'delete')) "
    "WHERE h.left_at_seq IS NOT NULL AND h.left_at_message_seq IS NULL",
)

reactions = Table(
    "reactions",
    metadata,
    Column("chat_id", Uuid, primary_key=True),
    Column("seq", BigInteger, primary_key=True),  # of the message reacted to
    Column("user_id", Uuid, primary_key=True),
    Column("emoji", Text, nullable=False),
    Column("reacted_at", DateTime(timezone=True), nullable=False),
)

message_versions = Table(
    "message_versions",
    metadata,
    Column("chat_id", Uuid, primary_key=True),
    Column("seq", BigInteger, primary_key=True),  # of the message edited
    Column("edit_seq", BigInteger, primary_key=True),  # of the edit that replaced this text
    Column("body", LargeBinary, nullable=False),
    Column("written_at", DateTime(timezone=True), nullable=False),
)
"""The texts an edit replaced, shown to the message's sender only."""

# A media download is allowed to whoever sees a message of the chat that carries it.
MESSAGES_BY_MEDIA = (
    "CREATE INDEX IF NOT EXISTS messages_by_media ON {schema}.messages "
    "(chat_id, (media->>'media_id')) WHERE media IS NOT NULL"
)
# The retention sweep asks, per upload, whether any message carrying it was delivered.
MESSAGES_BY_MEDIA_ID = (
    "CREATE INDEX IF NOT EXISTS messages_by_media_id ON {schema}.messages "
    "((media->>'media_id')) WHERE media IS NOT NULL"
)

receipts = Table(
    "receipts",
    metadata,
    Column("chat_id", Uuid, primary_key=True),
    Column("recipient", Uuid, primary_key=True),
    Column("seq", BigInteger, primary_key=True),
    Column("status", String(10), nullable=False),  # SENT | DELIVERED | READ
    Column("delivered_at", DateTime(timezone=True)),
    Column("read_at", DateTime(timezone=True)),
)

receipt_counts = Table(
    "receipt_counts",
    metadata,
    Column("chat_id", Uuid, primary_key=True),
    Column("seq", BigInteger, primary_key=True),
    Column("recipients", Integer, nullable=False),
    Column("delivered", Integer, nullable=False, server_default="0"),
    Column("read", Integer, nullable=False, server_default="0"),
)

unread = Table(
    "unread",
    metadata,
    Column("user_id", Uuid, primary_key=True),
    Column("chat_id", Uuid, primary_key=True),
    Column("count", Integer, nullable=False, server_default="0"),
)

inbox = Table(
    "inbox",
    metadata,
    Column("recipient", Uuid, primary_key=True),
    Column("chat_id", Uuid, primary_key=True),
    Column("seq", BigInteger, primary_key=True),
    Column("message_id", BigInteger, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("inbox_by_age", "created_at"),
)

# Which tables each projection owns; the projection's name is its checkpoint key.
PROJECTION_TABLES: dict[str, list[Table]] = {
    "chats": [chats, members, membership_history],
    "messages": [messages, reactions, message_versions],
    "receipts": [receipts, receipt_counts, unread],
    "inbox": [inbox],
}

MIGRATIONS: list[tuple[int, str]] = [
    (1, "read model v1: chats, members, history, messages, receipts, counts, unread, inbox"),
    (2, "messages found by chat and media id"),
    (3, "replies, reactions, edits and deletes: message columns, reactions, versions"),
    (4, "disappearing and forwarded messages: when each expires, how often forwarded"),
    (5, "messages found by media id alone (the media retention sweep)"),
    (6, "the chat list's last message: the newest that is no action, per chat and on leaving"),
]


LAST_SEEN_DDL = (
    "CREATE TABLE IF NOT EXISTS last_seen (user_id uuid PRIMARY KEY, at timestamptz NOT NULL)"
)
"""When each user's last connection closed (the gateways write it; Redis holds the live value)."""
RELAY_POSITION_DDL = (
    "CREATE TABLE IF NOT EXISTS relay_position ("
    " name text PRIMARY KEY,"
    " position bigint NOT NULL,"
    " updated_at timestamptz NOT NULL DEFAULT now())"
)
"""The last position each relay published (`streams.relay`)."""
REBUILDS_DDL = (
    "CREATE TABLE IF NOT EXISTS read.rebuilds ("
    " run_id text PRIMARY KEY, projections text[] NOT NULL, state text NOT NULL,"
    " started_at timestamptz NOT NULL DEFAULT now(),"
    " updated_at timestamptz NOT NULL DEFAULT now(), finished_at timestamptz,"
    " events bigint NOT NULL DEFAULT 0, outcome text, host text, pid int)"
)
"""`parley replay rebuild`'s runs (`projections.replay.listing`)."""
MEDIA_DDL = (
    "SELECT pg_advisory_xact_lock(hashtext('parley:media-ddl'))",
    "CREATE SCHEMA IF NOT EXISTS media",
    "CREATE TABLE IF NOT EXISTS media.uploads ("
    " media_id text PRIMARY KEY,"
    " owner uuid NOT NULL,"
    " kind text NOT NULL,"
    " mime_type text NOT NULL,"
    " size bigint NOT NULL,"
    " sha256 text NOT NULL,"
    " confirmed boolean NOT NULL DEFAULT false,"
    " sent boolean NOT NULL DEFAULT false,"
    " width int, height int, thumbnail text, duration_ms bigint,"
    " created_at timestamptz NOT NULL DEFAULT now())",
    "CREATE INDEX IF NOT EXISTS uploads_unsent_by_age ON media.uploads (created_at) WHERE NOT sent",
    # Sends in flight (a refused one gives its count back), when the last one took it, and
    # what the retention sweep decided: NULL undecided, 'kept' (delivered), 'expiring'
    # (objects being deleted), 'expired' (deleted; the row stays as a tombstone).
    "ALTER TABLE media.uploads ADD COLUMN IF NOT EXISTS sends int NOT NULL DEFAULT 0",
    "ALTER TABLE media.uploads ADD COLUMN IF NOT EXISTS sent_at timestamptz",
    "ALTER TABLE media.uploads ADD COLUMN IF NOT EXISTS fate text",
    # Rows marked sent before the count and its time existed: one send, at upload time.
    "UPDATE media.uploads SET sends = 1, sent_at = coalesce(sent_at, created_at) "
    "WHERE sent AND sends = 0",
    "CREATE INDEX IF NOT EXISTS uploads_undecided_by_sent ON media.uploads (sent_at) "
    "WHERE sent AND (fate IS NULL OR fate = 'expiring')",
    # Multipart uploads (`commands.media.multipart`): the store's upload id and the plan.
    "ALTER TABLE media.uploads ADD COLUMN IF NOT EXISTS multipart_id text",
    "ALTER TABLE media.uploads ADD COLUMN IF NOT EXISTS part_size bigint",
    "ALTER TABLE media.uploads ADD COLUMN IF NOT EXISTS completed boolean NOT NULL DEFAULT true",
    # The retention sweep's schedule and last round, shared by every commands process.
    "CREATE TABLE IF NOT EXISTS media.sweeps ("
    " name text PRIMARY KEY,"
    " next_at timestamptz NOT NULL,"
    " started_at timestamptz, finished_at timestamptz,"
    " kept int NOT NULL DEFAULT 0, expired int NOT NULL DEFAULT 0, dropped int NOT NULL DEFAULT 0,"
    " expired_total bigint NOT NULL DEFAULT 0)",
)
"""Uploads (`commands.media.uploads`): state of the commands service, not a projection."""
OWN_TABLES = (
    *DIRECTORY_DDL,
    LAST_SEEN_DDL,
    RELAY_POSITION_DDL,
    REBUILDS_DDL,
    *MEDIA_DDL,
    *PUSH_DDL,
    *E2E_DDL,
    *KEYS_DDL,
)
"""Created with the live schema, each `IF NOT EXISTS`: tables no projection rebuilds."""


def sqlalchemy_url(settings: Settings) -> str:
    return (
        f"postgresql+psycopg://{settings.pg_user}:{settings.pg_password}"
        f"@{settings.pg_host}:{settings.pg_port}/{settings.pg_db}"
    )


def migrate(settings: Settings, schema: str = LIVE_SCHEMA) -> int:
    """Create `schema` and bring its tables to the newest version; return that version."""
    engine = create_engine(sqlalchemy_url(settings))
    try:
        with engine.begin() as conn:
            # One migrator at a time per schema (several workers may start together),
            # the schema itself included: concurrent CREATE SCHEMA IF NOT EXISTS collide.
            conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:s))"), {"s": schema})
            conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
            conn.execute(
                text(
                    f'CREATE TABLE IF NOT EXISTS "{schema}".schema_version '
                    "(version int PRIMARY KEY, note text, applied_at timestamptz DEFAULT now())"
                )
            )
            done = {
                row[0]
                for row in conn.execute(text(f'SELECT version FROM "{schema}".schema_version'))
            }
            for version, note in MIGRATIONS:
                if version in done:
                    continue
                if version == 1:
                    metadata.create_all(conn.execution_options(schema_translate_map={None: schema}))
                if version == 2:
                    conn.execute(text(MESSAGES_BY_MEDIA.format(schema=f'"{schema}"')))
                if version == 3:
                    conn.execute(text(MESSAGE_ACTION_COLUMNS.format(schema=f'"{schema}"')))
                    conn.execute(text(MESSAGES_BY_REF.format(schema=f'"{schema}"')))
                    metadata.create_all(
                        conn.execution_options(schema_translate_map={None: schema}),
                        tables=[reactions, message_versions],
                    )
                if version == 4:
                    for statement in MESSAGE_EXPIRY:
                        conn.execute(text(statement.format(schema=f'"{schema}"')))
                if version == 5:
                    conn.execute(text(MESSAGES_BY_MEDIA_ID.format(schema=f'"{schema}"')))
                if version == 6:
                    for statement in LAST_MESSAGE:
                        conn.execute(text(statement.format(schema=f'"{schema}"')))
                conn.execute(
                    text(f'INSERT INTO "{schema}".schema_version (version, note) VALUES (:v, :n)'),
                    {"v": version, "n": note},
                )
            if schema == LIVE_SCHEMA:
                for statement in OWN_TABLES:
                    conn.exec_driver_sql(statement)
        return MIGRATIONS[-1][0]
    finally:
        engine.dispose()
