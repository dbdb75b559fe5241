"""A Faust worker starts, joins its consumer group and processes a record in time."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import redis
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic

from infra.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_faust_worker_processes_a_record(settings: Settings, tmp_path: Path) -> None:
    probe = uuid.uuid4().hex[:8]
    topic = settings.topic(f"faust-probe-{probe}")
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    admin.create_topics([NewTopic(topic, 2, 1)])
    admin.close()
    log = tmp_path / "faust.log"
    datadir = tmp_path / "faust-data"
    datadir.mkdir()
    env = {**os.environ, "PROBE_ID": probe, "PROBE_TOPIC": topic, "PROBE_DATADIR": str(datadir)}
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "faust",
                "-A",
                "tests.stack.faust_probe",
                "worker",
                "-l",
                "info",
                "--without-web",
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    client = redis.Redis.from_url(settings.redis_url)
    try:
        producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
        producer.send(topic, key=b"k", value=b"first").get(timeout=10)
        producer.close()
        deadline = time.monotonic() + 60
        got: list[bytes | str] = []
        while time.monotonic() < deadline and worker.poll() is None:
            got = client.lrange(f"probe:{probe}", 0, -1)
            if got:
                break
            time.sleep(0.1)
        assert got == [b"first"], f"worker exit={worker.poll()}; log: {log.read_text()[-2000:]}"
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
        client.close()
