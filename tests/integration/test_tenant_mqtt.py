"""Tenant routing and auditing at the MQTT bridge, on real mosquitto, the session broker and moto."""

from __future__ import annotations

import json
import time
import uuid

import orjson
import paho.mqtt.client as mqtt
import pytest

from saodf.audit_tools import audit_paths, scan, verify
from saodf.stack import process
from saodf.tenants import create_tenant, tenant_settings
from streaming.dlq import read_dlq
from streaming.ingest_config import IngestConfig
from streaming.kafka import ensure_topics
from streaming.mqtt_bridge import MqttBridge
from streaming.services import mosquitto_spec

pytestmark = pytest.mark.integration


def _reading(device_id: str) -> dict:
    return {"device_id": device_id, "timestamp": "2025-04-20T12:00:00Z", "temperature": 21.5}


@pytest.fixture(scope="module")
def bridge(session_settings, kafka_bootstrap, moto_endpoint, tmp_path_factory):
    """Run mosquitto and the bridge for tenants acme and beta; publish their readings once.

    acme.pump-1 publishes its own reading and one that claims beta.pump-1, and beta.pump-1
    publishes its own, so every test reads the outcome of the same three messages.
    """
    root = tmp_path_factory.mktemp("tenant-mqtt")
    suffix = uuid.uuid4().hex[:10]
    settings = session_settings.with_overrides(
        home=root / "home",
        lake_url=(root / "lake").as_uri(),
        topic_raw=f"raw-{suffix}",
        topic_dlq=f"dlq-{suffix}",
        sqs_queue=f"raw-{suffix}",
        sqs_dlq=f"raw-dlq-{suffix}",
    )
    tokens = {}
    for name in ("acme", "beta"):
        tokens.update(
            create_tenant(name, devices=["pump-1"], settings=settings)[1]["device_tokens"]
        )
    config = IngestConfig(http_port=process.free_port(), mqtt_port=process.free_port())
    # The spec writes the password file, so it must come after the tenants' tokens.
    spec = mosquitto_spec(settings, config)
    process.start(spec)
    server = MqttBridge(settings, config, client_id=f"bridge-{suffix}")
    try:
        server.start()
        messages = [
            ("acme.pump-1", _reading("acme.pump-1")),
            ("acme.pump-1", _reading("beta.pump-1")),
            ("beta.pump-1", _reading("beta.pump-1")),
        ]
        published = [
            _publish(config, device, tokens[device], orjson.dumps(body))
            for device, body in messages
        ]
        _wait_handled(server, len(messages))
        yield server, settings, published
    finally:
        server.stop()
        process.stop(spec)


def _publish(config: IngestConfig, device_id: str, token: str, payload: bytes) -> bool:
    """Publish to the device's own topic with QoS 1; return whether the broker acknowledged it."""
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=f"{device_id}-{uuid.uuid4().hex[:6]}"
    )
    client.username_pw_set(device_id, token)
    client.connect("127.0.0.1", config.mqtt_port)
    client.loop_start()
    try:
        info = client.publish(f"devices/{device_id}/telemetry", payload, qos=1)
        info.wait_for_publish(timeout=10)
        return info.is_published()
    finally:
        client.loop_stop()
        client.disconnect()


def _wait_handled(bridge: MqttBridge, count: int) -> None:
    deadline = time.monotonic() + 30
    while bridge.handled < count and time.monotonic() < deadline:
        time.sleep(0.1)


def _topic(settings, tenant, field):
    """Return every record of a tenant's topic (the default deployment's for None)."""
    scoped = tenant_settings(tenant, settings) if tenant else settings
    topic = getattr(scoped, field)
    ensure_topics(scoped, [topic])
    return read_dlq(scoped.with_overrides(topic_dlq=topic), limit=50, timeout=10)


def _records(bridge):
    return [json.loads(line) for line in bridge.audit.path.read_text().splitlines()]


def test_mqtt_messages_handled(bridge):
    server, _, published = bridge
    assert published == [True, True, True]
    assert server.handled == 3


def test_mqtt_reading_in_tenant_topic(bridge):
    _, settings, _ = bridge
    assert [r["device_id"] for r in _topic(settings, "acme", "topic_raw")] == ["acme.pump-1"]


def test_mqtt_tenant_topics_apart(bridge):
    _, settings, _ = bridge
    assert [r["device_id"] for r in _topic(settings, "beta", "topic_raw")] == ["beta.pump-1"]


def test_mqtt_reading_not_in_default_topic(bridge):
    _, settings, _ = bridge
    assert _topic(settings, None, "topic_raw") == []


def test_mqtt_cross_tenant_in_own_dlq(bridge):
    _, settings, _ = bridge
    records = _topic(settings, "acme", "topic_dlq")
    assert len(records) == 1
    assert records[0]["transport"] == "mqtt"
    assert "does not match the authenticated device 'acme.pump-1'" in records[0]["reason"]


def test_mqtt_cross_tenant_not_in_victim_dlq(bridge):
    _, settings, _ = bridge
    assert _topic(settings, "beta", "topic_dlq") == []


def test_mqtt_cross_tenant_audited(bridge):
    server, _, _ = bridge
    record = next(r for r in _records(server) if r["event"] == "reject")
    fields = ("tenant", "actor", "action", "resource", "outcome", "target_namespace", "transport")
    assert {name: record.get(name) for name in fields} == {
        "tenant": "acme",
        "actor": "acme.pump-1",
        "action": "ingest",
        "resource": "/devices/beta.pump-1",
        "outcome": "rejected",
        "target_namespace": "beta",
        "transport": "mqtt",
    }


def test_mqtt_every_message_audited(bridge):
    server, _, _ = bridge
    ingests = [r for r in _records(server) if r["event"] == "ingest"]
    assert sorted((r["actor"], r["outcome"]) for r in ingests) == [
        ("acme.pump-1", "accepted"),
        ("acme.pump-1", "rejected"),
        ("beta.pump-1", "accepted"),
    ]


def test_mqtt_cross_tenant_alerted(bridge):
    server, _, _ = bridge
    alerts = scan([server.audit.path])
    assert ("cross_tenant", "acme.pump-1") in {(alert.rule, alert.actor) for alert in alerts}


def test_mqtt_audit_verified(bridge):
    server, settings, _ = bridge
    assert server.audit.path in audit_paths(settings)
    assert verify([server.audit.path]) == {str(server.audit.path): 4}
