"""Integration tests of the ingest gateway, the MQTT bridge and the DLQ CLI on real services."""

from __future__ import annotations

import time
import uuid

import orjson
import paho.mqtt.client as mqtt
import pytest
import requests
from typer.testing import CliRunner

from saodf.config import Settings
from saodf.stack import process
from streaming.dlq import read_dlq
from streaming.ingest_config import IngestConfig
from streaming.ingest_gateway import IngestGateway
from streaming.mqtt_bridge import MqttBridge
from streaming.services import mosquitto_spec
from streaming.tokens import create_device_token

pytestmark = pytest.mark.integration

READING = {"device_id": "gw-1", "timestamp": "2025-04-20T12:00:00Z", "temperature": 21.5}


@pytest.fixture
def ingest_settings(session_settings, kafka_bootstrap, moto_endpoint, tmp_path) -> Settings:
    suffix = uuid.uuid4().hex[:10]
    return session_settings.with_overrides(
        home=tmp_path / "home",
        lake_url=(tmp_path / "lake").as_uri(),
        topic_raw=f"raw-{suffix}",
        topic_dlq=f"dlq-{suffix}",
        sqs_queue=f"raw-{suffix}",
        sqs_dlq=f"raw-dlq-{suffix}",
    )


@pytest.fixture
def gateway(ingest_settings):
    config = IngestConfig(http_port=process.free_port())
    server = IngestGateway(ingest_settings, config)
    server.start()
    yield server
    server.stop()


def _post(gateway: IngestGateway, body, token: str | None) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    return requests.post(f"{gateway.url}/v1/telemetry", data=data, headers=headers, timeout=30)


def test_gateway_accepts_single_reading(gateway, ingest_settings):
    token = create_device_token("gw-1", ingest_settings)
    response = _post(gateway, READING, token)
    assert response.status_code == 202
    assert response.json()["accepted"] == 1


def test_gateway_accepts_batch(gateway, ingest_settings):
    token = create_device_token("gw-1", ingest_settings)
    batch = [{**READING, "timestamp": f"2025-04-20T12:00:0{i}Z"} for i in range(5)]
    response = _post(gateway, batch, token)
    assert response.status_code == 202
    assert [r["index"] for r in response.json()["results"]] == list(range(5))


def test_gateway_rejects_unknown_token(gateway):
    response = _post(gateway, READING, "not-a-token")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_gateway_rotated_token_stops_working(gateway, ingest_settings):
    old = create_device_token("gw-1", ingest_settings)
    new = create_device_token("gw-1", ingest_settings)
    assert _post(gateway, READING, old).status_code == 401
    assert _post(gateway, READING, new).status_code == 202


def test_gateway_mixed_batch_dead_letters_invalid(gateway, ingest_settings):
    token = create_device_token("gw-1", ingest_settings)
    batch = [READING, {**READING, "device_id": "gw-2"}, {**READING, "temperature": "hot"}]
    response = _post(gateway, batch, token)
    body = response.json()
    assert response.status_code == 400
    assert body["accepted"] == 1
    assert body["invalid"] == 2
    records = read_dlq(ingest_settings, limit=10, timeout=15)
    reasons = sorted(r["reason"] for r in records)
    assert len(records) == 2
    assert "does not match the authenticated device" in reasons[0]
    assert "is not a number" in reasons[1]


def test_gateway_rejects_oversized_batch(ingest_settings):
    config = IngestConfig(http_port=process.free_port(), max_batch=3)
    server = IngestGateway(ingest_settings, config)
    server.start()
    try:
        token = create_device_token("gw-1", ingest_settings)
        response = _post(server, [READING] * 4, token)
    finally:
        server.stop()
    assert response.status_code == 413
    assert "maximum is 3" in response.json()["error"]


def test_gateway_metrics_export_decisions(gateway, ingest_settings):
    token = create_device_token("gw-1", ingest_settings)
    _post(gateway, READING, token)
    text = requests.get(f"{gateway.url}/metrics", timeout=10).text
    assert 'saodf_ingest_route_decisions_total{route="kafka"} 1' in text
    assert 'saodf_ingest_load_score{broker="sqs"}' in text


def test_dlq_cli_lists_and_shows(gateway, ingest_settings, monkeypatch):
    from saodf.cli_dlq import dlq_app

    token = create_device_token("gw-1", ingest_settings)
    _post(gateway, b"not json", token)
    for name, value in {
        "SAODF_KAFKA_BOOTSTRAP": ingest_settings.kafka_bootstrap,
        "SAODF_TOPIC_DLQ": ingest_settings.topic_dlq,
    }.items():
        monkeypatch.setenv(name, value)
    from saodf.config import reset_settings

    reset_settings()
    runner = CliRunner()
    listed = runner.invoke(dlq_app, ["list"])
    entry_id = listed.output.split()[0]
    shown = runner.invoke(dlq_app, ["show", entry_id])
    assert listed.exit_code == 0, listed.output
    assert "payload is not JSON" in listed.output
    assert shown.exit_code == 0, shown.output
    assert "not json" in shown.output
    reset_settings()


# MQTT


@pytest.fixture
def mqtt_stack(ingest_settings):
    config = IngestConfig(http_port=process.free_port(), mqtt_port=process.free_port())
    token = create_device_token("gw-1", ingest_settings)
    spec = mosquitto_spec(ingest_settings, config)
    process.start(spec)
    bridge = MqttBridge(ingest_settings, config, client_id=f"bridge-{uuid.uuid4().hex[:8]}")
    bridge.start()
    yield ingest_settings, config, bridge, token
    bridge.stop()
    process.stop(spec)


def _publish(config: IngestConfig, user: str, password: str, topic: str, payload: bytes) -> bool:
    """Publish with QoS 1 and return whether mosquitto accepted the connection."""
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=f"{user}-{uuid.uuid4().hex[:6]}"
    )
    client.username_pw_set(user, password)
    try:
        client.connect("127.0.0.1", config.mqtt_port)
    except OSError:
        return False
    client.loop_start()
    try:
        info = client.publish(topic, payload, qos=1)
        info.wait_for_publish(timeout=10)
        return info.is_published()
    except RuntimeError:
        # paho raises when the broker refused the connection before the publish went out.
        return False
    finally:
        client.loop_stop()
        client.disconnect()


def _wait_handled(bridge: MqttBridge, count: int) -> None:
    deadline = time.monotonic() + 20
    while bridge.handled < count and time.monotonic() < deadline:
        time.sleep(0.1)


def test_mqtt_reading_reaches_kafka(mqtt_stack):
    settings, config, bridge, token = mqtt_stack
    assert _publish(config, "gw-1", token, "devices/gw-1/telemetry", orjson.dumps(READING))
    _wait_handled(bridge, 1)
    assert bridge.router.metrics.snapshot()["readings"] == {"mqtt:kafka": 1}


def test_mqtt_mismatched_device_dead_lettered(mqtt_stack):
    settings, config, bridge, token = mqtt_stack
    payload = orjson.dumps({**READING, "device_id": "gw-2"})
    assert _publish(config, "gw-1", token, "devices/gw-1/telemetry", payload)
    _wait_handled(bridge, 1)
    records = read_dlq(settings, limit=10, timeout=15)
    assert len(records) == 1
    assert records[0]["transport"] == "mqtt"
    assert "does not match" in records[0]["reason"]


def test_mqtt_wrong_password_not_delivered(mqtt_stack):
    settings, config, bridge, _token = mqtt_stack
    published = _publish(config, "gw-1", "wrong", "devices/gw-1/telemetry", orjson.dumps(READING))
    assert published is False
    assert bridge.handled == 0
