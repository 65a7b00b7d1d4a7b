"""Integration test of the replay producer against a real Tansu broker on 127.0.0.1."""

from __future__ import annotations

import time
import uuid

import orjson
import pytest
from confluent_kafka import Consumer, KafkaError, TopicPartition

from etl.readers import iter_dataset, to_messages
from saodf.config import Settings
from streaming.kafka import consumer_config
from streaming.replay import replay

pytestmark = pytest.mark.integration


def _read_all(settings: Settings, topic: str, timeout: float = 30.0) -> list[tuple[bytes, dict]]:
    consumer = Consumer(
        consumer_config(
            settings, f"test-reader-{uuid.uuid4().hex[:8]}", **{"enable.partition.eof": True}
        )
    )
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        consumer.assign([TopicPartition(topic, p, -2) for p in metadata.partitions])
        pending = set(metadata.partitions)
        messages = []
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error() is not None:
                if message.error().code() == KafkaError._PARTITION_EOF:
                    pending.discard(message.partition())
                continue
            messages.append((message.key(), orjson.loads(message.value())))
        return messages
    finally:
        consumer.close()


def test_replay_skab_limit(kafka_bootstrap, saodf_env):
    settings = saodf_env.with_overrides(topic_raw=f"raw-{uuid.uuid4().hex[:10]}")

    stats = replay("skab", groups=["valve1"], limit=250, settings=settings, progress=False)

    assert stats.delivered == 250
    assert stats.produced == 250
    assert stats.series == 1
    assert stats.limited
    messages = _read_all(settings, settings.topic_raw)
    assert len(messages) == 250
    assert {key for key, _ in messages} == {b"skab-valve1-0"}
    series, report = next(iter_dataset("skab", settings.data_dir, ["valve1"]))
    assert messages[0][1] == next(to_messages(series, report))


def test_replay_paced_two_series(kafka_bootstrap, saodf_env):
    settings = saodf_env.with_overrides(topic_raw=f"raw-{uuid.uuid4().hex[:10]}")
    first_report = next(iter_dataset("skab", settings.data_dir, ["valve1"]))[1]

    # SKAB readings are 1 s apart, so speed 1000 waits about 1 ms between them.
    limit = first_report.rows_kept + 5
    stats = replay("skab", groups=["valve1"], limit=limit, speed=1000, settings=settings)

    assert stats.series == 2
    assert stats.delivered == limit
    messages = _read_all(settings, settings.topic_raw)
    assert {key for key, _ in messages} == {b"skab-valve1-0", b"skab-valve1-1"}
