"""Integration tests of the ingest gateway on deeply nested JSON bodies and its health check."""

from __future__ import annotations

import uuid

import orjson
import pytest
import requests

from saodf.config import Settings
from saodf.stack import process
from streaming.ingest_config import IngestConfig
from streaming.ingest_gateway import IngestGateway
from streaming.tokens import create_device_token

pytestmark = pytest.mark.integration

# 100,000 levels fill 200 KB, under the body limit. 1,000 levels stay under the decoder's limit.
DEEP_BODY = b"[" * 100_000 + b"]" * 100_000
NESTED_ITEM = b"[" + b"[" * 1_000 + b"]" * 1_000 + b"]"


@pytest.fixture
def nested_settings(session_settings, kafka_bootstrap, moto_endpoint, tmp_path) -> Settings:
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
def nested_gateway(nested_settings):
    server = IngestGateway(nested_settings, IngestConfig(http_port=process.free_port()))
    server.start()
    yield server
    server.stop()


def _post(gateway: IngestGateway, body: bytes, token: str) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"}
    return requests.post(f"{gateway.url}/v1/telemetry", data=body, headers=headers, timeout=30)


def _audit_records(settings: Settings) -> list[dict]:
    path = settings.log_dir / "ingest_audit.jsonl"
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def test_deep_body_rejected(nested_gateway, nested_settings):
    token = create_device_token("deep-1", nested_settings)
    response = _post(nested_gateway, DEEP_BODY, token)
    assert response.status_code == 400
    assert "depth limit exceeded" in response.json()["results"][0]["reason"]


def test_deep_body_audited(nested_gateway, nested_settings):
    token = create_device_token("deep-1", nested_settings)
    _post(nested_gateway, DEEP_BODY, token)
    records = [r for r in _audit_records(nested_settings) if r.get("device_id") == "deep-1"]
    assert records[-1]["http_status"] == 400


def test_nested_item_rejected(nested_gateway, nested_settings):
    token = create_device_token("deep-1", nested_settings)
    response = _post(nested_gateway, NESTED_ITEM, token)
    assert response.status_code == 400
    assert response.json()["invalid"] == 1


def test_nested_metric_rejected(nested_gateway, nested_settings):
    token = create_device_token("deep-1", nested_settings)
    reading = b'{"device_id": "deep-1", "timestamp": "2025-04-20T12:00:00Z", "t": '
    response = _post(nested_gateway, reading + NESTED_ITEM + b"}", token)
    assert response.status_code == 400
    assert "levels deep" in response.json()["results"][0]["reason"]


def test_nested_item_audited(nested_gateway, nested_settings):
    token = create_device_token("deep-1", nested_settings)
    _post(nested_gateway, NESTED_ITEM, token)
    records = [r for r in _audit_records(nested_settings) if r.get("device_id") == "deep-1"]
    assert records[-1]["http_status"] == 400


def test_health_ready_with_raw_topic(nested_gateway):
    response = requests.get(f"{nested_gateway.url}/health", timeout=10)
    assert response.status_code == 200
    assert response.json()["brokers"]["kafka"]["ready"] is True


def test_health_not_ready_without_raw_topic(nested_gateway, nested_settings):
    # The same check runs after a broker restart that lost the topic.
    nested_gateway.settings = nested_settings.with_overrides(topic_raw=f"gone-{uuid.uuid4().hex}")
    nested_gateway._topic_check = (0.0, None)
    response = requests.get(f"{nested_gateway.url}/health", timeout=10)
    kafka = response.json()["brokers"]["kafka"]
    assert response.status_code == 503
    assert kafka["ready"] is False
    assert "does not exist" in kafka["topic_reason"]
