"""Integration tests of the lake writer against a real Tansu broker on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

import orjson
import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from saodf.config import PROJECT_ROOT, Settings
from saodf.lake import read_raw
from saodf.telemetry import format_timestamp
from streaming.dlq import decode_dlq_payload, read_dlq
from streaming.kafka import consumer_config, ensure_topics, producer_config
from streaming.lake_writer import LakeWriter
from streaming.windows import window_id

pytestmark = pytest.mark.integration

T0 = datetime(2025, 4, 20, 12, 30, tzinfo=timezone.utc)
DEVICES = ["sensor-a", "sensor-b", "sensor-c", "sensor-d"]
MALFORMED = [
    (b"not json at all", "payload is not JSON"),
    (b"\xff\xfe\x00binary", "payload is not JSON"),
    (b'{"device_id": "sensor-a", "temperature": 1.0}', "timestamp is missing"),
    (b'{"device_id": "bad id!", "timestamp": "2025-04-20T12:00:00Z", "x": 1}', "device_id"),
    (None, "no payload"),
]


def _topics(settings: Settings, partitions: int = 1) -> Settings:
    suffix = uuid.uuid4().hex[:10]
    topic_settings = settings.with_overrides(
        topic_raw=f"raw-{suffix}", topic_windows=f"windows-{suffix}", topic_dlq=f"dlq-{suffix}"
    )
    ensure_topics(topic_settings, [topic_settings.topic_raw], partitions=partitions)
    return topic_settings


def _reading(index: int) -> dict:
    # 200 readings 90 s apart span five hours, so each device gets files in several hours.
    return {
        "device_id": DEVICES[index % len(DEVICES)],
        "timestamp": format_timestamp(T0 + timedelta(seconds=90 * index)),
        "temperature": 20.0 + index,
        "vibration": index / 100,
    }


def _produce(settings: Settings, items: list[tuple[str, bytes | None]]) -> dict[int, list[int]]:
    """Produce ``(key, value)`` pairs in order and return the offsets per partition."""
    offsets: dict[int, list[int]] = {}
    errors: list[str] = []

    def on_delivery(error, message):
        if error is not None:
            errors.append(error.str())
            return
        offsets.setdefault(message.partition(), []).append(message.offset())

    producer = Producer(producer_config(settings, role="test"))
    for key, value in items:
        producer.produce(settings.topic_raw, key=key, value=value, on_delivery=on_delivery)
    assert producer.flush(30) == 0
    assert errors == []
    return offsets


def _valid_items(indices: range) -> list[tuple[str, bytes]]:
    return [(_reading(i)["device_id"], orjson.dumps(_reading(i))) for i in indices]


def _read_topic(settings: Settings, topic: str, timeout: float = 30.0) -> list[dict]:
    """Read every message of ``topic`` from the start until the end of each partition."""
    consumer = Consumer(
        consumer_config(
            settings, f"test-reader-{uuid.uuid4().hex[:8]}", **{"enable.partition.eof": True}
        )
    )
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        consumer.assign([TopicPartition(topic, p, -2) for p in metadata.partitions])
        pending = set(metadata.partitions)
        values: list[dict] = []
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error() is not None:
                if message.error().code() == KafkaError._PARTITION_EOF:
                    pending.discard(message.partition())
                continue
            values.append(orjson.loads(message.value()))
        return values
    finally:
        consumer.close()


def _committed(settings: Settings, group_id: str, partitions: int = 1) -> dict[int, int]:
    consumer = Consumer(consumer_config(settings, group_id))
    try:
        offsets = consumer.committed(
            [TopicPartition(settings.topic_raw, p) for p in range(partitions)], timeout=10
        )
        return {tp.partition: tp.offset for tp in offsets}
    finally:
        consumer.close()


def _lake_keys(settings: Settings) -> list[tuple[str, str, str, float]]:
    frame = read_raw(settings.lake_url)
    return [
        (row.device_id, format_timestamp(row.timestamp.to_pydatetime()), row.metric, row.value)
        for row in frame.itertuples()
    ]


def _expected_keys(indices: range) -> list[tuple[str, str, str, float]]:
    keys = []
    for i in indices:
        reading = _reading(i)
        for metric in ("temperature", "vibration"):
            keys.append((reading["device_id"], reading["timestamp"], metric, reading[metric]))
    return sorted(keys)


def test_writer_lake_dlq_and_window(kafka_bootstrap, saodf_env):
    total = 200 + len(MALFORMED)
    settings = _topics(saodf_env, partitions=2).with_overrides(
        window_messages=total, window_seconds=600.0
    )
    items = _valid_items(range(200))
    for position, (value, _reason) in enumerate(MALFORMED):
        items.insert(40 * position + 7, (f"bad-{position}", value))
    offsets = _produce(settings, items)

    stats = LakeWriter(settings, group_id=f"lw-{uuid.uuid4().hex[:8]}", batch_size=37).run(
        max_seconds=90, max_messages=total
    )

    assert stats.consumed == total
    assert stats.dead_lettered == len(MALFORMED)
    frame = read_raw(settings.lake_url)
    assert len(frame) == 400
    assert sorted(_lake_keys(settings)) == _expected_keys(range(200))
    assert not frame.duplicated(["device_id", "timestamp", "metric"]).any()

    records = read_dlq(settings, limit=100)
    assert len(records) == len(MALFORMED)
    assert {r["source"] for r in records} == {"lake_writer"}
    assert {r["topic"] for r in records} == {settings.topic_raw}
    by_key = {r["key"]: r for r in records}
    for position, (value, reason) in enumerate(MALFORMED):
        record = by_key[f"bad-{position}"]
        assert reason in record["reason"]
        assert decode_dlq_payload(record) == (value or b"")
    assert by_key["bad-1"]["payload_encoding"] == "base64"

    events = _read_topic(settings, settings.topic_windows)
    assert len(events) == 1
    event = events[0]
    ranges = {p: (min(o), max(o)) for p, o in offsets.items()}
    assert event["window_id"] == window_id(settings.topic_raw, ranges)
    assert event["offsets"] == {str(p): list(r) for p, r in sorted(ranges.items())}
    assert event["devices"] == DEVICES
    assert event["message_count"] == 200
    assert event["dlq_count"] == len(MALFORMED)
    assert event["start"] == format_timestamp(T0)
    assert event["end"] == "2025-04-20T17:28:30.000001Z"
    assert event["lake_url"] == settings.lake_url


def test_writer_window_closes_on_time(kafka_bootstrap, saodf_env):
    settings = _topics(saodf_env).with_overrides(window_messages=100_000, window_seconds=1.0)
    _produce(settings, _valid_items(range(20)))
    writer = LakeWriter(settings, group_id=f"lw-{uuid.uuid4().hex[:8]}")
    stop = threading.Event()
    thread = threading.Thread(target=writer.run, kwargs={"max_seconds": 120, "stop_event": stop})
    thread.start()
    try:
        events: list[dict] = []
        for _ in range(60):
            events = _read_topic(settings, settings.topic_windows, timeout=5)
            if events or not thread.is_alive():
                break
            time.sleep(0.5)
        # The writer is still running, so the event came from the age limit, not from stopping.
        assert thread.is_alive()
    finally:
        stop.set()
        thread.join(60)
    assert len(events) == 1
    assert events[0]["message_count"] == 20
    assert len(_read_topic(settings, settings.topic_windows)) == 1


def test_writer_restart_after_stop(kafka_bootstrap, saodf_env):
    settings = _topics(saodf_env).with_overrides(window_messages=100_000, window_seconds=600.0)
    group_id = f"lw-{uuid.uuid4().hex[:8]}"
    _produce(settings, _valid_items(range(100)))

    first = LakeWriter(settings, group_id=group_id, batch_size=10).run(
        max_seconds=60, max_messages=50
    )
    second = LakeWriter(settings, group_id=group_id, batch_size=10).run(
        max_seconds=60, max_messages=100 - first.consumed
    )

    assert first.consumed + second.consumed == 100
    assert sorted(_lake_keys(settings)) == _expected_keys(range(100))
    events = _read_topic(settings, settings.topic_windows)
    assert len(events) == 2
    assert events[0]["offsets"]["0"][0] == 0
    assert events[1]["offsets"]["0"][0] == events[0]["offsets"]["0"][1] + 1
    assert events[1]["offsets"]["0"][1] == 99
    assert sum(e["message_count"] for e in events) == 100


def test_writer_resumes_after_kill(kafka_bootstrap, saodf_env):
    settings = _topics(saodf_env).with_overrides(window_messages=100_000, window_seconds=600.0)
    group_id = f"lw-{uuid.uuid4().hex[:8]}"
    _produce(settings, _valid_items(range(100)))
    env = {
        **os.environ,
        "SAODF_HOME": str(settings.home),
        "SAODF_LAKE_URL": settings.lake_url,
        "SAODF_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "SAODF_WINDOW_MESSAGES": "100000",
        "SAODF_WINDOW_SECONDS": "600",
    }
    command = [
        sys.executable,
        "-m",
        "streaming.lake_writer",
        "--group-id",
        group_id,
        "--batch-size",
        "10",
        "--max-seconds",
        "120",
        "--topic",
        settings.topic_raw,
        "--windows-topic",
        settings.topic_windows,
        "--dlq-topic",
        settings.topic_dlq,
    ]
    child = subprocess.Popen(
        command, cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        committed: dict[int, int] = {}
        for _ in range(120):
            committed = _committed(settings, group_id)
            if committed.get(0) == 100 or child.poll() is not None:
                break
            time.sleep(0.5)
        assert committed.get(0) == 100
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(30)

    _produce(settings, _valid_items(range(100, 150)))
    stats = LakeWriter(settings, group_id=group_id, batch_size=10).run(
        max_seconds=90, max_messages=50
    )

    assert stats.consumed == 50
    assert sorted(_lake_keys(settings)) == _expected_keys(range(150))
    events = _read_topic(settings, settings.topic_windows)
    # The killed writer sent no event; the restarted one resumed its saved window.
    assert len(events) == 1
    assert events[0]["offsets"] == {"0": [0, 149]}
    assert events[0]["message_count"] == 150
