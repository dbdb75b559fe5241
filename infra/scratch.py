"""Scratch resources a run makes for itself and removes after: a database, and the
topics under its settings' prefix (benchmarks and the test suite use them)."""

from __future__ import annotations

import contextlib

import psycopg

from infra.settings import Settings


def fresh_database(settings: Settings, name: str) -> None:
    """Drop the database `name` if it exists, and create it empty."""
    drop_database(settings, name)
    with psycopg.connect(settings.replace(pg_db="postgres").pg_conninfo, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')


def drop_database(settings: Settings, name: str) -> None:
    with psycopg.connect(settings.replace(pg_db="postgres").pg_conninfo, autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def delete_topics(settings: Settings) -> None:
    """Delete every topic under `settings.topic_prefix`, and those Faust made for the
    workers' app (`<app id>-__assignor-__leader`, outside the prefix), best effort: each
    one left behind costs the broker CPU in every later run."""
    from kafka import KafkaAdminClient

    prefixes = (settings.topic_prefix, f"{settings.workers_group_id}-")
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    try:
        mine = [t for t in admin.list_topics() if t.startswith(prefixes)]
        if mine:
            with contextlib.suppress(Exception):
                admin.delete_topics(mine)
    finally:
        admin.close()


def redis_db(url: str, db: int) -> str:
    """The same Redis server's database `db`."""
    base, _, _ = url.rpartition("/")
    return f"{base}/{db}"
