"""MQTT bridge audit records of rejected and unstored messages, with a stub router."""

from __future__ import annotations

import json

import orjson
import pytest

from saodf.config import Settings
from streaming.ingest_config import IngestConfig
from streaming.ingest_metrics import IngestMetrics
from streaming.ingest_router import DeadLetterError, Outcome
from streaming.mqtt_bridge import MqttBridge

TOPIC = "devices/gw-1/telemetry"
READING = {"device_id": "gw-1", "timestamp": "2025-04-20T12:00:00Z", "temperature": 21.5}


class FailingRouter:
    """A router whose dead-letter sinks all fail, as when Kafka, SQS and the spool are down."""

    def __init__(self):
        self.metrics = IngestMetrics()

    def dead_letter(self, letters):
        raise DeadLetterError(f"no sink kept {len(letters)} dead letter(s)")

    def start(self):
        pass

    def close(self):
        pass


@pytest.fixture
def bridge(tmp_path):
    settings = Settings.from_env().with_overrides(home=tmp_path / "home")
    config = IngestConfig(max_batch=2)
    return MqttBridge(settings, config, router=FailingRouter())


def _records(bridge):
    return [json.loads(line) for line in bridge.audit.path.read_text().splitlines()]


def _fields(record):
    names = ("event", "actor", "device_id", "outcome", "http_status", "transport")
    return {name: record.get(name) for name in names}


def test_unstored_message_raises(bridge):
    with pytest.raises(DeadLetterError):
        bridge.handle(TOPIC, b"{not json")


def test_unstored_message_audited(bridge):
    with pytest.raises(DeadLetterError):
        bridge.handle(TOPIC, b"{not json")
    records = _records(bridge)
    assert [_fields(record) for record in records] == [
        {
            "event": "reject",
            "actor": "gw-1",
            "device_id": "gw-1",
            "outcome": "failed",
            "http_status": 500,
            "transport": "mqtt",
        }
    ]
    assert "no sink kept 1 dead letter(s)" in records[0]["reason"]


def test_large_batch_audited_before_failure(bridge):
    batch = orjson.dumps([{"device_id": "gw-1"}] * 3)
    with pytest.raises(DeadLetterError):
        bridge.handle(TOPIC, batch)
    records = _records(bridge)
    assert [_fields(record) for record in records] == [
        {
            "event": "reject",
            "actor": "gw-1",
            "device_id": "gw-1",
            "outcome": "rejected",
            "http_status": 413,
            "transport": "mqtt",
        }
    ]
    assert "batch has 3 readings; the maximum is 2" in records[0]["reason"]


def test_bad_topic_audited_before_failure(bridge):
    with pytest.raises(DeadLetterError):
        bridge.handle("devices//telemetry", b"{}")
    records = _records(bridge)
    assert [_fields(record) for record in records] == [
        {
            "event": "reject",
            "actor": "client:mqtt",
            "device_id": None,
            "outcome": "rejected",
            "http_status": 400,
            "transport": "mqtt",
        }
    ]


class SpoolRouter(FailingRouter):
    """A router that stores every valid reading in Kafka and every dead letter in the spool."""

    def dead_letter(self, letters):
        return ["spool"] * len(letters)

    def submit(self, readings):
        return [Outcome("kafka") for _ in readings]


@pytest.mark.parametrize(
    ("payload", "outcome"),
    [
        (b"{not json", "rejected"),
        (orjson.dumps([READING, {"device_id": "gw-1"}]), "partly rejected"),
        (orjson.dumps(READING), "accepted"),
    ],
)
def test_ingest_outcome_by_invalid_count(tmp_path, payload, outcome):
    settings = Settings.from_env().with_overrides(home=tmp_path / "home")
    bridge = MqttBridge(settings, IngestConfig(max_batch=2), router=SpoolRouter())
    bridge.handle(TOPIC, payload)
    assert [record["outcome"] for record in _records(bridge)] == [outcome]
