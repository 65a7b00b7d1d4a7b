"""Tenant isolation and auditing at the ingest gateway, on the session broker and moto."""

from __future__ import annotations

import json
import uuid

import orjson
import pytest
import requests

from saodf.audit_tools import scan
from saodf.stack import process
from saodf.tenants import create_tenant, tenant_settings
from streaming.dlq import read_dlq
from streaming.ingest_config import IngestConfig
from streaming.ingest_gateway import IngestGateway
from streaming.kafka import ensure_topics

pytestmark = pytest.mark.integration


@pytest.fixture
def ingest(session_settings, kafka_bootstrap, moto_endpoint, tmp_path):
    suffix = uuid.uuid4().hex[:10]
    settings = session_settings.with_overrides(
        home=tmp_path / "home",
        lake_url=(tmp_path / "lake").as_uri(),
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
    server = IngestGateway(settings, IngestConfig(http_port=process.free_port()))
    server.start()
    yield server, tokens
    server.stop()


def _reading(device_id):
    return {"device_id": device_id, "timestamp": "2025-04-20T12:00:00Z", "temperature": 21.5}


def _post(server, body, token):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.post(
        f"{server.url}/v1/telemetry", data=orjson.dumps(body), headers=headers, timeout=30
    )


def _topic(server, tenant, field):
    """Return every record of a tenant's topic (the default deployment's for None)."""
    settings = tenant_settings(tenant, server.settings) if tenant else server.settings
    topic = getattr(settings, field)
    ensure_topics(settings, [topic])
    return read_dlq(settings.with_overrides(topic_dlq=topic), limit=50, timeout=10)


def _records(server):
    return [json.loads(line) for line in server.audit.path.read_text().splitlines()]


def test_own_device_accepted(ingest):
    server, tokens = ingest
    assert _post(server, _reading("acme.pump-1"), tokens["acme.pump-1"]).status_code == 202


def test_accepted_call_audited(ingest):
    server, tokens = ingest
    _post(server, _reading("acme.pump-1"), tokens["acme.pump-1"])
    record = _records(server)[-1]
    assert (record["tenant"], record["actor"], record["outcome"]) == (
        "acme",
        "acme.pump-1",
        "accepted",
    )


def test_other_tenant_device_rejected(ingest):
    server, tokens = ingest
    response = _post(server, _reading("beta.pump-1"), tokens["acme.pump-1"])
    assert response.json()["invalid"] == 1


@pytest.mark.parametrize("device_id", ["../beta.pump-1", "acme.pump-1/../../x", "/etc/passwd"])
def test_traversal_device_rejected(ingest, device_id):
    server, tokens = ingest
    response = _post(server, _reading(device_id), tokens["acme.pump-1"])
    assert response.json()["invalid"] == 1


def test_other_tenant_device_alerted(ingest):
    server, tokens = ingest
    _post(server, _reading("beta.pump-1"), tokens["acme.pump-1"])
    alerts = scan([server.audit.path])
    assert sorted((alert.rule, alert.actor) for alert in alerts) == [
        ("cross_tenant", "acme.pump-1"),
        ("malformed_input", "acme.pump-1"),
    ]


def test_other_tenant_device_audited(ingest):
    server, tokens = ingest
    _post(server, _reading("beta.pump-1"), tokens["acme.pump-1"])
    record = [r for r in _records(server) if r["event"] == "reject"][-1]
    fields = ("tenant", "actor", "action", "resource", "outcome", "client", "target_namespace")
    assert {name: record.get(name) for name in fields} == {
        "tenant": "acme",
        "actor": "acme.pump-1",
        "action": "ingest",
        "resource": "/devices/beta.pump-1",
        "outcome": "rejected",
        "client": "127.0.0.1",
        "target_namespace": "beta",
    }


def test_reading_in_tenant_topic(ingest):
    server, tokens = ingest
    reply = _post(server, _reading("acme.pump-1"), tokens["acme.pump-1"]).json()
    assert reply["results"][0]["status"] == "kafka"
    assert [r["device_id"] for r in _topic(server, "acme", "topic_raw")] == ["acme.pump-1"]


def test_tenant_topics_apart(ingest):
    server, tokens = ingest
    _post(server, _reading("acme.pump-1"), tokens["acme.pump-1"])
    _post(server, _reading("beta.pump-1"), tokens["beta.pump-1"])
    assert {r["device_id"] for r in _topic(server, "beta", "topic_raw")} == {"beta.pump-1"}


def test_reading_not_in_default_topic(ingest):
    server, tokens = ingest
    _post(server, _reading("acme.pump-1"), tokens["acme.pump-1"])
    assert _topic(server, None, "topic_raw") == []


def test_cross_tenant_reading_in_own_dlq(ingest):
    server, tokens = ingest
    _post(server, _reading("beta.pump-1"), tokens["acme.pump-1"])
    records = _topic(server, "acme", "topic_dlq")
    assert "does not match the authenticated device 'acme.pump-1'" in records[0]["reason"]


def test_unknown_token_audited(ingest):
    server, _ = ingest
    _post(server, _reading("acme.pump-1"), "guessed-token")
    record = _records(server)[-1]
    assert (record["http_status"], record["actor"]) == (401, "client:127.0.0.1")


def test_unknown_token_not_stored(ingest):
    server, _ = ingest
    _post(server, _reading("acme.pump-1"), "guessed-token-123")
    assert "guessed-token-123" not in server.audit.path.read_text()


def test_invalid_token_burst_alert(ingest):
    server, _ = ingest
    for number in range(3):
        _post(server, _reading("acme.pump-1"), f"guess-{number}")
    assert "invalid_token_burst" in {alert.rule for alert in scan([server.audit.path])}


def test_valid_tokens_not_in_audit(ingest):
    server, tokens = ingest
    for device_id, token in tokens.items():
        _post(server, _reading(device_id), token)
    text = server.audit.path.read_text()
    assert [device for device, token in tokens.items() if token in text] == []
