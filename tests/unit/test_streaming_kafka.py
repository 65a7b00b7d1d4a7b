"""Unit tests of the Kafka client configuration and delivery checks, without a broker."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError

from saodf.config import Settings
from streaming.kafka import (
    DeliveryTracker,
    StreamingError,
    consumer_config,
    ensure_topics,
    producer_config,
)


class _Message:
    def __init__(self, key: bytes):
        self._key = key

    def key(self) -> bytes:
        return self._key

    def topic(self) -> str:
        return "telemetry.raw"


@pytest.fixture
def settings(tmp_path, monkeypatch) -> Settings:
    monkeypatch.setenv("SAODF_HOME", str(tmp_path))
    monkeypatch.setenv("SAODF_KAFKA_BOOTSTRAP", "127.0.0.1:1")
    return Settings.from_env()


def test_producer_config_durable(settings):
    config = producer_config(settings)
    assert config["acks"] == "all"
    assert config["enable.idempotence"] is True
    assert config["bootstrap.servers"] == "127.0.0.1:1"


def test_consumer_config_manual_commit(settings):
    config = consumer_config(settings, "g1")
    assert config["enable.auto.commit"] is False
    assert config["session.timeout.ms"] == 6000
    assert config["group.id"] == "g1"


def test_config_overrides_win(settings):
    assert producer_config(settings, **{"linger.ms": 0})["linger.ms"] == 0


def test_tracker_counts_deliveries():
    tracker = DeliveryTracker()
    tracker(None, _Message(b"sensor-1"))
    tracker(None, _Message(b"sensor-2"))
    assert tracker.delivered == 2
    tracker.raise_for_failures()


def test_tracker_raises_with_key():
    tracker = DeliveryTracker()
    tracker(KafkaError(KafkaError._MSG_TIMED_OUT), _Message(b"sensor-7"))
    with pytest.raises(StreamingError, match="1 message.*key 'sensor-7'"):
        tracker.raise_for_failures()


def test_ensure_topics_rejects_zero_partitions(settings):
    with pytest.raises(StreamingError, match="partitions=0 is invalid"):
        ensure_topics(settings, ["t"], partitions=0)


def test_require_broker_names_address(tmp_path, monkeypatch):
    from saodf.config import Settings
    from saodf.stack.process import free_port
    from streaming.kafka import StreamingError, require_broker

    monkeypatch.setenv("SAODF_HOME", str(tmp_path))
    monkeypatch.setenv("SAODF_KAFKA_BOOTSTRAP", f"127.0.0.1:{free_port()}")
    settings = Settings.from_env()
    with pytest.raises(StreamingError, match="is unreachable; start the stack"):
        require_broker(settings, timeout=0.5)


def test_latency_config_short_fetch_wait(settings, monkeypatch):
    from streaming.kafka import LATENCY_FETCH_WAIT_MAX_MS, latency_consumer_config

    monkeypatch.delenv("SAODF_KAFKA_FETCH_WAIT_MAX_MS", raising=False)
    monkeypatch.delenv("SAODF_KAFKA_LATENCY_CONSUMER_CONFIG", raising=False)
    config = latency_consumer_config(settings, "g1")
    assert config["fetch.wait.max.ms"] == LATENCY_FETCH_WAIT_MAX_MS
    assert config["enable.auto.commit"] is False
    assert config["group.id"] == "g1"


def test_latency_config_env_overrides(settings, monkeypatch):
    from streaming.kafka import latency_consumer_config

    monkeypatch.setenv("SAODF_KAFKA_FETCH_WAIT_MAX_MS", "20")
    monkeypatch.setenv(
        "SAODF_KAFKA_LATENCY_CONSUMER_CONFIG", " fetch.min.bytes=1 , queued.min.messages=5000,"
    )
    config = latency_consumer_config(settings, "g1", **{"queued.min.messages": 10})
    assert config["fetch.wait.max.ms"] == 20
    assert config["fetch.min.bytes"] == "1"
    assert config["queued.min.messages"] == 10


def test_latency_config_list_beats_wait(settings, monkeypatch):
    from streaming.kafka import latency_consumer_config

    monkeypatch.setenv("SAODF_KAFKA_FETCH_WAIT_MAX_MS", "20")
    monkeypatch.setenv("SAODF_KAFKA_LATENCY_CONSUMER_CONFIG", "fetch.wait.max.ms=50")
    assert latency_consumer_config(settings, "g1")["fetch.wait.max.ms"] == "50"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("SAODF_KAFKA_FETCH_WAIT_MAX_MS", "soon", "'soon' is not an integer"),
        ("SAODF_KAFKA_FETCH_WAIT_MAX_MS", "-1", "-1 is negative"),
        ("SAODF_KAFKA_LATENCY_CONSUMER_CONFIG", "fetch.wait.max.ms", "entry 'fetch.wait.max.ms'"),
        ("SAODF_KAFKA_LATENCY_CONSUMER_CONFIG", "=5", "entry '=5' is invalid"),
    ],
)
def test_latency_config_rejects_bad_env(settings, monkeypatch, name, value, message):
    from saodf.errors import ConfigError
    from streaming.kafka import latency_consumer_config

    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=message):
        latency_consumer_config(settings, "g1")


class _FakeConsumer:
    """The poll, consume and commit calls of a confluent_kafka Consumer, recorded."""

    def __init__(self, queued: list):
        self.queued = list(queued)
        self.calls: list[tuple] = []
        self.commits: list[tuple[list, bool]] = []

    def poll(self, timeout):
        self.calls.append(("poll", timeout))
        return self.queued.pop(0) if self.queued else None

    def consume(self, num_messages, timeout):
        self.calls.append(("consume", num_messages, timeout))
        taken, self.queued = self.queued[:num_messages], self.queued[num_messages:]
        return taken

    def commit(self, offsets, asynchronous):
        self.commits.append(([(tp.topic, tp.partition, tp.offset) for tp in offsets], asynchronous))


class _Record:
    def __init__(self, offset: int, partition: int = 0):
        self._offset = offset
        self._partition = partition

    def topic(self) -> str:
        return "telemetry.raw"

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset


def test_poll_batch_drains_without_waiting():
    from streaming.kafka import poll_batch

    consumer = _FakeConsumer(["a", "b", "c", "d"])
    assert poll_batch(consumer, 3, timeout=1.0) == ["a", "b", "c"]
    assert consumer.calls == [("poll", 1.0), ("consume", 2, 0)]


def test_poll_batch_empty_after_timeout():
    from streaming.kafka import poll_batch

    consumer = _FakeConsumer([])
    assert poll_batch(consumer, 500, timeout=0.01) == []
    assert consumer.calls == [("poll", 0.01)]


def test_poll_batch_single_message():
    from streaming.kafka import poll_batch

    consumer = _FakeConsumer(["a", "b"])
    assert poll_batch(consumer, 1, timeout=1.0) == ["a"]
    assert consumer.calls == [("poll", 1.0)]


def test_committer_every_batch_at_zero():
    from streaming.anomaly_consumer import OffsetCommitter

    consumer = _FakeConsumer([])
    committer = OffsetCommitter(consumer, interval=0)
    committer.add([_Record(4), _Record(9)])
    committer.add([_Record(10)])
    assert consumer.commits == [
        ([("telemetry.raw", 0, 10)], True),
        ([("telemetry.raw", 0, 11)], True),
    ]


def test_committer_holds_within_interval():
    from streaming.anomaly_consumer import OffsetCommitter

    consumer = _FakeConsumer([])
    committer = OffsetCommitter(consumer, interval=3600)
    committer.add([_Record(4), _Record(2, partition=1)])
    committer.add([_Record(5)])
    assert consumer.commits == []
    committer.commit(asynchronous=False)
    assert consumer.commits == [([("telemetry.raw", 0, 6), ("telemetry.raw", 1, 3)], False)]
    committer.commit(asynchronous=False)
    assert len(consumer.commits) == 1


def test_committer_commits_when_due():
    from streaming.anomaly_consumer import OffsetCommitter

    consumer = _FakeConsumer([])
    committer = OffsetCommitter(consumer, interval=3600)
    committer.add([_Record(7)])
    committer.commit_if_due()
    assert consumer.commits == []
    committer.last_commit -= 3600
    committer.commit_if_due()
    assert consumer.commits == [([("telemetry.raw", 0, 8)], True)]
