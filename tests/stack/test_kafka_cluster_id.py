"""The KRaft cluster id Parley makes for a fresh Kafka."""

from __future__ import annotations

from infra.stack.kafka import _kafka_cluster_id


def test_cluster_ids_are_kafkas_format_and_never_read_as_an_option() -> None:
    ids = [_kafka_cluster_id() for _ in range(5000)]  # ~78 would start with "-" unguarded
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)
    assert len(set(ids)) == len(ids)
