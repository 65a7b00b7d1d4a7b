"""Integration tests of the SQS drain, the redrive policy and the SQS DLQ replay on moto."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, TopicPartition

from saodf.config import Settings
from streaming import sqs_drain
from streaming.dlq_tools import list_entries, replay_sqs
from streaming.ingest_config import IngestConfig
from streaming.ingest_router import INGEST_ID_HEADER, IngestReading
from streaming.kafka import consumer_config
from streaming.sqs import SqsEntry, ensure_queues, queue_depth, send_entries, sqs_client
from streaming.sqs_drain import SqsDrain

pytestmark = pytest.mark.integration


@pytest.fixture
def ingest_settings(session_settings, kafka_bootstrap, moto_endpoint, tmp_path) -> Settings:
    suffix = uuid.uuid4().hex[:10]
    return session_settings.with_overrides(
        home=tmp_path / "home",
        topic_raw=f"raw-{suffix}",
        topic_dlq=f"dlq-{suffix}",
        sqs_queue=f"raw-{suffix}",
        sqs_dlq=f"raw-dlq-{suffix}",
    )


def _entries(count: int) -> list[SqsEntry]:
    entries = []
    for index in range(count):
        message = {
            "device_id": "drain-1",
            "timestamp": f"2025-04-20T12:{index // 60:02d}:{index % 60:02d}Z",
            "temperature": float(index),
        }
        reading = IngestReading.create(message, "http")
        attributes = {"ingest_id": reading.ingest_id, "device_id": reading.device_id}
        entries.append(SqsEntry(reading.ingest_id, reading.body.decode(), attributes))
    return entries


def _topic_ingest_ids(settings: Settings) -> list[str]:
    consumer = Consumer(
        consumer_config(settings, f"test-{uuid.uuid4().hex[:8]}", **{"enable.partition.eof": True})
    )
    ids: list[str] = []
    try:
        metadata = consumer.list_topics(settings.topic_raw, timeout=10).topics[settings.topic_raw]
        consumer.assign([TopicPartition(settings.topic_raw, p, -2) for p in metadata.partitions])
        pending = set(metadata.partitions)
        deadline = time.monotonic() + 30
        while pending and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error() is not None:
                if message.error().code() == KafkaError._PARTITION_EOF:
                    pending.discard(message.partition())
                continue
            headers = dict(message.headers() or [])
            ids.append(headers[INGEST_ID_HEADER].decode())
    finally:
        consumer.close()
    return ids


class _Crash(BaseException):
    """Stands for a kill -9 between Kafka's acknowledgement and the SQS delete."""


def test_drain_crash_before_delete_no_duplicates(ingest_settings, monkeypatch):
    config = IngestConfig(sqs_visibility_timeout_s=2)
    client = sqs_client(ingest_settings)
    urls = ensure_queues(ingest_settings, client, visibility_timeout_s=2)
    entries = _entries(10)
    assert send_entries(client, urls.queue, entries) == {}
    crashed = SqsDrain(ingest_settings, config)
    crashed.start()

    def crash(*_args, **_kwargs):
        raise _Crash()

    monkeypatch.setattr(sqs_drain, "delete_handles", crash)
    with pytest.raises(_Crash):
        while True:
            crashed.drain_once()
    monkeypatch.undo()
    # A new drain process starts with an empty index and scans the topic from its checkpoint.
    restarted = SqsDrain(ingest_settings, config)
    stats = restarted.run(max_seconds=30, max_messages=len(entries))
    ids = _topic_ingest_ids(ingest_settings)
    assert stats.duplicates == len(entries)
    assert stats.produced == 0
    assert sorted(ids) == sorted(e.ingest_id for e in entries)
    assert queue_depth(client, urls.queue) == 0


def test_drain_dead_letters_invalid_body(ingest_settings):
    client = sqs_client(ingest_settings)
    urls = ensure_queues(ingest_settings, client)
    assert send_entries(client, urls.queue, [SqsEntry("x1", "not json", {"ingest_id": "x1"})]) == {}
    stats = SqsDrain(ingest_settings).run(max_seconds=20, max_messages=1)
    assert stats.dead_lettered == 1
    assert queue_depth(client, urls.queue) == 0


def test_redrive_then_replay_sqs(ingest_settings):
    client = sqs_client(ingest_settings)
    urls = ensure_queues(ingest_settings, client, max_receive_count=1, visibility_timeout_s=1)
    assert send_entries(client, urls.queue, _entries(1)) == {}
    # The first receive uses the one allowed receive, the next one triggers the redrive.
    client.receive_message(QueueUrl=urls.queue, VisibilityTimeout=0)
    deadline = time.monotonic() + 20
    while queue_depth(client, urls.dlq) == 0 and time.monotonic() < deadline:
        client.receive_message(QueueUrl=urls.queue, WaitTimeSeconds=1)
    listed = list_entries(ingest_settings, "sqs", limit=10)
    report = replay_sqs(ingest_settings, limit=10)
    assert len(listed) == 1
    assert "redriven" in listed[0].record["reason"]
    assert report.replayed == 1
    assert queue_depth(client, urls.dlq) == 0
    assert queue_depth(client, urls.queue) == 1
