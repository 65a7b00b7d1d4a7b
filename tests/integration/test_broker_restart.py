"""Integration test of a broker killed by pid and restarted by ``saodf stack up``'s code."""

from __future__ import annotations

import os
import signal
import uuid
from datetime import datetime, timedelta, timezone

import orjson
import psutil
import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from saodf.config import Settings
from saodf.lake import read_raw
from saodf.stack import manager, process
from saodf.telemetry import format_timestamp
from streaming.kafka import StreamingError, consumer_config, producer_config
from streaming.lake_writer import LakeWriter

pytestmark = [pytest.mark.integration, pytest.mark.slow]

T0 = datetime(2025, 4, 20, 12, 30, tzinfo=timezone.utc)


def _reading(index: int) -> bytes:
    timestamp = format_timestamp(T0 + timedelta(seconds=60 * index))
    return orjson.dumps({"device_id": "sensor-r", "timestamp": timestamp, "temperature": index})


def _produce(settings: Settings, indices: range) -> None:
    producer = Producer(producer_config(settings, role="test"))
    for index in indices:
        producer.produce(settings.topic_raw, key="sensor-r", value=_reading(index))
    assert producer.flush(30) == 0


def _read_topic(settings: Settings, topic: str) -> list[dict]:
    """Read every message of ``topic`` from the start until the end of each of its partitions."""
    group = f"test-reader-{uuid.uuid4().hex[:8]}"
    consumer = Consumer(consumer_config(settings, group, **{"enable.partition.eof": True}))
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, number, -2) for number in partitions])
        at_end: set[int] = set()
        values: list[dict] = []
        for _ in range(60):
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error() is not None:
                if message.error().code() == KafkaError._PARTITION_EOF:
                    at_end.add(message.partition())
                    if at_end == set(partitions):
                        break
                continue
            values.append(orjson.loads(message.value()))
        return values
    finally:
        consumer.close()


@pytest.fixture
def broker_settings(saodf_env):
    port = process.free_port()
    settings = saodf_env.with_overrides(
        ports={**saodf_env.ports, "kafka": port},
        kafka_bootstrap=f"127.0.0.1:{port}",
        window_messages=100_000,
        window_seconds=3600.0,
    )
    yield settings
    process.stop(manager.service_specs(settings)["broker"])


def test_broker_restart_keeps_windows(broker_settings):
    settings = broker_settings
    assert manager.up(settings, only=["broker"], echo=lambda _line: None) == {"broker": "started"}
    _produce(settings, range(5))
    writer = LakeWriter(settings, group_id="lw-restart", event_attempts=2, event_backoff=0.5)
    writer.start()
    for _ in range(60):
        if writer.stats.consumed >= 5:
            break
        writer.process_batch(writer._consumer_or_fail().consume(100, 0.5))

    broker = process.running_process(manager.service_specs(settings)["broker"])
    os.kill(broker.pid, signal.SIGKILL)
    psutil.Process(broker.pid).wait(timeout=10)
    with pytest.raises(StreamingError, match="failed after 2 attempts"):
        writer._close_window()
    writer._failed = True
    writer.close()
    saved = orjson.loads(writer.state_file.read_bytes())
    assert len(saved["pending_events"]) == 1

    lines: list[str] = []
    assert manager.up(settings, only=["broker"], echo=lines.append) == {"broker": "started"}
    # A new writer sends the saved event on start, then handles readings sent after the restart.
    _produce(settings, range(5, 8))
    restarted = LakeWriter(settings, group_id="lw-restart")
    restarted.run(max_seconds=60, max_messages=3)
    events = _read_topic(settings, settings.topic_windows)
    assert [event["message_count"] for event in events] == [5, 3]
    # The restarted memory broker numbers the new readings from offset 0 again. The topic's
    # new id keeps them apart from the first five in the lake.
    raw = read_raw(settings.lake_url)
    assert len(raw) == 8
    assert sorted(raw["kafka_offset"].tolist()) == [0, 0, 1, 1, 2, 2, 3, 4]
