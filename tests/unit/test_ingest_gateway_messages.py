"""Ingest gateway error messages and audit outcomes, over HTTP with a stub router."""

from __future__ import annotations

import http.client
import json

import orjson
import pytest

from saodf.config import Settings
from streaming.ingest_config import IngestConfig
from streaming.ingest_gateway import IngestGateway
from streaming.ingest_metrics import IngestMetrics
from streaming.ingest_router import Outcome
from streaming.tokens import create_device_token

DEVICE = "gw-1"
READING = {"device_id": DEVICE, "timestamp": "2025-04-20T12:00:00Z", "temperature": 21.5}


class StubRouter:
    """A router that stores every valid reading in Kafka and every dead letter in the spool."""

    def __init__(self):
        self.metrics = IngestMetrics()

    def submit(self, readings):
        return [Outcome("kafka") for _ in readings]

    def dead_letter(self, letters):
        return ["spool"] * len(letters)

    def start(self):
        pass

    def close(self):
        pass


@pytest.fixture
def gateway(tmp_path):
    settings = Settings.from_env().with_overrides(home=tmp_path / "home")
    server = IngestGateway(settings, IngestConfig(), router=StubRouter(), port=0)
    server.start()
    try:
        yield server, create_device_token(DEVICE, settings)
    finally:
        server.stop()


def _post(server: IngestGateway, body: bytes, headers: dict[str, str]) -> tuple[int, dict]:
    """Send ``body`` with exactly ``headers`` and return the status and decoded JSON body."""
    host, port = server.server.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=30)
    try:
        connection.putrequest("POST", "/v1/telemetry", skip_accept_encoding=True)
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.endheaders()
        connection.send(body)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def _post_readings(server: IngestGateway, token: str, payload: object) -> tuple[int, dict]:
    body = orjson.dumps(payload)
    headers = {"Authorization": f"Bearer {token}", "Content-Length": str(len(body))}
    return _post(server, body, headers)


def _ingest_outcomes(server: IngestGateway) -> list[str]:
    lines = server.audit.path.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    return [record["outcome"] for record in records if record["event"] == "ingest"]


def test_content_length_text_invalid(gateway):
    server, token = gateway
    headers = {"Authorization": f"Bearer {token}", "Content-Length": "abc"}
    status, body = _post(server, b"{}", headers)
    assert status == 411
    assert body["error"] == (
        "Content-Length 'abc' is invalid; send the body's length in bytes as a decimal integer"
    )


def test_content_length_long_value_cut(gateway):
    server, token = gateway
    headers = {"Authorization": f"Bearer {token}", "Content-Length": "9" * 19 + "x" * 100}
    status, body = _post(server, b"{}", headers)
    assert status == 411
    assert body["error"].startswith(f"Content-Length '{'9' * 19}x...' is invalid")


def test_content_length_missing(gateway):
    server, token = gateway
    status, body = _post(server, b"", {"Authorization": f"Bearer {token}"})
    assert status == 411
    assert body["error"] == "Content-Length is missing"


def test_missing_timestamp_reason(gateway):
    server, token = gateway
    reading = {"device_id": DEVICE, "temperature": 21.5}
    status, body = _post_readings(server, token, reading)
    assert status == 400
    assert body["results"][0]["reason"] == (
        "timestamp is missing; send ISO 8601 with a zone, e.g. 2025-04-20T12:34:00Z"
    )


def test_only_reading_invalid_rejected(gateway):
    server, token = gateway
    _post_readings(server, token, {"device_id": DEVICE, "temperature": 21.5})
    assert _ingest_outcomes(server) == ["rejected"]


def test_some_readings_invalid_partly_rejected(gateway):
    server, token = gateway
    _post_readings(server, token, [READING, {"device_id": DEVICE, "temperature": 21.5}])
    assert _ingest_outcomes(server) == ["partly rejected"]


def test_all_readings_valid_accepted(gateway):
    server, token = gateway
    status, _ = _post_readings(server, token, [READING, READING])
    assert status == 202
    assert _ingest_outcomes(server) == ["accepted"]
